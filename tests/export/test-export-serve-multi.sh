#!/usr/bin/env bash
# Issue 5: one `sluice serve` with two --nbd listeners and a --fuse export
# over one disk: clients on every listener at once see each other's
# writes, as does the FUSE file (when FUSE is available).  Then SIGTERM
# with writes in flight (slowed by a throttle filter): every write the
# server took is completed and acknowledged, none fails, the server exits
# 0, and the acknowledged data is in the image.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require qemu-io qemu-img python3
cd "$TMP"
sluice create -q disk.qcow2 64M

fuse=()
if [[ $(id -u) -eq 0 && -c /dev/fuse ]] && command -v fusermount3 >/dev/null; then
  fuse=(--fuse "$TMP/disk.img")
fi
"$SLUICE" serve --nbd "unix:$TMP/a.sock" --nbd "unix:$TMP/b.sock" "${fuse[@]}" \
  disk.qcow2 2>>server.log &
server_pid=$!
cleanup_push "kill -9 $server_pid; fusermount3 -u $TMP/disk.img; umount -l $TMP/disk.img"
wait_for_path a.sock
wait_for_path b.sock
ua="nbd+unix:///?socket=$TMP/a.sock" ub="nbd+unix:///?socket=$TMP/b.sock"

# Writers on both listeners at the same time, then cross-reads.
qemu-io -f raw -c "write -P 0x11 0 8M" "$ua" >wa.out & wa=$!
qemu-io -f raw -c "write -P 0x22 8M 8M" "$ub" >wb.out & wb=$!
wait $wa || die "writer on listener a failed: $(cat wa.out)"
wait $wb || die "writer on listener b failed: $(cat wb.out)"
qemu-io -f raw -c "read -P 0x22 8M 8M" "$ua" >/dev/null || die "a does not see b's write"
qemu-io -f raw -c "read -P 0x11 0 8M" "$ub" >/dev/null || die "b does not see a's write"

if [[ ${#fuse[@]} -gt 0 ]]; then
  for _ in $(seq 100); do
    [[ $(stat -c %s disk.img 2>/dev/null || echo 0) -eq $((64 << 20)) ]] && break
    sleep 0.1
  done
  python3 - "$TMP/disk.img" <<'PY' || die "FUSE view disagrees with NBD"
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
assert os.pread(fd, 1 << 20, 0) == b"\x11" * (1 << 20), "FUSE does not see a's write"
assert os.pread(fd, 1 << 20, 9 << 20) == b"\x22" * (1 << 20), "FUSE does not see b's write"
os.pwrite(fd, b"\x33" * (1 << 20), 16 << 20)
os.fsync(fd)
os.close(fd)
PY
  qemu-io -f raw -c "read -P 0x33 16M 1M" "$ua" >/dev/null || die "NBD does not see the FUSE write"
fi
stop_server
[[ ! -e a.sock && ! -e b.sock ]] || die "listener sockets left behind"
qemu-img check -q disk.qcow2 || die "image inconsistent after concurrent exports"

# --- SIGTERM drains writes in flight ------------------------------------
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/throttle.so" >/dev/null
start_server t.sock --filter throttle:iops=20 disk.qcow2
python3 - "$TMP/t.sock" "$server_pid" >acked <<'PY' || die "drain client failed"
import os, signal, socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b
assert struct.unpack(">QQH", recv(18))[1] == 0x49484156454f5054
s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", 0x49484156454f5054, 7, 6) + struct.pack(">IH", 0, 0))
while True:                                   # GO replies until ACK
    magic, opt, typ, n = struct.unpack(">QIII", recv(20)); recv(n)
    assert typ < 0x80000000, hex(typ)
    if typ == 1:
        break
N, L = 12, 64 << 10
for i in range(N):                            # pipelined, no waiting
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 1, i, (32 << 20) + i * L, L)
              + bytes([0x40 + i]) * L)
acked, signalled = [], False
while True:
    try:
        magic, err, cookie = struct.unpack(">IIQ", recv(16))
    except (EOFError, ConnectionResetError):
        break
    assert magic == 0x67446698 and err == 0, "write %d failed with %d" % (cookie, err)
    acked.append(cookie)
    if not signalled:                         # writes are now in flight
        os.kill(int(sys.argv[2]), signal.SIGTERM)
        signalled = True
assert len(acked) >= 2, "nothing completed after SIGTERM: %s" % acked
print(" ".join(map(str, acked)))
PY
rc=0
wait "$server_pid" || rc=$?
[[ $rc -eq 0 ]] || die "sluice serve exited $rc after SIGTERM: $(tail -3 server.log)"
grep -q "draining" server.log || die "no drain message: $(tail -3 server.log)"
for i in $(cat acked); do
  qemu-io -c "read -P $((0x40 + i)) $(((32 << 20) + i * 65536)) 64k" disk.qcow2 >/dev/null \
    || die "acknowledged write $i is not in the image"
done
qemu-img check -q disk.qcow2 || die "image inconsistent after the SIGTERM drain"
echo "ok ($(wc -w <acked) of 12 writes acknowledged across SIGTERM)"
