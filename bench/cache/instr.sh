#!/usr/bin/env bash
# Instructions per operation of twophase under callgrind, this tree against
# another revision (issue 15: a noise-free check of the hit path on a
# shared machine, where wall-clock rates are not comparable).
#   bench/cache/instr.sh [--against REV] [--passes N] [--footprint N]
# For workloads (a) all hits and (b) Zipf 1.0 in a cache of 10% of the
# footprint (as cache-bench's), runs bench/cache/hit-instr.c under
# callgrind with 0 and with N passes (default 2) over a 2 x footprint key
# stream (footprint default 1 Mi blocks) and prints the instructions, L1
# data misses (cachegrind's simulated cache), mispredicted conditional
# branches (its simulated predictor) and hit ratio per operation.
# REV (default: none, this tree only) is built from `git archive` in a
# scratch directory; the harness is compiled against each library.
set -euo pipefail
cd "$(dirname "$0")/../.."
against= passes=2 footprint=$((1 << 20))
while [[ $# -gt 0 ]]; do
  case $1 in
    --against) against=$2; shift 2 ;;
    --passes) passes=$2; shift 2 ;;
    --footprint) footprint=$2; shift 2 ;;
    *) echo "usage: bench/cache/instr.sh [--against REV] [--passes N] [--footprint N]" >&2; exit 2 ;;
  esac
done
command -v valgrind >/dev/null || { echo "instr.sh: valgrind is not installed" >&2; exit 1; }
scripts/build.sh build
tmp=$(mktemp -d /tmp/cache-instr.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
harness() { # TREE BUILDDIR OUT
  cc -O2 -std=gnu11 -I"$1/lib" -I"$1/include" -I"$2" bench/cache/hit-instr.c \
     "$2/lib/libsluice.a" -pthread -lm -o "$3"
}
trees=("new $PWD $PWD/build")
if [[ -n $against ]]; then
  git archive "$against" | tar -x -C "$tmp" --one-top-level=old
  (cd "$tmp/old" && scripts/build.sh build >/dev/null) ||
    { echo "instr.sh: cannot build $against" >&2; exit 1; }
  trees+=("old $tmp/old $tmp/old/build")
fi
# instructions, D1 read+write misses and mispredicted conditional
# branches of one run: "IR D1MISS BCM"
count() {
  valgrind --tool=cachegrind --cache-sim=yes --branch-sim=yes \
    --cachegrind-out-file="$tmp/cg.out" "$@" >"$tmp/run.out" 2>/dev/null
  awk '/^events:/ {for (i = 2; i <= NF; i++) col[$i] = i}
       /^summary:/ {print $col["Ir"], $col["D1mr"] + $col["D1mw"], $col["Bcm"]}' \
    "$tmp/cg.out"
}
echo "instr.sh: footprint $footprint, $passes passes of $((2 * footprint)) keys," \
     "load average $(cut -d' ' -f1 /proc/loadavg)"
echo
echo "| build | workload | instructions/op | L1d misses/op | mispredicts/op | hit ratio |"
echo "|---|---|---|---|---|---|"
for tr in "${trees[@]}"; do
  set -- $tr
  name=$1
  [[ $name == old ]] && label="$against ($(git rev-parse --short "$against"))" ||
    label="this tree ($(git rev-parse --short HEAD)+)"
  harness "$2" "$3" "$tmp/h-$name"
  for w in a b; do
    read -r i0 m0 b0 < <(count "$tmp/h-$name" $w 0 "$footprint")
    read -r i1 m1 b1 < <(count "$tmp/h-$name" $w "$passes" "$footprint")
    read -r _ ops _ hits < "$tmp/run.out"
    awk -v l="$label" -v w=$w -v i0="$i0" -v i1="$i1" -v m0="$m0" -v m1="$m1" \
        -v b0="$b0" -v b1="$b1" \
        -v ops="$ops" -v hits="$hits" 'BEGIN {
      printf "| %s | %s | %.1f | %.2f | %.3f | %.4f |\n", l, w, (i1 - i0) / ops,
             (m1 - m0) / ops, (b1 - b0) / ops, hits / ops }'
  done
done
