#!/usr/bin/env bash
# Issue 5: malformed NBD input -- bad magic, unknown client flags, options
# and commands, out-of-range and oversized requests, clients vanishing
# mid-handshake and mid-request -- gets the protocol's error or a clean
# disconnect; the server keeps serving others; the image stays consistent.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require qemu-img qemu-io python3
cd "$TMP"

qemu-img create -q -f qcow2 disk.qcow2 16M
qemu-io -c "write -P 0x5a 0 1M" disk.qcow2 >/dev/null
start_server s.sock disk.qcow2

python3 - "$TMP/s.sock" <<'PY'
import socket, struct, sys
path = sys.argv[1]
NBDMAGIC, IHAVEOPT, REPMAGIC = 0x4e42444d41474943, 0x49484156454f5054, 0x3e889045565a9
REQ, SIMPLE, STRUCT = 0x25609513, 0x67446698, 0x668e33ef
ERR_UNSUP, ERR_INVALID, ERR_UNKNOWN, ERR_TOO_BIG = 0x80000001, 0x80000003, 0x80000006, 0x80000009

def connect():
    s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(path)
    hello = recv(s, 18)
    magic, opt, flags = struct.unpack(">QQH", hello)
    assert magic == NBDMAGIC and opt == IHAVEOPT, hello
    return s
def recv(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c: raise EOFError("server closed after %d/%d bytes" % (len(b), n))
        b += c
    return b
def closed(s):
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, socket.timeout):
        return True
def option(s, opt, data=b""):
    s.sendall(struct.pack(">QII", IHAVEOPT, opt, len(data)) + data)
def opt_reply(s):
    magic, opt, typ, n = struct.unpack(">QIII", recv(s, 20))
    assert magic == REPMAGIC, hex(magic)
    return opt, typ, recv(s, n)
def go(s, structured=False):
    s.sendall(struct.pack(">I", 3))           # fixed newstyle, no zeroes
    if structured:
        option(s, 8); assert opt_reply(s)[1] == 1
    option(s, 7, struct.pack(">I", 0) + struct.pack(">H", 0))
    size = None
    while True:
        opt, typ, data = opt_reply(s)
        if typ == 3 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        if typ == 1:
            return size
        assert typ < 0x80000000, hex(typ)
def request(s, typ, off, length, flags=0, data=b"", cookie=7):
    s.sendall(struct.pack(">IHHQQI", REQ, flags, typ, cookie, off, length) + data)
def simple_reply(s):
    magic, err, cookie = struct.unpack(">IIQ", recv(s, 16))
    assert magic == SIMPLE, hex(magic)
    return err

# Unknown client flags: disconnect.
s = connect(); s.sendall(struct.pack(">I", 0x80000003)); assert closed(s), "unknown client flags"
# Bad option magic: disconnect.
s = connect(); s.sendall(struct.pack(">I", 3)); s.sendall(struct.pack(">QII", 0xdeadbeef, 7, 0))
assert closed(s), "bad option magic"
# Unknown option: ERR_UNSUP, and the session goes on.
s = connect(); s.sendall(struct.pack(">I", 3)); option(s, 99, b"xyz")
assert opt_reply(s)[1] == ERR_UNSUP
# SET_META_CONTEXT before STRUCTURED_REPLY: ERR_INVALID.
option(s, 10, struct.pack(">I", 0) + struct.pack(">I", 0)); assert opt_reply(s)[1] == ERR_INVALID
# A malformed GO (name length past the payload): ERR_INVALID.
option(s, 7, struct.pack(">I", 1000) + b"\0\0"); assert opt_reply(s)[1] == ERR_INVALID
# An unknown export name: ERR_UNKNOWN.
option(s, 7, struct.pack(">I", 4) + b"nope" + struct.pack(">H", 0)); assert opt_reply(s)[1] == ERR_UNKNOWN
# An oversized option is swallowed and refused.
option(s, 6, b"\0" * (1 << 20)); assert opt_reply(s)[1] == ERR_TOO_BIG
option(s, 2); s.close()                         # ABORT
# Disconnect mid-handshake.
s = connect(); s.sendall(struct.pack(">I", 3) + struct.pack(">Q", IHAVEOPT)[:5]); s.close()

# Transmission phase, simple replies.
s = connect(); size = go(s); assert size == 16 << 20, size
request(s, 0, size - 10, 20); assert simple_reply(s) == 22, "read past the end"
request(s, 0, 0, 64 << 20); assert simple_reply(s) in (22, 75), "oversized read"
request(s, 99, 0, 0); assert simple_reply(s) == 22, "unknown command"
request(s, 0, 0, 512, flags=0x8000); assert simple_reply(s) == 22, "unknown flag"
request(s, 7, 0, 4096); assert simple_reply(s) == 22, "block status without contexts"
request(s, 0, 0, 4096); assert simple_reply(s) == 0; assert recv(s, 4096) == b"\x5a" * 4096
request(s, 1, size - 1, 2, data=b"ab"); assert simple_reply(s) == 22, "write past the end"
s.sendall(struct.pack(">IHHQQI", 0x12345678, 0, 0, 1, 0, 512)); assert closed(s), "bad request magic"
# Structured replies: an error chunk with a message.
s = connect(); go(s, structured=True)
request(s, 0, size, 1)
magic, flags, typ, cookie, n = struct.unpack(">IHHQI", recv(s, 20))
assert magic == STRUCT and typ == 32769 and flags & 1, (hex(magic), typ, flags)
err, ml = struct.unpack(">IH", recv(s, 6)); msg = recv(s, ml)
assert err == 22 and len(msg) > 0, (err, msg)
s.close()
# Disconnect mid-request: a write header promising 1 MiB, then 100 bytes.
s = connect(); go(s); request(s, 1, 0, 1 << 20, data=b"\xff" * 100); s.close()
print("malformed cases ok")
PY

# The server is alive and still serves, and the image is intact.
qemu-io -f raw -c "read -P 0x5a 0 1M" "$uri" >/dev/null || die "server stopped serving"
qemu-io -f raw -c "write -P 0x66 2M 64k" -c "read -P 0x66 2M 64k" "$uri" >/dev/null \
  || die "writes after the malformed clients failed"
stop_server
qemu-img check -q disk.qcow2 || die "image inconsistent after malformed clients"
qemu-io -c "read -P 0x5a 0 1M" disk.qcow2 >/dev/null || die "half-sent write changed the image"
echo ok
