#!/usr/bin/env bash
# Issue 13, acceptance 4: concurrent clients against a small cache (so that
# fills, evictions and hits race all the time) over three layer files; every
# byte each client receives is compared with the file.  At SIGTERM the
# daemon checks the cache's invariants once idle (--check-on-exit: every
# valid slot resident in twophase under its key, resident counts per layer
# and in total equal to the valid slots, no reader or fill left) and exits
# 3 if one fails.  In the concurrency suite this runs against the
# ThreadSanitizer build, where a race makes the daemon exit 66.
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}"

for f in a b c; do head -c 3M /dev/urandom >"$TMP/$f.img"; done
sock=$TMP/sluiced.sock
"$SLUICED" --socket "$sock" --memory 1M --block-size 4K --workers 3 --max-sections 16 \
  --quiet --check-on-exit 2>"$TMP/log" &
pid=$!
cleanup_push "kill $pid"
wait_for_path "$sock"
[[ $(stat -c %a "$sock") == 660 ]] || die "socket mode $(stat -c %a "$sock"), want 660"

timeout 300 "$PROBE" "$sock" stress "$TMP/a.img" "$TMP/b.img" "$TMP/c.img" -- 8 6 \
  >"$TMP/out" 2>&1 || die "stress: $(tail -5 "$TMP/out")"
cat "$TMP/out"
"$PROBE" "$sock" stats-check || die "stats contradict each other"
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc -eq 0 ]] || die "sluiced exited $rc: $(tail -5 "$TMP/log")"
grep -q "cache invariants hold" "$TMP/log" || die "no invariant check"
[[ ! -e $sock ]] || die "socket left behind after SIGTERM"
echo "ok"
