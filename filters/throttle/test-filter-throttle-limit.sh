#!/usr/bin/env bash
# throttle (issue 4, acceptance 6): the limits are enforced -- IOPS for
# reads and writes, from one thread or several (the limit is per disk),
# bytes per second, and a burst passes at once but not more.  Only lower
# bounds that follow from the limit are asserted (and one upper bound far
# above what the burst implies), never how fast the machine is; how close
# the rate is to the limit is measured by bench/, not here.
. "$(dirname "$0")/../../tests/common/lib.sh"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/throttle.so" >/dev/null
sluice create -q -f raw img.raw 16M

# limit PARAMS...: the disk's throttle.
limit() { printf 'sluice-disk 1\nimage img.raw\nfilter throttle %s\n' "$*" > d.disk; }
# bench ARGS...: run sluice bench on the disk, print its elapsed seconds.
bench() {
  sluice bench -d 1 "$@" d.disk > bench.out || die "bench $* failed"
  sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' bench.out
}
# at_least SECS MIN WHAT
at_least() { awk -v s="$1" -v m="$2" 'BEGIN { exit !(s >= m) }' || die "$3 took $1 s, the limit needs at least $2 s"; }
at_most() { awk -v s="$1" -v m="$2" 'BEGIN { exit !(s <= m) }' || die "$3 took $1 s: the burst was not honoured (expected well under $2 s)"; }

# 60 reads at 20/s with a burst of 2 (the default, iops/10): >= 58/20 s.
limit iops=20
t=$(bench -c 60 -s 4K); at_least "$t" 2.6 "60 reads at iops=20"
echo "60 reads at iops=20: $t s"
# Four threads share the disk's limit.
t=$(bench -c 60 -s 4K -d 4); at_least "$t" 2.6 "60 reads from 4 threads at iops=20"
# Writes are limited too: 30 at 20/s >= 28/20 s.
t=$(bench -w -c 30 -s 4K); at_least "$t" 1.3 "30 writes at iops=20"

# 4 MiB in 64K requests at 2 MiB/s, burst 200K (bps/10): >= 1.9 s.
limit bps=2M
t=$(bench -c 64 -s 64K); at_least "$t" 1.7 "4 MiB at bps=2M"
echo "4 MiB at bps=2M: $t s"
# Both limits: the stricter one holds (here bandwidth, 1M at 512K/s).
limit iops=1000 bps=512K
t=$(bench -c 16 -s 64K); at_least "$t" 1.7 "1 MiB at bps=512K with iops=1000"

# A burst of 30 passes at once; 20 more at 10/s need >= 2 s.
limit iops=10 burst=30
t=$(bench -c 30 -s 4K); at_most "$t" 2.0 "30 reads within a burst of 30"
echo "30 reads within a burst of 30 at iops=10: $t s"
t=$(bench -c 50 -s 4K); at_least "$t" 1.8 "50 reads with burst=30 at iops=10"

# Bad parameters are refused by name.
limit
expect_fail "filter throttle: give iops=N and/or bps=SIZE" sluice io d.disk read 0 1
limit iops=fast
expect_fail "filter throttle: iops=fast must be a number" sluice io d.disk read 0 1
limit iops=-5
expect_fail "iops=-5 must be a number from 0" sluice io d.disk read 0 1
limit bps=10X
expect_fail "filter throttle: bps=10X is not a size" sluice io d.disk read 0 1
limit iops=10 burst=0
expect_fail "burst=0 must be a number from 1" sluice io d.disk read 0 1
limit iops=10 rate=5
expect_fail "filter throttle: unknown parameter 'rate'" sluice io d.disk read 0 1
echo ok
