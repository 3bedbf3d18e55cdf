#!/usr/bin/env bash
# What one depth-1 4K read of an RBD image costs the NBD server, counted
# rather than timed (issue 16: sluice serve rbd: against qemu-nbd rbd: at
# depth 1, where both wait on the same OSD round trip and IOPS on a shared
# machine cannot tell them apart): context switches, syscalls and CPU
# microseconds per request of the server process (perf stat -p over a fio
# job of a fixed number of random 4K reads at queue depth 1), on a
# single-node cluster this script starts (scripts/ceph-single-node.sh) and
# stops by pid.  sluice runs twice: as it comes (its NBD reader polls the
# socket for a while after a lone request, which costs syscalls and buys
# latency) and with --poll-us 0.  Servers alternate within each round; medians over ROUNDS.
# Needs root (or perf_event_paranoid <= 0), perf, fio, qemu-nbd, rbd.
#   bench/rbd-per-request.sh [-r ROUNDS] [-n N] [SLUICE-BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib/setup.sh
source bench/lib/nbd-fio.sh
rounds=3 n=20000
bench_rounds_opts "$0 [-r ROUNDS] [-n N] [SLUICE-BINARY]" "$@"
shift "$BENCH_SHIFT"
sluice=${1:-$PWD/build/sluice}
bench_need rbd-per-request fio perf qemu-nbd rbd python3
bench_need_rbd rbd-per-request "$sluice"
DIR=$(mktemp -d /tmp/rbd-per-request.XXXXXX) PIDS=()
bench_ceph_start
rbd create --size 256M rbd/img
rbd bench --io-type write --io-size 4M --io-pattern seq --io-total 256M rbd/img >/dev/null

servers=(sluice sluice-nopoll qemu-nbd)
measure() { # SERVER -> "cs syscalls cpu_us" per request
  local s=$DIR/s.sock
  case $1 in
    sluice) bench_start "$s" "$sluice" serve -f raw --nbd "unix:$s" "rbd:rbd/img" ;;
    sluice-nopoll) bench_start "$s" "$sluice" serve -f raw --poll-us 0 --nbd "unix:$s" \
                     "rbd:rbd/img" ;;
    qemu-nbd) bench_start "$s" qemu-nbd -k "$s" -f raw --cache=writeback -e 4 -t "rbd:rbd/img" ;;
  esac
  # one warm-up job (connections, librbd's first reads), then the counted one
  fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$s" --rw=randread --bs=4k \
    --iodepth=1 --size=256M --number_ios=500 --output=/dev/null
  perf stat -x, -e context-switches,raw_syscalls:sys_enter,task-clock -p "$SERVER_PID" \
    -o "$DIR/perf.txt" &
  local perf=$!
  sleep 0.5
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$s" --rw=randread --bs=4k \
    --iodepth=1 --size=256M --number_ios="$n" --randseed=7 --output=/dev/null
  kill -INT $perf; wait $perf 2>/dev/null || true
  bench_stop_all
  python3 - "$DIR/perf.txt" "$n" <<'PY'
import sys
v = {}
for line in open(sys.argv[1]):
    f = line.strip().split(",")
    if len(f) > 2 and f[0] and f[0][0].isdigit():
        v[f[2]] = float(f[0])
n = int(sys.argv[2])
print("%.2f %.2f %.1f" % (v.get("context-switches", 0) / n,
      v.get("raw_syscalls:sys_enter", 0) / n, v.get("task-clock", 0) * 1e3 / n))
PY
}

declare -A res
for ((r = 0; r < rounds; r++)); do
  order=("${servers[@]}")
  ((r % 2)) && order=(qemu-nbd sluice-nopoll sluice)
  for s in "${order[@]}"; do res[$s]+="$(measure "$s");"; done
done
echo "Per depth-1 4K random read of a 256 MiB RBD image, $n reads, median of $rounds rounds:"
echo
echo "| server | context switches | syscalls | CPU us |"
echo "|---|---|---|---|"
for s in "${servers[@]}"; do
  python3 - "$s" "${res[$s]}" <<'PY'
import statistics, sys
rows = [list(map(float, x.split())) for x in sys.argv[2].split(";") if x.strip()]
med = [statistics.median(c) for c in zip(*rows)]
print("| %s | %.2f | %.2f | %.1f |" % (sys.argv[1], *med))
PY
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
