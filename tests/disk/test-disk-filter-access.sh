#!/usr/bin/env bash
# Issue 4, acceptance 2 through the CLI: `--at FILTER` on io, convert and
# bench enters the stack below FILTER.  FILTER and everything above it see
# nothing (stats counters, trace logs); the filters below see everything.
# The issue's example: a backup reads plaintext through crypt while
# bypassing a throttle above it, and is not slowed by it -- while the same
# reads through the top are clearly rate-limited.
. "$(dirname "$0")/../common/lib.sh"
cd "$TMP"
mods=$BUILDDIR/filters
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in stats throttle crypt trace; do sluice filter install "$mods/$m.so" >/dev/null; done

sluice create -q -f raw img.raw 8M
head -c 64 /dev/urandom > key
cat > d.disk <<EOF
sluice-disk 1
image img.raw
filter stats name=top file=top.stats print=no
filter throttle iops=5
filter crypt key=key
filter trace name=low tag=L log=trace.log
EOF

# ops FILE OP: the op count a stats file recorded (rewritten at each close).
ops() { awk -v op="$2" '$1 == op && $2 == "ops" { print $3 }' "$1"; }
# seen OP: how many OP requests reached the trace below crypt; empties the log.
seen() { local n; n=$(grep -c "^L > $1\$" trace.log || true); : > trace.log; echo "$n"; }

# Fill 1M with known plaintext below the throttle, so setup is not slow:
# one request, seen by crypt and trace, not by stats or the throttle.
head -c 1M /dev/urandom > plain.1m
sluice io --at throttle d.disk write -i plain.1m 0 >/dev/null
assert_eq "$(ops top.stats write)" 0 "writes the top saw for a write below the throttle"
assert_eq "$(seen write)" 1 "writes below crypt"
! grep -qF "$(head -c 64 plain.1m | od -An -tx1 | head -1)" <(od -An -tx1 img.raw) ||
  die "plaintext in the image"

# io: each level sees exactly what enters at or above it.
sluice io --at top d.disk read 0 4K >/dev/null
assert_eq "$(ops top.stats read)" 0 "top's reads for --at top"
assert_eq "$(seen read)" 1 "reads below crypt for --at top"
sluice io --at low d.disk read 0 4K >/dev/null
assert_eq "$(ops top.stats read)" 0 "top's reads for --at low"
assert_eq "$(seen read)" 0 "reads the bottom filter saw for --at low"
sluice io d.disk read 0 4K >/dev/null
assert_eq "$(ops top.stats read)" 1 "top's reads through the top"
assert_eq "$(seen read)" 1 "reads below crypt through the top"
# Below crypt is ciphertext, above it plaintext.
sluice io --at throttle d.disk cat 0 1M > above.bin
cmp -s above.bin plain.1m || die "--at throttle does not read the plaintext"
sluice io --at crypt d.disk cat 0 1M > below.bin
cmp -s below.bin <(head -c 1M img.raw) || die "--at crypt does not read the image as is"
! cmp -s below.bin plain.1m || die "--at crypt reads plaintext"
: > trace.log
expect_fail "no filter 'nope' in the stack" sluice io --at nope d.disk read 0 4K
expect_fail "no filter 'nope'" sluice convert --at nope d.disk x.raw
expect_fail "no filter 'nope'" sluice bench -c 1 --at nope d.disk
[[ ! -e x.raw ]] || die "convert --at nope left x.raw behind"

# convert: a backup below the throttle is the plaintext; stats saw nothing.
sluice convert --at throttle d.disk backup.raw
cmp -s <(head -c 1M backup.raw) plain.1m || die "backup below the throttle is not the plaintext"
assert_eq "$(ops top.stats read)" 0 "top's reads for convert --at throttle"
[[ $(seen read) -gt 0 ]] || die "convert --at throttle read nothing below crypt"
assert_eq "$(stat -c %s backup.raw)" $((8 << 20)) "backup size"
sluice io --at throttle d.disk cat 0 8M > all.bin
cmp -s backup.raw all.bin || die "backup differs from the disk read below the throttle"
: > trace.log

# bench: the backup is not slowed by the throttle above it...
secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds\.$/\1/p' "$1"; }
sluice bench -c 200 -d 1 -s 4K --at throttle d.disk > fast.out
fast=$(secs fast.out)
assert_eq "$(ops top.stats read)" 0 "top's reads for bench --at throttle"
assert_eq "$(seen read)" 200 "reads below crypt for bench --at throttle"
# ...while through the top the same kind of reads are held to 5 per second:
# 15 requests need at least (15 - burst 1) / 5 = 2.8 s, whatever the machine.
sluice bench -c 15 -d 1 -s 4K d.disk > slow.out
slow=$(secs slow.out)
assert_eq "$(ops top.stats read)" 15 "top's reads for bench through the top"
awk -v s="$slow" 'BEGIN { exit !(s >= 2.6) }' || die "15 reads at iops=5 took only $slow s"
# 200 reads at 5/s would take 40 s; unthrottled they take far less than
# the 15 throttled ones did.
awk -v f="$fast" -v s="$slow" 'BEGIN { exit !(f < s) }' ||
  die "200 reads below the throttle took $fast s, 15 through it $slow s"
echo "below the throttle: 200 reads in $fast s; through it: 15 reads in $slow s"
echo ok
