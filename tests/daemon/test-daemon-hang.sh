#!/usr/bin/env bash
# A layer on a file system whose server stops answering (a FUSE file
# system the client controls: open, fstat, read and close all wait for
# it) must not stop the daemon: registration runs off the event loop, so
# while two registrations of one client hang, another client is still
# served, and a third registration on the hung connection is refused at
# once (EAGAIN: per-connection limit) instead of queueing behind them.
# Once the server answers again, the hung registrations complete and the
# daemon stops cleanly.
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}" "${HANGFS:?}"
require_root

head -c 8M /dev/urandom >"$TMP/a.img"
ctl=$TMP/hang
mount_hangfs "$TMP/mnt" "$ctl"

sock=$TMP/sluiced.sock
"$SLUICED" --socket "$sock" --memory 8M --check-on-exit 2>"$TMP/log" &
pid=$!
cleanup_push "kill $pid"
wait_for_path "$sock"

coproc PROBEP { timeout 120 "$PROBE" "$sock" hang-register "$TMP/mnt/disk.img" "$TMP/a.img" 2>&1; }
ppid=$PROBEP_PID
cleanup_push "kill $ppid"
read -r -u "${PROBEP[0]}" line || die "probe ended early"
[[ $line == opened ]] || die "probe: $line"
touch "$ctl" # from now on the FUSE server hangs
while read -r -u "${PROBEP[0]}" line; do
  [[ $line == hanging ]] && break
  echo "probe: $line" >&2
done
[[ $line == hanging ]] || die "the probe failed while the FUSE server hung"
# the loop still answers (a fresh client's STATS) and it is not spinning
"$PROBE" "$sock" stats-check >/dev/null || die "STATS failed while a registration hung"
rm -f "$ctl"
rc=0
wait "$ppid" || rc=$?
[[ $rc -eq 0 ]] || die "hang-register probe exited $rc: $(tail -5 "$TMP/log")"
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc -eq 0 ]] || die "sluiced exited $rc after SIGTERM: $(tail -5 "$TMP/log")"
grep -q "cache invariants hold" "$TMP/log" || die "no invariant check at exit"
echo ok
