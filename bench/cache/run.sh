#!/usr/bin/env bash
# Throughput of twophase vs lock-based LRU, CLOCK and S3-FIFO at 1, 2 and 4
# threads (issue 3).  One command: builds if needed, prints a markdown table.
#   bench/cache/run.sh [--ops N] [--footprint N]
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/build.sh build
exec build/bench/cache-bench "$@"
