#!/bin/bash
# qcow2 data path: `sluice bench` against `qemu-img bench` on the same file
# and the same I/O pattern, in the same run.  Prints ops/s for both and the
# ratio sluice/qemu (>= 1.0 means sluice is at least as fast).
#   bench/bench-qcow2-vs-qemu.sh [BUILD_DIR]     (default: build)
# COUNT=N scales the request count (default 20000).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
sluice=${1:-$here/build}/sluice
count=${COUNT:-20000}
command -v qemu-img >/dev/null || { echo "qemu-img is not installed"; exit 77; }
tmp=$(mktemp -d /var/tmp/sluice-bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
img=$tmp/b.qcow2

secs() { sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' | tail -1; }

fresh() { rm -f "$img"; qemu-img create -q -f qcow2 "$img" 8G; }
filled() {
  if [ ! -f "$tmp/filled.qcow2" ]; then
    qemu-img create -q -f qcow2 "$tmp/filled.qcow2" 8G
    qemu-io -c "write -P 1 0 2G" "$tmp/filled.qcow2" >/dev/null
  fi
  cp --sparse=always "$tmp/filled.qcow2" "$img"
}

# line NAME SETUP ARGS...
line() {
  local name=$1 setup=$2; shift 2
  $setup; local q; q=$(nice qemu-img bench -f qcow2 -c "$count" "$@" "$img" 2>&1 | secs)
  $setup; local s; s=$(nice "$sluice" bench -f qcow2 -c "$count" "$@" "$img" 2>&1 | secs)
  awk -v n="$name" -v c="$count" -v q="$q" -v s="$s" 'BEGIN {
    printf "%-44s qemu %9.0f ops/s  sluice %9.0f ops/s  ratio %.2f\n",
           n, c / q, c / s, q / s }'
}

for t in none writeback; do
  line "4K seq read  -t $t"            filled -s 4k -t "$t"
  line "4K strided read (-S 1M) -t $t" filled -s 4k -S 1M -t "$t"
  line "64K seq read -t $t"            filled -s 64k -t "$t"
  line "4K write allocated -t $t"      filled -w -s 4k -t "$t"
  line "4K strided write alloc'd -t $t" filled -w -s 4k -S 1M -t "$t"
  line "4K write unallocated+flush/64 -t $t" fresh -w -s 4k -t "$t" --flush-interval=64
  line "4K strided unalloc+flush/64 -t $t"   fresh -w -s 4k -S 1M -t "$t" --flush-interval=64
  line "64K write unallocated+flush/64 -t $t" fresh -w -s 64k -t "$t" --flush-interval=64
done
