#!/usr/bin/env bash
# Where an NBD export's reads run when nothing below takes a batch as one:
# `sluice serve --cache=none --read-only --filter stats:print=no` over a
# qcow2, fio's nbd engine reading random 4K blocks at depth 8, for two or
# more builds side by side.  A server that gathers those reads into
# batches (a forwarding filter on top claimed the batch) runs them one
# after another in its reader thread, where unbatched they spread over the
# workers.  Counted, not timed (a shared machine): `perf record` of the
# server's pread64, recvfrom and sendmsg entries with their thread ids
# over exactly the counted job, giving per build and round
#   * how many threads issued preads, and the reader's share of them (the
#     reader is the thread that calls recvfrom);
#   * the share of preads issued back to back by one thread with no other
#     syscall of that thread between (a batch run by the core) and the
#     mean length of such runs;
#   * recvfrom, sendmsg and context switches per request; IOPS (loaded:
#     noise on a shared machine).
#   bench/nbd/batch-where.sh [-r ROUNDS] [-n N] NAME=BUILDDIR...
# e.g. bench/nbd/batch-where.sh old=/var/tmp/old/build new=build
# (defaults 2 rounds, 20000 reads).  Needs perf (syscall tracepoints),
# fio with the nbd engine, qemu-img.  Each BUILDDIR needs sluice and
# filters/stats.so.  Cleans up on any exit.
set -euo pipefail
source "$(dirname "$0")/../lib/setup.sh"
source "$(dirname "$0")/../lib/nbd-fio.sh"
rounds=2 n=20000
usage="$0 [-r ROUNDS] [-n N] NAME=BUILDDIR..."
bench_rounds_opts "$usage" "$@"
shift "$BENCH_SHIFT"
(( $# >= 1 )) || { echo "usage: $usage" >&2; exit 2; }
bench_need batch-where fio perf qemu-img python3
names=() builds=()
for a in "$@"; do
  [[ $a == *=* ]] || { echo "batch-where: '$a' is not NAME=BUILDDIR" >&2; exit 2; }
  d=${a#*=}
  [[ -x $d/sluice && -f $d/filters/stats.so ]] ||
    { echo "batch-where: $d has no sluice and filters/stats.so (build it first)" >&2; exit 1; }
  names+=("${a%%=*}") builds+=("$(realpath "$d")")
done

dir=$(mktemp -d "${DIR:-/var/tmp}/batch-where.XXXXXX")
server_pid="" perf_pid=""
cleanup() {
  local p
  for p in $perf_pid $server_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
bench_written_images "$dir" 64M
for i in "${!builds[@]}"; do
  mkdir -m 755 "$dir/mods$i"
  SLUICE_FILTER_DIR=$dir/mods$i "${builds[i]}/sluice" filter install \
    "${builds[i]}/filters/stats.so" >/dev/null
done

reads() { # COUNT [fio args]
  local count=$1; shift
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$dir/s.sock" --rw=randread \
      --bs=4k --iodepth=8 --size=64M --io_size=$((count * 4))k "$@"
}

one() { # BUILD_INDEX ROUND -> one result line
  local bi=$1 round=$2
  rm -f "$dir/s.sock"
  SLUICE_FILTER_DIR=$dir/mods$bi "${builds[bi]}/sluice" serve --cache=none --read-only \
    --filter stats:print=no --nbd "unix:$dir/s.sock" "$dir/disk.qcow2" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 400); do [[ -S $dir/s.sock ]] && break; sleep 0.05; done
  [[ -S $dir/s.sock ]] || { echo "batch-where: ${names[bi]}'s server did not start" >&2; exit 1; }
  reads 1000 --output=/dev/null # warm: the first connection's costs
  perf record -q -o "$dir/rec.data" -e syscalls:sys_enter_pread64,syscalls:sys_enter_recvfrom \
    -e syscalls:sys_enter_sendmsg,context-switches -p "$server_pid" 2>/dev/null &
  perf_pid=$!
  sleep 0.3
  reads "$n" --output-format=json >"$dir/fio.json"
  kill -INT "$perf_pid"; wait "$perf_pid" || true; perf_pid=""
  kill -INT "$server_pid"; wait "$server_pid" || true; server_pid=""
  perf script -i "$dir/rec.data" -F tid,event 2>/dev/null >"$dir/events"
  python3 - "$dir/events" "$dir/fio.json" "${names[bi]}" "$round" <<'PY'
import collections, json, sys
per = collections.defaultdict(collections.Counter)
seq = []
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 2:
        continue
    tid, ev = p[0], p[1].rstrip(':').split(':')[-1]
    per[tid][ev] += 1
    seq.append((tid, ev))
s = open(sys.argv[2]).read()
ios = json.loads(s[s.index('{'):])['jobs'][0]['read']
n = ios['total_ios']
tot = collections.Counter()
for c in per.values():
    tot.update(c)
reader = max(per, key=lambda t: per[t]['sys_enter_recvfrom'])
preads = max(tot['sys_enter_pread64'], 1)
runs, cur = [], {}
for tid, ev in seq:
    if ev == 'sys_enter_pread64':
        cur[tid] = cur.get(tid, 0) + 1
    elif ev.startswith('sys_enter'):
        if cur.get(tid):
            runs.append(cur[tid])
        cur[tid] = 0
runs += [v for v in cur.values() if v]
print(json.dumps({
    'build': sys.argv[3], 'round': int(sys.argv[4]), 'reads': n,
    'threads': sum(1 for c in per.values() if c['sys_enter_pread64']),
    'reader_pct': 100 * per[reader]['sys_enter_pread64'] / preads,
    'runs_pct': 100 * sum(r for r in runs if r > 1) / preads,
    'mean_run': sum(runs) / max(len(runs), 1),
    'recv': tot['sys_enter_recvfrom'] / n, 'send': tot['sys_enter_sendmsg'] / n,
    'cs': tot['context-switches'] / n, 'iops': ios['iops']}))
PY
}

results=$dir/results
for ((r = 0; r < rounds; r++)); do
  order=("${!builds[@]}")
  ((r % 2)) && order=($(printf '%s\n' "${order[@]}" | tac))
  for i in "${order[@]}"; do one "$i" "$r" >>"$results"; done
done
echo "stats over qcow2, serve --cache=none, fio nbd 4K randread depth 8, $n reads per round; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end, $(date -u +%H:%M) UTC"
echo
echo "| build | round | threads with preads | reader's share of preads | preads in back-to-back runs | mean run | recvfrom/req | sendmsg/req | switches/req | IOPS (loaded) |"
echo "|---|---|---|---|---|---|---|---|---|---|"
python3 -c '
import json, sys
for l in open(sys.argv[1]):
    t = json.loads(l)
    print("| %s | %d | %d | %.0f%% | %.0f%% | %.2f | %.3f | %.3f | %.3f | %.0f |" % (
        t["build"], t["round"], t["threads"], t["reader_pct"], t["runs_pct"], t["mean_run"],
        t["recv"], t["send"], t["cs"], t["iops"]))' "$results"
