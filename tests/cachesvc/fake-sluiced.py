#!/usr/bin/env python3
"""A stand-in for sluiced that speaks protocol v1 (docs/sluiced-protocol.md)
just enough for the client tests: HELLO, REGISTER_LAYER, REGISTER_HANDLE,
UNREGISTER_*, READ (pread from the passed layer descriptor into the memfd),
INVALIDATE, DROP.  It caches nothing.  What it adds over the real daemon is
misbehaviour on demand, which the cache filter must survive:

  fake-sluiced.py SOCKET [--delay-ms N] [--hang-invalidate] [--log FILE]

--delay-ms holds every READ reply back (a daemon slower than the client's
deadline).  --hang-invalidate never answers INVALIDATE (a daemon stuck
where a write to a private layer waits for it); the log gets a line
"invalidate" for each.  --log appends one line per READ entry ("read LAYER OFF LEN"),
so a test can see which bytes were asked of the daemon.  SIGTERM ends it.
"""
import mmap, os, select, signal, socket, struct, sys, threading, time

MAGIC = 0x44434C53
HDR = struct.Struct("=IHHIiQ")

def main():
    path = sys.argv[1]
    delay = 0.0
    log = None
    hang_inval = False
    args = sys.argv[2:]
    while args:
        if args[0] == "--delay-ms":
            delay = float(args[1]) / 1000; args = args[2:]
        elif args[0] == "--hang-invalidate":
            hang_inval = True; args = args[1:]
        elif args[0] == "--log":
            log = open(args[1], "a", buffering=1); args = args[2:]
        else:
            sys.exit("fake-sluiced: unknown option " + args[0])
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(64)
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve, args=(conn, delay, log, hang_inval), daemon=True).start()

def serve(conn, delay, log, hang_inval=False):
    buf = b""
    fds = []
    layers, handles = {}, {}
    version = 1
    lock = threading.Lock()
    def reply(op, ident, status, body=b""):
        with lock:
            conn.sendall(HDR.pack(MAGIC, version, op | 0x8000, HDR.size + len(body), status, ident) + body)
    try:
        while True:
            data, anc, _, _ = conn.recvmsg(1 << 16, socket.CMSG_SPACE(4 * 4))
            if not data:
                return
            for level, typ, cdata in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds += list(struct.unpack("=%di" % (len(cdata) // 4), cdata[: len(cdata) // 4 * 4]))
            buf += data
            while len(buf) >= HDR.size:
                magic, ver, op, length, status, ident = HDR.unpack_from(buf)
                if magic != MAGIC or length < HDR.size or length > 65536:
                    return
                if len(buf) < length:
                    break
                body, buf = buf[HDR.size:length], buf[length:]
                if op == 1:
                    reply(1, ident, 0, struct.pack("=HHIIIQII", 1, 0, 65536, 2 << 20, 1024, 1024, 65536, 0))
                elif op == 2:
                    fd = fds.pop(0)
                    h = len(layers) + 1
                    layers[h] = fd
                    reply(2, ident, 0, struct.pack("=IIQ", h, 0, os.fstat(fd).st_size))
                elif op == 4:
                    fd = fds.pop(0)
                    off, length_, rights, _ = struct.unpack("=QQII", body)
                    h = len(handles) + 1
                    handles[h] = (mmap.mmap(fd, off + length_, mmap.MAP_SHARED, mmap.PROT_WRITE | mmap.PROT_READ), off)
                    os.close(fd)
                    reply(4, ident, 0, struct.pack("=II", h, 0))
                elif op == 7 and hang_inval:
                    if log:
                        log.write("invalidate\n")
                elif op in (3, 5, 7, 9):
                    reply(op, ident, 0)
                elif op == 6:
                    count, _ = struct.unpack_from("=II", body)
                    res = []
                    for i in range(count):
                        layer, handle, foff, hoff, n, _ = struct.unpack_from("=IIQQII", body, 8 + 32 * i)
                        if log:
                            log.write("read %d %d %d\n" % (layer, foff, n))
                        if layer not in layers or handle not in handles:
                            res.append(struct.pack("=iI", -9, 0)); continue
                        data_ = os.pread(layers[layer], n, foff).ljust(n, b"\0")
                        m, base = handles[handle]
                        m[base + hoff: base + hoff + n] = data_
                        res.append(struct.pack("=iI", 0, 0))
                    msg = struct.pack("=II", count, 0) + b"".join(res)
                    if delay:
                        threading.Timer(delay, reply, (6, ident, 0, msg)).start()
                    else:
                        reply(6, ident, 0, msg)
                else:
                    return
    except (ConnectionError, OSError):
        return
    finally:
        conn.close()

main()
