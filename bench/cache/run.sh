#!/usr/bin/env bash
# Throughput of twophase vs global-lock LRU, CLOCK and S3-FIFO, a sharded LRU
# and a sharded CLOCK with lock-free hits (twophase's shard count) at 1, 2 and 4
# threads (issue 3).  One command: builds if needed, prints a markdown table.
#   bench/cache/run.sh [--seconds S] [--reps N] [--footprint N] [--keys N] [--pin]
#                      [--workloads abc] [--policies 012345]
# Each cell runs S seconds (default 0.5) after a start barrier; best of N (3);
# the 2T/1T column is the median of the N back-to-back 2-thread/1-thread pairs.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build.sh build
exec build/bench/cache-bench "$@"
