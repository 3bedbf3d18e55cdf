#!/usr/bin/env bash
# Issue 13 acceptance 2, "fault isolation": fio verifies (crc32c) data that
# lives in the base, through 4 clones served with --sluiced, while sluiced
# is killed with SIGKILL: every job passes, with no I/O error.  A new
# sluiced on the same socket is then found again by the clients (they
# reconnect in the background) and serves them hits: its own counters.
. "$(dirname "$0")/../../tests/common/lib.sh"
require qemu-img fio python3
fio --enghelp 2>/dev/null | grep -qw nbd || skip "fio has no nbd engine"
SLUICED=$BUILDDIR/sluiced
[[ -x $SLUICED ]] || skip "no sluiced in $BUILDDIR"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/cache.so" >/dev/null

N=4 SIZE=48M LOOPS=3
# The verify pattern is written into the base, so what the clones verify
# is read from the base's layer, i.e. through the daemon.
job=(--name=v --rw=write --bs=64k --size=$SIZE --verify=crc32c --verify_fatal=1
     --randseed=1234)
truncate -s $SIZE base.raw
fio "${job[@]}" --ioengine=psync --filename=base.raw --do_verify=0 >fio-base.out ||
  die "fio could not write the base: $(tail -5 fio-base.out)"
for i in $(seq $N); do
  qemu-img create -q -f qcow2 -b base.raw -F raw c$i.qcow2
done

start_daemon() {
  "$SLUICED" --socket "$TMP/d.sock" --memory 128M 2>>sluiced.log &
  dpid=$!
  cleanup_push "kill -9 $dpid"
  wait_for_path "$TMP/d.sock"
}
stats() {  # stats FIELD: a total of the running daemon's counters
  "$SLUICE" cache stats --socket "$TMP/d.sock" --output=json |
    python3 -c "import json, sys; print(json.load(sys.stdin)['total'][sys.argv[1]])" "$1"
}
start_daemon
spids=()
for i in $(seq $N); do
  "$SLUICE" serve --sluiced="$TMP/d.sock" --cache=none --nbd "unix:$TMP/c$i.nbd" \
    c$i.qcow2 2>>serve$i.log &
  spids+=($!)
  cleanup_push "kill -9 $!"
done
for i in $(seq $N); do wait_for_path "$TMP/c$i.nbd"; done

# verify ROUND: all clones at once, several passes each; sets fio_pids.
verify() {
  local round=$1 i
  fio_pids=()
  for i in $(seq $N); do
    fio "${job[@]}" --verify_only --loops=$LOOPS --ioengine=nbd --iodepth=8 \
      --uri="nbd+unix:///?socket=$TMP/c$i.nbd" >fio-$round-$i.out 2>&1 &
    fio_pids+=($!)
  done
}
LOOPS=100 verify kill
# Kill it mid-run: once it has served the clients something.
for _ in $(seq 200); do
  (( $(stats bytes_served 2>/dev/null || echo 0) > 0 )) && break
  sleep 0.05
done
(( $(stats bytes_served) > 0 )) || die "the daemon served nothing before the kill"
kill -9 "$dpid"
for p in "${fio_pids[@]}"; do
  kill -0 "$p" 2>/dev/null || die "a fio job ended before sluiced was killed (make the run longer): $(tail -n 3 fio-kill-*.out)"
done
echo "sluiced killed during the verify run"
for p in "${fio_pids[@]}"; do
  wait "$p" || die "a fio job failed when sluiced was killed: $(grep -h -i -E 'err|verify' fio-kill-*.out | head -5)"
done
grep -q "err= 0" fio-kill-1.out || die "fio reported errors: $(cat fio-kill-1.out)"

# Restart: the clients find the new daemon and hit again.
start_daemon
verify warm
for p in "${fio_pids[@]}"; do wait "$p" || die "verify failed after the restart"; done
for _ in $(seq 50); do
  verify hit
  for p in "${fio_pids[@]}"; do wait "$p" || die "verify failed after the restart"; done
  (( $(stats hits) > 0 )) && break
  sleep 0.2
done
hits=$(stats hits) served=$(stats bytes_served)
echo "restarted sluiced: $hits hits, $served bytes served"
(( hits > 0 && served > 0 )) || die "the clients did not come back to the restarted daemon"
for i in $(seq $N); do
  kill -TERM "${spids[$((i - 1))]}"
  wait "${spids[$((i - 1))]}" || die "server $i exited non-zero"
done
grep -h "cache:" serve*.log
for i in $(seq $N); do
  grep -Eq " [2-9][0-9]* connections" serve$i.log ||
    die "server $i did not reconnect: $(grep cache: serve$i.log)"
done
echo PASS
