#!/usr/bin/env bash
# One READ's misses must not take every worker: another client's miss,
# sent while a READ of many misses is being filled, gets a worker at once
# instead of waiting for that whole READ.  The layer lives on hangfs with
# a delay on every read; sluiced has 4 workers and 16K blocks.  Client A
# sends one READ of 32 uncached blocks (with all 4 workers: 8 rounds of
# fills, without a cap on its share); 100 ms later client B asks for one
# other uncached block: it must be served in about one fill's time, well
# before A's READ (the workers A leaves free serve it).
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}" "${HANGFS:?}"
require_root

delay=150
mount_hangfs "$TMP/mnt" "$TMP/no-hang" "$delay"

sock=$TMP/sluiced.sock
"$SLUICED" --socket "$sock" --memory 8M --block-size 16K --workers 4 2>"$TMP/log" &
pid=$!
cleanup_push "kill $pid"
wait_for_path "$sock"

# One entry, block 60: what one fill costs here (at least the delay).
one=$("$PROBE" "$sock" read-many "$TMP/mnt/disk.img" $((60 << 14)) 1 16384) ||
  die "one-entry READ failed: $(tail -3 "$TMP/log")"
(( one >= delay )) || die "one fill took $one ms: the file system's $delay ms delay did not apply"
# A: blocks 0..31 in one READ, in the background.
"$PROBE" "$sock" read-many "$TMP/mnt/disk.img" 0 32 16384 >"$TMP/a.ms" 2>"$TMP/a.err" &
apid=$!
cleanup_push "kill $apid"
sleep 0.1
# B: block 40, from another connection, while A's fills run.
b=$("$PROBE" "$sock" read-many "$TMP/mnt/disk.img" $((40 << 14)) 1 16384) ||
  die "B's READ failed: $(tail -3 "$TMP/log")"
wait "$apid" || die "A's READ of 32 misses failed: $(cat "$TMP/a.err")"
a=$(cat "$TMP/a.ms")
(( a >= 4 * delay )) || die "A's 32 fills took only $a ms: the delay did not apply to them"
(( b < 2 * one + delay )) ||
  die "one miss took $b ms behind a READ of 32 misses ($a ms; one fill alone: $one ms): that READ held every worker"
echo "ok (one miss: $one ms alone, $b ms beside a READ of 32 misses that took $a ms)"
