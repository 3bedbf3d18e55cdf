#!/usr/bin/env bash
# Issue 4, acceptance 7: a disk with a filter stack (stats, throttle, crypt)
# converts to raw -- and to qcow2 -- identically to its expected plaintext,
# with a raw and with a qcow2 image under the descriptor.  Below crypt
# (--at crypt) convert gives the image's own bytes.  A stack without crypt
# over a qcow2 overlay and its backing file converts like qemu-img does
# (block status and the owning layer pass through the filters).
. "$(dirname "$0")/../common/lib.sh"
require qemu-img
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in stats throttle crypt trace; do sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null; done
head -c 64 /dev/urandom > key
size=$((8 << 20))

for fmt in raw qcow2; do
  rm -f img.$fmt model out.raw out.qcow2
  sluice create -q -f $fmt img.$fmt $size
  cat > d.disk <<EOF
sluice-disk 1
image img.$fmt
filter stats print=no
filter throttle iops=100000
filter crypt key=key
EOF
  # The expected plaintext: encrypted zeros everywhere, then pieces of
  # random data at aligned and unaligned places.
  sluice io d.disk zero 0 $size >/dev/null
  head -c $size /dev/zero > model
  for piece in "0 4096" "5000 70000" "1048575 3" "3145728 1048576" "$((size - 1000)) 1000"; do
    set -- $piece
    head -c "$2" /dev/urandom > chunk
    sluice io d.disk write -i chunk "$1" >/dev/null
    dd if=chunk of=model bs=64K seek="$1" oflag=seek_bytes conv=notrunc status=none
  done

  sluice convert -O raw d.disk out.raw
  cmp out.raw model || die "$fmt: convert -O raw through the stack differs from the plaintext"
  sluice convert -O qcow2 d.disk out.qcow2
  qemu-img compare -q -f qcow2 -F raw out.qcow2 model ||
    die "$fmt: convert -O qcow2 through the stack differs from the plaintext"
  ! grep -q "$(head -c 16 chunk | od -An -tx1 | tr -d ' \n')" <(od -An -tx1 -w16 img.$fmt | tr -d ' ') ||
    die "$fmt: plaintext in the image"
  # Below crypt: the ciphertext, exactly what the image holds.
  sluice convert --at crypt d.disk cipher.raw
  qemu-img convert -O raw img.$fmt expect-cipher.raw
  cmp cipher.raw expect-cipher.raw || die "$fmt: convert --at crypt is not the image's content"
  ! cmp -s cipher.raw model || die "$fmt: the image holds the plaintext"
  rm -f cipher.raw expect-cipher.raw
done

# No crypt: an overlay over a backing file, through trace filters.
sluice create -q -f raw base.raw 4M
sluice io base.raw write -P 0x41 0 1M >/dev/null
qemu-img create -q -f qcow2 -b base.raw -F raw over.qcow2 >/dev/null
sluice io over.qcow2 write -P 0x42 512K 1M >/dev/null
sluice io over.qcow2 zero 3M 64K >/dev/null
cat > o.disk <<EOF
sluice-disk 1
image over.qcow2
filter trace name=t1 log=t.log
filter stats print=no
filter trace name=t2 log=t.log
EOF
sluice convert o.disk o.raw
qemu-img convert -O raw over.qcow2 expect.raw
cmp o.raw expect.raw || die "convert of a stack over an overlay differs from qemu-img's"
grep -q "^t2 > block_status" t.log || die "convert did not ask block status through the stack"
# The result is sparse where the disk is: no data was read for the hole.
[[ $(du -k o.raw | cut -f1) -lt 4096 ]] || die "convert through the stack wrote the holes"
echo ok
