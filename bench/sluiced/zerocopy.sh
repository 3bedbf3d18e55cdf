#!/usr/bin/env bash
# What the cache client's copy costs, in the same run (issue 13, zero copy
# into the export's arena): one `sluice serve --sluiced` of a qcow2 clone,
# its base all in sluiced's cache, read through NBD by fio (random reads
# of BS at queue depth 8, all hits) with SLUICE_CACHE_ZEROCOPY=1 (the
# daemon writes into the export's request buffers) and =0 (into the
# client's bounce, then memcpy), alternating, ROUNDS times.  Reports
# IOPS, and CPU seconds of the serve process and of sluiced per GiB read
# (from /proc/PID/stat), medians of the rounds; the order alternates.
#
#   bench/sluiced/zerocopy.sh [BS] [SECONDS] [ROUNDS]   (defaults 64k 5 3)
set -euo pipefail
cd "$(dirname "$0")/../.."
BS=${1:-64k} SECS=${2:-5} ROUNDS=${3:-3}
BUILD=${BUILD:-build}
SLUICE=$PWD/$BUILD/sluice SLUICED=$PWD/$BUILD/sluiced
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "zerocopy: fio has no nbd engine" >&2; exit 1; }
W=$(mktemp -d /tmp/zerocopy.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
export SLUICE_FILTER_DIR=$W/mods
mkdir -m 755 "$W/mods"
"$SLUICE" filter install "$BUILD/filters/cache.so" >/dev/null
head -c 256M /dev/urandom >"$W/base.raw"
qemu-img convert -f raw -O qcow2 "$W/base.raw" "$W/base.qcow2"
rm "$W/base.raw"
qemu-img create -q -f qcow2 -b "$W/base.qcow2" -F qcow2 "$W/clone.qcow2"
"$SLUICED" --socket "$W/d.sock" --memory 512M --quiet 2>"$W/sluiced.log" &
dpid=$!
pids+=($dpid)
for _ in $(seq 100); do [[ -S $W/d.sock ]] && break; sleep 0.05; done
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

run() {  # run ZC: one round; prints "IOPS SERVE_CPU_S_PER_GIB SLUICED_CPU_S_PER_GIB"
  rm -f "$W/n.sock"
  SLUICE_CACHE_DEBUG=1 SLUICE_CACHE_ZEROCOPY=$1 "$SLUICE" serve --nbd "unix:$W/n.sock" --cache=none \
    --sluiced="$W/d.sock" "$W/clone.qcow2" 2>>"$W/serve.log" &
  local spid=$!
  pids+=($spid)
  for _ in $(seq 100); do [[ -S $W/n.sock ]] && break; sleep 0.05; done
  # warm: every block of the base in the daemon's cache
  fio --name=warm --ioengine=nbd --uri="nbd+unix:///?socket=$W/n.sock" --rw=read \
    --bs=1M --iodepth=4 --size=256M --output=/dev/null
  local s0 d0 s1 d1
  s0=$(ticks $spid) d0=$(ticks $dpid)
  fio --name=hits --ioengine=nbd --uri="nbd+unix:///?socket=$W/n.sock" --rw=randread \
    --bs="$BS" --iodepth=8 --size=256M --time_based --runtime="$SECS" \
    --output-format=json --output="$W/fio.json"
  s1=$(ticks $spid) d1=$(ticks $dpid)
  kill -TERM $spid
  wait $spid || true
  python3 - "$W/fio.json" "$((s1 - s0))" "$((d1 - d0))" "$hz" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]["read"]
gib = j["io_bytes"] / 2**30
hz = float(sys.argv[4])
print("%.0f %.3f %.3f" % (j["iops"], int(sys.argv[2]) / hz / gib, int(sys.argv[3]) / hz / gib))
PY
}

echo "zerocopy: bs $BS, ${SECS}s x $ROUNDS rounds; machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq "$ROUNDS"); do
  order="1 0"
  ((r % 2 == 0)) && order="0 1" # neither always goes first
  for zc in $order; do echo "$zc $(run $zc)"; done
done >"$W/rounds"
python3 - "$W/rounds" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    zc, iops, s, d = line.split()
    rows.setdefault(zc, []).append((float(iops), float(s), float(d)))
med = {zc: [statistics.median(c) for c in zip(*v)] for zc, v in rows.items()}
print("| client copy | IOPS | serve CPU s/GiB | sluiced CPU s/GiB |")
print("|---|---|---|---|")
for zc, name in (("0", "bounce + memcpy"), ("1", "zero copy")):
    print("| %s | %.0f | %.3f | %.3f |" % (name, *med[zc]))
print("zero copy / bounce: IOPS %.2fx, serve CPU per GiB %.2fx" %
      (med["1"][0] / med["0"][0], med["1"][1] / med["0"][1]))
PY
grep "straight into" "$W/serve.log" | tail -2 || true
