#!/usr/bin/env bash
# Issue 14: a FUSE export through a release.  A writer keeps writing
# stamped 4 KiB blocks into the FUSE file while the disk is released: every
# write that returned success before the release is on the disk the next
# opener sees, and once a write has failed (EIO while the owner releases,
# ENOTCONN or ECONNABORTED once it has unmounted) no later write succeeds.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/own.sh"
require_root
require qemu-img python3 fusermount3
[[ -c /dev/fuse ]] || skip "no /dev/fuse"
cd "$TMP"

qemu-img create -q -f qcow2 disk.qcow2 64M
: >disk.img
start_owner A a.sock --fuse "$TMP/disk.img" disk.qcow2
cleanup_push "fusermount3 -u $TMP/disk.img; umount -l $TMP/disk.img"
for _ in $(seq 100); do
  [[ $(stat -c %s disk.img) -eq $((64 << 20)) ]] && break
  sleep 0.05
done
[[ $(stat -c %s disk.img) -eq $((64 << 20)) ]] || die "the FUSE file did not appear"

python3 - "$TMP/disk.img" "$TMP/go" "$TMP/writes.txt" <<'PY' &
import errno, os, struct, sys, time
path, go, log = sys.argv[1:4]
fd = os.open(path, os.O_RDWR)
acked, failed, errs = [], None, set()
seq = 0
t_end = time.time() + 60
while time.time() < t_end:
    seq += 1
    off = (seq % 16384) * 4096
    data = (b"FUSEWR01" + struct.pack("<QQ", off, seq)).ljust(4096, b"\x5a")
    try:
        os.pwrite(fd, data, off)
        if failed is not None:
            print("write %d succeeded after write %d failed" % (seq, failed)); sys.exit(1)
        acked.append((off, seq))
        if seq == 200:
            open(go, "w").close()
    except OSError as e:
        errs.add(errno.errorcode.get(e.errno, str(e.errno)))
        if failed is None:
            failed = seq
        if seq - failed > 20:
            break
with open(log, "w") as f:
    f.write(" ".join(sorted(errs)) + "\n")
    for off, s in acked:
        f.write("%d %d\n" % (off, s))
PY
wpid=$!
cleanup_push "kill -9 $wpid"
wait_for_path "$TMP/go" 30
sluice release disk.qcow2 2>rel.err || die "release failed: $(cat rel.err)"
wait_exit "$A" 10
wait "$wpid" || die "a write succeeded after one had failed"
errs=$(head -1 writes.txt)
[[ -n $errs ]] || die "no write failed after the release"
for e in $errs; do
  [[ $e == EIO || $e == ENOTCONN || $e == ENODEV || $e == ECONNABORTED ]] || die "writes after the release failed with $e"
done
qemu-img convert -O raw disk.qcow2 disk.raw
python3 - disk.raw writes.txt <<'PY' || die "a write acknowledged through FUSE is missing"
import struct, sys
img = open(sys.argv[1], "rb")
last = {}
lines = open(sys.argv[2]).read().splitlines()[1:]
for l in lines:
    off, seq = map(int, l.split()); last[off] = seq
for off, seq in last.items():
    img.seek(off); b = img.read(24)
    assert b[:8] == b"FUSEWR01" and struct.unpack("<QQ", b[8:24]) == (off, seq), (off, seq, b)
print("%d acknowledged writes, %d blocks checked" % (len(lines), len(last)))
PY
grep -q EIO writes.txt || echo "note: no write fell in the EIO window (all failed after the unmount)"
qemu-img check -q disk.qcow2 || die "image not clean"
echo "PASS: $TEST_NAME (errors after release: $errs)"
