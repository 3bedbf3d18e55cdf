#!/usr/bin/env bash
# Throughput of twophase vs global-lock LRU, CLOCK and S3-FIFO, a sharded LRU
# and a sharded CLOCK with lock-free hits (twophase's shard count) at 1, 2 and 4
# threads (issue 3).  One command: builds if needed, prints a markdown table.
#   bench/cache/run.sh [--against REV [--rounds N]] [--seconds S] [--reps N]
#                      [--footprint N] [--keys N] [--pin]
#                      [--workloads abc] [--policies 012345]
# Each cell runs S seconds (default 0.5) after a start barrier; best of N (3);
# the 2T/1T column is the median of the N back-to-back 2-thread/1-thread pairs.
# --against REV (issue 15) also builds git revision REV (e.g. main) in a
# scratch directory and runs the two builds alternately, N rounds (default
# 3), this tree first in odd rounds and REV first in even ones, so that a
# change of load hits both alike; compare the tables round by round.
set -euo pipefail
cd "$(dirname "$0")/../.."
against= rounds=3
while [[ $# -gt 0 ]]; do
  case $1 in
    --against) against=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) break ;;
  esac
done
scripts/build.sh build
[[ -z $against ]] && exec build/bench/cache-bench "$@"
old=$(mktemp -d /tmp/cache-bench-old.XXXXXX)
trap 'rm -rf "$old"' EXIT
git archive "$against" | tar -x -C "$old"
(cd "$old" && scripts/build.sh build >/dev/null) ||
  { echo "run.sh: cannot build $against" >&2; exit 1; }
for ((r = 1; r <= rounds; r++)); do
  if ((r % 2)); then order=(new old); else order=(old new); fi
  for which in "${order[@]}"; do
    echo "### round $r: $([[ $which == new ]] && echo "this tree ($(git rev-parse --short HEAD)+)" || echo "$against ($(git rev-parse --short "$against"))")"
    if [[ $which == new ]]; then build/bench/cache-bench "$@"; else "$old/build/bench/cache-bench" "$@"; fi
    echo
  done
done
