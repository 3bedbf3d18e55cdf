#!/usr/bin/env bash
# `sluice serve --cache=MODE` (-t), qemu-nbd's host page-cache modes.  What
# each mode DID is read from the kernel, not from sluice: the open flags of
# the image descriptors (/proc/PID/fdinfo) and the bytes the server process
# read from storage (/proc/PID/io read_bytes).  With none, every read of
# the disk reaches the device, also the second time; with writeback the
# second read of the same disk comes from the page cache.  directsync adds
# O_DSYNC on the writable layer only; unsafe keeps the page cache.  Written
# data reaches the image in every mode (qemu-img compare after SIGTERM).
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require qemu-img qemu-io python3
cd "$TMP"

MB=16
head -c $((MB << 20)) /dev/urandom >base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw clone.qcow2
qemu-io -f qcow2 -c "write -P 0x5a 1M 2M" clone.qcow2 >/dev/null

O_DIRECT=$((8#40000)) O_DSYNC=$((8#10000))
# fd_flags PID FILE: the open flags (decimal) of PID's descriptor of FILE.
fd_flags() {
  local fd
  for fd in /proc/$1/fd/*; do
    if [[ $(readlink "$fd") == "$TMP/$2" ]]; then
      echo $((8#$(awk '/^flags:/ {print $2}' "/proc/$1/fdinfo/${fd##*/}")))
      return
    fi
  done
  die "server $1 has no descriptor of $2"
}
read_bytes() { awk '/^read_bytes:/ {print $2}' "/proc/$1/io"; }
# evict FILE...: write back and drop the files' pages from the page cache.
evict() {
  python3 - "$@" <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
qemu-img convert -O raw clone.qcow2 expect.raw
# read_all: read the whole disk through the server, check it, print the
# bytes the server read from storage meanwhile.
read_all() {
  local before after
  before=$(read_bytes "$server_pid")
  qemu-img convert -f raw -O raw "$uri" got.raw
  after=$(read_bytes "$server_pid")
  cmp -s got.raw expect.raw || die "${mode}: disk read through the server differs"
  rm -f got.raw
  echo $((after - before))
}
has() { (( ($1 & $2) != 0 )); }

for mode in none writeback; do
  evict base.raw clone.qcow2
  start_server "$mode.sock" --cache=$mode clone.qcow2
  top=$(fd_flags "$server_pid" clone.qcow2) low=$(fd_flags "$server_pid" base.raw)
  first=$(read_all) second=$(read_all)
  echo "$mode: storage reads $first then $second bytes"
  case $mode in
  none)
    has "$top" $O_DIRECT && has "$low" $O_DIRECT || die "none: layers not opened O_DIRECT"
    (( first >= (MB - 2) << 20 && second >= (MB - 2) << 20 )) ||
      die "none: reads did not reach storage each time ($first, $second bytes)"
    ;;
  writeback)
    ! has "$top" $O_DIRECT && ! has "$low" $O_DIRECT || die "writeback: O_DIRECT set"
    (( first >= (MB - 2) << 20 )) || die "writeback: cold read read only $first bytes"
    (( second < 1 << 20 )) || die "writeback: a warm read still read $second bytes from storage"
    ;;
  esac
  stop_server
done

# directsync: O_DIRECT everywhere, O_DSYNC on the writable top only; unsafe:
# the page cache and no O_DSYNC.  Writes (with flushes) land in both.
for mode in directsync unsafe; do
  cp clone.qcow2 "$mode.qcow2"
  start_server "$mode.sock" -t $mode "$mode.qcow2"
  top=$(fd_flags "$server_pid" "$mode.qcow2") low=$(fd_flags "$server_pid" base.raw)
  if [[ $mode == directsync ]]; then
    has "$top" $O_DIRECT && has "$top" $O_DSYNC || die "directsync: top flags $top"
    has "$low" $O_DIRECT && ! has "$low" $O_DSYNC || die "directsync: backing flags $low"
  else
    ! has "$top" $O_DIRECT && ! has "$top" $O_DSYNC || die "unsafe: top flags $top"
  fi
  qemu-io -f raw -c "write -P 0x77 100k 300k" -c flush -c "write -f -P 0x66 5M 64k" \
    "$uri" >/dev/null || die "$mode: writes through the server failed"
  stop_server
  cp expect.raw "$mode.expect"
  qemu-io -f raw -c "write -P 0x77 100k 300k" -c "write -P 0x66 5M 64k" "$mode.expect" >/dev/null
  qemu-img compare -q -f qcow2 -F raw "$mode.qcow2" "$mode.expect" ||
    die "$mode: image content differs from what was written"
  qemu-img check -q "$mode.qcow2" || die "$mode: image not consistent"
done

expect_fail "unknown cache mode 'bogus'" "$SLUICE" serve --cache=bogus --nbd unix:x.sock clone.qcow2
echo "PASS"
