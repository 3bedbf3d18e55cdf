#!/usr/bin/env bash
# Issue 14, acceptance 2: 100 handoffs back and forth between two owners
# (each a `sluice serve --take-over` on the same NBD socket, so clients
# follow the disk) under a continuous 4 KiB random-write load at depth 32
# that reconnects to whoever serves next.  Every write an owner
# acknowledged must read back at the end, and the image must be clean for
# qemu-img check.  HANDOFFS overrides the count.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/own.sh"
require qemu-img python3
cd "$TMP"
n=${HANDOFFS:-100}
writer=$SRCDIR/tests/common/nbd-writer.py

qemu-img create -q -f qcow2 base.qcow2 64M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 disk.qcow2
sock=$TMP/disk.sock
start_owner cur disk.sock disk.qcow2
python3 "$writer" write "$sock" writes.json --size $((64 << 20)) --depth 32 \
  --stop "$TMP/stop" --status "$TMP/served" 2>writer.err &
wpid=$!
cleanup_push "kill -9 $wpid"
[[ -n ${KEEP_LOGS:-} ]] && cleanup_push "cp $TMP/server-*.log $KEEP_LOGS/"
for ((k = 0; k < 500; k++)); do [[ -s served ]] && break; sleep 0.01; done

t0=$(date +%s)
for ((i = 1; i <= n; i++)); do
  prev=$cur
  # The two sides alternate: A's and B's logs, to tell them apart.
  side=$((i % 2 ? 1 : 0))
  "$SLUICE" serve --take-over --timeout 30 --nbd "unix:$sock" disk.qcow2 \
    2>>"$TMP/server-$side.log" &
  cur=$!
  cleanup_push "kill -9 $cur"
  # The old owner exits 0 once it has released (the meson timeout bounds
  # a hang); the new one records itself.
  rc=0
  wait "$prev" || rc=$?
  [[ $rc -eq 0 ]] || die "handoff $i: the old owner exited $rc: $(tail -3 "$TMP/server-$((1 - side)).log")"
  for ((k = 0; k < 1500; k++)); do
    grep -qx "pid $cur" disk.qcow2.owner 2>/dev/null && [[ -S $sock ]] && break
    kill -0 "$cur" 2>/dev/null || die "handoff $i: the new owner exited: $(tail -3 "$TMP/server-$side.log")"
    sleep 0.01
  done
  grep -qx "pid $cur" disk.qcow2.owner || die "handoff $i: pid $cur did not become the owner"
  # The load reaches the new owner (its first reply) before the next handoff.
  for ((k = 0; k < 1500; k++)); do
    [[ $(cat served 2>/dev/null) -ge $((i + 1)) ]] 2>/dev/null && break
    sleep 0.01
  done
  [[ $(cat served) -ge $((i + 1)) ]] || die "handoff $i: the load did not reach the new owner in 15 s"
  sleep 0.02
done
t1=$(date +%s)
touch "$TMP/stop"
wait "$wpid" || die "the writer failed: $(cat writer.err)"
cat writer.err
conns=$(python3 -c "import json; print(len(json.load(open('writes.json'))['connections']))")
(( conns >= n + 1 )) || die "the load reached only $conns of $((n + 1)) owners"
python3 "$writer" verify "$sock" writes.json || die "acknowledged writes lost"
kill -TERM "$cur"; wait_exit "$cur" 10
qemu-img check -q disk.qcow2 || die "qemu-img check: image not clean after $n handoffs"
grep -c "released by pid" server-0.log server-1.log || true
echo "PASS: $TEST_NAME ($n handoffs in $((t1 - t0)) s, load on $conns connections)"
