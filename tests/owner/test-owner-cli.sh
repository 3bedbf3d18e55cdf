#!/usr/bin/env bash
# Issue 14: the owner record and the release conversation through the
# command line -- sluice owner, sluice release, serve --take-over and
# --no-release -- and acceptance 3 and 4: a SIGKILLed owner is taken over
# within 2 s, --no-release makes the requester fail naming the owner, a
# SIGSTOPped owner makes it time out with the disk untouched, and qemu-img
# gets QEMU's lock error while sluice owns a disk and opens it once
# `sluice release` has returned.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/own.sh"
require qemu-img qemu-io python3
cd "$TMP"

sluice create -f qcow2 base.qcow2 32M >/dev/null
qemu-io -c "write -P 0x5a 0 1M" base.qcow2 >/dev/null
sluice create -f qcow2 -b base.qcow2 -F qcow2 a.qcow2 >/dev/null
sluice create -f qcow2 -b base.qcow2 -F qcow2 b.qcow2 >/dev/null
sluice disk create a.disk a.qcow2 >/dev/null

# Nobody owns a new image.
assert_eq "$(owner_field a.qcow2 state)" none "state of a fresh image"
assert_eq "$(owner_field a.qcow2 record)" null "record of a fresh image"

# --- an owner records itself -----------------------------------------------
start_owner A a1.sock a.qcow2
[[ -f a.qcow2.owner ]] || die "no owner record beside the image"
head -1 a.qcow2.owner | grep -qx "sluice-owner 1" || die "record version line: $(head -1 a.qcow2.owner)"
assert_eq "$(owner_field a.qcow2 state)" owned "state while served"
assert_eq "$(owner_field a.qcow2 release)" true "release field"
assert_eq "$(owner_field a.qcow2 host)" "$(hostname)" "host field"
sock=$(owner_field a.qcow2 socket)
[[ -S $sock ]] || die "the control socket $sock does not exist"
[[ $(stat -c %a "$sock") == 600 ]] || die "control socket mode $(stat -c %a "$sock"), expected 600"
sluice owner a.qcow2 | grep -q "^owner: pid $A (sluice serve)" || die "human output: $(sluice owner a.qcow2)"
# Two clones of one base, owned by different processes: the base stays
# shared-read under both.
start_owner B b1.sock b.qcow2
assert_eq "$(owner_field b.qcow2 pid)" "$B" "owner of the second clone"
assert_eq "$(owner_field base.qcow2 state)" foreign "the base (read by both, owned by neither)"

# 4. QEMU's lock error while sluice owns it.
expect_fail 'Failed to get "write" lock' qemu-io -c "write 0 4k" a.qcow2
expect_fail 'Failed to get shared "write" lock' qemu-img info a.qcow2
# A second serve without --take-over: the lock error, and a hint.
expect_fail "owned by pid $A .*--take-over" sluice serve --nbd unix:"$TMP/x.sock" a.qcow2

# --- sluice release: the owner drains, closes, answers and exits 0 ----------
qemu-io -c "write -P 0x61 64k 64k" "nbd+unix:///?socket=$TMP/a1.sock" >/dev/null
sluice release a.qcow2 2>rel.err || die "sluice release failed: $(cat rel.err)"
grep -q "released by pid $A" rel.err || die "release said: $(cat rel.err)"
wait_exit "$A" 5
[[ ! -e a.qcow2.owner ]] || die "the record outlived its owner's release"
[[ ! -e $sock ]] || die "the control socket outlived its owner's release"
assert_eq "$(owner_field a.qcow2 state)" none "state after release"
# 4. ... and qemu-img opens it now, and finds the write.
qemu-io -c "read -P 0x61 64k 64k" -c "write -P 0x62 128k 4k" a.qcow2 >/dev/null ||
  die "qemu-io cannot use the image after sluice release"
qemu-img check -q a.qcow2 || die "image not clean after release"
grep -q "released to sluice release (pid [0-9]*, uid $(id -u))" server.log ||
  die "the owner did not log whom it released to: $(tail -3 server.log)"
# Releasing what nobody owns is not an error.
sluice release a.qcow2 2>rel.err || die "release of an unowned disk failed"
grep -q "nobody owns it" rel.err || die "release of an unowned disk said: $(cat rel.err)"

# --- --take-over ---------------------------------------------------------------
# With one --pidfile for both (a service's upgrade): the successor gets it.
start_owner A a2.sock --pidfile "$TMP/serve.pid" a.qcow2
start_owner C c.sock --take-over --pidfile "$TMP/serve.pid" a.qcow2
wait_exit "$A" 5
assert_eq "$(owner_field a.qcow2 pid)" "$C" "owner after --take-over"
assert_eq "$(cat serve.pid)" "$C" "pidfile after --take-over"
qemu-io -c "read -P 0x62 128k 4k" "nbd+unix:///?socket=$TMP/c.sock" >/dev/null ||
  die "data written before the handoff is not served by the new owner"
# Through a disk descriptor: ownership is the image's.
assert_eq "$(owner_field a.disk pid)" "$C" "owner through the descriptor"
start_owner A a3.sock --take-over a.disk
wait_exit "$C" 5
assert_eq "$(owner_field a.qcow2 pid)" "$A" "owner after a take-over through the descriptor"

# --- 3. a SIGKILLed owner is taken over at once ---------------------------------
kill -9 "$A"
wait "$A" 2>/dev/null || true
assert_eq "$(owner_field a.qcow2 state)" stale "state after SIGKILL"
# Timed from the start of the requester to its record (polled cheaply,
# so that the measurement is the take-over, not this script).
t0=$(date +%s%N)
"$SLUICE" serve --take-over --nbd "unix:$TMP/d.sock" a.qcow2 2>>server.log &
D=$!
cleanup_push "kill -9 $D"
for ((i = 0; i < 1000; i++)); do
  grep -qx "pid $D" a.qcow2.owner 2>/dev/null && [[ -S $TMP/d.sock ]] && break
  sleep 0.01
done
t1=$(date +%s%N)
(( (t1 - t0) / 1000000 < 2000 )) || die "take-over of a dead owner took $(( (t1 - t0) / 1000000 )) ms"
grep -q "owner pid $A .* is gone and holds no lock: taking over" server.log ||
  die "no log line about the dead owner: $(tail -3 server.log)"
qemu-io -c "read -P 0x62 128k 4k" "nbd+unix:///?socket=$TMP/d.sock" >/dev/null ||
  die "data lost across the SIGKILL take-over"

# --- 3. --no-release: the requester fails with a message naming the owner ------
sluice release --timeout 10 a.qcow2 2>/dev/null || die "release of D failed"
wait_exit "$D" 5
start_owner N n.sock --no-release a.qcow2
assert_eq "$(owner_field a.qcow2 release)" false "release field with --no-release"
expect_fail "owner pid $N \(sluice serve --no-release, host .*\) refuses to release it" \
  sluice release a.qcow2
expect_fail "owner pid $N .*refuses" sluice serve --take-over --nbd unix:"$TMP/y.sock" a.qcow2
kill -0 "$N" || die "the --no-release owner died"
qemu-io -c "read -P 0x62 128k 4k" "nbd+unix:///?socket=$TMP/n.sock" >/dev/null ||
  die "the --no-release owner stopped serving"
kill -TERM "$N"; wait_exit "$N" 5
[[ ! -e a.qcow2.owner ]] || die "the record outlived its owner's SIGTERM"

# --- 3. a SIGSTOPped owner: the requester times out, the disk untouched ---------
start_owner H h.sock a.qcow2
kill -STOP "$H"
cleanup_push "kill -CONT $H"
sum0=$(md5sum <a.qcow2)
t0=$(date +%s%N)
expect_fail "owner pid $H .*did not answer the release request within 2 s \(it is stopped\); the disk was left to it" \
  sluice release --timeout 2 a.qcow2
t1=$(date +%s%N)
(( (t1 - t0) / 1000000 < 10000 )) || die "the timed-out release took $(( (t1 - t0) / 1000000 )) ms"
assert_eq "$(md5sum <a.qcow2)" "$sum0" "image after the timed-out request"
assert_eq "$(owner_field a.qcow2 pid)" "$H" "owner after the timed-out request"
assert_eq "$(owner_field a.qcow2 locked)" true "lock after the timed-out request"
expect_fail "did not answer" sluice serve --take-over --timeout 1 --nbd unix:"$TMP/z.sock" a.qcow2
# Woken, it answers the connections it accepted late with a refusal or a
# release; it still owns the disk or released it cleanly.
kill -CONT "$H"
sluice release --timeout 10 a.qcow2 2>rel.err || die "release after SIGCONT: $(cat rel.err)"
wait_exit "$H" 5
qemu-img check -q a.qcow2 || die "image not clean"

# --- a holder without an owner record (QEMU's tools) cannot be asked ---------------
qemu-io -c "sleep 4000" a.qcow2 >/dev/null 2>&1 &
q=$!
cleanup_push "kill -9 $q"
for ((i = 0; i < 200; i++)); do
  [[ $(owner_field a.qcow2 locked) == true ]] && break
  sleep 0.02
done
assert_eq "$(owner_field a.qcow2 state)" foreign "state while qemu-io holds the image"
owner_field a.qcow2 holder | grep -q "pid $q, qemu-io" || die "holder: $(owner_field a.qcow2 holder)"
expect_fail "in use by pid $q, qemu-io, which has no sluice owner record" sluice release a.qcow2
expect_fail "in use by pid $q, qemu-io" sluice serve --take-over --nbd unix:"$TMP/f.sock" a.qcow2
kill -0 "$q" || die "qemu-io was disturbed"
kill "$q"; wait "$q" 2>/dev/null || true

# --- the filters' release event comes before the successor opens -----------------
if [[ -e ${BUILDDIR:-}/filters/trace.so ]]; then
  export SLUICE_FILTER_DIR=$TMP/mods
  sluice filter install "$BUILDDIR/filters/trace.so" >/dev/null
  start_owner A a5.sock --filter "trace:log=$TMP/trace.log,tag=A" a.qcow2
  start_owner B b5.sock --take-over --filter "trace:log=$TMP/trace.log,tag=B" a.qcow2
  wait_exit "$A" 5
  rel=$(grep -n "^A = release" trace.log | head -1 | cut -d: -f1)
  opn=$(grep -n "^B = open" trace.log | head -1 | cut -d: -f1)
  [[ -n $rel && -n $opn ]] || die "trace log lacks A's release or B's open: $(cat trace.log)"
  (( rel < opn )) || die "B opened (line $opn) before A's filters got the release event (line $rel)"
  kill -TERM "$B"; wait_exit "$B" 5
  unset SLUICE_FILTER_DIR
fi

# --- bad input -----------------------------------------------------------------
expect_fail "nope.qcow2: No such file" sluice owner nope.qcow2
expect_fail "--timeout: 'soon' is not a number" sluice release --timeout soon a.qcow2
expect_fail "--timeout 3: only with --take-over" sluice serve --timeout 3 --nbd unix:"$TMP/q.sock" a.qcow2
expect_fail "--output: 'xml'" sluice owner --output=xml a.qcow2
printf 'sluice-owner 2\npid 1\n' >a.qcow2.owner
expect_fail "a.qcow2.owner: owner record version 2 is not supported" sluice owner a.qcow2
printf 'sluice-owner 1\npid 12x\n' >a.qcow2.owner
expect_fail "a.qcow2.owner: owner record line 2: bad pid" sluice owner a.qcow2
# A record naming a process that is gone, a free lock: stale, taken over.
printf 'sluice-owner 1\nbackend local\npid 999999\npid-start 1\nboot-id x\nhost h\nuid 0\nstarted 0\nsocket /nonexistent.sock\nrelease yes\n' >a.qcow2.owner
assert_eq "$(owner_field a.qcow2 state)" stale "state of a forged dead record"
start_owner A a4.sock --take-over a.qcow2
kill -TERM "$A"; wait_exit "$A" 5
echo "PASS: $TEST_NAME"
