#!/usr/bin/env bash
# stats: per-operation counts, bytes, errors and latency histograms that can
# be read while the disk is in use (file= rewritten every interval=) and are
# printed at close.  A throttle below stats makes requests take a known
# minimum time, so the latency figures are checked against a lower bound
# that follows from the limit, not from the machine.
. "$(dirname "$0")/../../tests/common/lib.sh"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in stats throttle; do sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null; done
sluice create -q -f raw img.raw 4M
stack() { printf 'sluice-disk 1\nimage img.raw\nfilter stats %s\nfilter throttle iops=20\n' "$*" > d.disk; }
# field FILE OP NAME: the value after NAME on OP's line.
field() { awk -v op="$2" -v f="$3" '$1 == op { for (i = 2; i < NF; i++) if ($i == f) print $(i + 1) }' "$1"; }
# hist FILE OP: the sum of OP's histogram buckets.
hist() { awk -v op="$2" '$1 == op { s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^<[0-9]+:[0-9]+$/) { split($i, a, ":"); s += a[2] } print s }' "$1"; }

# 60 reads at 20/s take about 3 s: the file shows them while they run.
stack file=st interval=0.1
sluice bench -c 60 -d 1 -s 4K d.disk > bench.out 2> bench.err &
pid=$!
cleanup_push "kill $pid"
mid=""
for ((i = 0; i < 100; i++)); do
  sleep 0.05
  n=$(field st read ops 2>/dev/null || true)
  if [[ -n $n && $n -gt 0 && $n -lt 60 ]]; then mid=$n; break; fi
done
wait $pid || die "bench failed: $(cat bench.err)"
[[ -n $mid ]] || die "the stats file never showed the reads while they ran"
echo "stats file showed $mid of 60 reads while bench ran"
assert_eq "$(field st read ops)" 60 "read ops"
assert_eq "$(field st read bytes)" $((60 * 4096)) "read bytes"
assert_eq "$(field st read errors)" 0 "read errors"
assert_eq "$(hist st read)" 60 "read histogram total"
assert_eq "$(field st write ops)" 0 "write ops"
# 58 of the 60 waited ~50 ms for the throttle below: mean >= 20 ms.
awk -v m="$(field st read mean_us)" 'BEGIN { exit !(m >= 20000) }' ||
  die "mean read latency $(field st read mean_us) us is below what the throttle imposes"
# And the same figures were printed at close.
grep -q "^stats stats:" bench.err || die "no summary at close: $(cat bench.err)"
grep -Eq "^  read ops 60 bytes 245760 errors 0 mean_us" bench.err || die "summary: $(cat bench.err)"

# Every kind of request is counted, with its bytes.
stack file=st print=no
sluice io -c "write 0 4K" -c "write 8K 1K" -c "zero 64K 128K" -c "discard 1M 64K" \
  -c flush -c "read 0 512" -c map d.disk > io.out 2> io.err
[[ ! -s io.err ]] || die "print=no printed: $(cat io.err)"
assert_eq "$(field st write ops) $(field st write bytes)" "2 5120" "writes"
assert_eq "$(field st zero ops) $(field st zero bytes)" "1 131072" "write-zeroes"
assert_eq "$(field st discard ops) $(field st discard bytes)" "1 65536" "discards"
assert_eq "$(field st flush ops)" 1 "flushes"
assert_eq "$(field st read ops) $(field st read bytes)" "1 512" "reads"
[[ $(field st block_status ops) -ge 1 ]] || die "block status not counted"

# An unused disk says nothing at close.
stack
sluice io d.disk size > /dev/null 2> quiet.err
[[ ! -s quiet.err ]] || die "an unused disk printed statistics: $(cat quiet.err)"

# Bad parameters are refused by name.
stack interval=-1
expect_fail "filter stats: interval=-1 must be a number from 0" sluice io d.disk read 0 1
stack print=maybe
expect_fail "filter stats: print=maybe: expected yes or no" sluice io d.disk read 0 1
stack colour=1
expect_fail "filter stats: unknown parameter 'colour'" sluice io d.disk read 0 1
echo ok
