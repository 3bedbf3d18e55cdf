#!/bin/bash
# Issue 16: sluice serve rbd:... keeps every acknowledged write.
#   - fio's nbd engine writes and verifies (crc32c) through the server;
#   - the shared writer (tests/common/nbd-writer.py) sends FUA writes,
#     records each acknowledgement, and SIGKILLs the server while writes
#     are in flight; a new server (which must get the RBD exclusive lock of
#     the dead one) then serves every acknowledged write's data: for each
#     block the last acknowledged write, or a later one that was in flight.
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
writer=$SRCDIR/tests/common/nbd-writer.py
python3 "$writer" write "$TMP/b.sock" acked.json --size $((4 << 20)) --depth 8 --fua \
  --kill "$spid" --kill-after 300 || die "writer failed"
wait "$spid" 2>/dev/null || true
n=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["acknowledged"])' acked.json)
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
python3 "$writer" verify "$TMP/c.sock" acked.json || die "an acknowledged write was lost"
echo "PASS: $TEST_NAME ($n acknowledged writes)"
