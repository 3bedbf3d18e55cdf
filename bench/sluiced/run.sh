#!/usr/bin/env bash
# 4 KiB cache-hit latency through sluiced against pread from the page cache,
# in the same run (issue 13, "Performance"): p50 and p99 at queue depth 1,
# idle and under load (LOAD more threads doing the same), median of ROUNDS.
#   bench/sluiced/run.sh [--quick] [LOAD]
# Starts its own daemon on a private socket (64 MiB cache, 4 KiB blocks),
# builds first, cleans up on any exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build.sh build
seconds=3 rounds=3 load=3
[[ ${1:-} == --quick ]] && { seconds=1; rounds=1; shift; }
[[ -n ${1:-} ]] && load=$1
dir=$(mktemp -d /tmp/sluiced-bench.XXXXXX)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
head -c 32M /dev/urandom >"$dir/layer.img"
build/sluiced --socket "$dir/s.sock" --memory 64M --block-size 4K --quiet 2>"$dir/log" &
pid=$!
for _ in $(seq 100); do [[ -S $dir/s.sock ]] && break; sleep 0.05; done
echo "machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
build/bench/hit-latency "$dir/s.sock" "$dir/layer.img" "$seconds" "$load" "$rounds"
