#!/usr/bin/env bash
# filter-stack: the cost of the filter stack itself.  4K random reads
# through 0, 1, 4 and 8 pass-through filters, all in the same run
# (bench/filter-stack.c interleaves them in short slices, rotating the
# order each round, and keeps each depth's best and median), over a raw
# image and a qcow2 image that are in the page cache, so the image costs as
# little as it can and the stack's share is as large as it gets.
#
# The goal (issue 4) is that each filter costs at most 2% of the throughput
# of none.  Each table gives IOPS by the wall clock and by the CPU time the
# process used (steadier on a shared machine: see bench/filter-stack.c),
# ratios to 0 filters, the cost per filter (1 - ratio, divided by the number
# of filters), and below it the least-squares cost of one more filter in ns
# of CPU per request.
#
# Usage: bench/filter-stack.sh [--quick] [--rounds N] [--count N]
#                              [--threads N] [--dir DIR]
#   --quick    fewer, shorter rounds (a smoke run, ~10 s)
#   --rounds N slices per depth (default 101)
#   --count N  reads per slice (default 4000)
#   --threads N reader threads (default 1: one request in flight)
#   --dir DIR  where the images go (default a temp dir under /var/tmp)
# Environment: BUILD (default build), the build directory to use.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
rounds=101 count=4000 threads=1 base=/var/tmp size=256M
while [ $# -gt 0 ]; do
  case $1 in
    --quick) rounds=21 count=2000 ;;
    --rounds) rounds=$2; shift ;;
    --count) count=$2; shift ;;
    --threads) threads=$2; shift ;;
    --dir) base=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "filter-stack: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done
sluice=$build/sluice helper=$build/bench/filter-stack
for f in "$sluice" "$helper" "$build/filters/passthru.so"; do
  [ -e "$f" ] || { echo "filter-stack: $f not built (scripts/build.sh $build)" >&2; exit 1; }
done

dir=$(mktemp -d "$base/sluice-filter-stack.XXXXXX")
trap 'rm -rf "$dir"' EXIT
export SLUICE_FILTER_DIR=$dir/modules
mkdir -m 755 "$SLUICE_FILTER_DIR"
"$sluice" filter install "$build/filters/passthru.so" >/dev/null

# Both images fully written, so every read copies real data, and read once
# so they are in the page cache.
"$sluice" create -q -f raw "$dir/img.raw" "$size"
"$sluice" io "$dir/img.raw" write -P 0x5a 0 "$size" >/dev/null
"$sluice" convert -O qcow2 "$dir/img.raw" "$dir/img.qcow2"
cat "$dir/img.raw" "$dir/img.qcow2" >/dev/null

echo "filter-stack: 4K random reads, $size image, $threads thread(s)," \
     "$rounds rounds of $count reads per depth, $(nproc) cores"
echo "started $(date -u '+%Y-%m-%d %H:%M UTC'); load:$(uptime | sed 's/.*load average://')"
for fmt in raw qcow2; do
  echo
  echo "$fmt image (page cache):"
  echo
  nice -n 0 "$helper" --rounds "$rounds" --count "$count" --threads "$threads" \
    "$dir/img.$fmt"
done
echo
echo "finished $(date -u '+%H:%M UTC'); load:$(uptime | sed 's/.*load average://')"
