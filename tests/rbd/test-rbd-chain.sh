#!/bin/bash
# Issue 16: RBD layering is a backing chain.  A base image's protected
# snapshot, an RBD clone of it, and a local qcow2 overlay on the clone:
#   - sluice reads the three-layer chain exactly as qemu-img convert does;
#   - info --backing-chain shows overlay -> clone -> base@snap;
#   - block status attributes every extent to the layer that holds it, so
#     qemu:allocation-depth over NBD (nbdinfo --map) is the map the writes
#     made (1 overlay, 2 clone, 3 base), and collapsed to two layers it is
#     what qemu-nbd reports for the same overlay (QEMU does not see RBD's
#     layering: its rbd driver reads the parent inside the clone).
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require qemu-img qemu-io qemu-nbd nbdinfo python3
ceph_start
cd "$TMP"

K=1024
# 64 KiB objects, so allocation is reported at that grain.
rbd create --size 8M --object-size 64K "$POOL/base"
sluice io -f raw -c "write -P 0x11 0 128K" -c "write -P 0x22 1M 256K" \
  "rbd:$POOL/base" >/dev/null
rbd snap create "$POOL/base@s" 2>/dev/null
rbd snap protect "$POOL/base@s"
rbd clone "$POOL/base@s" "$POOL/clone"
sluice io -f raw -c "write -P 0x33 1152K 256K" "rbd:$POOL/clone" >/dev/null
sluice create -f qcow2 -b "rbd:$POOL/clone" -F raw ov.qcow2 >/dev/null
sluice io -c "write -P 0x44 2M 64K" -c "write -P 0x55 0 64K" ov.qcow2 >/dev/null

# Reads: the same bytes as qemu-img's.
qemu-img convert -O raw ov.qcow2 qemu.raw
sluice convert -O raw ov.qcow2 sluice.raw
cmp qemu.raw sluice.raw || die "the chain reads unlike qemu-img convert"
qemu-io -f raw -r -c 'read -P 0x11 64K 64K' -c 'read -P 0x22 1M 128K' \
  -c 'read -P 0x33 1152K 256K' -c 'read -P 0 1408K 64K' sluice.raw |
  grep -c '^read' | grep -qx 4 || die "unexpected content in the chain"

# The chain as info shows it.
chain=$(sluice info --backing-chain ov.qcow2 | grep '^image:' | cut -d' ' -f2- | paste -sd' ')
assert_eq "$chain" "ov.qcow2 rbd:$POOL/clone rbd:$POOL/base@s" "backing chain"
sluice info "rbd:$POOL/clone" | grep -qx "backing file: rbd:$POOL/base@s" ||
  die "the clone's parent: $(sluice info "rbd:$POOL/clone")"
full=$(sluice info --output=json "rbd:$POOL/clone" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["full-backing-filename"])')
assert_eq "$full" "rbd:$POOL/base@s" "full-backing-filename"

# Allocation depth over NBD.
depth_map() { # URI: "start end depth" lines, adjacent equal depths merged
  nbdinfo --map=qemu:allocation-depth "$1" | python3 -c '
import sys
out = []
for line in sys.stdin:
    off, n, d = (int(x) for x in line.split()[:3])
    if out and out[-1][2] == d and out[-1][1] == off:
        out[-1][1] = off + n
    else:
        out.append([off, off + n, d])
for s, e, d in out:
    print(s // 1024, e // 1024, d)'
}
"$SLUICE" serve -f qcow2 --read-only --nbd "unix:$TMP/s.sock" ov.qcow2 >serve.out 2>&1 &
spid=$!
cleanup_push "kill $spid"
wait_for_path "$TMP/s.sock" 30
ours=$(depth_map "nbd+unix:///?socket=$TMP/s.sock")
expected="0 64 1
64 1152 3
1152 1408 2
1408 2048 3
2048 2112 1
2112 8192 3"
assert_eq "$ours" "$expected" "allocation depth (KiB ranges) over NBD"

qemu-nbd -r -A -f qcow2 -k "$TMP/q.sock" ov.qcow2 >qnbd.out 2>&1 &
qpid=$!
cleanup_push "kill $qpid"
wait_for_path "$TMP/q.sock" 30
theirs=$(depth_map "nbd+unix:///?socket=$TMP/q.sock")
collapsed=$(echo "$ours" | python3 -c '
import sys
out = []
for line in sys.stdin:
    s, e, d = (int(x) for x in line.split())
    d = min(d, 2)
    if out and out[-1][2] == d:
        out[-1][1] = e
    else:
        out.append([s, e, d])
print("\n".join("%d %d %d" % tuple(x) for x in out))')
assert_eq "$collapsed" "$theirs" "depth map collapsed to QEMU's two layers"

# The clone alone: its own extents at depth 0, the parent's at 1.
map=$(sluice io -f raw -r "rbd:$POOL/clone" map | awk '{print $1/1024, $2/1024, $3, $4}' | paste -sd';')
assert_eq "$map" "0 128 data 1;128 896 zero 1;1024 128 data 1;1152 256 data 0;1408 6784 zero 1" "clone map"
echo "PASS: $TEST_NAME"
