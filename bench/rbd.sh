#!/usr/bin/env bash
# fio's nbd engine against `sluice serve rbd:...` and `qemu-nbd` (QEMU's rbd
# driver) on the same RBD image of a single-node Ceph cluster that this
# script starts (scripts/ceph-single-node.sh) and stops by pid (issue 16).
# Servers alternate line by line, best of ROUNDS; all with their default
# cache mode (writeback: librbd's cache on).  sluice runs twice: with the
# 16 workers serve gives an RBD image by default, and with the 4 it gives
# files -- each request to librbd occupies a worker until its completion,
# so the workers bound the requests in flight, where qemu-nbd's coroutines
# submit all 32 of a depth-32 client.
#   bench/rbd.sh [--quick]            (--quick: 2 s per job, one round)
#   SLUICE=/other/build/sluice bench/rbd.sh   measures that binary
# Prints a markdown table with IOPS, MiB/s and the ratio sluice/qemu-nbd,
# then the load average.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
if [[ -n ${SLUICE:-} ]]; then
  sluice=$SLUICE
else
  scripts/build.sh build
  sluice=$root/build/sluice
fi
source bench/lib/setup.sh
source bench/lib/nbd-fio.sh
bench_need_rbd rbd-bench "$sluice"
size=256M runtime=5 rounds=2
[[ ${1:-} == --quick ]] && { runtime=2; rounds=1; }
bench_need rbd-bench fio qemu-nbd rbd
dir=$(mktemp -d /tmp/rbd-bench.XXXXXX)
DIR=$dir PIDS=()
bench_ceph_start
img=rbd/bench
rbd create --size "$size" "$img"
# Fully written, so reads hit objects (a hole is answered without an OSD).
rbd bench --io-type write --io-size 4M --io-pattern seq --io-total "$size" \
  "$img" >/dev/null

start() { bench_start "$@"; } # SOCK COMMAND...
stop_all() { bench_stop_all; }
job() { # URI RW BS DEPTH -> IOPS
  local v
  v=$(bench_job "$1" "$2" "$3" "$4" "$size" "$runtime")
  echo "${v%% *}"
}

launch() {
  local s=$dir/$1.sock
  case $1 in
    sluice) start "$s" "$sluice" serve -f raw --nbd "unix:$s" "rbd:$img" ;;
    sluice-w4) start "$s" "$sluice" serve -f raw --workers 4 --nbd "unix:$s" "rbd:$img" ;;
    qemu-nbd) start "$s" qemu-nbd -k "$s" -f raw --cache=writeback -e 4 -t "rbd:$img" ;;
  esac
  uri="nbd+unix:///?socket=$s"
}

lines=("4K random read, depth 1|randread|4k|1" "4K random read, depth 32|randread|4k|32"
       "4K random write, depth 32|randwrite|4k|32" "1M sequential read, depth 4|read|1M|4")
declare -A best
for ((r = 0; r < rounds; r++)); do
  for l in "${lines[@]}"; do
    IFS='|' read -r name rw bs depth <<<"$l"
    for s in sluice sluice-w4 qemu-nbd; do
      launch "$s"
      v=$(job "$uri" "$rw" "$bs" "$depth")
      stop_all
      [[ ${best["$name|$s"]:-0} -ge $v ]] || best["$name|$s"]=$v
    done
  done
done

echo "| line | sluice serve rbd: (16 workers) | ratio | sluice --workers 4 | ratio | qemu-nbd rbd: |"
echo "|---|---|---|---|---|---|"
for l in "${lines[@]}"; do
  IFS='|' read -r name rw bs depth <<<"$l"
  a=${best["$name|sluice"]} w=${best["$name|sluice-w4"]} b=${best["$name|qemu-nbd"]}
  python3 -c "
a,w,b=$a,$w,$b
bs={'4k': 4096, '1M': 1 << 20}['$bs']
def cell(v): return '%d IOPS, %.1f MiB/s' % (v, v * bs / 1048576)
print('| $name | %s | %.2fx | %s | %.2fx | %s |' % (cell(a), a/max(b,1), cell(w), w/max(b,1), cell(b)))"
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
