# Sourced by the export tests: start `sluice serve` in the background on a
# UNIX socket under $TMP, wait until it listens, and make sure it is killed
# (by pid) however the test ends.
#   start_server SOCKNAME [SERVE ARGS...] DISK   -> sets $server_pid, $uri
start_server() {
  local sock="$TMP/$1"; shift
  "$SLUICE" serve --nbd "unix:$sock" "$@" 2>>"$TMP/server.log" &
  server_pid=$!
  cleanup_push "kill -9 $server_pid"
  wait_for_path "$sock" 10
  uri="nbd+unix:///?socket=$sock"
}
# stop_server: SIGTERM, which must drain, flush and exit 0.
stop_server() {
  kill -TERM "$server_pid"
  local rc=0
  wait "$server_pid" || rc=$?
  [[ $rc -eq 0 ]] || die "sluice serve exited $rc on SIGTERM: $(tail -5 "$TMP/server.log")"
}
