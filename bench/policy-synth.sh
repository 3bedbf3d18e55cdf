#!/usr/bin/env bash
# Miss ratios on the synthetic workload suite (issue 15; lib/sim/synth.c):
# the patterns an adaptive policy must get right, one at a time, so that a
# change in a trace's figures can be traced to a pattern.
#   loop 1.2x, 1.5x and 3x the cache; zigzag 1.5x (LRU-friendly); a scan
#   mixed into a Zipf hot set; phase changes between two working sets;
#   Zipf 0.7 and 1.0; Zipf with skew shifting from 0.6 to 1.2.
# The cache is 1000 blocks throughout (1500 for Zipf's 10% point), so the
# rows compare at equal size.  Prints one markdown table.
#   usage: bench/policy-synth.sh [--policy P1,P2,...] [SLUICE]
#   (default policies: lru,twophase,twophase-classic,s3fifo1,arc,lirs,
#    wtinylfu,wtinylfu-adapt,belady)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
policies=lru,twophase,twophase-classic,s3fifo1,arc,lirs,wtinylfu,wtinylfu-adapt,belady
while [[ $# -gt 0 ]]; do
  case $1 in
    --policy) policies=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
sluice=${1:-$here/build/sluice}
[[ -x $sluice ]] || { echo "policy-synth: no $sluice (build first)" >&2; exit 1; }
# spec, cache as a fraction of its footprint (1000 blocks where it applies)
cases=(
  "loop:n=1200,len=120000 0.83334"
  "loop:n=1500,len=150000 0.66667"
  "loop:n=3000,len=300000 0.33334"
  "zigzag:n=1500,len=150000 0.66667"
  "scanhot:hot=1000,scan=0.3,len=200000 0"
  "phases:n=1500,phase=50000,len=300000 0.33334"
  "zipf:n=15000,alpha=0.7,len=300000 0.1"
  "zipf:n=15000,alpha=1.0,len=300000 0.1"
  "zipfshift:n=15000,from=0.6,to=1.2,phases=4,len=300000 0.1"
)
printf '| workload | cache | %s |\n' "$(sed 's/,/ | /g' <<<"$policies")"
printf '|---|---|%s\n' "$(sed 's/[^,]*/---|/g; s/,//g' <<<"$policies")"
for c in "${cases[@]}"; do
  spec=${c% *} frac=${c##* }
  if [[ $frac == 0 ]]; then
    # scanhot's footprint grows with the scan: size it from the footprint
    fp=$("$sluice" sim --trace "$spec" --format synth --policy lru --sizes 1 \
         --output=csv | awk -F, 'NR==2 {print $3}')
    frac=$(python3 -c "print(min(1.0, 1000 / $fp))")
  fi
  "$sluice" sim --trace "$spec" --format synth --policy "$policies" \
    --sizes "$frac" --threads 2 --output=csv |
    awk -F, -v spec="$spec" 'NR > 1 { blocks = $3; mr = mr sprintf(" %.4f |", $4) }
      END { printf "| %s | %s |%s\n", spec, blocks, mr }'
done
