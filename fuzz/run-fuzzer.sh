#!/usr/bin/env bash
# Run a libFuzzer target for a bounded time over a private copy of its
# seed corpus (the repository is never written), keeping any crash input.
#   run-fuzzer.sh TARGET SEED_DIR SECONDS
set -euo pipefail
target=$(realpath "$1") seeds=$(realpath "$2") secs=$3
work=$(mktemp -d "/tmp/$(basename "$target").XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus"
cp "$seeds"/* "$work/corpus/" 2>/dev/null || true
cd "$work"
"$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 corpus 2>&1 | tail -n 25
status=${PIPESTATUS[0]}
if ls crash-* leak-* timeout-* oom-* >/dev/null 2>&1; then
  keep=${FUZZ_ARTIFACTS:-/tmp}
  cp crash-* leak-* timeout-* oom-* "$keep/" 2>/dev/null || true
  echo "fuzzer found a failing input (copied to $keep)" >&2
  exit 1
fi
exit "$status"
