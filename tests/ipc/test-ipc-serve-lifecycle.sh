#!/usr/bin/env bash
# `sluice serve` on lib/ipc's process lifecycle:
#  - --daemon returns 0 only once the background server runs: the pidfile
#    names a live process that serves (qemu-io writes through it), and
#    SIGTERM to that pid removes the pidfile and the socket;
#  - a second server on the same socket is refused while the first lives
#    (read-only with -U, so that the image lock lets it get that far),
#    and the first keeps serving; so is a second server on the same pidfile;
#  - a stale socket left by a killed server is replaced;
#  - a startup failure after the fork is the --daemon parent's exit status,
#    with the message on the terminal;
#  - systemd: READY=1 and STOPPING=1 reach NOTIFY_SOCKET, and a socket
#    passed by systemd-socket-activate is served (skipped parts say why).
. "$(dirname "$0")/../common/lib.sh"
require qemu-io qemu-img python3
cd "$TMP"
sluice create -q disk.qcow2 16M

sock="$TMP/a.sock" uri="nbd+unix:///?socket=$TMP/a.sock"
"$SLUICE" serve --daemon --pidfile "$TMP/serve.pid" --nbd "unix:$sock" disk.qcow2 \
  || die "serve --daemon failed"
[[ -s serve.pid ]] || die "no pidfile when serve --daemon returned"
pid=$(cat serve.pid)
cleanup_push "kill -9 $pid"
kill -0 "$pid" || die "pidfile names $pid, which is not running"
[[ -S $sock ]] || die "no socket when serve --daemon returned"
qemu-io -f raw -c "write -P 0x5a 0 1M" "$uri" >/dev/null || die "write through the daemon failed"

# A second server: the live socket is refused, the first keeps serving.
expect_fail "a.sock: another process is listening" "$SLUICE" serve --read-only -U --nbd "unix:$sock" disk.qcow2
[[ -S $sock ]] || die "the refused server removed the live socket"
qemu-io -f raw -c "read -P 0x5a 0 1M" "$uri" >/dev/null || die "first server no longer serves"
expect_fail "serve.pid: pidfile held by running process $pid" \
  "$SLUICE" serve --read-only -U --pidfile "$TMP/serve.pid" --nbd "unix:$TMP/b.sock" disk.qcow2
[[ $(cat serve.pid) == "$pid" ]] || die "the refused server rewrote the pidfile"
[[ ! -e b.sock ]] || die "the refused server left its socket behind"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && die "daemon still runs 10 s after SIGTERM"
[[ ! -e serve.pid ]] || die "pidfile left after SIGTERM"
[[ ! -e $sock ]] || die "socket left after SIGTERM"
qemu-io -f qcow2 -c "read -P 0x5a 0 1M" disk.qcow2 >/dev/null || die "write lost"

# A killed server leaves a stale socket; the next one replaces it.
"$SLUICE" serve --nbd "unix:$sock" disk.qcow2 2>>server.log &
spid=$!
cleanup_push "kill -9 $spid"
wait_for_path "$sock"
kill -9 "$spid"; wait "$spid" 2>/dev/null || true
[[ -S $sock ]] || die "expected the killed server's socket to stay"
"$SLUICE" serve --nbd "unix:$sock" disk.qcow2 2>>server.log &
spid=$!
cleanup_push "kill -9 $spid"
for _ in $(seq 100); do qemu-io -f raw -c "read -P 0x5a 0 1M" "$uri" >/dev/null 2>&1 && break; sleep 0.1; done
qemu-io -f raw -c "read -P 0x5a 0 1M" "$uri" >/dev/null || die "stale socket was not replaced"
kill -TERM "$spid"; wait "$spid" || die "server exited $? on SIGTERM"

# A failure after the fork reaches the terminal and the exit status.
mkdir piddir
rc=0
"$SLUICE" serve --daemon --pidfile "$TMP/piddir" --nbd "unix:$TMP/c.sock" disk.qcow2 \
  2>err || rc=$?
[[ $rc -ne 0 ]] || die "serve --daemon returned 0 although the pidfile could not be written"
grep -q "piddir" err || die "startup error not shown: $(cat err)"
for _ in $(seq 50); do [[ -e c.sock ]] || break; sleep 0.1; done
[[ ! -e c.sock ]] || die "failed daemon left its socket"

# sd_notify: READY=1 while serving, STOPPING=1 on SIGTERM.
python3 - "$TMP/notify" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(20)
with open(sys.argv[1] + ".log", "w") as log:
    for _ in range(2):
        log.write(s.recv(4096).decode() + "\n")
        log.flush()
PY
npid=$!
cleanup_push "kill -9 $npid"
wait_for_path notify
NOTIFY_SOCKET="$TMP/notify" "$SLUICE" serve --nbd "unix:$sock" disk.qcow2 2>>server.log &
spid=$!
cleanup_push "kill -9 $spid"
for _ in $(seq 100); do grep -q READY=1 notify.log 2>/dev/null && break; sleep 0.1; done
grep -q "^READY=1" notify.log || die "no READY=1 from serve"
qemu-io -f raw -c "read -P 0x5a 0 1M" "$uri" >/dev/null || die "not serving after READY=1"
kill -TERM "$spid"; wait "$spid" || die "server exited $? on SIGTERM"
wait "$npid" || die "notification listener failed"
grep -q "^STOPPING=1" notify.log || die "no STOPPING=1 from serve: $(cat notify.log)"

# Socket activation: systemd-socket-activate binds, serve adopts fd 3.
if command -v systemd-socket-activate >/dev/null; then
  systemd-socket-activate -l "$TMP/act.sock" "$SLUICE" serve disk.qcow2 \
    2>>server.log &
  apid=$!
  cleanup_push "kill -9 $apid"
  wait_for_path act.sock
  qemu-io -f raw -c "read -P 0x5a 0 1M" "nbd+unix:///?socket=$TMP/act.sock" >/dev/null \
    || die "socket-activated serve does not serve: $(tail -3 server.log)"
  grep -q "on fd:3" server.log || die "serve did not report the activated socket"
  kill -TERM "$apid"; wait "$apid" || die "activated server exited $? on SIGTERM"
else
  echo "note: systemd-socket-activate absent; socket activation covered by test-ipc-process" >&2
fi
exit 0
