#!/usr/bin/env bash
# fault (issue 4): errors injected at a chosen operation and offset range
# travel up through the filters above (crypt, stats) to the command, which
# exits non-zero and prints the errno's message naming the request; other
# operations and other ranges keep working, nothing half-done is written,
# and the stats filter above counts the error.  Also delays, prob=0, and
# refusal of bad parameters.
. "$(dirname "$0")/../../tests/common/lib.sh"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in stats crypt fault; do sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null; done
sluice create -q -f raw img.raw 4M
head -c 64 /dev/urandom > key

# stack FAULT-PARAMS: stats / crypt / fault over the image.
stack() {
  printf 'sluice-disk 1\nimage img.raw\nfilter stats file=st print=no\nfilter crypt key=key\nfilter fault %s\n' "$*" > d.disk
}
errors() { awk -v op="$1" '$1 == op && $2 == "ops" { print $7 }' st; }

stack op=write start=3M end=4M
sluice io d.disk zero 0 3M >/dev/null
sluice io d.disk write -s "good data" 1M >/dev/null

# Reads of [1M, 2M) fail with EIO; the message names the request.
stack op=read start=1M end=2M error=EIO
expect_fail "^sluice io: read at 1048576: .*fault: injected Input/output error on read of 4096 bytes at 1048576" \
  sluice io d.disk read 1M 4K
[[ ! -s $TMP/out ]] || die "a failed read printed data: $(cat "$TMP/out")"
assert_eq "$(errors read)" 1 "read errors counted by stats above"
# Through crypt's sector alignment: an unaligned read touching the range.
expect_fail "read at 1048476: .*injected Input/output error on read of 1024 bytes at 1048064" \
  sluice io d.disk read $(((1 << 20) - 100)) 200
# Other ranges and other operations still work, in the same process too.
sluice io d.disk read 0 4K >/dev/null
sluice io d.disk read 2M 4K >/dev/null
# (a whole-sector write: a partial one would read the sector first, and
# that read fails, as the next check shows)
sluice io -c "write -P 0x6d 1M 512" -c "read 3M 4K" -c flush -c map d.disk >/dev/null ||
  die "operations outside the fault failed"
expect_fail "write at 1048576: .*injected Input/output error on read of 512 bytes at 1048576" \
  sluice io d.disk write -s x 1M
stack op=read
expect_fail "convert.*injected Input/output error on read" sluice convert d.disk out.raw
expect_fail "bench.*injected Input/output error on read" sluice bench -c 4 -d 1 d.disk
stack op=block_status
expect_fail "map.*injected Input/output error on block-status" sluice io d.disk map
stack op=read start=1M end=2M prob=0
assert_eq "$(sluice io d.disk cat 1M 4)" mmmm "data behind a fault with prob=0"

# A write fault: ENOSPC, and crypt's read-modify-write left nothing behind.
stack op=write start=1M end=2M error=ENOSPC
sum=$(sha256sum < img.raw)
expect_fail "write at 1048580: .*injected No space left on device on write" \
  sluice io d.disk write -s "lost" $(((1 << 20) + 4))
assert_eq "$(errors write)" 1 "write errors counted"
expect_fail "zero at 1048576: .*No space left on device" sluice io d.disk zero 1M 1K
assert_eq "$(errors zero)" 1 "write-zeroes errors counted"
assert_eq "$(sha256sum < img.raw)" "$sum" "image after failed writes"
assert_eq "$(sluice io d.disk cat 1M 4)" mmmm "data after failed writes"
sluice io d.disk write -s "fine" 2M >/dev/null     # outside the range

# Flush: the error reaches the command.
stack op=flush error=EROFS
expect_fail "flush: .*injected Read-only file system on flush" sluice io d.disk flush
stack op=discard error=EPERM
expect_fail "discard at 0: .*Operation not permitted" sluice io d.disk discard 0 4K

# Delays without errors: 3 reads delayed 300 ms each take >= 0.9 s.
stack op=read error=none delay=300
start=$(date +%s%N)
sluice io -c "read 0 512" -c "read 4K 512" -c "read 8K 512" d.disk >/dev/null
ms=$((($(date +%s%N) - start) / 1000000))
[[ $ms -ge 900 ]] || die "3 reads with delay=300 took only $ms ms"

# Bad parameters are refused by name.
stack op=reed
expect_fail "filter fault: op=reed: unknown operation 'reed'" sluice io d.disk read 0 1
stack error=EFOO
expect_fail "filter fault: error=EFOO: expected EIO" sluice io d.disk read 0 1
stack start=2M end=1M
expect_fail "filter fault: end=1048576 must be above start=2097152" sluice io d.disk read 0 1
stack prob=2
expect_fail "filter fault: prob=2 must be a number from 0 to 1" sluice io d.disk read 0 1
stack seed=3 bogus=1
expect_fail "filter fault: unknown parameter 'bogus'" sluice io d.disk read 0 1
echo ok
