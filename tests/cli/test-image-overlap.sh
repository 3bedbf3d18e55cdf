#!/usr/bin/env bash
# Issue 10, item 3: metadata overlap protection, with QEMU as the oracle.
# On images whose refcounts or L2 entries let a write land on metadata
# (from the corruption corpus, tests/cli/qcow2-corrupt.py), a write
#   - fails with "Preventing invalid write on metadata (overlaps with ...)"
#     and writes nothing but the header's corrupt bit (file bytes compared);
#   - leaves the image marked corrupt as QEMU marks it (qemu-img info);
# then writable opens are refused, read-only opens still read the data,
# and `sluice check -r all` clears the bit once the image is clean, after
# which the image takes writes again and qemu-img check finds it clean.
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"
# QEMU's tools run without glibc's MALLOC_PERTURB_ (which meson sets): on
# some damaged images qemu-io 7.2 then acts on uninitialised memory, and
# the oracle must not vary from run to run.
qemu-io() { env -u MALLOC_PERTURB_ qemu-io "$@"; }
qemu-img() { env -u MALLOC_PERTURB_ qemu-img "$@"; }
gen="$SRCDIR/tests/cli/qcow2-corrupt.py"
python3 "$gen" base base.qcow2

# same_but_header A B: A and B are equal except the incompatible-features
# field of the header (bytes 72..79).
same_but_header() {
  python3 - "$1" "$2" <<'PY'
import sys
a, b = (open(p, "rb").read() for p in sys.argv[1:3])
sys.exit(0 if len(a) == len(b) and a[:72] == b[:72] and a[80:] == b[80:] else 1)
PY
}
corrupt_bit() { local b; b=$(od -An -t u1 -j 79 -N 1 "$1" | tr -d ' '); echo $(( (b >> 1) & 1 )); }

# KIND GUEST-OFFSET WHAT: the write at GUEST-OFFSET would land on WHAT.
while read -r kind off what; do
  cp base.qcow2 "$kind.qcow2"
  python3 "$gen" apply "$kind" "$kind.qcow2"
  cp "$kind.qcow2" s.qcow2; cp "$kind.qcow2" q.qcow2

  # The oracle: QEMU refuses the write and marks the image corrupt.
  qemu-io -c "write -P 0x5a $off 4k" q.qcow2 >/dev/null 2>q.err || true
  grep -q "Preventing invalid write on metadata (overlaps with $what)" q.err ||
    die "$kind: qemu-io did not prevent the write as expected: $(cat q.err)"
  assert_eq "$(corrupt_bit q.qcow2)" 1 "$kind: QEMU's corrupt bit"

  expect_fail "Preventing invalid write on metadata \(overlaps with $what\)" \
    sluice io s.qcow2 write -P 0x5a "$off" 4k
  grep -q "s.qcow2" "$TMP/err" || die "$kind: the message does not name the image"
  assert_eq "$(corrupt_bit s.qcow2)" 1 "$kind: sluice's corrupt bit"
  same_but_header s.qcow2 "$kind.qcow2" || die "$kind: sluice wrote more than the corrupt bit"
  qemu-img info s.qcow2 | grep -q "corrupt: true" || die "$kind: qemu-img info does not see the corrupt bit"

  # Writable opens refused, read-only opens work.
  expect_fail "marked corrupt" sluice io s.qcow2 write -P 0x5b 0 4k
  sluice io -r s.qcow2 read -P 0x11 0 4k >/dev/null || die "$kind: read-only open of a corrupt image"
  expect_fail "marked corrupt" sluice serve --nbd "unix:$TMP/s.sock" s.qcow2

  # Repair clears the bit once the image is clean; then writes work again.
  rc=0; sluice check -r all s.qcow2 >/dev/null 2>&1 || rc=$?
  assert_eq "$rc" 0 "$kind: sluice check -r all"
  assert_eq "$(corrupt_bit s.qcow2)" 0 "$kind: corrupt bit after repair"
  qemu-img check s.qcow2 >/dev/null || die "$kind: qemu-img check after sluice's repair"
  sluice io s.qcow2 write -P 0x5c "$off" 4k >/dev/null || die "$kind: write after repair"
  qemu-io -c "read -P 0x5c $off 4k" -c "read -P 0x11 0 4k" s.qcow2 >/dev/null ||
    die "$kind: data after repair and write"
  qemu-img check s.qcow2 >/dev/null || die "$kind: qemu-img check after the write"
  echo "$kind: prevented ($what), repaired"
done <<'EOF'
rc-zero-l2 3M active L2 table
l2-into-l1 4096 active L1 table
l2-into-refblock 4096 refcount block
l2-into-reftable 4096 refcount table
l2-into-snapl1 4096 inactive L1 table
EOF

# Storing a dirty bitmap at close allocates clusters too: with the
# refcount of the L2 table zeroed, the allocator offers the L2 table, and
# the check must keep the bitmap off it.  (QEMU 7.2's qemu-io here writes
# the bitmap over the L2 table and loses the data it maps; the oracle for
# this case is therefore the data itself.)
qemu-img create -q -f qcow2 bm.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' bm.qcow2 >/dev/null
qemu-img bitmap --add bm.qcow2 b0
python3 - bm.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); h = f.read(104)
cs = 1 << struct.unpack(">I", h[20:24])[0]
l1, rt = struct.unpack(">Q", h[40:48])[0], struct.unpack(">Q", h[48:56])[0]
f.seek(l1); l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
f.seek(rt); rb = struct.unpack(">Q", f.read(8))[0]
f.seek(rb + 2 * (l2 // cs)); f.write(b"\0\0")   # 16-bit refcount of L2 = 0
PY
# The guest write lands in place (an allocated, unshared cluster); the
# close then refuses to store the bitmap over the L2 table.
expect_fail "Preventing invalid write on metadata \(overlaps with active L2 table\)" \
  sluice io bm.qcow2 write -P 0x5a 0 4k
assert_eq "$(corrupt_bit bm.qcow2)" 1 "bitmap store: corrupt bit"
qemu-io -r -U -c 'read -P 0x5a 0 4k' -c 'read -P 0x11 4k 1020k' bm.qcow2 >/dev/null ||
  die "bitmap store: the data mapped by the L2 table changed"
sluice check -r all bm.qcow2 >/dev/null 2>&1 || die "bitmap store: sluice check -r all"
qemu-img check bm.qcow2 >/dev/null || die "bitmap store: qemu-img check after repair"
qemu-io -r -c 'read -P 0x5a 0 4k' -c 'read -P 0x11 4k 1020k' bm.qcow2 >/dev/null ||
  die "bitmap store: data after repair"
# The bitmap missed the store: it must not look valid to QEMU.
qemu-img info bm.qcow2 | grep -q "in-use" || die "bitmap store: the bitmap looks consistent"
echo "bitmap store over an L2 table: prevented, repaired, data intact"

# A corrupt-flagged image made by QEMU itself is refused for writing too.
cp base.qcow2 flagged.qcow2
python3 - flagged.qcow2 <<'PY'
import struct, sys
f = open(sys.argv[1], "r+b"); f.seek(72)
v = struct.unpack(">Q", f.read(8))[0] | 2
f.seek(72); f.write(struct.pack(">Q", v))
PY
expect_fail "marked corrupt" sluice io flagged.qcow2 write 0 4k
sluice io -r flagged.qcow2 read -P 0x11 0 4k >/dev/null || die "read-only open of a flagged image"
echo ok
