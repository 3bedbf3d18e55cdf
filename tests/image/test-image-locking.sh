#!/bin/bash
# QEMU-compatible image locking (issue 10 item 1), with QEMU as the oracle.
#
# sluice must take the very lock bytes that QEMU 7.2 takes for the same
# access (compared in /proc/locks against qemu-io's), so that each refuses
# the other's conflicting opens: a second writer (sluice or qemu-io) is
# refused with a message naming the image and the holder, qemu-img info on
# a served image fails as QEMU fails and works with -U, sluice's read-only
# commands work with -U beside a writer, and clones of one base are served
# by several processes at once (shared read of the backing file).
source "$(dirname "$0")/../common/lib.sh"
source "$SRCDIR/tests/export/serve.sh"
require qemu-img qemu-io

cd "$TMP"
qemu-img create -q -f qcow2 base.qcow2 4M
qemu-io -c 'write -P 0x11 0 1M' base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 a.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 b.qcow2
qemu-img create -q -f raw r.raw 4M

# locks_of PID FILE...: "name start end" for every lock PID's descriptors
# hold on each FILE (from /proc/PID/fdinfo), sorted.
locks_of() {
  local pid=$1 f; shift
  for f in "$@"; do
    local ino
    ino=$(stat -c '%i' "$f")
    cat /proc/"$pid"/fdinfo/* 2>/dev/null | awk -v ino="$ino" -v n="$f" '
      /^lock:/ && /OFDLCK/ { split($7, d, ":"); if (d[3] == ino) print n, $8, $9 }'
  done | sort -u
}
# qemu_holds ARGS...: start qemu-io ARGS holding the image (sleeping), sets
# $qpid; its locks are in place once /proc shows them.
qemu_holds() {
  qemu-io "$@" -c 'sleep 60000' >/dev/null 2>&1 &
  qpid=$!
  cleanup_push "kill -9 $qpid"
  local i
  for ((i = 0; i < 100; i++)); do
    [[ -n $(cat /proc/$qpid/fdinfo/* 2>/dev/null | grep OFDLCK) ]] && return 0
    sleep 0.05
  done
  die "qemu-io $* took no lock"
}
qemu_release() { kill -9 "$qpid"; wait "$qpid" 2>/dev/null || true; }

# 1. The same bytes as QEMU: writable clone, then read-only, then -U.
qemu_holds a.qcow2
want_rw=$(locks_of "$qpid" a.qcow2 base.qcow2); qemu_release
qemu_holds -r a.qcow2
want_ro=$(locks_of "$qpid" a.qcow2 base.qcow2); qemu_release
qemu_holds -r -U a.qcow2
want_u=$(locks_of "$qpid" a.qcow2 base.qcow2); qemu_release
[[ $want_rw == *"a.qcow2 101 "* || $want_rw == *"a.qcow2 100 101"* ]] ||
  die "qemu-io took no write lock byte: $want_rw"

start_server s-rw a.qcow2
assert_eq "$(locks_of "$server_pid" a.qcow2 base.qcow2)" "$want_rw" "lock bytes of a writable serve"
rw_pid=$server_pid; rw_uri=$uri

# 2. qemu-img info on the served image: QEMU's usual error; -U works.
expect_fail 'Failed to get shared "write" lock' qemu-img info a.qcow2
qemu-img info -U --output=json a.qcow2 | grep -q '"virtual-size": 4194304' ||
  die "qemu-img info -U did not read the served image"
# qemu-io may not write it either.
expect_fail 'Failed to get "write" lock' qemu-io -c 'write -P 0x66 0 4k' a.qcow2
# A second sluice serve fails, naming the image and the holder's pid.
expect_fail "a.qcow2: Failed to get \"write\" lock.*pid $rw_pid" \
  sluice serve --nbd "unix:$TMP/s-second" a.qcow2
[[ ! -e $TMP/s-second ]] || die "the second server bound its socket"
# sluice's read-only commands: refused without -U, work with it.
expect_fail 'a.qcow2: Failed to get shared "write" lock' sluice info a.qcow2
sluice info -U a.qcow2 | grep -q 'virtual size' || die "sluice info -U failed"

# 3. Clones of one base served by several processes: shared read.
start_server s-b b.qcow2
qemu-io -f raw -c 'read -P 0x11 0 1M' "$uri" >/dev/null || die "clone b misreads its base"
qemu-io -f raw -c 'read -P 0x11 0 1M' "$rw_uri" >/dev/null || die "clone a misreads its base"
qemu-io -r -c 'read -P 0x11 0 1M' base.qcow2 >/dev/null || die "qemu-io -r cannot read the shared base"
expect_fail 'base.qcow2: Failed to get "write" lock' qemu-io -c 'write 0 4k' base.qcow2
expect_fail 'base.qcow2: Failed to get "write" lock' sluice io base.qcow2 write 0 4k
stop_server
# Acknowledged writes of the one writer are in the image afterwards.
qemu-io -f raw -c 'write -P 0x22 64k 64k' "$rw_uri" >/dev/null
server_pid=$rw_pid; stop_server
qemu-io -r -c 'read -P 0x22 64k 64k' -c 'read -P 0x11 128k 64k' a.qcow2 >/dev/null ||
  die "the served write is not in a.qcow2"

# 4. sluice beside a QEMU writer (qemu-io holds a.qcow2 for writing).
qemu_holds a.qcow2
expect_fail "a.qcow2: Failed to get \"write\" lock.*pid $qpid" sluice io a.qcow2 write 0 4k
expect_fail 'a.qcow2: Failed to get shared "write" lock' sluice io a.qcow2 read 0 4k
expect_fail 'a.qcow2: Failed to get shared "write" lock' sluice check a.qcow2
expect_fail 'Failed to get shared "write" lock' sluice convert a.qcow2 out.raw
expect_fail 'force-share' sluice io -U a.qcow2 write 0 4k
expect_fail 'force-share' sluice check -U -r leaks a.qcow2
expect_fail 'force-share' sluice serve -U --nbd "unix:$TMP/s-u" a.qcow2
sluice io -U a.qcow2 read -P 0x22 64k 64k >/dev/null || die "sluice io -U read failed"
sluice check -U a.qcow2 >/dev/null || die "sluice check -U failed"
sluice info -U --backing-chain a.qcow2 >/dev/null || die "sluice info -U failed"
sluice convert -U a.qcow2 out.raw || die "sluice convert -U failed"
qemu-io -f raw -r -c 'read -P 0x22 64k 64k' -c 'read -P 0x11 128k 64k' out.raw >/dev/null ||
  die "convert -U copied the wrong data"
sluice bench -U -c 100 a.qcow2 >/dev/null || die "sluice bench -U failed"
expect_fail 'force-share' sluice bench -U -w -c 100 a.qcow2
start_server s-ro --read-only -U a.qcow2
assert_eq "$(locks_of "$server_pid" a.qcow2 base.qcow2)" "$want_u" "lock bytes of serve --read-only -U"
qemu-io -f raw -r -c 'read -P 0x22 64k 64k' "$uri" >/dev/null || die "serve -U misreads"
stop_server
qemu_release

# 5. A read-only serve takes what qemu-io -r takes, and still blocks writers.
start_server s-ro2 --read-only a.qcow2
assert_eq "$(locks_of "$server_pid" a.qcow2 base.qcow2)" "$want_ro" "lock bytes of serve --read-only"
expect_fail 'Failed to get "write" lock' qemu-io -c 'write 0 4k' a.qcow2
qemu-io -r -c 'read -P 0x22 64k 64k' a.qcow2 >/dev/null || die "qemu-io -r beside a read-only serve"
stop_server

# 6. Raw images are locked too (opened with and without -f).
start_server s-raw -f raw r.raw
expect_fail 'Failed to get "write" lock' qemu-io -f raw -c 'write 0 4k' r.raw
# (qemu-img info takes no lock byte on a raw image, in QEMU as here.)
expect_fail 'r.raw: Failed to get "write" lock' sluice serve --nbd "unix:$TMP/s-raw2" r.raw
stop_server
qemu_holds -f raw r.raw
expect_fail 'r.raw: Failed to get shared "write" lock' sluice serve --nbd "unix:$TMP/s-raw3" r.raw
qemu_release
# Nothing is left behind: everything opens again once the holders are gone.
sluice io a.qcow2 write -P 0x33 0 4k >/dev/null
qemu-io -c 'read -P 0x33 0 4k' a.qcow2 >/dev/null || die "a.qcow2 not writable afterwards"
echo "PASS: $TEST_NAME"
