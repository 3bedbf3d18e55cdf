#!/usr/bin/env python3
"""A write load of acknowledged writes, and its checker.

Used by the ownership tests (tests/owner), the RBD crash test (tests/rbd)
and bench/handoff.sh.  It speaks
NBD (fixed newstyle, simple replies) on a UNIX socket path that every owner
of the disk serves in turn (`sluice serve --take-over --nbd unix:PATH`):
when a connection ends -- the owner released the disk -- it reconnects, as
fast as it can, to whoever listens there next.

  nbd-writer.py write SOCK LOG --size BYTES [--depth N] [--stop FILE]
                [--seconds S] [--idle] [--fua] [--kill PID --kill-after N]
      4 KiB writes at random 4 KiB-aligned offsets, N in flight, until FILE
      exists (or S seconds pass).  Each block carries its offset and a
      sequence number, and is otherwise filled from them, so any block read
      back names the write that produced it.  No two writes to one offset
      are in flight at once.  --fua sends every write with FUA.  --kill
      sends SIGKILL to PID (the server) once N writes are acknowledged,
      with writes in flight, issues no more, reads replies until the
      connection drops, and ends (no reconnection): the crash test.
      --idle issues one 4 KiB read per connection
      instead of writes (the idle-disk handoff measurement).  On exit LOG
      holds, per offset, the last acknowledged sequence number and those
      issued after it without an answer (they may or may not have landed),
      and per connection the monotonic (and wall-clock) time of its first
      reply.  --status
      FILE holds the number of connections that got a reply so far.
  nbd-writer.py verify SOCK LOG
      Read every offset LOG names through SOCK: each must hold its last
      acknowledged write or one issued after it.  Exit 1 naming the first
      offsets that do not.
  nbd-writer.py fio-verify SOCK LATLOG
      The same for fio: LATLOG is a completion log of fio's
      (--write_lat_log with --log_offset=1: one line per completed I/O, so
      every write line is a write fio saw acknowledged).  Each written
      block must hold fio's verify header for its offset with correct
      crc32c sums (--verify=crc32c).
"""
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

NBDMAGIC, IHAVEOPT, REPMAGIC = 0x4E42444D41474943, 0x49484156454F5054, 0x3E889045565A9
REQ, SIMPLE = 0x25609513, 0x67446698
CMD_READ, CMD_WRITE, CMD_DISC = 0, 1, 2
BS = 4096
STAMP = b"SLWRITE1"


def block(off, seq):
    head = STAMP + struct.pack("<QQ", off, seq)
    fill = struct.pack("<Q", (off * 0x9E3779B97F4A7C15 ^ seq) & (2**64 - 1))
    return head + fill * ((BS - len(head)) // 8)


def decode(data):
    if len(data) != BS or data[:8] != STAMP:
        return None
    off, seq = struct.unpack("<QQ", data[8:24])
    return (off, seq) if data == block(off, seq) else None


def recv_exact(s, n):
    b = bytearray()
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("connection closed")
        b += c
    return bytes(b)


def handshake(path, timeout=5):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    magic, opt, _ = struct.unpack(">QQH", recv_exact(s, 18))
    if magic != NBDMAGIC or opt != IHAVEOPT:
        raise EOFError("not an NBD server")
    s.sendall(struct.pack(">I", 3))
    s.sendall(struct.pack(">QII", IHAVEOPT, 7, 6) + struct.pack(">IH", 0, 0))
    size = None
    while True:
        magic, _, typ, n = struct.unpack(">QIII", recv_exact(s, 20))
        data = recv_exact(s, n)
        if magic != REPMAGIC:
            raise EOFError("bad option reply")
        if typ == 3 and struct.unpack(">H", data[:2])[0] == 0:
            size = struct.unpack(">Q", data[2:10])[0]
        elif typ == 1:
            return s, size
        elif typ >= 0x80000000:
            raise EOFError("option error 0x%x" % typ)


def connect_retry(path, stop):
    """Connect to whoever serves PATH next; None if told to stop."""
    while not stop():
        try:
            return handshake(path)
        except (OSError, EOFError):
            time.sleep(0.0002)
    return None


def write_load(path, logpath, size, depth, stopfile, seconds, idle, status,
               fua=False, kill_pid=None, kill_after=0):
    nblocks = size // BS
    acked = {}          # offset -> last acknowledged seq
    unsure = {}         # offset -> [seqs issued after it, never answered]
    conns = []          # [connect monotonic ns, first reply monotonic ns]
    seq = 0
    end = time.monotonic() + seconds if seconds else None
    errors = 0
    nacked = 0
    killed = False
    wflags = 1 if fua else 0   # NBD_CMD_FLAG_FUA

    def stop():
        return (stopfile and os.path.exists(stopfile)) or (end and time.monotonic() > end)

    while not stop():
        got = connect_retry(path, stop)
        if not got:
            break
        s, _ = got
        conns.append([time.monotonic_ns(), None, None])
        s.setblocking(False)
        inflight = {}   # cookie -> (offset, seq, kind)
        busy = set()
        rbuf = bytearray()
        sbuf = bytearray()
        cookie = 0
        alive = True
        idle_done = False
        while alive:
            stopping = stop() or killed
            # Issue.
            while not stopping and len(inflight) < depth and len(sbuf) < (1 << 20):
                if idle:
                    if idle_done or inflight:
                        break
                    cookie += 1
                    inflight[cookie] = (0, 0, CMD_READ)
                    sbuf += struct.pack(">IHHQQI", REQ, 0, CMD_READ, cookie, 0, BS)
                    idle_done = True
                    break
                off = random.randrange(nblocks) * BS
                if off in busy:
                    continue
                seq += 1
                cookie += 1
                busy.add(off)
                inflight[cookie] = (off, seq, CMD_WRITE)
                sbuf += struct.pack(">IHHQQI", REQ, wflags, CMD_WRITE, cookie, off, BS) + \
                    block(off, seq)
            if stopping and not inflight:
                try:
                    s.setblocking(True)
                    s.sendall(struct.pack(">IHHQQI", REQ, 0, CMD_DISC, 0, 0, 0))
                except OSError:
                    pass
                break
            r, w, _ = select.select([s], [s] if sbuf else [], [], 0.05)
            try:
                if w:
                    n = s.send(sbuf)
                    del sbuf[:n]
                if r:
                    c = s.recv(1 << 20)
                    if not c:
                        raise EOFError
                    rbuf += c
            except (OSError, EOFError):
                alive = False
            # Replies.
            while len(rbuf) >= 16:
                magic, err, ck = struct.unpack(">IIQ", rbuf[:16])
                if magic != SIMPLE or ck not in inflight:
                    print("nbd-writer: bad reply", file=sys.stderr)
                    sys.exit(2)
                off, sq, kind = inflight[ck]
                need = 16 + (BS if kind == CMD_READ and err == 0 else 0)
                if len(rbuf) < need:
                    break
                del rbuf[:need]
                del inflight[ck]
                if conns[-1][1] is None:
                    conns[-1][1] = time.monotonic_ns()
                    conns[-1][2] = time.time_ns()
                    if status:
                        with open(status + ".tmp", "w") as f:
                            f.write("%d\n" % len(conns))
                        os.replace(status + ".tmp", status)
                if kind == CMD_WRITE:
                    busy.discard(off)
                    if err:
                        errors += 1
                        unsure.setdefault(off, []).append(sq)
                    else:
                        acked[off] = sq
                        unsure.pop(off, None)
                        nacked += 1
                        if kill_pid and not killed and nacked >= kill_after:
                            os.kill(kill_pid, signal.SIGKILL)
                            killed = True
                        # Earlier unanswered writes to OFF are overwritten
                        # by this acknowledged one only if they landed
                        # before it: forget them (this one is the floor).
        # The connection ended: what was in flight may or may not be on disk.
        for off, sq, kind in inflight.values():
            if kind == CMD_WRITE:
                unsure.setdefault(off, []).append(sq)
        s.close()
        if killed:
            break
    with open(logpath, "w") as f:
        json.dump({"acked": acked, "unsure": unsure, "connections": conns,
                   "writes": seq, "errors": errors, "acknowledged": nacked}, f)
    print("nbd-writer: %d writes issued, %d offsets acknowledged, %d connections, "
          "%d error replies" % (seq, len(acked), len(conns), errors), file=sys.stderr)
    if kill_pid and not killed:
        print("nbd-writer: the connection ended before %d acknowledgements" % kill_after,
              file=sys.stderr)
        return 1
    return 0


def read_each(path, ranges, check):
    """Read each (offset, length) of RANGES, in order, on one connection to
    the NBD server at PATH; CHECK(offset, data) says what is wrong with a
    block, or None.  The list of what was wrong, as "OFFSET: why"."""
    s, _ = handshake(path, timeout=30)
    s.settimeout(30)
    bad = []
    for i, (off, n) in enumerate(ranges):
        s.sendall(struct.pack(">IHHQQI", REQ, 0, CMD_READ, i, off, n))
        magic, err, _ = struct.unpack(">IIQ", recv_exact(s, 16))
        if magic != SIMPLE or err:
            bad.append("%d: read error %d" % (off, err))
            continue
        why = check(off, recv_exact(s, n))
        if why:
            bad.append("%d: %s" % (off, why))
    s.sendall(struct.pack(">IHHQQI", REQ, 0, CMD_DISC, 0, 0, 0))
    s.close()
    return bad


def verify(path, logpath):
    log = json.load(open(logpath))
    acked = {int(k): v for k, v in log["acked"].items()}
    unsure = {int(k): v for k, v in log["unsure"].items()}

    def check(off, data):
        got = decode(data)
        floor = acked.get(off, 0)
        ok = {floor} | {q for q in unsure.get(off, []) if q > floor}
        if off not in acked:
            ok.add(0)
        if got is None:
            if off in acked:
                return "holds no write of this test (acknowledged seq %d)" % floor
        elif got[0] != off or got[1] not in ok:
            return "holds seq %d of offset %d, expected one of %s" % (got[1], got[0],
                                                                      sorted(ok)[:5])
        return None

    offs = sorted(set(acked) | set(unsure))
    bad = read_each(path, [(off, BS) for off in offs], check)
    if bad:
        print("nbd-writer: %d of %d offsets lost an acknowledged write: %s"
              % (len(bad), len(offs), "; ".join(bad[:5])), file=sys.stderr)
        return 1
    print("nbd-writer: all %d acknowledged offsets read back" % len(acked), file=sys.stderr)
    return 0


_CRC_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def fio_crc32c(data):
    """fio's crc32c: Castagnoli, initial ~0, no final inversion."""
    crc = 0xFFFFFFFF
    for x in data:
        crc = _CRC_TABLE[(crc ^ x) & 0xFF] ^ (crc >> 8)
    return crc


def fio_block_ok(data, off):
    """fio's verify header (verify.h: magic 0xacca, type, len, seed, offset,
    time, thread, numberio, header crc32c over the first 36 bytes), then
    the crc32c of the data after the 44-byte header."""
    if len(data) < 44:
        return "short block"
    magic, _, ln, _, hoff, _, _, _, _, hcrc = struct.unpack("<HHIQQIIHHI", data[:40])
    if magic != 0xACCA:
        return "no fio header (magic 0x%04x)" % magic
    if hoff != off or ln != len(data):
        return "header of offset %d, length %d" % (hoff, ln)
    if fio_crc32c(data[:36]) != hcrc:
        return "header crc32c mismatch"
    if fio_crc32c(data[44:]) != struct.unpack("<I", data[40:44])[0]:
        return "data crc32c mismatch"
    return None


def fio_verify(path, latlog):
    writes = {}
    for line in open(latlog):
        f = [x.strip() for x in line.split(",")]
        if len(f) >= 5 and f[2] == "1":
            writes[int(f[4])] = int(f[3])
    if not writes:
        print("nbd-writer: %s logs no completed write" % latlog, file=sys.stderr)
        return 1
    bad = read_each(path, sorted(writes.items()), lambda off, data: fio_block_ok(data, off))
    if bad:
        print("nbd-writer: %d of %d writes fio saw acknowledged are lost: %s"
              % (len(bad), len(writes), "; ".join(bad[:5])), file=sys.stderr)
        return 1
    print("nbd-writer: all %d writes fio saw acknowledged read back" % len(writes),
          file=sys.stderr)
    return 0


def main(argv):
    import argparse
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["write", "verify", "fio-verify"])
    p.add_argument("sock")
    p.add_argument("log")
    p.add_argument("--size", type=int, default=64 << 20)
    p.add_argument("--depth", type=int, default=32)
    p.add_argument("--stop")
    p.add_argument("--seconds", type=float)
    p.add_argument("--idle", action="store_true")
    p.add_argument("--status")
    p.add_argument("--fua", action="store_true")
    p.add_argument("--kill", type=int)
    p.add_argument("--kill-after", type=int, default=100)
    a = p.parse_args(argv)
    if a.mode == "write":
        return write_load(a.sock, a.log, a.size, a.depth, a.stop, a.seconds, a.idle, a.status,
                          a.fua, a.kill, a.kill_after)
    if a.mode == "fio-verify":
        return fio_verify(a.sock, a.log)
    return verify(a.sock, a.log)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
