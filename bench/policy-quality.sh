#!/usr/bin/env bash
# Miss-ratio quality of every replacement policy in `sluice sim`, scored
# like shared/traces/ANCHORS.md: per policy, the mean relative miss-ratio
# reduction versus LRU over the four block traces (cpio_4k, cpio_4k_reads,
# arc_OLTP, arc_P3) at 1, 5, 10, 20 and 40% of the footprint, the mean over
# all sizes, and the worst single point; then the per-trace miss ratios.
#
# usage: bench/policy-quality.sh [--lirs-traces] [--policy P1,P2,...] [SLUICE]
#   --lirs-traces  (or --lirs) also run the traces of the LIRS paper
#                  (shared/traces/lirs): per-trace tables, and a second
#                  scoreboard over all 17 traces with the worst point on
#                  the LRU-friendly loops (zigzag, backf, sprite)
#   --policy       only these policies (default: all that --help lists,
#                  the lirs policy among them); lru is added if missing,
#                  as everything is scored against it
#   --jobs N       traces simulated at once, and threads per trace
#                  (default 2; 1 on a shared machine)
#   SLUICE         the binary (default build/sluice)
# Traces run two at a time (the CI machine has two cores).
set -euo pipefail
jobs_n=2
here=$(cd "$(dirname "$0")/.." && pwd)
traces=${SHARED:-$here/../shared}/traces
lirs=0
policies=
while [[ $# -gt 0 ]]; do
  case $1 in
    --lirs|--lirs-traces) lirs=1; shift ;;
    --policy) policies=$2; shift 2 ;;
    --jobs) jobs_n=$2; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
sluice=${1:-$here/build/sluice}
[[ -x $sluice ]] || { echo "policy-quality: no $sluice (build first)" >&2; exit 1; }
if [[ -z $policies ]]; then
  # Every policy the binary knows, as its --help lists them.
  policies=$("$sluice" sim --help | awk '/^Policies/ {on=1; next} on && NF {print $1}' |
             paste -sd, -)
fi
[[ ,$policies, == *,lru,* ]] || policies=lru,$policies
sizes=0.01,0.05,0.1,0.2,0.4
out=$(mktemp -d /tmp/policy-quality.XXXXXX)
trap 'rm -rf "$out"' EXIT

jobs=(
  "cpio_4k $traces/cloudphysics/cloudPhysicsIO.vscsi vscsi"
  "cpio_4k_reads $traces/cloudphysics/cloudPhysicsIO.vscsi vscsi --reads-only"
  "arc_OLTP $traces/arc/OLTP.lis.zst lis"
  "arc_P3 $traces/arc/P3.lis.zst lis"
)
if [[ $lirs == 1 ]]; then
  for f in "$traces"/lirs/*.trace.gz; do
    n=$(basename "$f" .trace.gz)
    jobs+=("lirs_$n $f txt")
  done
fi
start=$(date +%s)
# arc_P3 is by far the longest: start it first.
printf '%s\n' "${jobs[3]}" "${jobs[@]:0:3}" "${jobs[@]:4}" |
  xargs -P "$jobs_n" -L 1 bash -c 'name=$0 file=$1 fmt=$2; shift 2
    nice "'"$sluice"'" sim --trace "$file" --format "$fmt" "$@" \
      --policy "'"$policies"'" --sizes "'"$sizes"'" --threads "'"$jobs_n"'" \
      --output=json > "'"$out"'/$name.json"'
echo "policy-quality: $(( $(date +%s) - start )) s for ${#jobs[@]} traces" \
     "($("$sluice" --version 2>/dev/null | head -1 || echo sluice))" >&2

python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
scored = ["cpio_4k", "cpio_4k_reads", "arc_OLTP", "arc_P3"]
data = {}
for f in sorted(os.listdir(out)):
    d = json.load(open(os.path.join(out, f)))
    name = f[:-5]
    data[name] = d
    d["mr"] = {(r["policy"], r["size_fraction"]): r["miss_ratio"]
               for r in d["results"]}
    d["blocks"] = {r["size_fraction"]: r["cache_blocks"] for r in d["results"]}
first = data[scored[0]]
policies = list(dict.fromkeys(r["policy"] for r in first["results"]))
sizes = sorted({r["size_fraction"] for r in first["results"]})
pct = lambda s: f"{s * 100:g}%"

print("## Scoreboard: mean miss-ratio reduction vs LRU")
print("Mean over", ", ".join(scored), "(per-trace relative reduction, then"
      " averaged); positive = fewer misses than LRU.")
print("| policy | " + " | ".join(pct(s) for s in sizes) +
      " | all sizes | worst single point |")
print("|---|" + "---|" * (len(sizes) + 2))
for p in policies:
    per_size, allpts, worst = [], [], None
    for s in sizes:
        reds = []
        for t in scored:
            lru = data[t]["mr"][("lru", s)]
            red = (lru - data[t]["mr"][(p, s)]) / lru if lru else 0.0
            reds.append(red)
            allpts.append(red)
            if worst is None or red < worst[0]:
                worst = (red, f"{t}@{pct(s)}")
        per_size.append(sum(reds) / len(reds))
    print(f"| {p} | " + " | ".join(f"{r * 100:+.1f}%" for r in per_size) +
          f" | {sum(allpts) / len(allpts) * 100:+.1f}% | "
          f"{worst[0] * 100:+.1f}% ({worst[1]}) |")

others = [t for t in data if t not in scored]
if others:
    # Issue 15: every shipped trace, the four block traces and the LIRS
    # ones alike, each trace's mean over the sizes counting once; cells
    # where the cache holds fewer than 10 blocks are left out (see
    # ANCHORS.md's caveat), as are traces where LRU never misses.
    print()
    print(f"## Scoreboard over all {len(data)} traces")
    print("Per trace, the mean reduction vs LRU over the sizes (caches of at "
          "least 10 blocks); then the mean over traces.  Last columns: the "
          "LRU-friendly loops, worst point vs LRU.")
    loops = [t for t in ("lirs_zigzag", "lirs_backf", "lirs_sprite") if t in data]
    print("| policy | mean over traces | " + " | ".join(loops) + " |")
    print("|---|---|" + "---|" * len(loops))
    for p in policies:
        per_trace = []
        for t, d in data.items():
            reds = [(d["mr"][("lru", s)] - d["mr"][(p, s)]) / d["mr"][("lru", s)]
                    for s in sizes
                    if d["mr"][("lru", s)] and d["blocks"][s] >= 10]
            if reds:
                per_trace.append(sum(reds) / len(reds))
        worst = []
        for t in loops:
            d = data[t]
            worst.append(min((d["mr"][("lru", s)] - d["mr"][(p, s)]) /
                             d["mr"][("lru", s)] for s in sizes
                             if d["mr"][("lru", s)] and d["blocks"][s] >= 10))
        print(f"| {p} | {sum(per_trace) / len(per_trace) * 100:+.1f}% | " +
              " | ".join(f"{w * 100:+.1f}%" for w in worst) + " |")

print()
print("## Per-trace miss ratios")
for t, d in data.items():
    print()
    print(f"### {t}  ({d['requests']} requests, footprint {d['footprint']})")
    print("| policy | " + " | ".join(pct(s) for s in sizes) +
          " | mean red. vs LRU |")
    print("|---|" + "---|" * (len(sizes) + 1))
    for p in policies:
        reds = [(d["mr"][("lru", s)] - d["mr"][(p, s)]) / d["mr"][("lru", s)]
                if d["mr"][("lru", s)] else 0.0 for s in sizes]
        print(f"| {p} | " + " | ".join(f"{d['mr'][(p, s)]:.4f}" for s in sizes)
              + f" | {sum(reds) / len(reds) * 100:+.1f}% |")
PY
