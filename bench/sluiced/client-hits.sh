#!/usr/bin/env bash
# The cache client's cost per hit (lib/cachesvc/client.c), many threads of
# a few processes asking at once, as NBD export workers do in a boot storm:
#   bench/sluiced/client-hits.sh [THREADS] [SECONDS] [PROCESSES]
# (defaults 8 3 2; BUILD=build).  Starts its own daemon on a private socket
# (256 MiB cache), warms a 64 MiB layer, then reports per request: the
# clients' CPU microseconds, context switches, system calls and futex calls,
# and the daemon's (from `perf stat`, when perf can count them here).  Per
# request figures hold on a loaded machine far better than the rate, which
# is printed too.  Cleans up on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
T=${1:-8} S=${2:-3} P=${3:-2}
scripts/build.sh "$BUILD"
dir=$(mktemp -d /tmp/client-hits.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
EV=task-clock,context-switches,raw_syscalls:sys_enter,syscalls:sys_enter_futex
perf=()
if command -v perf >/dev/null && perf stat -x, -e $EV -o /dev/null true 2>/dev/null; then
  perf=(perf stat -x, -e "$EV" -o)
fi
head -c 64M /dev/urandom >"$dir/layer.img"
# The daemon: perf's child when perf counts, so that its counts are written
# when it exits; stopped through that child.
if ((${#perf[@]})); then
  "${perf[@]}" "$dir/perf-d" -- "$BUILD/sluiced" --socket "$dir/s.sock" --memory 256M \
    --quiet 2>"$dir/log" &
else
  "$BUILD/sluiced" --socket "$dir/s.sock" --memory 256M --quiet 2>"$dir/log" &
fi
dpid=$!
pids+=($dpid)
for _ in $(seq 200); do [[ -S $dir/s.sock ]] && break; sleep 0.05; done
[[ -S $dir/s.sock ]] || { echo "client-hits: sluiced did not start: $(cat "$dir/log")" >&2; exit 1; }
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
cpids=()
for p in $(seq "$P"); do
  if ((${#perf[@]})); then
    "${perf[@]}" "$dir/perf-c$p" -- "$BUILD/bench/client-hits" "$dir/s.sock" "$dir/layer.img" \
      "$T" "$S" >"$dir/out$p" &
  else
    "$BUILD/bench/client-hits" "$dir/s.sock" "$dir/layer.img" "$T" "$S" >"$dir/out$p" &
  fi
  cpids+=($!)
  pids+=($!)
done
for p in "${cpids[@]}"; do wait "$p"; done
child=$(pgrep -P "$dpid" || true)
kill -TERM "${child:-$dpid}" 2>/dev/null || true
wait "$dpid" || true
python3 - "$dir" "$P" "$T" <<'PY'
import json, os, sys
d, P, T = sys.argv[1], int(sys.argv[2]), sys.argv[3]
outs = [json.load(open("%s/out%d" % (d, i))) for i in range(1, P + 1)]
n = sum(o["requests"] for o in outs)
def perf(f):
    r = {}
    if os.path.exists(f):
        for line in open(f):
            p = line.strip().split(",")
            if len(p) > 3 and p[0][:1].isdigit():
                r[p[2]] = float(p[0])
    return r
c = {}
for i in range(1, P + 1):
    for k, v in perf("%s/perf-c%d" % (d, i)).items():
        c[k] = c.get(k, 0) + v
dm = perf(d + "/perf-d")
print("%d processes x %s threads, %d requests (4K-64K hits), %.0f/s" %
      (P, T, n, sum(o["rate"] for o in outs)))
print("clients: %.1f CPU us, %.2f context switches per request" %
      (sum(o["cpu_us_per_req"] * o["requests"] for o in outs) / n,
       sum((o["vcs_per_req"] + o["ivcs_per_req"]) * o["requests"] for o in outs) / n))
if c:
    print("clients (perf, warm-up included): %.2f syscalls, %.2f futex calls per request" %
          (c.get("raw_syscalls:sys_enter", 0) / n, c.get("syscalls:sys_enter_futex", 0) / n))
if dm:
    print("sluiced (perf, warm-up included): %.1f CPU us, %.2f context switches, %.2f syscalls, "
          "%.2f futex calls per request" %
          (dm.get("task-clock", 0) * 1000 / n, dm.get("context-switches", 0) / n,
           dm.get("raw_syscalls:sys_enter", 0) / n, dm.get("syscalls:sys_enter_futex", 0) / n))
PY
