#!/usr/bin/env python3
"""A minimal NBD client for the RBD crash test (tests/rbd).

Usage: nbd-writer.py SOCKET SERVER_PID BLOCKS KILL_AFTER

Writes 4 KiB blocks, 8 at a time, each with FUA, to random block numbers
below BLOCKS; block content is (sequence number, block number) repeated,
so a reader can tell which write a block holds.  Each acknowledged write
is printed as "block seq" and flushed at once.  After KILL_AFTER
acknowledgements it sends SIGKILL to SERVER_PID while writes are in
flight and keeps reading replies until the connection drops."""
import os, random, signal, socket, struct, sys

sock, pid, blocks, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_UNIX)
s.settimeout(60)
s.connect(sock)


def recv(n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


MAGIC = 0x49484156454F5054
assert struct.unpack(">QQH", recv(18))[1] == MAGIC
s.sendall(struct.pack(">I", 3))  # fixed newstyle, no zeroes
s.sendall(struct.pack(">QII", MAGIC, 7, 6) + struct.pack(">IH", 0, 0))  # NBD_OPT_GO ""
while True:
    magic, opt, typ, n = struct.unpack(">QIII", recv(20))
    recv(n)
    assert typ < 0x80000000, hex(typ)
    if typ == 1:
        break
BS = 4096
rng = random.Random(16)
inflight = {}
seq = 0
acked = 0
killed = False


def send_one():
    global seq
    seq += 1
    blk = rng.randrange(blocks)
    inflight[seq] = blk
    data = struct.pack("<QQ", seq, blk) * (BS // 16)
    # NBD_CMD_WRITE (1) with NBD_CMD_FLAG_FUA (1)
    s.sendall(struct.pack(">IHHQQI", 0x25609513, 1, 1, seq, blk * BS, BS) + data)


try:
    for _ in range(8):
        send_one()
    while True:
        magic, err, cookie = struct.unpack(">IIQ", recv(16))
        assert magic == 0x67446698 and err == 0, "write %d failed: %d" % (cookie, err)
        print(inflight.pop(cookie), cookie, flush=True)
        acked += 1
        if acked >= kill_after and not killed:
            os.kill(pid, signal.SIGKILL)
            killed = True
        if not killed:
            send_one()
except (EOFError, ConnectionResetError, BrokenPipeError):
    pass
assert killed, "connection dropped before the kill"
