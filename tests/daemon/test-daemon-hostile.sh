#!/usr/bin/env bash
# Issue 13, acceptance 3: hostile clients.  sluiced-probe speaks the
# protocol and tries handles that are not memfds, unsealed, shrunk, out of
# range or with the wrong rights, forged layer and handle ids, a layer file
# it then modifies (bytes compared with the file: never stale), malformed
# messages, abrupt disconnects mid-fill and a flood of requests; after each,
# a well-behaved client must still be served the right bytes.  Then a
# client whose credentials are not allowed is refused at connect, with the
# reason logged, and the daemon stops cleanly on SIGTERM.
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}"
require_root

head -c 8M /dev/urandom >"$TMP/a.img"
head -c 24M /dev/urandom >"$TMP/b.img"
sock=$TMP/sluiced.sock
"$SLUICED" --socket "$sock" --memory 8M --block-size 64K --check-on-exit \
  2>"$TMP/log" &
pid=$!
cleanup_push "kill $pid"
wait_for_path "$sock"

timeout 300 "$PROBE" "$sock" hostile "$TMP/a.img" "$TMP/b.img" "$TMP" \
  || die "hostile cases failed (daemon log: $(tail -5 "$TMP/log"))"
kill -0 $pid || die "sluiced died"

# A user outside the allow lists: the socket's mode would keep it out, so
# open it up to see the daemon's own check refuse (and log) the client.
chmod 0666 "$sock"
chmod 0755 "$TMP" # (only the socket itself, never the files, is opened up)
if setpriv --reuid=65534 --regid=65534 --clear-groups \
     "$PROBE" "$sock" stats-check >"$TMP/nobody.out" 2>&1; then
  die "a client that is neither root nor allowed was served"
fi
grep -q "refused client pid [0-9]* uid 65534" "$TMP/log" || die "refusal not logged"
# ... and one named in --allow-user is served (a second daemon)
sock2=$TMP/allow.sock
"$SLUICED" --socket "$sock2" --memory 1M --allow-user 65534 --quiet 2>"$TMP/log2" &
pid2=$!
cleanup_push "kill $pid2"
wait_for_path "$sock2"
chmod 0666 "$sock2"
setpriv --reuid=65534 --regid=65534 --clear-groups "$PROBE" "$sock2" stats-check >/dev/null \
  || die "an --allow-user client was refused: $(cat "$TMP/log2")"
kill -TERM $pid2
wait $pid2 || die "second sluiced exited $?"

"$PROBE" "$sock" stats-check >"$TMP/stats" || die "stats contradict: $(cat "$TMP/stats")"
kill -TERM $pid
rc=0
wait $pid || rc=$?
[[ $rc -eq 0 ]] || die "sluiced exited $rc after SIGTERM: $(tail -5 "$TMP/log")"
grep -q "cache invariants hold" "$TMP/log" || die "no invariant check at exit"
echo "ok"
