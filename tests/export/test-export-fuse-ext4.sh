#!/usr/bin/env bash
# Issue 5, acceptance 6: the FUSE export under a loop device is a real block
# device: mkfs.ext4, mount, write files, umount, fsck -f clean, remount and
# verify.  Everything is undone (umount, losetup -d, FUSE unmount, server
# killed) even when a step fails.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require_root
require losetup mkfs.ext4 fsck.ext4 mount umount fstrim qemu-img python3
[[ -c /dev/fuse ]] || skip "no /dev/fuse"
losetup -f >/dev/null 2>&1 || skip "no free loop device"
cd "$TMP"

sluice create -q disk.qcow2 256M
"$SLUICE" serve --fuse "$TMP/disk.img" disk.qcow2 2>>server.log &
server_pid=$!
cleanup_push "kill -9 $server_pid; fusermount3 -u $TMP/disk.img; umount -l $TMP/disk.img"
for _ in $(seq 100); do
  [[ $(stat -c %s disk.img 2>/dev/null || echo 0) -eq $((256 << 20)) ]] && break
  sleep 0.1
done
[[ $(stat -c %s disk.img) -eq $((256 << 20)) ]] || die "FUSE file did not appear: $(cat server.log)"

loop=$(losetup -f --show "$TMP/disk.img")
cleanup_push "losetup -d $loop"
mkfs.ext4 -q -F "$loop" || die "mkfs.ext4 failed"
mkdir mnt
mount "$loop" mnt || die "mount failed"
cleanup_push "umount -l $TMP/mnt"
head -c 3M /dev/urandom > payload
mkdir mnt/dir
cp payload mnt/dir/payload
for i in $(seq 1 50); do echo "file $i" > "mnt/dir/f$i"; done
sync
umount mnt
fsck.ext4 -f -n "$loop" >fsck.out 2>&1 || die "fsck -f found problems: $(cat fsck.out)"
mount "$loop" mnt || die "remount failed"
cmp payload mnt/dir/payload || die "payload differs after remount"
[[ $(cat mnt/dir/f37) == "file 37" ]] || die "small file content lost"
# Discards reach the image: fstrim through ext4 and the loop device becomes
# a punch-hole fallocate on the FUSE file, a discard on the disk.  The
# clusters that held the payload are then no longer allocated in the qcow2
# (qemu-img map, read with -U while the server holds the image open).
allocated() { qemu-img map -U --output=json disk.qcow2 |
  python3 -c 'import json, sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))'; }
before=$(allocated)
rm mnt/dir/payload
sync   # ext4 frees the blocks only when the transaction commits
fstrim mnt || die "fstrim failed on ext4 over the FUSE export"
sync
after=$(allocated)
echo "allocated before fstrim: $before, after: $after"
[[ $after -le $((before - (2 << 20))) ]] ||
  die "fstrim freed only $((before - after)) bytes in the image (payload 3 MiB)"
umount mnt
losetup -d "$loop"
stop_server
[[ ! -e disk.img ]] || die "the FUSE mount point created by serve was not removed"
qemu-img check -q disk.qcow2 || die "image inconsistent after the ext4 round trip"
echo ok
