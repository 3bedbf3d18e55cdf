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
# Every run lasts at least a second: the tools report times to the
# millisecond, so a run of 33 ms (what 75000 cached 4K reads take) would
# be measured to 3%.  Before each line the request count is calibrated
# (raised until a run of each tool takes >= 1.2 s) and both tools then run
# that count; the table shows the count and the shortest run of the line.
#
# Usage: bench/image-bench.sh [--quick] [--runs N] [--dir DIR] [--baseline BIN]
#   --quick   a smaller image and fewer requests (a smoke run, ~1 minute)
#   --runs N  best of N per tool and line (default 3)
#   --baseline BIN  a second sluice build in the same rotation (qemu-img,
#             sluice, baseline, ...), with a column sluice/baseline: the
#             before/after of a change, measured in one run.  For the cost
#             of the qcow2 metadata overlap check, build the same tree with
#             the check compiled out:
#               meson setup build-nocheck -Dc_args=-DSL_QCOW2_NO_OVERLAP_CHECK
#               ninja -C build-nocheck
#               bench/image-bench.sh --baseline build-nocheck/sluice
#   --dir DIR where the images go (default a temp dir under /var/tmp, since
#             -t none needs a file system with O_DIRECT, which tmpfs lacks)
# Environment: SLUICE (default build/sluice), QEMU_IMG (default qemu-img).
set -euo pipefail
cd "$(dirname "$0")/.."

sluice=${SLUICE:-$PWD/build/sluice}
qemu_img=${QEMU_IMG:-qemu-img}
runs=3 quick=false base=/var/tmp baseline=
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=true ;;
    --runs) runs=$2; shift ;;
    --dir) base=$2; shift ;;
    --baseline) baseline=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "image-bench: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done
[ -x "$sluice" ] || { echo "image-bench: $sluice not built (scripts/build.sh build)" >&2; exit 1; }
[ -z "$baseline" ] || [ -x "$baseline" ] ||
  { echo "image-bench: baseline $baseline is not an executable" >&2; exit 1; }
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

min_secs=1.0
clusters=$(( $(numfmt --from=iec "$size") / 65536 ))
# run_one TOOL CACHE FRESH ARGS...: print "requests/s seconds" of one run.
run_one() {
  local tool=$1 cache=$2 fresh_image=$3; shift 3
  local bin=$qemu_img image=$full out secs count
  [ "$tool" = sluice ] && bin=$sluice
  [ "$tool" = baseline ] && bin=$baseline
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
  awk -v c="$count" -v s="$secs" 'BEGIN { printf "%.0f %s\n", (s > 0 ? c / s : 0), s }'
}

# calibrate CACHE FRESH COUNT ARGS...: a count for which a run of either
# tool takes at least 1.2 s (the margin keeps the runs above 1 s).
calibrate() {
  local cache=$1 fresh_image=$2 count=$3 r secs; shift 3
  for _ in 1 2 3 4 5 6; do
    r=$(run_one qemu-img "$cache" "$fresh_image" -c "$count" "$@")
    secs=${r#* }
    r=$(run_one sluice "$cache" "$fresh_image" -c "$count" "$@")
    secs=$(awk -v a="$secs" -v b="${r#* }" 'BEGIN { print (b < a ? b : a) }')
    awk -v s="$secs" 'BEGIN { exit !(s >= 1.2) }' && break
    count=$(awk -v c="$count" -v s="$secs" 'BEGIN { f = (s > 0.01 ? 1.5 / s : 100); printf "%d\n", c * f + 1 }')
    if [ "$fresh_image" = yes ] && [ "$count" -ge "$clusters" ]; then
      count=$clusters   # one request per cluster of the fresh image, no wrap
      break
    fi
  done
  echo "$count"
}

# line NAME FRESH COUNT ARGS...: both tools, both cache modes, best of
# $runs, with COUNT calibrated per cache mode.
line() {
  local name=$1 fresh_image=$2 count0=$3; shift 3
  local cache i q s b best_q best_s best_b count shortest r
  for cache in none writeback; do
    best_q=0 best_s=0 best_b=0
    count=$(calibrate "$cache" "$fresh_image" "$count0" "$@")
    shortest=999999
    for ((i = 0; i < runs; i++)); do
      r=$(run_one qemu-img "$cache" "$fresh_image" -c "$count" "$@")
      q=${r% *}; shortest=$(awk -v a="$shortest" -v b="${r#* }" 'BEGIN { print (b < a ? b : a) }')
      r=$(run_one sluice "$cache" "$fresh_image" -c "$count" "$@")
      s=${r% *}; shortest=$(awk -v a="$shortest" -v b="${r#* }" 'BEGIN { print (b < a ? b : a) }')
      if [ -n "$baseline" ]; then
        r=$(run_one baseline "$cache" "$fresh_image" -c "$count" "$@")
        b=${r% *}; shortest=$(awk -v a="$shortest" -v b="${r#* }" 'BEGIN { print (b < a ? b : a) }')
        ((b > best_b)) && best_b=$b
      fi
      ((q > best_q)) && best_q=$q
      ((s > best_s)) && best_s=$s
    done
    awk -v s="$shortest" -v m="$min_secs" 'BEGIN { exit !(s < m) }' &&
      echo "image-bench: warning: a run of '$name, -t $cache' took only $shortest s" >&2
    if [ -n "$baseline" ]; then
      awk -v n="$name, -t $cache" -v q="$best_q" -v s="$best_s" -v b="$best_b" -v c="$count" -v t="$shortest" \
        'BEGIN { printf "| %-60s | %10d | %10d | %5.2f | %10d | %5.2f | %8d | %6.2f |\n", n, q, s, q ? s / q : 0, b, b ? s / b : 0, c, t }'
    else
      awk -v n="$name, -t $cache" -v q="$best_q" -v s="$best_s" -v c="$count" -v t="$shortest" \
        'BEGIN { printf "| %-60s | %10d | %10d | %5.2f | %8d | %6.2f |\n", n, q, s, q ? s / q : 0, c, t }'
    fi
  done
}

echo
echo "image-bench: $size qcow2, 64K clusters, depth 64, best of $runs," \
     "$(nproc) cores, $("$qemu_img" --version | head -1)"
echo
if [ -n "$baseline" ]; then
  echo "baseline: $baseline"
  echo
  echo "| line                                                         | qemu-img/s |   sluice/s | ratio | baseline/s | sluice/baseline |  count | shortest run (s) |"
  echo "|--------------------------------------------------------------|-----------:|-----------:|------:|-----------:|------:|-------:|-----------------:|"
else
  echo "| line                                                         | qemu-img/s |   sluice/s | ratio |  count | shortest run (s) |"
  echo "|--------------------------------------------------------------|-----------:|-----------:|------:|-------:|-----------------:|"
fi
line "4K read, sequential"                      no "$count" -s 4K
line "4K read, strided (-S 1M)"                 no "$count" -s 4K -S 1M
line "4K write, allocated clusters"             no "$count" -s 4K -w
# Allocating writes: more requests than the image has clusters would wrap
# onto allocated ones, so this line may stay under a second with -t
# writeback (the warning says so).
line "4K write, unallocated (-S 64K, flush every 64)" yes "$count_alloc" -s 4K -S 64K -w \
     --flush-interval=64
line "64K read, sequential"                     no "$count64k" -s 64K
