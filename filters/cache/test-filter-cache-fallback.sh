#!/usr/bin/env bash
# The cache filter with a stand-in daemon (tests/cachesvc/fake-sluiced.py,
# which serves READs from the layer descriptors it was passed and logs
# them), so that the client's side is tested whatever sluiced does:
#  - backing-layer bytes are asked of the daemon, the writable top is not,
#    and every read through the server equals `qemu-img convert` of the
#    clone;
#  - absent at start: reads come from the image, then the client connects
#    in the background once the daemon appears and asks it again;
#  - SIGKILL of the daemon while qemu-io reads: no I/O error, right bytes;
#  - a daemon slower than the deadline: reads are right and finish in
#    about the deadline, not in the daemon's time, and its late writes
#    into the buffers it was lent never reach another request;
#  - private=on writes through and reads back what was written;
#  - a daemon that never answers INVALIDATE does not hold writes up.
. "$(dirname "$0")/../../tests/common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/cache.so" >/dev/null
FAKE=$SRCDIR/tests/cachesvc/fake-sluiced.py

head -c $((24 << 20)) /dev/urandom >base.raw
qemu-img convert -f raw -O qcow2 base.raw base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 clone.qcow2
qemu-io -f qcow2 -c "write -P 0x5a 1M 2M" -c "write -P 0x33 20M 64k" clone.qcow2 >/dev/null
qemu-img convert -O raw clone.qcow2 expect.raw

start_fake() {  # start_fake SOCK [ARGS...]
  local sock=$1; shift
  python3 "$FAKE" "$TMP/$sock" --log "$TMP/$sock.log" "$@" 2>>fake.err &
  fake_pid=$!
  cleanup_push "kill -9 $fake_pid"
  wait_for_path "$TMP/$sock"
}
start_serve() {  # start_serve NAME FILTER-ARGS
  "$SLUICE" serve --nbd "unix:$TMP/$1.nbd" --filter "$2" clone.qcow2 2>>"$1.log" &
  serve_pid=$!
  cleanup_push "kill -9 $serve_pid"
  wait_for_path "$TMP/$1.nbd"
  uri="nbd+unix:///?socket=$TMP/$1.nbd"
}
stop_serve() {
  kill -TERM "$serve_pid"; wait "$serve_pid" || die "serve exited non-zero: $(tail -3 "$1.log")"
}
check_all() {  # check_all WHAT: the whole disk through the server
  rm -f got.raw
  qemu-img convert -f raw -O raw "$uri" got.raw || die "$1: read failed"
  cmp -s got.raw expect.raw || die "$1: bytes differ from qemu-img convert of the clone"
}
logged() { [[ -f $1 ]] && wc -l <"$1" || echo 0; }

# --- the daemon serves the backing layer, never the writable top -------------
start_fake a.sock
start_serve a "cache:socket=$TMP/a.sock,deadline-ms=10000"
check_all "with the daemon"
stop_serve a
kill -9 "$fake_pid"
n=$(logged a.sock.log)
(( n > 0 )) || die "nothing was asked of the daemon"
# Every range asked lies in the base's data clusters (the top's are not
# registered: only one layer was, handle 1), and they cover the 21 MiB of the
# disk that the base holds.
python3 - a.sock.log <<'PY' || die "the daemon was asked for the wrong bytes"
import sys
total = 0
for line in open(sys.argv[1]):
    _, layer, off, n = line.split()
    assert layer == "1", line
    total += int(n)
assert total >= 21 << 20, total
PY
grep -q "served by sluiced" a.log || die "no cache summary in the server log"

# --- absent at start, then appears: reconnect in the background ---------------
start_serve b "cache:socket=$TMP/b.sock,deadline-ms=10000"
check_all "without a daemon"
start_fake b.sock
for _ in $(seq 100); do
  check_all "after the daemon appeared"
  (( $(logged b.sock.log) > 0 )) && break
  sleep 0.1
done
(( $(logged b.sock.log) > 0 )) || die "the client never reconnected to the daemon"
# --- SIGKILL of the daemon while reading: no I/O error ---------------------------
qemu-io -f raw -c "read -P 0x5a 1M 2M" -c "read 0 24M" "$uri" >/dev/null &
reader=$!
sleep 0.2
kill -9 "$fake_pid"
wait "$reader" || die "a read failed when the daemon was killed"
check_all "after the daemon was killed"
stop_serve b

# --- slower than the deadline ---------------------------------------------------
start_fake c.sock --delay-ms 10000
start_serve c "cache:socket=$TMP/c.sock,deadline-ms=50"
t0=$(date +%s%N)
check_all "with a slow daemon"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "whole disk with a 10 s daemon and a 50 ms deadline: $ms ms"
(( ms < 8000 )) || die "reads waited for the slow daemon ($ms ms)"
(( $(logged c.sock.log) > 0 )) || die "the slow daemon was never asked"
# Its replies come 10 s late, and it writes into the buffers it was given
# then (the export's own, zero-copy): reads going on meanwhile must not see
# those bytes, i.e. a buffer lent to the daemon is not reused before its
# reply came.
end=$(( $(date +%s) + 13 ))
while (( $(date +%s) < end )); do check_all "while a slow daemon's late replies land"; done
stop_serve c
grep -Eq "[1-9][0-9]* timeouts" c.log || die "no timeout counted: $(cat c.log)"
kill -9 "$fake_pid"

# --- private=on writes through ----------------------------------------------------
start_fake d.sock
start_serve d "cache:socket=$TMP/d.sock,private=on,deadline-ms=10000"
qemu-io -f raw -c "write -P 0x44 4M 1M" -c "read -P 0x44 4M 1M" -c "write -z 1M 64k" \
  -c "read -P 0 1M 64k" "$uri" >/dev/null || die "private=on: write/read back failed"
qemu-io -f raw -c "write -P 0x44 4M 1M" -c "write -z 1M 64k" expect.raw >/dev/null
check_all "private=on after writes"
stop_serve d
qemu-img compare -q -f qcow2 -F raw clone.qcow2 expect.raw || die "private=on: image differs"

# --- private=on with a daemon that never answers INVALIDATE ------------------------
# A write must not wait for it (once at most its short deadline, then the
# connection, and with it the private namespace, is dropped), and what is
# read afterwards is what was written.
start_fake e.sock --hang-invalidate
start_serve e "cache:socket=$TMP/e.sock,private=on,deadline-ms=10000"
check_all "private=on before writes" # connected, layers registered
cmds=()
for i in $(seq 0 19); do cmds+=(-c "write -P 0x$((i + 16)) $((8192 + 256 * i))k 64k"); done
t0=$(date +%s%N)
qemu-io -f raw "${cmds[@]}" "$uri" >/dev/null || die "writes with a stuck daemon failed"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
echo "20 writes to a private layer, daemon stuck on INVALIDATE: $ms ms"
grep -q invalidate e.sock.log || die "the stuck daemon was never asked to invalidate"
(( ms < 6000 )) || die "writes waited for a daemon that does not answer INVALIDATE ($ms ms)"
qemu-io -f raw "${cmds[@]}" expect.raw >/dev/null
check_all "private=on after writes to a stuck daemon"
stop_serve e
kill -9 "$fake_pid"

# --- bad parameters ---------------------------------------------------------------
expect_fail "mode=fast: expected shared or off" \
  "$SLUICE" serve --nbd "unix:$TMP/x.nbd" --filter cache:mode=fast clone.qcow2
expect_fail "unknown parameter 'size'" \
  "$SLUICE" serve --nbd "unix:$TMP/x.nbd" --filter cache:size=1 clone.qcow2
echo PASS
