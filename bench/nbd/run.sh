#!/usr/bin/env bash
# fio's nbd engine against `sluice serve`, `qemu-nbd` and `nbdkit file`, on
# the same image and machine, in the same run (issue 5).  Servers are
# measured alternately, best of ROUNDS, and reported with ratios:
#   sluice (qcow2) / qemu-nbd (qcow2) and sluice (raw) / nbdkit file (raw).
# sluice also runs with polling off (--poll-us 0): by default its reader
# polls for up to 64 us after a lone request, which buys depth-1 latency
# with CPU the peers do not spend.  So every server's CPU time (user +
# system, all threads, from /proc/PID/stat) is measured over each job and
# reported as CPU seconds per million requests.
#   bench/nbd/run.sh [--quick]       (--quick: 64 MiB image, 2 s per job)
#   SLUICE=/other/build/sluice bench/nbd/run.sh ...   measures that binary
#   (another build, for a before/after) instead of building build/
# Prints IOPS and throughput per server and line, the ratios, and a second
# table of CPU seconds per million requests.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
if [[ -n ${SLUICE:-} ]]; then
  sluice=$SLUICE
  [[ -x $sluice ]] || { echo "nbd-bench: SLUICE=$sluice is not an executable" >&2; exit 1; }
else
  scripts/build.sh build
  sluice=$root/build/sluice
fi
size=1G runtime=5 rounds=2
[[ ${1:-} == --quick ]] && { size=64M; runtime=2; rounds=1; }
for c in fio qemu-nbd nbdkit qemu-img; do command -v $c >/dev/null || { echo "needs $c"; exit 1; }; done
dir=$(mktemp -d /tmp/nbd-bench.XXXXXX)
DIR=$dir PIDS=()
source bench/lib/nbd-fio.sh
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT

# A fully written image, so reads hit data: raw, and the same as qcow2.
bench_written_images "$dir" "$size"
# Start clean: without this the fill's gigabyte of dirty pages is still
# being written back during the first rounds, and the write lines measure
# the kernel's dirty throttling (about 25-35k IOPS for every server) rather
# than the servers.
sync

start() { bench_start "${@:2}"; } # NAME SOCK COMMAND...
stop_all() { bench_stop_all; }

job() { # URI RW BS DEPTH -> "IOPS CPU-SECONDS-PER-MILLION-REQUESTS" of the server
  # Every job starts with both images in the page cache: this kernel
  # reclaims cold page cache proactively (DAMON), and no server's job
  # should pay for reading back what was evicted during an earlier one.
  cat "$dir/disk.raw" "$dir/disk.qcow2" >/dev/null
  bench_job "$1" "$2" "$3" "$4" "$size" "$runtime"
}

servers=(sluice-qcow2 sluice-qcow2-nopoll qemu-nbd sluice-raw sluice-raw-nopoll nbdkit)
launch() {
  local s=$dir/$1.sock
  case $1 in
    sluice-qcow2) start "$1" "$s" "$sluice" serve --nbd "unix:$s" "$dir/disk.qcow2" ;;
    sluice-raw) start "$1" "$s" "$sluice" serve --nbd "unix:$s" "$dir/disk.raw" ;;
    sluice-qcow2-nopoll) start "$1" "$s" "$sluice" serve --poll-us 0 --nbd "unix:$s" \
                           "$dir/disk.qcow2" ;;
    sluice-raw-nopoll) start "$1" "$s" "$sluice" serve --poll-us 0 --nbd "unix:$s" \
                         "$dir/disk.raw" ;;
    qemu-nbd) start "$1" "$s" qemu-nbd -k "$s" -f qcow2 --cache=writeback --aio=threads \
                -e 4 -t "$dir/disk.qcow2" ;;
    nbdkit) start "$1" "$s" nbdkit -f -U "$s" file "$dir/disk.raw" ;;
  esac
  uri="nbd+unix:///?socket=$s"
}

lines=("4K random read, depth 1|randread|4k|1" "4K random read, depth 32|randread|4k|32"
       "4K random write, depth 32|randwrite|4k|32" "1M sequential read, depth 4|read|1M|4")
declare -A best cpu
for ((r = 0; r < rounds; r++)); do
  for l in "${lines[@]}"; do
    IFS='|' read -r name rw bs depth <<<"$l"
    for s in "${servers[@]}"; do
      launch "$s"
      out=$(job "$uri" "$rw" "$bs" "$depth")
      read -r v c <<<"$out"
      stop_all
      key="$name|$s"
      [[ ${best[$key]:-0} -ge $v ]] || best[$key]=$v
      # The least CPU per request over the rounds, like the best IOPS.
      if [[ -z ${cpu[$key]:-} ]] || python3 -c "import sys; sys.exit(not $c < ${cpu[$key]})"; then
        cpu[$key]=$c
      fi
    done
  done
done

echo "| line | sluice qcow2 | qemu-nbd qcow2 | ratio | sluice raw | nbdkit file | ratio | sluice qcow2 --poll-us 0 | ratio | sluice raw --poll-us 0 | ratio |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for l in "${lines[@]}"; do
  IFS='|' read -r name rw bs depth <<<"$l"
  a=${best["$name|sluice-qcow2"]} b=${best["$name|qemu-nbd"]}
  c=${best["$name|sluice-raw"]} d=${best["$name|nbdkit"]}
  e=${best["$name|sluice-qcow2-nopoll"]} f=${best["$name|sluice-raw-nopoll"]}
  python3 -c "
a,b,c,d,e,f=$a,$b,$c,$d,$e,$f
bs={'4k': 4096, '1M': 1 << 20}['$bs']
def cell(v): return '%d IOPS, %.1f MiB/s' % (v, v * bs / 1048576)
print('| $name | %s | %s | %.2fx | %s | %s | %.2fx | %s | %.2fx | %s | %.2fx |' % (cell(a), cell(b), a/max(b,1), cell(c), cell(d), c/max(d,1), cell(e), e/max(b,1), cell(f), f/max(d,1)))"
done
echo
echo "CPU seconds per million requests (server process, user + system; least over $rounds rounds):"
echo
echo "| line | sluice qcow2 | sluice qcow2 --poll-us 0 | qemu-nbd qcow2 | sluice raw | sluice raw --poll-us 0 | nbdkit file |"
echo "|---|---|---|---|---|---|---|"
for l in "${lines[@]}"; do
  IFS='|' read -r name rw bs depth <<<"$l"
  row="| $name"
  for s in sluice-qcow2 sluice-qcow2-nopoll qemu-nbd sluice-raw sluice-raw-nopoll nbdkit; do
    row+=" | ${cpu["$name|$s"]}"
  done
  echo "$row |"
done
echo
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
