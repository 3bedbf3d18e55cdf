#!/bin/bash
# Commands that write a file named on their command line refuse to write
# onto their own input (issue 10 item 5): convert onto SRC or any layer of
# SRC's chain (directly, through a symlink, a hard link, or the image of a
# disk descriptor), create -b X X, and a mirror whose target is the disk's
# own image or one of its layers.  Every refusal happens before anything is
# touched: the inputs' checksums are the same afterwards, and qemu-img check
# and compare still agree they are intact.
source "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io sha256sum
cd "$TMP"

qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -c 'write -P 0x22 1M 1M' top.qcow2 >/dev/null
qemu-img create -q -f raw r.raw 1M
qemu-io -f raw -c 'write -P 0x33 0 1M' r.raw >/dev/null
ln -s top.qcow2 link.qcow2
ln -s base.qcow2 link-base.qcow2
ln top.qcow2 hard.qcow2
sluice disk create top.disk top.qcow2
sums() { sha256sum base.qcow2 top.qcow2 r.raw top.disk; }
before=$(sums)

refused() { expect_fail 'same file as .*refusing to overwrite an input' "$@"; }
for out in top.qcow2 link.qcow2 hard.qcow2 base.qcow2 link-base.qcow2 "$TMP/./top.qcow2"; do
  refused sluice convert -O qcow2 top.qcow2 "$out"
  refused sluice convert -U -O raw top.qcow2 "$out"
done
refused sluice convert -O qcow2 link.qcow2 base.qcow2
refused sluice convert r.raw r.raw
refused sluice convert -O raw top.disk top.qcow2         # SRC a descriptor
refused sluice convert -O raw top.disk base.qcow2
refused sluice convert top.qcow2 top.disk                # DST a descriptor of SRC
sluice disk create base.disk link-base.qcow2
refused sluice convert -U top.qcow2 base.disk            # ... of a layer of SRC
refused sluice create -q -f qcow2 -b base.qcow2 -F qcow2 base.qcow2
refused sluice create -q -f qcow2 -b top.qcow2 -F qcow2 link.qcow2
refused sluice create -q -f qcow2 -b top.qcow2 -F qcow2 base.qcow2   # a deeper layer
refused sluice serve --nbd "unix:$TMP/s.sock" --pidfile link-base.qcow2 top.qcow2
assert_eq "$(sums)" "$before" "checksums of the inputs after the refusals"

# A mirror whose target is the disk's own image, or one of its layers.
export SLUICE_FILTER_DIR=$TMP/mods
sluice filter install "$BUILDDIR/filters/mirror.so" >/dev/null
for t in top.qcow2 base.qcow2; do
  printf 'sluice-disk 1\nimage %s\n' "$t" > m.disk
  printf 'sluice-disk 1\nimage top.qcow2\nfilter mirror target=m.disk\n' > d.disk
  rc=0; sluice mirror resync d.disk >out 2>&1 || rc=$?
  [[ $rc -ne 0 && $rc -lt 128 ]] || die "mirror onto its own $t: exit $rc"
  grep -q "lock" out || die "mirror onto $t: no lock refusal: $(cat out)"
done
assert_eq "$(sums)" "$before" "checksums of the inputs after the mirror refusals"

# The inputs are intact for QEMU too, and a legitimate convert still works.
qemu-img check -q top.qcow2 || die "top.qcow2 damaged"
qemu-img check -q base.qcow2 || die "base.qcow2 damaged"
sluice convert -O qcow2 link.qcow2 copy.qcow2
qemu-img compare -q top.qcow2 copy.qcow2 || die "convert through the symlink copied wrong data"
echo "PASS: $TEST_NAME"
