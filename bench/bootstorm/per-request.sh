#!/usr/bin/env bash
# The boot storm counted per request, for two or more builds side by side:
# what configurations (a) (`serve --cache=none --sluiced`) and (e)
# (`serve --cache=writeback`) of bootstorm.sh cost the servers and sluiced
# per request.  Storm times on a machine others share are noise; CPU time,
# context switches and system calls per request are not, nearly.
#
# For each round and build (the builds' order alternates), a small storm
# as bootstorm.sh runs it -- N clones of a BASE qcow2 base, fio's nbd
# engine reading the same BOOT bytes of each, random 4K-64K at depth 8 --
# for (a) (sluiced started fresh, the first storm fills it, a second one
# is counted: the hit path, which is what the local goal is about) and (e)
# (the page cache warmed by a first storm too).  The servers and sluiced
# are each counted over exactly the counted storm with `perf stat -p`
# (task-clock, context-switches, raw_syscalls:sys_enter), divided by
# fio's request count.  Also printed: the storm's IOPS (loaded: noise)
# and the (a)/(e) IOPS ratio of the same round.
#
#   bench/bootstorm/per-request.sh [-r ROUNDS] [-n CLONES] [-b BASE] [-s BOOT] NAME=BUILDDIR...
#   e.g. bench/bootstorm/per-request.sh old=/var/tmp/old/build new=build
# (defaults 3 rounds, 4 clones, 512M base, 128M boot set).  Needs perf
# (software events), fio with the nbd engine, qemu-img.  Cleans up on any
# exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=3 n=4 base=512M boot=128M
while getopts r:n:b:s: o; do
  case $o in
    r) rounds=$OPTARG ;; n) n=$OPTARG ;; b) base=$OPTARG ;; s) boot=$OPTARG ;;
    *) echo "usage: $0 [-r ROUNDS] [-n CLONES] [-b BASE] [-s BOOT] NAME=BUILDDIR..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
(($# >= 1)) || { echo "usage: $0 [-r ROUNDS] [-n CLONES] [-b BASE] [-s BOOT] NAME=BUILDDIR..." >&2; exit 2; }
for t in fio perf qemu-img python3; do
  command -v $t >/dev/null || { echo "per-request: needs $t" >&2; exit 1; }
done
EV=task-clock,context-switches,raw_syscalls:sys_enter
perf stat -x, -e $EV -o /dev/null true 2>/dev/null ||
  { echo "per-request: perf cannot count $EV here" >&2; exit 1; }
names=() builds=()
for a in "$@"; do
  [[ $a == *=* ]] || { echo "per-request: '$a' is not NAME=BUILDDIR" >&2; exit 2; }
  d=${a#*=}
  [[ -x $d/sluice && -x $d/sluiced && -f $d/filters/cache.so ]] ||
    { echo "per-request: $d has no sluice, sluiced and filters/cache.so (build it first)" >&2; exit 1; }
  names+=("${a%%=*}") builds+=("$(realpath "$d")")
done

source bench/lib/nbd-fio.sh
W=$(mktemp -d "${DIR:-/var/tmp}/storm-per-request.XXXXXX")
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT

bench_clones "$W" "$n" "$base"
for i in "${!builds[@]}"; do
  mkdir -m 755 "$W/mods$i"
  SLUICE_FILTER_DIR=$W/mods$i "${builds[i]}/sluice" filter install \
    "${builds[i]}/filters/cache.so" >/dev/null
done

# storm BUILD_INDEX CFG ROUND: one counted storm, one result line.
storm() {
  local bi=$1 cfg=$2 round=$3 b=${builds[$1]} i srv=() dpid=""
  export SLUICE_FILTER_DIR=$W/mods$bi
  if [[ $cfg == a ]]; then
    rm -f "$W/d.sock"
    "$b/sluiced" --socket "$W/d.sock" --memory 768M --quiet 2>>"$W/sluiced.log" &
    dpid=$!; pids+=($dpid)
    for _ in $(seq 1200); do [[ -S $W/d.sock ]] && break; sleep 0.05; done
  fi
  for i in $(seq "$n"); do
    rm -f "$W/s$i.sock"
    if [[ $cfg == a ]]; then
      "$b/sluice" serve --cache=none --sluiced="$W/d.sock" --read-only \
        --nbd "unix:$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/serve.log" &
    else
      "$b/sluice" serve --cache=writeback --read-only \
        --nbd "unix:$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/serve.log" &
    fi
    srv+=($!); pids+=($!)
  done
  bench_storm_job "$W" "$n" "$boot"
  fio --output=/dev/null "$W/storm.fio"          # fills sluiced / the page cache
  local sp
  sp=$(IFS=,; echo "${srv[*]}")
  perf stat -x, -o "$W/srv.stat" -e $EV -p "$sp" & local p1=$!
  local p2=""
  if [[ -n $dpid ]]; then perf stat -x, -o "$W/d.stat" -e $EV -p "$dpid" & p2=$!; fi
  sleep 0.5
  fio --output-format=json --output="$W/fio.json" "$W/storm.fio"
  kill -INT $p1 $p2; wait $p1 || true; [[ -n $p2 ]] && { wait $p2 || true; }
  for p in "${srv[@]}" $dpid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  python3 - "$W/fio.json" "$W/srv.stat" "${p2:+$W/d.stat}" "${names[bi]}" "$cfg" "$round" \
    >>"$W/results" <<'PY'
import json, sys
def stat(path):
    r = {}
    for line in open(path):
        p = line.strip().split(',')
        if len(p) > 3 and p[0][:1].isdigit():
            r[p[2]] = float(p[0])
    return r
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
ios = j["total_ios"]
s = stat(sys.argv[2])
d = stat(sys.argv[3]) if sys.argv[3] else {}
print(json.dumps({"build": sys.argv[4], "cfg": sys.argv[5], "round": int(sys.argv[6]),
                  "iops": j["iops"], "ios": ios,
                  "srv_us": s["task-clock"] * 1000 / ios, "srv_cs": s["context-switches"] / ios,
                  "srv_sys": s["raw_syscalls:sys_enter"] / ios,
                  "d_us": d.get("task-clock", 0) * 1000 / ios,
                  "d_cs": d.get("context-switches", 0) / ios,
                  "d_sys": d.get("raw_syscalls:sys_enter", 0) / ios}))
PY
  tail -n 1 "$W/results" >&2
}

for ((r = 0; r < rounds; r++)); do
  order=("${!builds[@]}")
  ((r % 2)) && order=($(printf '%s\n' "${order[@]}" | tac))
  for i in "${order[@]}"; do
    storm "$i" a "$r"
    storm "$i" e "$r"
  done
done

echo "Boot storm per request: $n clones of a $base base, boot set $boot, fio nbd randread 4K-64K depth 8, hits (second storm); $rounds rounds, median [min-max]; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u +%H:%M) UTC"
python3 - "$W/results" "${names[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
names = sys.argv[2:]
def cell(vals, f):
    return (f + " [" + f + "-" + f + "]") % (statistics.median(vals), min(vals), max(vals))
print()
print("| build | cfg | servers CPU us | servers switches | servers syscalls | sluiced CPU us | sluiced switches | sluiced syscalls | total CPU us | IOPS (loaded) | (a)/(e) IOPS, same round |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for n in names:
    for cfg in "ae":
        rs = [r for r in rows if r["build"] == n and r["cfg"] == cfg]
        if not rs:
            continue
        ratio = "-"
        if cfg == "a":
            e = {r["round"]: r for r in rows if r["build"] == n and r["cfg"] == "e"}
            rr = [r["iops"] / e[r["round"]]["iops"] for r in rs if r["round"] in e]
            ratio = cell(rr, "%.2f") if rr else "-"
        print("| %s | (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            n, cfg, cell([r["srv_us"] for r in rs], "%.1f"), cell([r["srv_cs"] for r in rs], "%.2f"),
            cell([r["srv_sys"] for r in rs], "%.2f"),
            cell([r["d_us"] for r in rs], "%.1f") if cfg == "a" else "-",
            cell([r["d_cs"] for r in rs], "%.2f") if cfg == "a" else "-",
            cell([r["d_sys"] for r in rs], "%.2f") if cfg == "a" else "-",
            cell([r["srv_us"] + r["d_us"] for r in rs], "%.1f"),
            cell([r["iops"] for r in rs], "%.0f"), ratio))
PY
