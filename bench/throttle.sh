#!/usr/bin/env bash
# throttle: does the throttle filter hold a disk to its limit?  For several
# IOPS and bytes-per-second limits, `sluice bench` sends random requests
# through a disk whose stack is just the throttle (over a page-cached raw
# image, so the image is never what limits) for about SECONDS seconds, and
# the achieved rate is compared with the limit.  Issue 4 asks for the rate
# to be held within 10% of the limit.
#
# Two figures per line:
#   achieved/limit  everything the bench did, divided by its time and the
#                   limit.  It includes the burst the idle disk let through
#                   at once, so it sits a little above 1 (by about
#                   burst / requests).
#   steady/limit    the same without the burst: what the bucket refills at.
# Each line also runs at a queue depth of 4 (4 threads), so the limit is
# shared by concurrent requests as it is behind an export.
#
# Usage: bench/throttle.sh [--quick] [--seconds N] [--dir DIR]
#   --quick      about 1.5 s per line instead of 4
#   --seconds N  target duration of each line
#   --dir DIR    where the image goes (default a temp dir under /var/tmp)
# Environment: BUILD (default build), the build directory to use.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${BUILD:-build}
seconds=4 base=/var/tmp
while [ $# -gt 0 ]; do
  case $1 in
    --quick) seconds=1.5 ;;
    --seconds) seconds=$2; shift ;;
    --dir) base=$2; shift ;;
    -h|--help) sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "throttle: unknown option '$1' (see --help)" >&2; exit 1 ;;
  esac
  shift
done
sluice=$build/sluice
for f in "$sluice" "$build/filters/throttle.so"; do
  [ -e "$f" ] || { echo "throttle: $f not built (scripts/build.sh $build)" >&2; exit 1; }
done

dir=$(mktemp -d "$base/sluice-throttle-bench.XXXXXX")
trap 'rm -rf "$dir"' EXIT
export SLUICE_FILTER_DIR=$dir/modules
mkdir -m 755 "$SLUICE_FILTER_DIR"
"$sluice" filter install "$build/filters/throttle.so" >/dev/null
"$sluice" create -q -f raw "$dir/img.raw" 256M
"$sluice" io "$dir/img.raw" write -P 0x5a 0 256M >/dev/null
cat "$dir/img.raw" >/dev/null

# to_bytes SIZE: 8M -> 8388608 (powers of 1024, as the filter parses them).
to_bytes() {
  numfmt --from=iec "$1"
}

# line PARAMS BLOCK KIND LIMIT BURST: one throttled run; KIND is iops or bps,
# LIMIT the binding limit in requests/s or bytes/s, BURST what the bucket
# holds when the run starts (requests or bytes).
line() {
  local params=$1 block=$2 kind=$3 limit=$4 burst=$5
  local bs count out secs achieved steady ratio sratio verdict
  bs=$(to_bytes "$block")
  if [ "$kind" = iops ]; then
    count=$(awk -v l="$limit" -v s="$seconds" 'BEGIN { printf "%d", l * s }')
  else
    count=$(awk -v l="$limit" -v s="$seconds" -v b="$bs" 'BEGIN { printf "%d", l * s / b }')
  fi
  rm -f "$dir/d.disk"
  "$sluice" disk create "$dir/d.disk" "$dir/img.raw"
  "$sluice" filter attach "$dir/d.disk" throttle "$params"
  out=$("$sluice" bench -c "$count" -d 4 -s "$block" --random "$dir/d.disk")
  secs=$(sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p' <<<"$out")
  # Achieved rate in the limit's unit, with and without the initial burst.
  read -r achieved steady <<<"$(awk -v c="$count" -v b="$bs" -v s="$secs" \
      -v k="$kind" -v burst="$burst" 'BEGIN {
        u = (k == "iops") ? c : c * b
        printf "%.1f %.1f\n", u / s, (u - burst) / s }')"
  ratio=$(awk -v a="$achieved" -v l="$limit" 'BEGIN { printf "%.3f", a / l }')
  sratio=$(awk -v a="$steady" -v l="$limit" 'BEGIN { printf "%.3f", a / l }')
  verdict=$(awk -v r="$ratio" -v s="$sratio" 'BEGIN {
    print (r >= 0.9 && r <= 1.1 && s >= 0.9 && s <= 1.1) ? "within 10%" : "OFF" }')
  [ "$kind" = bps ] && { achieved=$(numfmt --to=iec "${achieved%.*}")/s
                         limit=$(numfmt --to=iec "$limit")/s; }
  printf "| %-22s | %5s | %6s | %6.2f | %11s | %9s | %14s | %12s | %-10s |\n" \
    "$params" "$block" "$count" "$secs" "$limit" "$achieved" "$ratio" "$sratio" "$verdict"
}

echo "throttle: sluice bench --random -d 4 through a throttle filter," \
     "~${seconds}s per line, $(nproc) cores"
echo "started $(date -u '+%Y-%m-%d %H:%M UTC'); load:$(uptime | sed 's/.*load average://')"
echo
echo "| parameters             | block | reqs   | secs   | limit       | achieved  | achieved/limit | steady/limit | verdict    |"
echo "|------------------------|------:|-------:|-------:|------------:|----------:|---------------:|-------------:|------------|"
# Default bursts: iops/10 requests, bps/10 bytes (see sluice-filter-throttle(1)).
line iops=200                  4K  iops 200  20
line iops=1000                 4K  iops 1000 100
line iops=5000                 4K  iops 5000 500
line iops=1000,burst=1         4K  iops 1000 1
line bps=8M                    64K bps  "$(to_bytes 8M)"  "$(( $(to_bytes 8M) / 10 ))"
line bps=64M                   64K bps  "$(to_bytes 64M)" "$(( $(to_bytes 64M) / 10 ))"
line bps=64M,burst-bytes=1M    4K  bps  "$(to_bytes 64M)" "$(to_bytes 1M)"
line iops=1000,bps=8M          64K bps  "$(to_bytes 8M)"  "$(( $(to_bytes 8M) / 10 ))"
echo
echo "finished $(date -u '+%H:%M UTC'); load:$(uptime | sed 's/.*load average://')"
