#!/usr/bin/env bash
# Golden output: `sluice info` and `sluice check` print, line for line, what
# `qemu-img info` and `qemu-img check` print for the same image, and exit
# with the same code.  Scripts written against qemu-img's human output can
# then switch to sluice unchanged.  The images are all made by qemu-img and
# qemu-io (plus injected refcount damage made with python3), so the expected
# text comes from qemu itself, never from this file.
source "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

q() { qemu-img "$@" >/dev/null; }
q create -f qcow2 base.qcow2 64M
qemu-io -c 'write -P 1 0 1M' -c 'write -z 2M 128k' base.qcow2 >/dev/null
q create -f qcow2 -o compat=0.10 v2.qcow2 1G
q create -f raw plain.raw 10M
q create -f qcow2 -o extended_l2=on,cluster_size=128k ext.qcow2 100M
qemu-io -c 'write -P 7 4k 8k' ext.qcow2 >/dev/null
q convert -c -O qcow2 -o compression_type=zstd base.qcow2 zstd.qcow2
q create -f qcow2 -o cluster_size=512 small.qcow2 1000000
# Internal snapshots and persistent bitmaps (enabled, disabled, another
# granularity), and one bitmap left in use as a killed writer leaves it.
cp base.qcow2 snap.qcow2
q snapshot -c first snap.qcow2
qemu-io -c 'write -P 2 1M 64k' snap.qcow2 >/dev/null
q snapshot -c 'second one' snap.qcow2
q bitmap --add snap.qcow2 b0
q bitmap --add --disable -g 1M snap.qcow2 'off map'
qemu-io -c 'write -P 3 3M 64k' snap.qcow2 >/dev/null
cp snap.qcow2 inuse.qcow2
python3 - inuse.qcow2 <<'PY'
import struct, sys
with open(sys.argv[1], 'r+b') as f:
    h = f.read(65536)
    p = struct.unpack('>I', h[100:104])[0]
    while struct.unpack('>I', h[p:p + 4])[0] != 0x23852875:
        p += 8 + (struct.unpack('>I', h[p + 4:p + 8])[0] + 7) // 8 * 8
    d = struct.unpack('>Q', h[p + 24:p + 32])[0]
    f.seek(d + 12); f.write(struct.pack('>I', 3))   # b0: in-use, auto
PY
mkdir sub
q create -f qcow2 -b ../base.qcow2 -F qcow2 sub/overlay.qcow2
qemu-io -c 'write -P 9 100k 3k' sub/overlay.qcow2 >/dev/null

# set_refcount IMAGE CLUSTER VALUE: poke one 16-bit refcount in the first
# refcount block, the way a crashed or buggy writer would leave it.
set_refcount() {
  python3 - "$@" <<'PY'
import struct, sys
path, cluster, value = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, 'r+b') as f:
    hdr = f.read(104)
    rt = struct.unpack('>Q', hdr[48:56])[0]
    f.seek(rt)
    rb = struct.unpack('>Q', f.read(8))[0]
    f.seek(rb + 2 * cluster)
    f.write(struct.pack('>H', value))
PY
}
cp base.qcow2 leaky.qcow2
set_refcount leaky.qcow2 40 1        # a cluster nobody references
set_refcount leaky.qcow2 0 2         # the header, counted twice
cp base.qcow2 corrupt.qcow2
set_refcount corrupt.qcow2 4 0       # a data cluster in use, refcount 0

# same_as_qemu SUBCOMMAND IMAGE: identical stdout+stderr text and exit code.
same_as_qemu() {
  local sub=$1 img=$2 qrc=0 src=0
  qemu-img "$sub" "$img" >"$TMP/q.out" 2>"$TMP/q.err" || qrc=$?
  sluice "$sub" "$img" >"$TMP/s.out" 2>"$TMP/s.err" || src=$?
  [[ $src -lt 128 ]] || die "sluice $sub $img killed by signal $((src - 128))"
  assert_eq "$src" "$qrc" "exit code of sluice $sub $img"
  diff -u "$TMP/q.out" "$TMP/s.out" >&2 || die "sluice $sub $img: stdout differs from qemu-img's"
  # qemu-img's error lines start "qemu-img:"; sluice's may only differ there.
  diff -u <(sed 's/^qemu-img: //' "$TMP/q.err") <(sed 's/^sluice[a-z ]*: //' "$TMP/s.err") >&2 ||
    die "sluice $sub $img: stderr differs from qemu-img's"
}

for img in base.qcow2 v2.qcow2 plain.raw ext.qcow2 zstd.qcow2 small.qcow2 sub/overlay.qcow2 \
           leaky.qcow2 corrupt.qcow2 snap.qcow2 inuse.qcow2; do
  same_as_qemu info "$img"
done
for img in base.qcow2 v2.qcow2 ext.qcow2 zstd.qcow2 small.qcow2 sub/overlay.qcow2 \
           leaky.qcow2 corrupt.qcow2 snap.qcow2 inuse.qcow2; do
  same_as_qemu check "$img"
done
# The JSON of snapshots and bitmaps, text for text.
for img in snap.qcow2 inuse.qcow2; do
  diff -u <(qemu-img info --output=json "$img") <(sluice info --output=json "$img") >&2 ||
    die "sluice info --output=json $img differs from qemu-img's"
done
grep -q '"in-use"' <(sluice info --output=json inuse.qcow2) || die "in-use flag not shown"
grep -q 'second one' <(sluice info snap.qcow2) || die "snapshot not shown"

# The damaged images really were damaged (the comparison above is not
# between two "no errors" lines).
qrc=0; qemu-img check leaky.qcow2 >/dev/null 2>&1 || qrc=$?
assert_eq "$qrc" 3 "qemu-img check exit on the leaky image"
qrc=0; qemu-img check corrupt.qcow2 >/dev/null 2>&1 || qrc=$?
assert_eq "$qrc" 2 "qemu-img check exit on the corrupt image"

# After sluice repairs the leaks, both tools print the same clean report.
sluice check -r leaks leaky.qcow2 >/dev/null 2>&1 || true
same_as_qemu check leaky.qcow2
qrc=0; qemu-img check leaky.qcow2 >/dev/null 2>&1 || qrc=$?
assert_eq "$qrc" 0 "qemu-img check exit after sluice check -r leaks"
echo "PASS: $TEST_NAME"
