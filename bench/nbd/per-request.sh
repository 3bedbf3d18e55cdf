#!/usr/bin/env bash
# What one depth-1 4K read costs `sluice serve`, counted rather than timed,
# for two or more builds side by side: measures that stay meaningful on a
# shared, loaded machine, where the IOPS of bench/nbd/run.sh do not (issue
# 12's before/after).  For each build and image (a fully written qcow2 and
# raw), fio's nbd engine reads a fixed number of random 4K blocks at queue
# depth 1 and the server is counted over exactly that job:
#   * user-space instructions per request: valgrind --tool=callgrind over
#     two jobs of N1 and N2 reads, (I2 - I1) / (N2 - N1), so start-up and
#     connection set-up cancel out; --poll-us 0, since a polling loop's
#     instructions measure the client's pace, not the server's work (this
#     VM has no hardware counters for perf stat -e instructions);
#   * syscalls, context switches (all, and involuntary: preempted while
#     runnable), CPU microseconds per request, from perf stat -p on the
#     server (raw_syscalls:sys_enter, context-switches, sched:sched_switch
#     with prev_state == 0, task-clock), with polling off and on (default);
#   * the server's service time, polling off: from recvfrom's return to
#     sendmsg's return on the reader, and pread64's and sendmsg's own time,
#     medians (perf record of raw_syscalls, microsecond resolution).  A
#     median is robust to the load's outliers as CPU seconds are not.
# Rounds alternate the builds' order.  Needs root (or perf_event_paranoid
# <= 0 and tracefs access), perf, valgrind, fio, qemu-img.
#   bench/nbd/per-request.sh [-r ROUNDS] [-n N] NAME=SLUICE-BINARY...
# e.g. bench/nbd/per-request.sh old=/var/tmp/old/build/sluice new=build/sluice
# Prints one table per measure: median over the rounds (instructions are
# deterministic: one round).
set -euo pipefail
source "$(dirname "$0")/../lib/setup.sh"
source "$(dirname "$0")/../lib/nbd-fio.sh"
rounds=3 n=30000
usage="$0 [-r ROUNDS] [-n N] NAME=SLUICE-BINARY..."
bench_rounds_opts "$usage" "$@"
shift "$BENCH_SHIFT"
(( $# >= 1 )) || { echo "usage: $usage" >&2; exit 2; }
bench_need per-request fio perf valgrind callgrind_annotate qemu-img python3
names=() bins=()
for a in "$@"; do
  [[ $a == *=* ]] || { echo "per-request: '$a' is not NAME=BINARY" >&2; exit 2; }
  [[ -x ${a#*=} ]] || { echo "per-request: ${a#*=} is not an executable" >&2; exit 1; }
  names+=("${a%%=*}") bins+=("$(realpath "${a#*=}")")
done

dir=$(mktemp -d /tmp/nbd-per-request.XXXXXX)
server_pid=""
cleanup() {
  if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$dir"
}
trap cleanup EXIT
bench_written_images "$dir" 64M
sync

start() { # SOCK COMMAND...: start a server, wait for its socket
  local sock=$1; shift
  rm -f "$sock"
  "$@" >/dev/null 2>&1 &
  server_pid=$!
  for _ in $(seq 400); do [[ -S $sock ]] && return 0; sleep 0.05; done
  echo "per-request: server did not start: $*" >&2; exit 1
}
stop() { kill -INT "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; server_pid=""; }
reads() { # SOCK COUNT [fio args]: COUNT depth-1 random 4K reads
  local sock=$1 count=$2; shift 2
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --rw=randread --bs=4k \
      --iodepth=1 --size=64M --io_size=$((count * 4))k "$@"
}

# Instructions: two callgrind runs per build and image.
instr() { # BIN FMT -> instructions per request
  local bin=$1 fmt=$2 t=() k
  for k in 2000 6000; do
    start "$dir/cg.sock" valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
      "$bin" serve --poll-us 0 --nbd "unix:$dir/cg.sock" "$dir/disk.$fmt"
    reads "$dir/cg.sock" "$k" --output=/dev/null
    stop
    t+=("$(callgrind_annotate "$dir/cg.out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')")
  done
  echo $(( (t[1] - t[0]) / 4000 ))
}

counted() { # BIN FMT [serve args] -> "cpu_us syscalls cs invol" per request
  local bin=$1 fmt=$2; shift 2
  start "$dir/s.sock" "$bin" serve "$@" --nbd "unix:$dir/s.sock" "$dir/disk.$fmt"
  cat "$dir/disk.raw" "$dir/disk.qcow2" >/dev/null
  reads "$dir/s.sock" 1000 --output=/dev/null # warm: the first connection's costs
  perf stat -x, -o "$dir/stat" -e task-clock,raw_syscalls:sys_enter,context-switches \
    -e sched:sched_switch --filter 'prev_state == 0' -p "$server_pid" &
  local perf_pid=$!
  sleep 0.3
  reads "$dir/s.sock" "$n" --output-format=json > "$dir/fio.json"
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  stop
  python3 - "$dir/stat" "$dir/fio.json" <<'PY'
import json, sys
r = {}
for line in open(sys.argv[1]):
    p = line.strip().split(',')
    if len(p) > 3 and p[0][:1].isdigit():
        r[p[2]] = float(p[0])
s = open(sys.argv[2]).read()
ios = json.loads(s[s.index('{'):])['jobs'][0]['read']['total_ios']
print('%.2f %.2f %.3f %.3f' % (r['task-clock'] * 1000 / ios, r['raw_syscalls:sys_enter'] / ios,
                               r['context-switches'] / ios, r['sched:sched_switch'] / ios))
PY
}

service() { # BIN FMT -> median "service pread sendmsg" microseconds
  local bin=$1 fmt=$2
  start "$dir/t.sock" "$bin" serve --poll-us 0 --nbd "unix:$dir/t.sock" "$dir/disk.$fmt"
  cat "$dir/disk.raw" "$dir/disk.qcow2" >/dev/null
  reads "$dir/t.sock" 1000 --output=/dev/null
  perf record -q -e raw_syscalls:sys_enter,raw_syscalls:sys_exit -p "$server_pid" \
    -o "$dir/trace.data" 2>/dev/null &
  local perf_pid=$!
  sleep 0.5
  reads "$dir/t.sock" "$((n / 3))" --output=/dev/null
  kill -INT "$perf_pid"; wait "$perf_pid" || true
  stop
  perf script -i "$dir/trace.data" 2>/dev/null | python3 -c '
import re, statistics, sys
# x86-64 syscall numbers: recvfrom 45, pread64 17, sendmsg 46
enter, recv_end, svc, pr, sd = {}, {}, [], [], []
for l in sys.stdin:
    m = re.search(r" (\d+) \[\d+\] ([\d.]+):\s+raw_syscalls:sys_(enter|exit): NR (\d+)", l)
    if not m:
        continue
    tid, t, kind, nr = m.group(1), float(m.group(2)), m.group(3), int(m.group(4))
    if kind == "enter":
        enter[tid] = (nr, t)
        continue
    e = enter.pop(tid, None)
    if not e or e[0] != nr:
        continue
    if nr == 45:
        recv_end[tid] = t
    elif nr == 17:
        pr.append(t - e[1])
    elif nr == 46:
        sd.append(t - e[1])
        if tid in recv_end:
            svc.append(t - recv_end.pop(tid))
print(" ".join("%.1f" % (statistics.median(v) * 1e6) for v in (svc, pr, sd)))'
}

results=$dir/results
for fmt in qcow2 raw; do
  for i in "${!names[@]}"; do
    echo "instr $fmt ${names[i]} $(instr "${bins[i]}" "$fmt")" >> "$results"
  done
done
for ((r = 0; r < rounds; r++)); do
  order=("${!names[@]}")
  ((r % 2)) && order=($(printf '%s\n' "${order[@]}" | tac))
  for fmt in qcow2 raw; do
    for mode in nopoll poll; do
      for i in "${order[@]}"; do
        args=(); [[ $mode == nopoll ]] && args=(--poll-us 0)
        echo "count $fmt $mode ${names[i]} $(counted "${bins[i]}" "$fmt" "${args[@]}")" >> "$results"
      done
    done
    for i in "${order[@]}"; do
      echo "service $fmt ${names[i]} $(service "${bins[i]}" "$fmt")" >> "$results"
    done
  done
done

echo "Depth-1 4K random reads, per request ($rounds rounds of $n reads, medians; load average $(cut -d' ' -f1-3 /proc/loadavg) at the end)"
python3 - "$results" "${names[@]}" <<'PY'
import collections, statistics, sys
names = sys.argv[2:]
ins, cnt, svc = {}, collections.defaultdict(list), collections.defaultdict(list)
for line in open(sys.argv[1]):
    p = line.split()
    if p[0] == 'instr':
        ins[(p[1], p[2])] = int(p[3])
    elif p[0] == 'service':
        svc[(p[1], p[2])].append([float(x) for x in p[3:]])
    else:
        cnt[(p[1], p[2], p[3])].append([float(x) for x in p[4:]])
print()
print('| image | measure | ' + ' | '.join(names) + ' |')
print('|---|---|' + '---|' * len(names))
for fmt in ('qcow2', 'raw'):
    print('| %s | user instructions (callgrind, --poll-us 0) | %s |' % (
        fmt, ' | '.join(str(ins[(fmt, n)]) for n in names)))
    for mode, label in (('nopoll', '--poll-us 0'), ('poll', 'polling (default)')):
        for j, what in enumerate(('CPU us', 'syscalls', 'context switches', 'of which involuntary')):
            vals = [statistics.median(v[j] for v in cnt[(fmt, mode, n)]) for n in names]
            fmtv = '%.2f' if j < 2 else '%.3f'
            print('| %s | %s, %s | %s |' % (fmt, what, label, ' | '.join(fmtv % v for v in vals)))
    for j, what in enumerate(('service time (recvfrom to sendmsg returned)', 'pread64', 'sendmsg')):
        vals = [statistics.median(v[j] for v in svc[(fmt, n)]) for n in names]
        print('| %s | us, %s, --poll-us 0 | %s |' % (fmt, what, ' | '.join('%.1f' % v for v in vals)))
PY
