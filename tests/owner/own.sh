# Sourced by the ownership tests: start owners of a disk and wait until
# they have recorded themselves; every server is killed by pid at exit.
#   start_owner VAR SOCKNAME [SERVE ARGS...] DISK  -> $VAR = pid, serves
#     NBD on $TMP/SOCKNAME; returns once DISK's owner record names it
#   owner_field DISK KEY  -> a field of `sluice owner --output=json`
export SLUICE_RUNTIME_DIR=$TMP/run
start_owner() {
  local var=$1 sock="$TMP/$2"; shift 2
  local disk=${!#}
  "$SLUICE" serve --nbd "unix:$sock" "$@" 2>>"$TMP/server.log" &
  local pid=$!
  cleanup_push "kill -9 $pid"
  printf -v "$var" %s "$pid"
  local i
  for ((i = 0; i < 400; i++)); do
    if [[ -e $sock ]] && [[ $(owner_field "$disk" pid 2>/dev/null) == "$pid" ]]; then
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || die "sluice serve $* exited: $(tail -5 "$TMP/server.log")"
    sleep 0.05
  done
  die "sluice serve $* did not record itself as owner of $disk"
}
owner_field() {
  "$SLUICE" owner --output=json "$1" | python3 -c "
import json, sys
d = json.load(sys.stdin)
k = sys.argv[1]
v = d.get(k) if k in d else (d.get('owner') or {}).get(k)
print('null' if v is None else str(v).lower() if isinstance(v, bool) else v)" "$2"
}
# wait_exit PID SECONDS: PID (a child) must exit 0 within SECONDS.
wait_exit() {
  local pid=$1 t=$2 i
  for ((i = 0; i < t * 20; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -0 "$pid" 2>/dev/null && die "pid $pid still runs after $t s"
  local rc=0
  wait "$pid" || rc=$?
  [[ $rc -eq 0 ]] || die "pid $pid exited $rc: $(tail -5 "$TMP/server.log")"
}
