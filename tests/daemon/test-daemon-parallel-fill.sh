#!/usr/bin/env bash
# The misses of one READ are filled in parallel: a client that puts the
# reads of several requests in one message (the cache filter does, for a
# batch of guest reads) must not wait for their fills one after another.
# The layer lives on hangfs with a delay on every read (slow storage): one
# READ of 8 entries on 8 uncached blocks must take about as long as one
# entry's fill, far less than 8 of them.
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}" "${HANGFS:?}"
require_root

delay=150
mount_hangfs "$TMP/mnt" "$TMP/no-hang" "$delay"

sock=$TMP/sluiced.sock
"$SLUICED" --socket "$sock" --memory 8M --block-size 64K 2>"$TMP/log" &
pid=$!
cleanup_push "kill $pid"
wait_for_path "$sock"

# One entry, block 15: what one fill costs here (at least the delay).
one=$("$PROBE" "$sock" read-many "$TMP/mnt/disk.img" $((15 << 16)) 1 65536) ||
  die "one-entry READ failed: $(tail -3 "$TMP/log")"
(( one >= delay )) || die "one fill took $one ms: the file system's $delay ms delay did not apply"
# Eight entries, blocks 0..7, all misses, in one message.
eight=$("$PROBE" "$sock" read-many "$TMP/mnt/disk.img" 0 8 65536) ||
  die "8-entry READ failed: $(tail -3 "$TMP/log")"
(( eight < 4 * one )) ||
  die "one READ of 8 misses took $eight ms, one miss $one ms: the fills ran one after another"
echo "ok (one miss: $one ms; one READ of 8 misses: $eight ms; one after another: >= $((8 * delay)) ms)"
