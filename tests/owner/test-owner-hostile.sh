#!/usr/bin/env bash
# Issue 14, acceptance 5: a hostile requester on the owner's control socket
# -- garbage, wrong magic and version, oversized lengths, malformed
# payloads, half messages held open, requests that are not requests, a
# flood of connections, a user who may not ask -- gets errors and closed
# connections; the owner never releases, never crashes, keeps serving its
# disk, and still answers a proper request at the end.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/own.sh"
require qemu-img qemu-io python3
cd "$TMP"

qemu-img create -q -f qcow2 disk.qcow2 32M
start_owner A a.sock disk.qcow2
qemu-io -c "write -P 0x33 0 1M" "nbd+unix:///?socket=$TMP/a.sock" >/dev/null
sock=$(owner_field disk.qcow2 socket)
sum0=$(md5sum <disk.qcow2.owner)

python3 - "$sock" "$A" <<'PY' || die "hostile requester checks failed"
import os, socket, struct, sys, time
path, owner = sys.argv[1], int(sys.argv[2])
def msg(t, payload=b"", v=1, magic=b"SLOC", length=None):
    return magic + struct.pack("<HHI", v, t, len(payload) if length is None else length) + payload
def conn():
    # A full backlog (right after a flood) is EAGAIN: retry, as sluice's
    # requester does, for up to 5 s.
    end = time.time() + 5
    while True:
        s = socket.socket(socket.AF_UNIX); s.settimeout(5)
        try:
            s.connect(path); return s
        except BlockingIOError:
            s.close()
            if time.time() > end: raise
            time.sleep(0.005)
def send(s, data):
    # The owner may close as soon as it has seen enough to refuse.
    try:
        s.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        pass
def answer(s):
    """The one ERROR/INFO the owner sends, then end of stream."""
    b = b""
    try:
        while True:
            c = s.recv(65536)
            if not c: break
            b += c
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("the owner kept the connection open: %r" % b[:40])
    if not b:
        return None, None, b""
    assert b[:4] == b"SLOC", b[:16]
    v, t, n = struct.unpack("<HHI", b[4:12])
    return t, (struct.unpack("<I", b[12:16])[0] if t == 18 else None), b[16:12 + n]
def expect_error(data, code, words, what):
    s = conn(); send(s, data)
    t, c, text = answer(s)
    assert t == 18, "%s: got type %r, expected ERROR" % (what, t)
    assert c == code, "%s: code %r, expected %d (%s)" % (what, c, code, text)
    assert words.encode() in text, "%s: %r does not say %r" % (what, text, words)
def alive():
    os.kill(owner, 0)
    s = conn(); s.sendall(msg(1))
    t, _, text = answer(s)
    assert t == 19 and b"pid %d\n" % owner in text, (t, text[:80])

EBADMSG, EPROTONOSUPPORT, ETIMEDOUT, EPERM = 74, 93, 110, 1
expect_error(os.urandom(2048), EBADMSG, "bad magic", "garbage")
expect_error(b"GET / HTTP/1.1\r\n\r\n", EBADMSG, "bad magic", "http")
expect_error(msg(2, struct.pack("<II", 1000, 0), v=2), EPROTONOSUPPORT, "version 1", "version 2")
expect_error(msg(2, b"", length=0xFFFFFFFF), EBADMSG, "at most 4096", "huge length")
expect_error(msg(2, b"\0\0"), EBADMSG, "at least 8", "short RELEASE")
expect_error(msg(2, struct.pack("<II", 1000, 1) + b"x"), EBADMSG, "unknown flags", "RELEASE flags")
expect_error(msg(2, struct.pack("<II", 1000, 0) + b"evil\x1b[2J"), EBADMSG, "control character", "escape codes")
expect_error(msg(2, struct.pack("<II", 0xFFFFFFFF, 0)), EBADMSG, "timeout", "timeout")
expect_error(msg(16), EBADMSG, "not a request", "ACCEPTED from a requester")
expect_error(msg(17, struct.pack("<Q", 1)), EBADMSG, "not a request", "RELEASED from a requester")
expect_error(msg(77), EBADMSG, "unknown message", "unknown type")
alive()
# Half messages, held open: the owner answers others meanwhile, and ends
# them after its 2 s limit.
halves = []
for i in range(8):
    s = conn(); send(s, msg(2, struct.pack("<II", 1000, 0) + b"half")[:5 + i]); halves.append(s)
t0 = time.time(); alive(); assert time.time() - t0 < 1, "a half message blocked the owner"
for s in halves:
    t, c, _ = answer(s)
    assert t is None or (t == 18 and c == ETIMEDOUT), (t, c)
# A flood: more idle connections than the owner keeps, and a burst of
# garbage, all at once.
idle = []
for i in range(200):
    try:
        idle.append(conn())
    except OSError:
        pass
for i in range(300):
    try:
        s = conn(); s.sendall(os.urandom(64)); s.close()
    except OSError:
        pass
for s in idle: s.close()
alive()
# Byte by byte: a whole RELEASE split over many sends is still one request
# -- but it is a QUERY here, so that the owner keeps the disk.
s = conn()
for b in msg(1):
    s.sendall(bytes([b])); time.sleep(0.01)
t, _, text = answer(s); assert t == 19, t
alive()
PY
kill -0 "$A" || die "the owner died"
assert_eq "$(owner_field disk.qcow2 state)" owned "state after the hostile requester"
assert_eq "$(md5sum <disk.qcow2.owner)" "$sum0" "owner record after the hostile requester"
qemu-io -c "read -P 0x33 0 1M" "nbd+unix:///?socket=$TMP/a.sock" >/dev/null ||
  die "the owner stopped serving its disk"

# A user who may not ask: even with the socket opened up to everyone, the
# owner checks the peer's uid (SO_PEERCRED).
if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
  chmod 0666 "$sock"
  chmod 0755 "$TMP" "$TMP/run"
  python3 - "$sock" <<'PY' >other.out 2>&1 || true
import os, socket, struct, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
try:  # refused at accept, perhaps before this arrives
    s.sendall(b"SLOC" + struct.pack("<HHI", 1, 2, 8) + struct.pack("<II", 1000, 0))
except (BrokenPipeError, ConnectionResetError):
    pass
print(s.recv(4096))
PY
  grep -q "uid 65534 may not ask pid $A" other.out || die "another uid was not refused: $(cat other.out)"
  kill -0 "$A" || die "the owner died"
  assert_eq "$(owner_field disk.qcow2 state)" owned "state after another uid asked"
fi

# And it still releases on a proper request.
sluice release disk.qcow2 2>rel.err || die "release after the hostile requester: $(cat rel.err)"
wait_exit "$A" 5
qemu-img check -q disk.qcow2 || die "image not clean"
echo "PASS: $TEST_NAME"
