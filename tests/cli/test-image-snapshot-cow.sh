#!/usr/bin/env bash
# Internal snapshots are never corrupted by writes through sluice.
#
# After `qemu-img snapshot -c`, every L2 table and data cluster of the
# image is shared with the snapshot (refcount 2, COPIED clear).  sluice
# must copy before it writes (new cluster, copy, new L2 entry or L1
# entry, old refcount down by one) exactly as QEMU does.  Pattern A is
# written, snapshotted, then pattern B is written over parts of it
# through `sluice io` (partial clusters, whole clusters, write-zeroes,
# discard) and through `sluice serve` (qemu-io over NBD).  The oracle:
# qemu-img check clean (refcounts and COPIED flags right), the snapshot
# applied on a copy reads A exactly, the live image reads B where written
# and A elsewhere, and deleting the snapshot leaves no leak.
source "$(dirname "$0")/../common/lib.sh"
source "$SRCDIR/tests/export/serve.sh"
require qemu-img qemu-io python3

img=$TMP/s.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-io -c 'write -P 0xaa 0 8M' "$img" >/dev/null
qemu-img snapshot -c s1 "$img"

K=1024 M=$((1024 * 1024))
sluice io -c "write -P 0xbb $((100 * K)) $((10 * K))" -c "write -P 0xbb $M $M" \
  -c "zero $((2 * M)) 64K" -c "discard $((3 * M)) 128K" "$img" >/dev/null
qemu-img check -q "$img" || die "qemu-img check after sluice io"

start_server s.sock -f qcow2 "$img"
qemu-io -f raw -c "write -P 0xbb $((5 * M + 512)) 3K" -c "write -P 0xbb $((6 * M)) 256K" \
  -c "write -z $((7 * M)) 64K" -c "write -P 0xbb $((12 * M)) 64K" "$uri" >/dev/null
stop_server
qemu-img check -q "$img" || die "qemu-img check after sluice serve"
sluice check -q "$img" || die "sluice check after the copy-on-write writes"

# The expected live contents, built byte by byte.
python3 - "$TMP/expect.raw" <<'EOF'
import sys
K, M = 1024, 1024 * 1024
b = bytearray(b'\xaa' * (8 * M) + b'\0' * (8 * M))
def put(off, n, v): b[off:off + n] = bytes([v]) * n
put(100 * K, 10 * K, 0xbb); put(M, M, 0xbb); put(2 * M, 64 * K, 0)
put(3 * M, 128 * K, 0); put(5 * M + 512, 3 * K, 0xbb); put(6 * M, 256 * K, 0xbb)
put(7 * M, 64 * K, 0); put(12 * M, 64 * K, 0xbb)
open(sys.argv[1], 'wb').write(b)
EOF
qemu-img convert -O raw "$img" "$TMP/live.raw"
cmp "$TMP/live.raw" "$TMP/expect.raw" || die "the live image does not read B"

cp "$img" "$TMP/copy.qcow2"
qemu-img snapshot -a s1 "$TMP/copy.qcow2"
qemu-img convert -O raw "$TMP/copy.qcow2" "$TMP/snap.raw"
python3 -c 'import sys; open(sys.argv[1], "wb").write(b"\xaa" * (8 << 20) + bytes(8 << 20))' "$TMP/a.raw"
cmp "$TMP/snap.raw" "$TMP/a.raw" || die "snapshot s1 no longer reads A"
qemu-img check -q "$TMP/copy.qcow2" || die "qemu-img check after snapshot -a"

# Deleting the snapshot drops every shared refcount: nothing may leak.
qemu-img snapshot -d s1 "$img"
out=$(qemu-img check --output=json "$img") || die "qemu-img check after snapshot -d"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(d.get("leaks",0) or d.get("corruptions",0))' "$out" ||
  die "leaks or corruptions after deleting the snapshot: $out"
qemu-img convert -O raw "$img" "$TMP/live2.raw"
cmp "$TMP/live2.raw" "$TMP/expect.raw" || die "deleting the snapshot changed the live data"
echo "PASS: $TEST_NAME"
