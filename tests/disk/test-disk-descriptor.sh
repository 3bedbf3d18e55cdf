#!/usr/bin/env bash
# Disk descriptors: `filter attach` puts each filter at its class's place
# in the default order whatever order they are attached in, refuses a
# second filter of a one-per-class class, a duplicate name, an unknown
# parameter or a missing key file -- leaving the descriptor as it was --
# and detach removes by instance name.  The image path is kept relative to
# the descriptor, so the disk opens from any directory.  Hand-written
# descriptors with mistakes, or of a future version, are refused with the
# file and line, never opened as a raw image.
. "$(dirname "$0")/../common/lib.sh"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in stats throttle crypt mirror trace; do sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null; done
mkdir -p images disks
sluice create -q -f raw images/img.raw 4M
sluice create -q -f raw images/copy.raw 4M
head -c 64 /dev/urandom > disks/key

sluice disk create disks/d.disk images/img.raw
grep -qx "image ../images/img.raw" disks/d.disk || die "image not stored relative to the descriptor: $(cat disks/d.disk)"
# Attached bottom-most class first, then the others in a scrambled order.
sluice filter attach disks/d.disk trace log=t.log
sluice filter attach disks/d.disk mirror target=../images/copy.raw
sluice filter attach disks/d.disk crypt key=key
sluice filter attach disks/d.disk stats print=no
sluice filter attach disks/d.disk throttle iops=100000
assert_eq "$(sluice filter list disks/d.disk | awk '{ print $1 }' | tr '\n' ' ')" \
  "stats throttle crypt mirror trace " "default order"
cp disks/d.disk before
expect_fail "a filter named 'throttle' is already in the stack" sluice filter attach disks/d.disk throttle iops=5
expect_fail "filters throttle and t2 are both throttle filters" sluice filter attach disks/d.disk throttle name=t2 iops=5
expect_fail "filter s2: unknown parameter 'bogus'" sluice filter attach disks/d.disk stats name=s2 bogus=1
expect_fail "filter c2: key file nokey: No such file" sluice filter attach disks/d.disk crypt name=c2 key=nokey
expect_fail "no filter 'nope' in the stack" sluice filter detach disks/d.disk nope
cmp -s before disks/d.disk || die "a refused attach or detach changed the descriptor"
# A second observer is fine.
sluice filter attach disks/d.disk stats name=s2 print=no
sluice filter detach disks/d.disk s2
cmp -s before disks/d.disk || die "attach then detach did not restore the descriptor"

# The disk opens from another directory: paths are the descriptor's.
(cd / && "$SLUICE" io "$TMP/disks/d.disk" write -s "from anywhere" 0 >/dev/null) ||
  die "the disk does not open from another directory"
assert_eq "$(sluice io disks/d.disk cat 0 13)" "from anywhere" "read back"
[[ -s disks/t.log ]] || die "trace log not written next to the descriptor"
sluice filter detach disks/d.disk trace
! grep -q trace disks/d.disk || die "detached filter still in the descriptor"

# Hand-written descriptors with mistakes.
bad() {  # PATTERN LINES...: a descriptor of LINES must be refused with PATTERN
  local pattern=$1; shift
  printf '%s\n' "$@" > disks/bad.disk
  expect_fail "$pattern" sluice io disks/bad.disk read 0 512
  expect_fail "$pattern" sluice io disks/bad.disk write 0 512
}
bad "bad.disk:3: unknown keyword 'imagine'" "sluice-disk 1" "image ../images/img.raw" "imagine x"
bad "bad.disk: no 'image' line" "sluice-disk 1" "filter stats"
bad "bad.disk:3: 'image' given twice" "sluice-disk 1" "image ../images/img.raw" "image ../images/img.raw"
bad "bad.disk:2: 'image' takes exactly one value" "sluice-disk 1" "image a b"
bad "bad.disk:3: 'filter' needs a name" "sluice-disk 1" "image ../images/img.raw" "filter"
bad "parameter 'key' is not KEY=VALUE" "sluice-disk 1" "image ../images/img.raw" "filter crypt key"
bad "bad.disk:4: a filter named 'stats' is already" "sluice-disk 1" "image ../images/img.raw" "filter stats" "filter stats"
bad "'no/such' is not a valid filter name" "sluice-disk 1" "image ../images/img.raw" "filter no/such"
bad "filter nosuch: not installed" "sluice-disk 1" "image ../images/img.raw" "filter nosuch"
bad "images/nothere.raw: cannot open: No such file" "sluice-disk 1" "image ../images/nothere.raw"
# A future version is refused as such, not opened as a raw image of text.
bad "bad.disk: disk descriptor version '2' is not supported" "sluice-disk 2" "image ../images/img.raw"
sum=$(sha256sum < disks/bad.disk)
expect_fail "not supported" sluice io disks/bad.disk write -s x 0
assert_eq "$(sha256sum < disks/bad.disk)" "$sum" "a descriptor of another version was written to"
# Written on another system: CRLF line ends are accepted.
printf 'sluice-disk 1\r\nimage ../images/img.raw\r\nfilter stats print=no\r\nfilter crypt key=key\r\n' > disks/crlf.disk
assert_eq "$(sluice io disks/crlf.disk cat 0 13)" "from anywhere" "descriptor with CRLF line ends"
echo ok
