#!/usr/bin/env bash
# handoff: how long does handing a disk from one `sluice serve` to another
# take?  Issue 14 measures it from the moment the requester sends its
# release request to the first request the new owner serves, and asks for
# p99 <= 50 ms on an idle disk and <= 250 ms under a 4 KiB random-write
# load at queue depth 32 (the old owner's drain and flush included).
#
# For each load, N handoffs in a row between `sluice serve --take-over`
# processes on one NBD socket (so the client follows the disk).  The
# client (tests/common/nbd-writer.py) reconnects as soon as a connection
# ends; the handoff time is its first reply from owner k+1 minus the
# request time owner k+1 logs ("request sent at monotonic T s", both
# CLOCK_MONOTONIC).  Loads:
#   idle    one 4 KiB read per connection, then nothing
#   loaded  4 KiB random writes, 32 in flight, over 256 MiB of a qcow2,
#           with the default --cache writeback (the old owner's flush
#           writes back what the page cache holds) and with --cache none
#           (O_DIRECT, as QEMU is usually run: nothing dirty to write back)
# Side by side, the way it is done without this issue: SIGTERM the owner,
# wait for it to exit, start the next one -- from the signal to the first
# reply of the new owner (the process start is included there, and not in
# the handoff, whose requester starts before it asks).
#
# Usage: bench/handoff.sh [-n N] [--dir DIR]   (default 100 handoffs)
# Environment: BUILD (default build).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${BUILD:-build}
n=100 base=/var/tmp
while [ $# -gt 0 ]; do
  case $1 in
    -n) n=$2; shift ;;
    --dir) base=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "handoff: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done
sluice=$(realpath "$build/sluice")
writer=$PWD/tests/common/nbd-writer.py
[ -x "$sluice" ] || { echo "handoff: $sluice not built" >&2; exit 1; }
command -v qemu-img >/dev/null || { echo "handoff: needs qemu-img" >&2; exit 1; }
dir=$(mktemp -d "$base/handoff.XXXXXX")
export SLUICE_RUNTIME_DIR=$dir/run
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# series LOAD MODE: N handoffs (MODE takeover) or restarts (MODE restart)
# under LOAD (idle, loaded, loaded-none); one handoff time in ms per line
# into $dir/LOAD-MODE.ms
series() {
  local load=$1 mode=$2 d=$dir/$1-$2 i k cache=writeback
  [ "$load" = loaded-none ] && cache=none
  mkdir -p "$d"
  qemu-img create -q -f qcow2 "$d/disk.qcow2" 1G
  local sock=$d/nbd.sock
  "$sluice" serve --cache "$cache" --nbd "unix:$sock" "$d/disk.qcow2" 2>"$d/owner-0.log" &
  local cur=$!; pids+=("$cur")
  for ((k = 0; k < 500; k++)); do [ -S "$sock" ] && break; sleep 0.01; done
  local wargs=(--size $((256 << 20)) --depth 32)
  [ "$load" = idle ] && wargs=(--idle --size $((256 << 20)))
  python3 "$writer" write "$sock" "$d/writes.json" "${wargs[@]}" --stop "$d/stop" \
    --status "$d/served" 2>"$d/writer.err" &
  local wpid=$!; pids+=("$wpid")
  for ((k = 0; k < 1000; k++)); do [ -s "$d/served" ] && break; sleep 0.01; done
  : >"$d/t0"
  for ((i = 1; i <= n; i++)); do
    sleep 0.2   # let the load run on this owner
    local prev=$cur
    if [ "$mode" = takeover ]; then
      "$sluice" serve --cache "$cache" --take-over --nbd "unix:$sock" "$d/disk.qcow2" 2>"$d/owner-$i.log" &
      cur=$!; pids+=("$cur")
      wait "$prev"
    else
      date +%s%N >>"$d/t0"
      kill -TERM "$prev"; wait "$prev"
      "$sluice" serve --cache "$cache" --nbd "unix:$sock" "$d/disk.qcow2" 2>"$d/owner-$i.log" &
      cur=$!; pids+=("$cur")
    fi
    for ((k = 0; k < 3000; k++)); do
      [ "$(cat "$d/served" 2>/dev/null)" -ge $((i + 1)) ] 2>/dev/null && break
      sleep 0.005
    done
  done
  touch "$d/stop"; wait "$wpid"
  kill -TERM "$cur"; wait "$cur"
  qemu-img check -q "$d/disk.qcow2" || { echo "handoff: image not clean after $load $mode" >&2; exit 1; }
  python3 - "$d" "$n" "$mode" >"$dir/$load-$mode.ms" <<'PY'
import json, re, sys
d, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
conns = json.load(open(d + "/writes.json"))["connections"]
t0 = [int(x) for x in open(d + "/t0").read().split()]
for i in range(1, n + 1):
    first = conns[i][1] if i < len(conns) else None
    if mode == "takeover":
        m = re.search(r"request sent at monotonic ([0-9.]+) s", open("%s/owner-%d.log" % (d, i)).read())
        start = round(float(m.group(1)) * 1e9)
        drain = re.search(r"drain, flush and close ([0-9.]+) ms", open("%s/owner-%d.log" % (d, i)).read())
        print("%.3f %s" % ((first - start) / 1e6, drain.group(1)))
    else:
        print("%.3f -" % ((conns[i][2] - t0[i - 1]) / 1e6))
PY
  rm -f "$d/disk.qcow2"
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
start=$(date -u +%H:%M:%S)
for load in idle loaded loaded-none; do
  for mode in takeover restart; do
    echo "handoff: $load, $mode, $n times ($(date -u +%T)) ..." >&2
    series "$load" "$mode"
  done
done
end=$(date -u +%H:%M:%S)
python3 - "$dir" "$n" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" "$start" "$end" <<'PY'
import sys
d, n, lb, la, start, end = sys.argv[1:7]
def pct(v, p):
    v = sorted(v); return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]
print("handoff time, request sent -> first request served by the new owner (ms), %s handoffs each" % n)
print("load average %s at the start, %s at the end; %s-%s UTC" % (lb, la, start, end))
print()
print("| load | handoff p50 | p99 | max | owner drain+flush+close p50 / p99 | SIGTERM+restart p50 | p99 | p50 ratio |")
print("|---|---|---|---|---|---|---|---|")
names = {"idle": "idle", "loaded": "4K randwrite QD32, cache=writeback",
         "loaded-none": "4K randwrite QD32, cache=none"}
for load in ("idle", "loaded", "loaded-none"):
    t = [l.split() for l in open("%s/%s-takeover.ms" % (d, load))]
    h = [float(x[0]) for x in t]; dr = [float(x[1]) for x in t]
    r = [float(l.split()[0]) for l in open("%s/%s-restart.ms" % (d, load))]
    print("| %s | %.1f | %.1f | %.1f | %.1f / %.1f | %.1f | %.1f | %.2f |" % (
        names[load], pct(h, 50), pct(h, 99), max(h),
        pct(dr, 50), pct(dr, 99), pct(r, 50), pct(r, 99), pct(h, 50) / pct(r, 50)))
PY
