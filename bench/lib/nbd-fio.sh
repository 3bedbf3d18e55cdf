# Sourced by the NBD benchmarks (bench/nbd/run.sh, bench/rbd.sh, the boot
# storms): start and stop servers, and run fio jobs against them.
#
# The caller sets DIR (a scratch directory) and keeps the array PIDS (every
# server started, so its EXIT trap can stop them).  Servers are measured one
# at a time, so the job also reports the CPU time the last started server
# (SERVER_PID) spent per request -- user + system of all its threads, from
# /proc/PID/stat -- which is what a server that polls pays for its latency.
#
#   bench_start SOCK COMMAND...   start a server, wait up to 15 s for SOCK
#   bench_stop_all                stop every server, by pid
#   bench_job URI RW BS DEPTH SIZE RUNTIME
#        -> "IOPS CPU-SECONDS-PER-MILLION-REQUESTS"
#   bench_cell IOPS BS            "N IOPS, M MiB/s" for a table
#   bench_storm_job DIR N SIZE    wait for DIR/s1.sock..sN.sock, then write
#        DIR/storm.fio: one boot per server, the same seed for all (clones
#        boot alike), random reads of 4K-64K at depth 8, SIZE each
#   bench_written_images DIR SIZE DIR/disk.raw written in full (so reads
#        hit data) and DIR/disk.qcow2, the same bytes as qcow2
#   bench_clones DIR N SIZE       DIR/base.qcow2 written in full and
#        DIR/c1.qcow2..cN.qcow2, linked clones of it

bench_start() {
  local sock=$1 i; shift
  rm -f "$sock"
  "$@" >/dev/null 2>>"$DIR/server.log" &
  PIDS+=($!)
  SERVER_PID=$!
  for ((i = 0; i < 300; i++)); do [[ -S $sock ]] && return 0; sleep 0.05; done
  echo "server did not start: $* ($(tail -2 "$DIR/server.log"))" >&2
  exit 1
}

bench_stop_all() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
}

bench_cpu_ticks() { # PID: user + system clock ticks of all its threads so far
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

bench_job() {
  local out c0 c1
  c0=$(bench_cpu_ticks "$SERVER_PID")
  out=$(fio --name=j --ioengine=nbd --uri="$1" --rw="$2" --bs="$3" --iodepth="$4" \
        --size="$5" --runtime="$6" --time_based --group_reporting \
        --output-format=json 2>"$DIR/fio.err") || { cat "$DIR/fio.err" >&2; exit 1; }
  c1=$(bench_cpu_ticks "$SERVER_PID")
  python3 -c "
import json, os, sys; s=sys.argv[1]; d=json.loads(s[s.index('{'):])['jobs'][0]
ios = d['read']['total_ios'] + d['write']['total_ios']
cpu = (int(sys.argv[3]) - int(sys.argv[2])) / os.sysconf('SC_CLK_TCK')
print(round(d['read']['iops'] + d['write']['iops']), '%.3f' % (cpu / max(ios, 1) * 1e6))" "$out" "$c0" "$c1"
}

bench_storm_job() {
  local dir=$1 n=$2 size=$3 i
  for ((i = 1; i <= n; i++)); do
    # A loaded machine can take long to start 8 servers: wait up to 60 s.
    for _ in $(seq 1200); do [[ -S $dir/s$i.sock ]] && break; sleep 0.05; done
  done
  {
    echo "[global]"
    echo "ioengine=nbd"; echo "rw=randread"; echo "bsrange=4k-64k"; echo "iodepth=8"
    echo "size=$size"; echo "randrepeat=1"; echo "randseed=4242"; echo "group_reporting=1"
    for ((i = 1; i <= n; i++)); do echo "[c$i]"; echo "uri=nbd+unix:///?socket=$dir/s$i.sock"; done
  } >"$dir/storm.fio"
}

bench_written_images() {
  local dir=$1 size=$2
  qemu-img create -q -f raw "$dir/disk.raw" "$size"
  fio --name=fill --filename="$dir/disk.raw" --rw=write --bs=1M --size="$size" \
      --refill_buffers --output=/dev/null
  qemu-img convert -O qcow2 "$dir/disk.raw" "$dir/disk.qcow2"
}

bench_clones() {
  local dir=$1 n=$2 size=$3 i
  fio --name=fill --rw=write --bs=1M --size="$size" --filename="$dir/base.raw" \
    --refill_buffers=1 --output=/dev/null
  qemu-img convert -f raw -O qcow2 "$dir/base.raw" "$dir/base.qcow2"
  rm "$dir/base.raw"
  for ((i = 1; i <= n; i++)); do
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$dir/c$i.qcow2"
  done
}
