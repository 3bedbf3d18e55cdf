#!/usr/bin/env bash
# RBD boot storm (issue 16, "Performance"): N RBD clones of one protected
# snapshot, on a single-node cluster this script starts
# (scripts/ceph-single-node.sh) and stops by pid, read the same boot set at
# once, each through its own NBD server, with fio's nbd engine (random
# reads of 4K-64K, depth 8, one seed for all: clones boot alike).
# Contenders, in the same run, one after the other:
#   (a) sluice serve --read-only --sluiced   (the parent through sluiced)
#   (b) sluice serve --read-only             (each process reads the parent)
#   (c) qemu-nbd --read-only rbd:...         (QEMU's rbd driver)
# Reported per contender: storm time, aggregate IOPS, the bytes the OSD
# sent to clients during the storm (op_out_bytes of `ceph daemon osd.0 perf
# dump`: a cluster without a manager keeps no pool statistics) and its
# ratio to one boot set, and for (a) the daemon's backend bytes.  Goal: (a)
# reads the parent from RADOS about once, (b) and (c) about N times.
#
#   bench/rbd-bootstorm.sh [N_CLONES] [PARENT_SIZE_MIB] [BOOT_SET_MIB]
#   (defaults 8 256 128; BUILD=build)
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/nbd-fio.sh
N=${1:-8} PARENT=${2:-256} BOOT=${3:-128}
BUILD=${BUILD:-build}
SLUICE=$PWD/$BUILD/sluice SLUICED=$PWD/$BUILD/sluiced
for t in fio qemu-nbd rbd ceph python3; do
  command -v $t >/dev/null || { echo "rbd-bootstorm: needs $t" >&2; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "rbd-bootstorm: fio has no nbd engine" >&2; exit 1; }
[[ -x $SLUICED ]] || { echo "rbd-bootstorm: build first (scripts/build.sh $BUILD)" >&2; exit 1; }
"$SLUICE" --version | grep -q '+rbd' || { echo "rbd-bootstorm: $SLUICE has no RBD support" >&2; exit 1; }
W=$(mktemp -d /tmp/rbd-bootstorm.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/ceph-single-node.sh stop "$W/ceph" || true
  rm -rf "$W"
}
trap cleanup EXIT
export SLUICE_FILTER_DIR=$W/mods
mkdir -m 755 "$W/mods"
"$SLUICE" filter install "$BUILD/filters/cache.so" >/dev/null
eval "$(scripts/ceph-single-node.sh start "$W/ceph")"

echo "rbd-bootstorm: $N clones of a $PARENT MiB parent, boot set $BOOT MiB, in $W" >&2
head -c $((PARENT << 20)) /dev/urandom >"$W/parent.raw"
rbd import --no-progress "$W/parent.raw" rbd/gold
rm "$W/parent.raw"
rbd snap create rbd/gold@boot 2>/dev/null
rbd snap protect rbd/gold@boot
for i in $(seq "$N"); do
  rbd clone rbd/gold@boot "rbd/c$i"
  # a little of each clone's own (outside the boot set's first MiB)
  "$SLUICE" io -f raw -c "write -P $i $((BOOT + i))M 1M" "rbd:rbd/c$i" >/dev/null
done
osd_out() {
  ceph --admin-daemon "$W/ceph/run/osd.0.asok" perf dump |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["osd"]["op_out_bytes"])'
}

storm() { # CFG: prints "CFG seconds iops osd_bytes daemon_bytes"
  local cfg=$1 i srv=() dpid="" dbytes=0
  if [[ $cfg == a ]]; then
    rm -f "$W/d.sock"
    "$SLUICED" --socket "$W/d.sock" --memory $((PARENT + 64))M --quiet --ceph-conf "$CEPH_CONF" \
      2>>"$W/sluiced.log" &
    dpid=$!; pids+=($dpid)
    for _ in $(seq 600); do [[ -S $W/d.sock ]] && break; sleep 0.05; done
  fi
  for i in $(seq "$N"); do
    rm -f "$W/s$i.sock"
    case $cfg in
      a) "$SLUICE" serve -f raw --read-only --sluiced="$W/d.sock" --nbd "unix:$W/s$i.sock" \
           "rbd:rbd/c$i" >/dev/null 2>>"$W/serve.log" & ;;
      b) "$SLUICE" serve -f raw --read-only --nbd "unix:$W/s$i.sock" "rbd:rbd/c$i" \
           >/dev/null 2>>"$W/serve.log" & ;;
      c) qemu-nbd -f raw --read-only --persistent --shared=4 --cache=writeback \
           -k "$W/s$i.sock" "rbd:rbd/c$i" >/dev/null 2>>"$W/qemu-nbd.log" & ;;
    esac
    srv+=($!); pids+=($!)
  done
  bench_storm_job "$W" "$N" "${BOOT}M"
  local t0 t1 b0 b1
  b0=$(osd_out)
  t0=$(date +%s%N)
  fio --output-format=json --output="$W/fio.json" "$W/storm.fio" ||
    { echo "rbd-bootstorm: ($cfg) failed: $(tail -n 3 "$W"/*.log)" >&2; exit 1; }
  t1=$(date +%s%N)
  b1=$(osd_out)
  if [[ -n $dpid ]]; then
    dbytes=$("$SLUICE" cache stats --socket "$W/d.sock" --output=json |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["backend_bytes"])')
  fi
  for p in "${srv[@]}" $dpid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  python3 - "$W/fio.json" "$cfg" "$t0" "$t1" "$((b1 - b0))" "$dbytes" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["jobs"][0]
secs = (int(sys.argv[4]) - int(sys.argv[3])) / 1e9
print(sys.argv[2], "%.2f" % secs, round(d["read"]["iops"]), sys.argv[5], sys.argv[6])
PY
}

res=()
for cfg in a b c; do res+=("$(storm "$cfg")"); done
python3 - "$N" "$PARENT" "$BOOT" "${res[@]}" <<'PY'
import sys
n, parent, boot = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rows = {r.split()[0]: r.split()[1:] for r in sys.argv[4:]}
names = {"a": "sluice serve --sluiced", "b": "sluice serve", "c": "qemu-nbd (rbd driver)"}
print("RBD boot storm: %d clones of a %d MiB parent snapshot, boot set %d MiB each, "
      "fio nbd randread 4K-64K depth 8" % (n, parent, boot))
print()
print("| contender | storm time | IOPS | RADOS bytes read (OSD) | x one boot set | sluiced backend bytes |")
print("|---|---|---|---|---|---|")
for c in "abc":
    s, iops, osd, dmn = rows[c]
    print("| %s | %s s | %s | %.1f MiB | %.2f | %s |" % (
        names[c], s, iops, int(osd) / 2**20, int(osd) / (boot * 2**20),
        "%.1f MiB" % (int(dmn) / 2**20) if c == "a" else "-"))
a, b = int(rows["a"][2]), int(rows["b"][2])
print()
print("RADOS bytes, with sluiced against without: %.2fx (%.1f MiB against %.1f MiB)" %
      (a / max(b, 1), a / 2**20, b / 2**20))
PY
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
