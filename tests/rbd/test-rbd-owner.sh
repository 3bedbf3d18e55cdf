#!/bin/bash
# Issue 16, item 3: ownership of an RBD image between hosts.  Two clients
# with different Ceph ids (h1, h2: two hosts, as far as Ceph can tell) take
# the image from each other 20 times with `sluice serve --take-over` under
# a continuous 4 KiB random-write load that follows the disk
# (tests/common/nbd-writer.py); every acknowledged write reads back.  The
# release request travels through Ceph (a notify on the image's owner
# object), not a local socket.  Then the owner is SIGKILLed: the next
# --take-over waits out its timeout, breaks the dead owner's exclusive
# lock and blocklists it, and serves everything acknowledged before.
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require python3
ceph_start
cd "$TMP"
n=${HANDOFFS:-20}
writer=$SRCDIR/tests/common/nbd-writer.py
rbd create --size 64M "$POOL/d"
for u in h1 h2; do
  ceph auth get-or-create "client.$u" mon 'profile rbd' osd 'profile rbd' \
    -o "$TMP/$u.keyring" 2>/dev/null
done
name() { echo "rbd:$POOL/d:id=$1:keyring=$TMP/$1.keyring"; }
owner_pid() { rados -p "$POOL" get sluice_owner.d - 2>/dev/null | awk '$1 == "pid" {print $2}'; }
sock=$TMP/disk.sock

start_owner() { # ID TIMEOUT: serve --take-over as client ID; sets $cur
  rm -f "$sock.new"
  "$SLUICE" serve -f raw --take-over --timeout "$2" --nbd "unix:$sock" "$(name "$1")" \
    2>>"$TMP/server-$1.log" &
  cur=$!
  cleanup_push "kill -9 $cur"
  local k
  for ((k = 0; k < 1200; k++)); do
    [[ $(owner_pid) == "$cur" && -S $sock ]] && return 0
    kill -0 "$cur" 2>/dev/null || die "the owner as $1 exited: $(tail -3 "$TMP/server-$1.log")"
    sleep 0.05
  done
  die "pid $cur (as $1) did not become the owner: $(tail -3 "$TMP/server-$1.log")"
}

start_owner h1 30
python3 "$writer" write "$sock" writes.json --size $((64 << 20)) --depth 8 \
  --stop "$TMP/stop" --status "$TMP/served" 2>writer.err &
wpid=$!
cleanup_push "kill -9 $wpid"
for ((k = 0; k < 600; k++)); do [[ -s served ]] && break; sleep 0.05; done

t0=$SECONDS
for ((i = 1; i <= n; i++)); do
  prev=$cur
  id=$((i % 2 ? 2 : 1))
  start_owner "h$id" 30
  rc=0
  wait "$prev" || rc=$?
  [[ $rc -eq 0 ]] || die "handoff $i: the old owner exited $rc"
  for ((k = 0; k < 600; k++)); do
    [[ $(cat served 2>/dev/null) -ge $((i + 1)) ]] 2>/dev/null && break
    sleep 0.05
  done
  [[ $(cat served) -ge $((i + 1)) ]] || die "handoff $i: the load did not reach the new owner"
done
echo "$n handoffs in $((SECONDS - t0)) s" >&2
grep -q "released by pid" server-h1.log server-h2.log || die "no release was logged: $(tail -5 server-h2.log)"
sluice owner "$(name h1)" >owner.out || die "sluice owner failed: $(cat owner.out)"
grep -q "$cur" owner.out || die "sluice owner does not name pid $cur: $(cat owner.out)"

# The owner dies with writes in flight; the load keeps what was acked.
kill -9 "$cur"
wait "$cur" 2>/dev/null || true
for ((k = 0; k < 100; k++)); do kill -0 "$wpid" 2>/dev/null || break; sleep 0.05; done
touch "$TMP/stop"
dead=$cur
t1=$SECONDS
start_owner h1 5
((SECONDS - t1 >= 4)) || die "the dead owner was broken before the 5 s timeout"
grep -q "did not answer within 5 s" server-h1.log || die "no timeout message: $(tail -3 server-h1.log)"
grep -q "blocklisted" server-h1.log || die "the old owner was not blocklisted: $(tail -3 server-h1.log)"
ceph osd blocklist ls 2>/dev/null | grep -q . || die "no blocklist entry"
wait "$wpid" || die "the writer failed: $(cat writer.err)"
python3 "$writer" verify "$sock" writes.json || die "acknowledged writes lost"
echo "PASS: $TEST_NAME ($n handoffs; dead owner $dead taken over after $((SECONDS - t1)) s)"
