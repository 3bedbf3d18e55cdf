#!/bin/bash
# Issue 16: SIGTERM to `sluice serve rbd:...` after the cluster is gone.
# Ceph waits for an OSD for ever by default, so closing the image (flush,
# releasing the exclusive lock, unwatching) would hang the process.  sluice
# sets bounded timeouts (OSD 30 s, monitor 30 s) that the user's
# configuration overrides, and at close asks the cluster one bounded
# question before the requests that would each wait out a timeout:
#   - two servers (one with the defaults, one whose name sets
#     rados_osd_op_timeout=4) with written data, the monitor and the OSD
#     killed by pid, SIGTERM to both: each exits in bounded time, non-zero,
#     saying that the cluster does not answer;
#   - the one with the shorter timeout exits sooner (the user's setting is
#     honoured).
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require qemu-io
ceph_start
cd "$TMP"

rbd create --size 64M "$POOL/a"
rbd create --size 64M "$POOL/b"
start() { # NAME SOCK -> pid
  "$SLUICE" serve -f raw --nbd "unix:$2" "$1" >/dev/null 2>"$(basename "$2").log" &
  echo $!
}
pa=$(start "rbd:$POOL/a" "$TMP/a.sock")
cleanup_push "kill -KILL $pa 2>/dev/null"
pb=$(start "rbd:$POOL/b:rados_osd_op_timeout=4" "$TMP/b.sock")
cleanup_push "kill -KILL $pb 2>/dev/null"
wait_for_path "$TMP/a.sock" 60
wait_for_path "$TMP/b.sock" 60
for s in a b; do
  qemu-io -f raw -c 'write -P 7 0 1M' -c flush -c 'write -P 8 1M 1M' \
    "nbd+unix:///?socket=$TMP/$s.sock" >/dev/null || die "writing to $s"
done

# The cluster goes away (by pid, as the cluster script records them).
kill -KILL "$(cat "$TMP/ceph/osd.pid")" "$(cat "$TMP/ceph/mon.pid")"
sleep 1
t0=$(date +%s)
kill -TERM "$pa" "$pb"
ta= tb=
for ((i = 0; i < 1200; i++)); do # 120 s at most
  [[ -z $ta ]] && ! kill -0 "$pa" 2>/dev/null && ta=$(($(date +%s) - t0))
  [[ -z $tb ]] && ! kill -0 "$pb" 2>/dev/null && tb=$(($(date +%s) - t0))
  [[ -n $ta && -n $tb ]] && break
  sleep 0.1
done
[[ -n $ta ]] || die "serve (default timeouts) still runs 120 s after SIGTERM: $(cat a.sock.log)"
[[ -n $tb ]] || die "serve (rados_osd_op_timeout=4) still runs 120 s after SIGTERM: $(cat b.sock.log)"
wait "$pa" && die "serve exited 0 although its image could not be closed: $(cat a.sock.log)"
wait "$pb" && die "serve exited 0 although its image could not be closed: $(cat b.sock.log)"
for s in a b; do
  grep -q "does not answer\|timed out" "$s.sock.log" ||
    die "no clear message from serve $s: $(cat "$s.sock.log")"
done
echo "exit after SIGTERM with the cluster gone: ${ta} s (defaults), ${tb} s (OSD timeout 4 s)"
((tb < ta)) || die "the user's rados_osd_op_timeout=4 was not honoured ($tb s against $ta s)"
((tb <= 20)) || die "with rados_osd_op_timeout=4 serve took $tb s to exit"
echo "PASS: $TEST_NAME"
