#!/bin/bash
# Issue 16: an RBD image is a first-class sluice image.  On one throw-away
# single-node cluster: convert local -> RBD -> local is identical (raw and
# qcow2 sources, -p); what sluice writes, qemu-img's rbd driver and
# `rbd export` read exactly, and sluice reads what they wrote; io's write
# (FUA), zero, discard and map; info, check, bench, a disk descriptor whose
# image is rbd:, a local qcow2 overlay whose backing file is rbd:; and the
# RBD exclusive lock keeps a second writer (qemu-io, or another sluice) out
# while sluice has the image open for writing.
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require qemu-img qemu-io nbdinfo python3
ceph_start
cd "$TMP"

# A 24 MiB source with data, holes and a zeroed run, at unaligned places.
python3 - <<'PY'
import os, random
random.seed(16)
with open("src.raw", "wb") as f:
    f.truncate(24 << 20)
    for off, n in [(0, 65536), (3 << 20, 1 << 20), (9 << 20 | 4096, 300000), ((24 << 20) - 8192, 8192)]:
        f.seek(off); f.write(random.randbytes(n))
PY
md5_src=$(md5sum <src.raw | cut -d' ' -f1)

# local raw -> RBD -> local raw, with progress.
sluice convert -p -f raw -O raw src.raw "rbd:$POOL/a" >/dev/null
assert_eq "$(rbd_md5 a)" "$md5_src" "rbd export of what sluice wrote"
qemu-img compare -q -f raw -F raw src.raw "rbd:$POOL/a" ||
  die "qemu-img (rbd driver) does not read what sluice wrote"
sluice convert -f raw -O raw "rbd:$POOL/a" back.raw
cmp src.raw back.raw || die "local -> RBD -> local differs"

# local qcow2 -> RBD -> local qcow2.
qemu-img convert -f raw -O qcow2 src.raw src.qcow2
sluice convert -O raw src.qcow2 "rbd:$POOL/b"
sluice convert -f raw -O qcow2 "rbd:$POOL/b" back.qcow2
qemu-img compare -q src.qcow2 back.qcow2 || die "qcow2 -> RBD -> qcow2 differs"

# What qemu-img and rbd import wrote, sluice reads.
qemu-img convert -f raw -O raw src.raw "rbd:$POOL/byqemu"
sluice convert -f raw -O raw "rbd:$POOL/byqemu" q.raw
cmp src.raw q.raw || die "sluice misreads an image qemu-img wrote"
rbd import --no-progress src.raw "$POOL/byrbd"
sluice convert -f raw -O raw "rbd:$POOL/byrbd" r.raw
cmp src.raw r.raw || die "sluice misreads an image rbd import wrote"

# create and info; the object size is -o cluster_size, as with qemu-img.
sluice create -o cluster_size=65536 "rbd:$POOL/c" 8M >/dev/null
assert_eq "$(rbd info --format json "$POOL/c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["object_size"])')" 65536 "object size"
sluice info "rbd:$POOL/c" | grep -q '^virtual size: 8 MiB (8388608 bytes)' ||
  die "info: $(sluice info "rbd:$POOL/c")"
expect_fail "already exists" sluice create "rbd:$POOL/c" 8M
expect_fail "RBD images are raw" sluice create -f qcow2 "rbd:$POOL/d" 8M
rc=0; sluice check "rbd:$POOL/c" 2>err || rc=$?
assert_eq "$rc" 63 "check exit status (qemu-img's for formats without checks)"
grep -q "does not support checks" err || die "check: $(cat err)"

# io: FUA write, zero, discard, map; qemu-io reads the result.
sluice io -f raw -c 'write -P 0x5a 4096 65536' -c flush -c 'zero 131072 65536' \
  -c 'discard 0 4096' "rbd:$POOL/c" >/dev/null
qemu-io -f raw -r -c 'read -P 0 0 4096' -c 'read -P 0x5a 4096 65536' \
  -c 'read -P 0 131072 65536' "rbd:$POOL/c" | grep -q 'read 65536/65536' ||
  die "qemu-io does not read sluice io's writes"
map=$(sluice io -f raw "rbd:$POOL/c" map)
echo "$map" | grep -Eq '^0x0+ +0x0*10000 +data' ||
  echo "$map" | grep -Eq '^0 +[0-9]+ +data' ||
  echo "$map" | grep -q data || die "map shows no data: $map"

# bench (a few requests) reads through librbd.
sluice bench -c 200 -d 8 -f raw "rbd:$POOL/a" >bench.out ||
  die "bench failed: $(cat bench.out)"

# A disk descriptor whose image is an RBD name.
sluice disk create a.disk "rbd:$POOL/a"
grep -qx "image rbd:$POOL/a" a.disk || die "descriptor: $(cat a.disk)"
sluice convert -O raw a.disk desc.raw
cmp src.raw desc.raw || die "descriptor over RBD reads wrong"

# A local qcow2 overlay whose backing file is the RBD image.
sluice create -f qcow2 -b "rbd:$POOL/a" -F raw ov.qcow2 >/dev/null
sluice io ov.qcow2 write -P 0x77 1M 64K >/dev/null
qemu-img convert -O raw ov.qcow2 ov-qemu.raw
sluice convert -O raw ov.qcow2 ov-sluice.raw
cmp ov-qemu.raw ov-sluice.raw || die "overlay on RBD reads unlike qemu-img"
sluice info --backing-chain ov.qcow2 | grep -q "image: rbd:$POOL/a" ||
  die "info --backing-chain: $(sluice info --backing-chain ov.qcow2)"

# The exclusive lock: while sluice serves the image writable, neither
# qemu-io nor another sluice may write it; read-only opens still work.
"$SLUICE" serve -f raw --nbd "unix:$TMP/nbd.sock" "rbd:$POOL/a" >serve.out 2>&1 &
spid=$!
cleanup_push "kill $spid"
wait_for_path "$TMP/nbd.sock" 30
rc=0; timeout 60 qemu-io -f raw -c 'write -P 1 0 4096' "rbd:$POOL/a" >qio.out 2>&1 || rc=$?
[[ $rc -ne 0 && $rc -ne 124 ]] || die "qemu-io wrote an image sluice holds (rc $rc): $(cat qio.out)"
expect_fail "exclusive lock is held" sluice io -f raw "rbd:$POOL/a" write 0 4096
sluice io -f raw -r "rbd:$POOL/a" read 0 4096 >/dev/null
kill "$spid"; wait "$spid" || true
# Released on exit: writable again.
sluice io -f raw "rbd:$POOL/a" write -P 0 0 4096 >/dev/null ||
  die "the lock outlived the server"
echo "PASS: $TEST_NAME"
