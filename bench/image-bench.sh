#!/usr/bin/env bash
# image-bench: `qemu-img bench` and `sluice bench` side by side on the same
# qcow2 file, same parameters, in the same run.
#
# Why this shape: the machine is shared and noisy, so the two tools run
# alternately (qemu-img, sluice, qemu-img, sluice, ...) and each keeps its
# best of N runs; a slow moment then costs both sides rather than one.
# Figures are requests per second computed the same way for both tools
# (COUNT / "Run completed in X seconds"), and the ratio sluice/qemu-img is
# what to read: above 1 means sluice is faster.
#
# Usage: bench/image-bench.sh [--quick] [--runs N] [--dir DIR]
#   --quick   a smaller image and fewer requests (a smoke run, ~1 minute)
#   --runs N  best of N per tool and line (default 3)
#   --dir DIR where the images go (default a temp dir under /var/tmp, since
#             -t none needs a file system with O_DIRECT, which tmpfs lacks)
# Environment: SLUICE (default build/sluice), QEMU_IMG (default qemu-img).
set -euo pipefail
cd "$(dirname "$0")/.."

sluice=${SLUICE:-$PWD/build/sluice}
qemu_img=${QEMU_IMG:-qemu-img}
runs=3 quick=false base=/var/tmp
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=true ;;
    --runs) runs=$2; shift ;;
    --dir) base=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "image-bench: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done
[ -x "$sluice" ] || { echo "image-bench: $sluice not built (scripts/build.sh build)" >&2; exit 1; }
command -v "$qemu_img" >/dev/null || { echo "image-bench: $qemu_img not found" >&2; exit 1; }
command -v qemu-io >/dev/null || { echo "image-bench: qemu-io not found" >&2; exit 1; }

if $quick; then
  size=256M count=20000 count64k=4000 count_alloc=2000
else
  size=1G count=75000 count64k=15000 count_alloc=8000
fi

dir=$(mktemp -d "$base/sluice-image-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
full=$dir/full.qcow2    # every cluster allocated: reads and overwrites
fresh=$dir/fresh.qcow2  # recreated before each allocating-write run

echo "Preparing a $size qcow2 image (64K clusters), fully written..." >&2
"$qemu_img" create -q -f qcow2 -o cluster_size=65536 "$full" "$size"
qemu-io -c "write -P 0x5a 0 $size" "$full" >/dev/null

# run_one TOOL CACHE FRESH ARGS...: print requests/s of one run.
run_one() {
  local tool=$1 cache=$2 fresh_image=$3; shift 3
  local bin=$qemu_img image=$full out secs count
  [ "$tool" = sluice ] && bin=$sluice
  if [ "$fresh_image" = yes ]; then
    rm -f "$fresh"
    "$qemu_img" create -q -f qcow2 -o cluster_size=65536 "$fresh" "$size"
    image=$fresh
  fi
  sync
  out=$("$bin" bench -f qcow2 -t "$cache" "$@" "$image") || {
    echo "image-bench: $tool bench $* failed" >&2; return 1; }
  count=$(sed -n 's/^Sending \([0-9]*\) .*/\1/p' <<<"$out")
  secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  awk -v c="$count" -v s="$secs" 'BEGIN { printf "%.0f\n", (s > 0 ? c / s : 0) }'
}

# line NAME FRESH ARGS...: both tools, both cache modes, best of $runs.
line() {
  local name=$1 fresh_image=$2; shift 2
  local cache tool i q s best_q best_s
  for cache in none writeback; do
    best_q=0 best_s=0
    for ((i = 0; i < runs; i++)); do
      q=$(run_one qemu-img "$cache" "$fresh_image" "$@")
      s=$(run_one sluice "$cache" "$fresh_image" "$@")
      ((q > best_q)) && best_q=$q
      ((s > best_s)) && best_s=$s
    done
    awk -v n="$name, -t $cache" -v q="$best_q" -v s="$best_s" \
      'BEGIN { printf "| %-54s | %10d | %10d | %5.2f |\n", n, q, s, q ? s / q : 0 }'
  done
}

echo
echo "image-bench: $size qcow2, 64K clusters, depth 64, best of $runs," \
     "$(nproc) cores, $("$qemu_img" --version | head -1)"
echo
echo "| line                                                   | qemu-img/s |   sluice/s | ratio |"
echo "|--------------------------------------------------------|-----------:|-----------:|------:|"
line "4K read, sequential"                      no -c "$count" -s 4K
line "4K read, strided (-S 1M)"                 no -c "$count" -s 4K -S 1M
line "4K write, allocated clusters"             no -c "$count" -s 4K -w
line "4K write, unallocated (-S 64K, flush every 64)" yes -c "$count_alloc" -s 4K -S 64K -w \
     --flush-interval=64
line "64K read, sequential"                     no -c "$count64k" -s 64K
