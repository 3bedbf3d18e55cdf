#!/usr/bin/env bash
# Leave-one-trace-out cross-validation of twophase's defaults (issue 15).
#
# Defaults fitted to the traces they are scored on say little about a host
# whose workload nobody has traced.  This script scores a grid of twophase
# configurations on every shipped trace (the four block traces, the
# thirteen LIRS traces and the format samples), then for each trace picks
# the configuration that does best on all the OTHER traces and scores it on
# the held-out one.  The mean of those held-out scores (cross-validated) is
# the honest predictor of how the chosen defaults do on an unseen trace;
# the in-sample score (best configuration on all traces, scored on all
# of them) is printed beside it, and so is the shipped default's.
#
# Score of a configuration on a trace: the mean relative miss-ratio
# reduction versus LRU over caches of 1, 5, 10, 20 and 40% of the
# footprint (as ANCHORS.md's scoreboard); cells where the cache holds
# fewer than 10 blocks are left out (every policy degenerates there).
#
# usage: bench/policy-cv.sh [--grid "CFG1 CFG2 ..."] [--jobs N] [SLUICE]
#   --jobs N: traces simulated at once, and threads per trace (default 2;
#   1 on a shared machine)
#   CFG is a twophase argument string as `sluice sim --policy twophase:CFG`
#   takes (default grid: cold 0.05/0.1/0.2 x classic 0/1); "default" is
#   twophase with no arguments.
set -euo pipefail
jobs_n=2
here=$(cd "$(dirname "$0")/.." && pwd)
traces=${SHARED:-$here/../shared}/traces
grid="cold=0.05:classic=1 cold=0.1:classic=1 cold=0.2:classic=1 cold=0.05:classic=0 cold=0.1:classic=0 cold=0.2:classic=0"
while [[ $# -gt 0 ]]; do
  case $1 in
    --grid) grid=$2; shift 2 ;;
    --jobs) jobs_n=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
sluice=${1:-$here/build/sluice}
[[ -x $sluice ]] || { echo "policy-cv: no $sluice (build first)" >&2; exit 1; }
policies=lru,twophase
for g in $grid; do
  [[ $g == default ]] || policies+=",twophase:$g"
done
out=$(mktemp -d /tmp/policy-cv.XXXXXX)
trap 'rm -rf "$out"' EXIT

jobs=(
  "arc_P3 $traces/arc/P3.lis.zst lis"
  "cpio_4k $traces/cloudphysics/cloudPhysicsIO.vscsi vscsi"
  "cpio_4k_reads $traces/cloudphysics/cloudPhysicsIO.vscsi vscsi --reads-only"
  "arc_OLTP $traces/arc/OLTP.lis.zst lis"
)
for f in "$traces"/lirs/*.trace.gz; do
  jobs+=("lirs_$(basename "$f" .trace.gz) $f txt")
done
jobs+=("msr_sample $traces/samples/msr-cambridge1-sample.csv msr"
       "tencent_sample $traces/samples/tencent-cbs-cloud_storage-sample.bz2 tencent"
       "systor_sample $traces/samples/systor17-traces-sample.csv.gz systor"
       "systor_add_sample $traces/samples/systor17-additional-sample.csv.gz systor")
start=$(date +%s)
printf '%s\n' "${jobs[@]}" |
  xargs -P "$jobs_n" -L 1 bash -c 'name=$0 file=$1 fmt=$2; shift 2
    nice "'"$sluice"'" sim --trace "$file" --format "$fmt" "$@" \
      --policy "'"$policies"'" --sizes 0.01,0.05,0.1,0.2,0.4 --threads "'"$jobs_n"'" \
      --output=json > "'"$out"'/$name.json"'
echo "policy-cv: $(( $(date +%s) - start )) s for ${#jobs[@]} traces" >&2

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
score = {}                       # trace -> {policy: mean reduction vs LRU}
for f in sorted(os.listdir(out)):
    d = json.load(open(os.path.join(out, f)))
    mr = {(r["policy"], r["size_fraction"]): (r["miss_ratio"], r["cache_blocks"])
          for r in d["results"]}
    pols = list(dict.fromkeys(r["policy"] for r in d["results"]))
    sizes = sorted({r["size_fraction"] for r in d["results"]})
    s = {}
    for p in pols:
        red = [(mr[("lru", z)][0] - mr[(p, z)][0]) / mr[("lru", z)][0]
               for z in sizes if mr[("lru", z)][1] >= 10 and mr[("lru", z)][0] > 0]
        if red:
            s[p] = sum(red) / len(red)
    if s:
        score[f[:-5]] = s
traces = sorted(score)
configs = [p for p in score[traces[0]] if p != "lru"]
mean = lambda xs: sum(xs) / len(xs)
def avg(p, ts):
    return mean([score[t][p] for t in ts])
print("## Leave-one-trace-out cross-validation of twophase's configuration")
print(f"{len(traces)} traces; score = mean miss-ratio reduction vs LRU at "
      "1-40% of the footprint (caches of >= 10 blocks).")
print()
print("| configuration | mean over all traces | mean over the 4 block traces |")
print("|---|---|---|")
blocks = [t for t in traces if t in ("cpio_4k", "cpio_4k_reads", "arc_OLTP", "arc_P3")]
for p in configs:
    print(f"| {p} | {avg(p, traces) * 100:+.2f}% | "
          f"{avg(p, blocks) * 100:+.2f}% |" if blocks else "| - |")
print()
print("| held-out trace | chosen on the others | its score there | default's score |")
print("|---|---|---|---|")
cv = []
for t in traces:
    rest = [u for u in traces if u != t]
    best = max(configs, key=lambda p: avg(p, rest))
    cv.append(score[t][best])
    print(f"| {t} | {best} | {score[t][best] * 100:+.2f}% | "
          f"{score[t]['twophase'] * 100:+.2f}% |")
insample = max(configs, key=lambda p: avg(p, traces))
print()
print(f"cross-validated score: {mean(cv) * 100:+.2f}%")
print(f"in-sample score: {avg(insample, traces) * 100:+.2f}% ({insample})")
print(f"shipped default (twophase): {avg('twophase', traces) * 100:+.2f}%")
PY
