#!/bin/bash
# Issue 16: sluice serve rbd:... keeps every acknowledged write.
#   - fio's nbd engine writes and verifies (crc32c) through the server;
#   - a writer of our own (nbd-writer.py) sends FUA writes, records each
#     acknowledgement, and SIGKILLs the server while writes are in flight;
#     a new server (which must get the RBD exclusive lock of the dead one)
#     then serves every acknowledged write's data: for each block the
#     last acknowledged sequence number, or a later one that was in flight.
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require fio python3
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"
ceph_start
cd "$TMP"
rbd create --size 32M "$POOL/d"

start_server() { # SOCKET: serve rbd:$POOL/d writable, set $spid
  rm -f "$1"
  "$SLUICE" serve -f raw --nbd "unix:$TMP/$1" "rbd:$POOL/d" >>server.log 2>&1 &
  spid=$!
  cleanup_push "kill -9 $spid"
  local i
  for ((i = 0; i < 600; i++)); do
    [[ -S $TMP/$1 ]] && return 0
    kill -0 "$spid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

start_server a.sock || die "server did not start: $(tail -3 server.log)"
fio --name=verify --ioengine=nbd --uri="nbd+unix:///?socket=$TMP/a.sock" \
  --rw=randwrite --bs=4k --size=16M --iodepth=8 --verify=crc32c \
  --do_verify=1 --verify_fatal=1 --output=fio.out ||
  die "fio verify failed: $(tail -20 fio.out)"
grep -q "err= 0" fio.out || die "fio reported errors: $(cat fio.out)"
kill "$spid"; wait "$spid" || die "server exited non-zero after SIGTERM"

start_server b.sock || die "server did not start: $(tail -3 server.log)"
python3 "$SRCDIR/tests/rbd/nbd-writer.py" "$TMP/b.sock" "$spid" 1024 300 >acked ||
  die "writer failed"
wait "$spid" 2>/dev/null || true
n=$(wc -l <acked)
((n >= 300)) || die "only $n writes acknowledged"

# The dead server's lock is broken by the next writer once its watch on
# the image has expired (a few seconds on the test cluster).
t0=$SECONDS
ok=0
for ((i = 0; i < 12; i++)); do
  if start_server c.sock; then ok=1; break; fi
  sleep 5
done
((ok)) || die "no server could take the image over: $(tail -3 server.log)"
echo "took over after $((SECONDS - t0)) s" >&2
nbdcopy_ok=0
python3 - "$TMP/c.sock" acked <<'PY' || die "an acknowledged write was lost"
import socket, struct, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(60); s.connect(sys.argv[1])
def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError
        b += c
    return b
MAGIC = 0x49484156454F5054
assert struct.unpack(">QQH", recv(18))[1] == MAGIC
s.sendall(struct.pack(">I", 3))
s.sendall(struct.pack(">QII", MAGIC, 7, 6) + struct.pack(">IH", 0, 0))
while True:
    magic, opt, typ, n = struct.unpack(">QIII", recv(20)); recv(n)
    assert typ < 0x80000000
    if typ == 1: break
last = {}
for line in open(sys.argv[2]):
    blk, seq = map(int, line.split())
    last[blk] = max(last.get(blk, 0), seq)
bad = 0
for blk, seq in sorted(last.items()):
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 0, 0, blk, blk * 4096, 4096))
    magic, err, cookie = struct.unpack(">IIQ", recv(16))
    assert err == 0
    data = recv(4096)
    got_seq, got_blk = struct.unpack("<QQ", data[:16])
    if got_blk != blk or got_seq < seq or data != data[:16] * 256:
        print("block %d: acknowledged write %d, found seq %d blk %d" % (blk, seq, got_seq, got_blk), file=sys.stderr)
        bad += 1
print("%d blocks checked, %d bad" % (len(last), bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "PASS: $TEST_NAME ($n acknowledged writes)"
