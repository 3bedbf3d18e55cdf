#!/usr/bin/env bash
# Boot storm (issue 13, "Performance"): N linked clones of one golden image
# read the same boot set at once, each through its own NBD server, with
# fio's nbd engine (random reads of 4K-64K, queue depth 8).  Contenders,
# all in the same run, the images' pages dropped from the page cache before
# each:
#   (a) sluice serve --cache=none --sluiced     (b) sluice serve --cache=none
#   (c) qemu-nbd --cache=none                   (d) qemu-nbd --cache=writeback
#   (e) sluice serve --cache=writeback
# Two storage profiles, both every run: "network" puts every contender's
# processes (servers and sluiced) in a blkio cgroup that limits reads of
# the images' device to 200 MB/s and 5000 IOPS (cgroup v1
# blkio.throttle.*, or v2 io.max), and "local" is unthrottled.
# Reported: storm time, aggregate IOPS, p99 completion latency, CPU seconds
# of the servers (and sluiced), bytes the servers (and sluiced) read from
# storage (/proc/PID/io) and, for (a), the daemon's own backend bytes;
# ratios against (b).
#
# With ROUNDS=R (default 1) every profile runs its five contenders R times,
# in order a..e, then e..a, and so on, so that a slow spell of the shared
# machine does not fall on one contender; the tables give each contender's
# median, and the ratios are given per round as well as of the medians.
#
#   bench/bootstorm/bootstorm.sh [N_CLONES] [BASE_SIZE] [BOOT_SET]
#   (defaults 8 1G 256M; BUILD=build; DIR=/var/tmp; ROUNDS=1)
set -euo pipefail
cd "$(dirname "$0")/../.."
source bench/lib/nbd-fio.sh
N=${1:-8} BASE=${2:-1G} BOOT=${3:-256M}
ROUNDS=${ROUNDS:-1}
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "bootstorm: ROUNDS=$ROUNDS: expected a positive integer" >&2; exit 1; }
BUILD=${BUILD:-build}
SLUICE=$PWD/$BUILD/sluice SLUICED=$PWD/$BUILD/sluiced
for t in fio qemu-nbd qemu-img python3; do
  command -v $t >/dev/null || { echo "bootstorm: needs $t" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "bootstorm: fio has no nbd engine" >&2; exit 1; }
[[ -x $SLUICED ]] || { echo "bootstorm: build first (scripts/build.sh $BUILD)" >&2; exit 1; }
W=$(mktemp -d "${DIR:-/var/tmp}/bootstorm.XXXXXX")
pids=()
cg=""
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [[ -n $cg && -d $cg ]] && rmdir "$cg" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
export SLUICE_FILTER_DIR=$W/mods
mkdir -m 755 "$W/mods"
"$SLUICE" filter install "$BUILD/filters/cache.so" >/dev/null

echo "bootstorm: $N clones of a $BASE base, boot set $BOOT, in $W" >&2
bench_clones "$W" "$N" "$BASE"

# The images' block device (whole disk) for the throttle.
src=$(findmnt -no SOURCE -T "$W")
disk=/dev/$(lsblk -no PKNAME "$src" 2>/dev/null | head -1)
[[ $disk == /dev/ ]] && disk=$src
majmin=$(lsblk -dno MAJ:MIN "$disk" | tr -d ' ')
make_cgroup() {
  if [[ -d /sys/fs/cgroup/blkio ]]; then
    cg=/sys/fs/cgroup/blkio/sluice-bootstorm-$$
    mkdir -p "$cg"
    echo "$majmin 200000000" >"$cg/blkio.throttle.read_bps_device"
    echo "$majmin 5000" >"$cg/blkio.throttle.read_iops_device"
  else
    cg=/sys/fs/cgroup/sluice-bootstorm-$$
    mkdir -p "$cg"
    echo "$majmin rbps=200000000 riops=5000" >"$cg/io.max"
  fi
}
join_cgroup() { [[ -n ${in_cg:-} ]] && echo "$1" >"$cg/cgroup.procs"; return 0; }
evict() {
  python3 - "$W"/*.qcow2 <<'PY'
import os, sys
for p in sys.argv[1:]:
    fd = os.open(p, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}
cpu_s() { awk '{print ($14 + $15) / 100}' "/proc/$1/stat"; }
rbytes() { awk '/^read_bytes:/ {print $2}' "/proc/$1/io"; }

# run PROFILE CONFIG ROUND: one storm; appends a JSON line to $W/results.
run() {
  local profile=$1 cfg=$2 round=$3 i srv=() dpid=""
  evict
  if [[ $cfg == a ]]; then
    "$SLUICED" --socket "$W/d.sock" --memory 768M --quiet 2>>"$W/sluiced.log" &
    dpid=$!; pids+=($dpid); join_cgroup $dpid
    for _ in $(seq 1200); do [[ -S $W/d.sock ]] && break; sleep 0.05; done
  fi
  for i in $(seq "$N"); do
    rm -f "$W/s$i.sock"
    case $cfg in
      a) "$SLUICE" serve --cache=none --sluiced="$W/d.sock" --read-only --nbd "unix:$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/serve.log" & ;;
      b) "$SLUICE" serve --cache=none --read-only --nbd "unix:$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/serve.log" & ;;
      e) "$SLUICE" serve --cache=writeback --read-only --nbd "unix:$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/serve.log" & ;;
      c) qemu-nbd --cache=none --aio=threads --read-only --persistent --shared=4 -f qcow2 -k "$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/qemu-nbd.log" & ;;
      d) qemu-nbd --cache=writeback --aio=threads --read-only --persistent --shared=4 -f qcow2 -k "$W/s$i.sock" "$W/c$i.qcow2" 2>>"$W/qemu-nbd.log" & ;;
    esac
    srv+=($!); pids+=($!); join_cgroup $!
  done
  bench_storm_job "$W" "$N" "$BOOT"
  local t0 t1
  t0=$(date +%s%N)
  if ! fio --output-format=json --output="$W/fio.json" "$W/storm.fio"; then
    # One failed configuration does not lose the others' figures.
    echo "bootstorm: $profile ($cfg) failed: $(tail -n 3 "$W/serve.log" "$W/qemu-nbd.log" 2>/dev/null)" >&2
    for p in "${srv[@]}" $dpid; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    return 0
  fi
  t1=$(date +%s%N)
  local cpu=0 rb=0 dbytes=0
  for p in "${srv[@]}" $dpid; do
    cpu=$(python3 -c "print($cpu + $(cpu_s "$p"))")
    rb=$((rb + $(rbytes "$p")))
  done
  if [[ -n $dpid ]]; then
    dbytes=$("$SLUICE" cache stats --socket "$W/d.sock" --output=json |
             python3 -c "import json,sys; print(json.load(sys.stdin)['total']['backend_bytes'])")
  fi
  for p in "${srv[@]}" $dpid; do kill -TERM "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  python3 - "$W/fio.json" "$profile" "$cfg" $(( (t1 - t0) / 1000 )) "$cpu" "$rb" "$dbytes" "$round" \
    <<'PY' | tee -a "$W/results" >&2
import json, sys
d = json.load(open(sys.argv[1]))
j = d["jobs"][0]["read"]
pct = j.get("clat_ns", {}).get("percentile", {})
p99 = pct.get("99.000000", 0) / 1e6
print(json.dumps({"profile": sys.argv[2], "cfg": sys.argv[3], "time_s": int(sys.argv[4]) / 1e6,
                  "iops": j["iops"], "p99_ms": p99, "cpu_s": float(sys.argv[5]),
                  "read_bytes": int(sys.argv[6]), "daemon_bytes": int(sys.argv[7]),
                  "errors": d["jobs"][0].get("error", 0), "round": int(sys.argv[8])}))
PY
}

make_cgroup
for profile in network local; do
  in_cg=""
  [[ $profile == network ]] && in_cg=1
  for ((round = 1; round <= ROUNDS; round++)); do
    order="a b c d e"
    ((round % 2 == 0)) && order="e d c b a"
    for cfg in $order; do
      echo "bootstorm: $profile ($cfg), round $round of $ROUNDS" >&2
      run $profile $cfg $round
    done
  done
done

boot_bytes=$(python3 -c "
s='$BOOT'; m={'K':1<<10,'M':1<<20,'G':1<<30}
print(int(s[:-1]) * m[s[-1].upper()] if s[-1].upper() in m else int(s))")
python3 - "$W/results" "$boot_bytes" "$N" "$BASE" "$BOOT" "$ROUNDS" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
boot, rounds = int(sys.argv[2]), int(sys.argv[6])
names = {"a": "(a) sluice --cache=none --sluiced", "b": "(b) sluice --cache=none",
         "c": "(c) qemu-nbd --cache=none", "d": "(d) qemu-nbd --cache=writeback",
         "e": "(e) sluice --cache=writeback"}
print("Boot storm: %s clones of a %s base, boot set %s each, fio nbd randread 4K-64K depth 8%s" %
      (sys.argv[3], sys.argv[4], sys.argv[5],
       "; %d rounds, medians" % rounds if rounds > 1 else ""))
def med(rs, key):
    return statistics.median(r[key] for r in rs)
for prof in ("network", "local"):
    by = {c: [r for r in rows if r["profile"] == prof and r["cfg"] == c] for c in "abcde"}
    missing = [c for c in "abcde" if not by[c]]
    if missing:
        print("\n%s storage: incomplete (no %s), see the lines above" % (prof, ", ".join(missing)))
        continue
    rs = {c: {k: med(by[c], k) for k in ("time_s", "iops", "p99_ms", "cpu_s", "read_bytes",
                                        "daemon_bytes")} for c in "abcde"}
    b = rs["b"]
    print("\n%s storage%s\n" % (prof, " (blkio throttle 200 MB/s, 5000 IOPS)" if prof == "network" else " (unthrottled)"))
    print("| configuration | storm s | vs (b) | IOPS | p99 ms | CPU s | storage read (x boot set) | daemon read (x boot set) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in "abcde":
        r = rs[c]
        print("| %s | %.2f | %.2fx | %.0f | %.2f | %.1f | %.0f MiB (%.2fx) | %s |" % (
            names[c], r["time_s"], r["time_s"] / b["time_s"], r["iops"], r["p99_ms"], r["cpu_s"],
            r["read_bytes"] / 2**20, r["read_bytes"] / boot,
            "%.0f MiB (%.2fx)" % (r["daemon_bytes"] / 2**20, r["daemon_bytes"] / boot) if c == "a" else "-"))
    print("\nstorm time (a)/(b) %.2f, (a)/(c) %.2f, (a)/(d) %.2f; throughput (a)/(e) %.2f" % (
        rs["a"]["time_s"] / b["time_s"], rs["a"]["time_s"] / rs["c"]["time_s"],
        rs["a"]["time_s"] / rs["d"]["time_s"], rs["e"]["time_s"] / rs["a"]["time_s"]))
    if rounds > 1:
        # Each round's own ratios: how far one round can be trusted.
        per = []
        for n in range(1, rounds + 1):
            t = {c: next((r["time_s"] for r in by[c] if r["round"] == n), None) for c in "abde"}
            if None in t.values():
                continue
            per.append("round %d: (a)/(b) %.2f, (a)/(d) %.2f, (a)/(e) %.2f" % (
                n, t["a"] / t["b"], t["a"] / t["d"], t["e"] / t["a"]))
        print("\n" + "\n".join(per))
PY
