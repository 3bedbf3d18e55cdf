#!/usr/bin/env bash
# The whole test suite:
#   1. the plain build: unit and integration tests with the real clients;
#   2. the same tests under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the concurrency tests under ThreadSanitizer;
#   4. a bounded libFuzzer run of every fuzz target (clang).
# Ends with "N passed, N failed, N skipped"; exits non-zero on any failure.
#   scripts/test.sh [plain|asan|tsan|fuzz]...   (default: all four)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/install-deps.sh || { echo "install-deps failed"; echo "0 passed, 1 failed"; exit 1; }

stages=("$@")
[[ ${#stages[@]} -eq 0 ]] && stages=(plain asan tsan fuzz)

passed=0 failed=0 skipped=0
failed_names=()

count() { # BUILDDIR LABEL: add the results of its last meson test run
  local log=$1/meson-logs/testlog.json
  [[ -f $log ]] || { failed=$((failed + 1)); failed_names+=("$2: no test log"); return; }
  local out
  out=$(python3 - "$log" "$2" <<'PY'
import json, sys
p = f = s = 0
names = []
for line in open(sys.argv[1]):
    line = line.strip()
    if not line:
        continue
    t = json.loads(line)
    r = t.get("result", "")
    if r in ("OK", "EXPECTEDFAIL"):
        p += 1
    elif r == "SKIP":
        s += 1
    else:
        f += 1
        names.append(sys.argv[2] + ": " + t.get("name", "?") + " (" + r + ")")
print(p, f, s)
for n in names:
    print(n)
PY
)
  local first rest
  first=$(head -n1 <<<"$out")
  rest=$(tail -n +2 <<<"$out")
  read -r p f s <<<"$first"
  passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
  [[ -n $rest ]] && while IFS= read -r n; do failed_names+=("$n"); done <<<"$rest"
}

stage() { # LABEL BUILDDIR "SETUP ARGS" "TEST ARGS"
  local label=$1 dir=$2 setup=$3 targs=$4
  echo "=== $label: building $dir"
  # shellcheck disable=SC2086
  if ! scripts/build.sh "$dir" $setup; then
    failed=$((failed + 1)); failed_names+=("$label: build failed")
    return
  fi
  echo "=== $label: testing"
  rm -f "$dir/meson-logs/testlog.json"
  # shellcheck disable=SC2086
  meson test -C "$dir" --print-errorlogs --num-processes 2 $targs 2>&1 | tee "$dir.test.log" || true
  if grep -q '^No suitable tests defined' "$dir.test.log"; then
    echo "=== $label: no tests in this stage yet"
    return
  fi
  count "$dir" "$label"
}

for s in "${stages[@]}"; do
  case $s in
    plain) stage plain build "" "--no-suite fuzz" ;;
    asan) stage asan build-asan "-Db_sanitize=address,undefined -Db_lundef=false" \
            "--no-suite fuzz --no-suite slow --timeout-multiplier 3" ;;
    tsan) CC=clang stage tsan build-tsan "-Db_sanitize=thread -Db_lundef=false" \
            "--suite concurrency --timeout-multiplier 3" ;;
    fuzz) CC=clang stage fuzz build-fuzz \
            "-Dfuzzing=true -Db_sanitize=address,undefined -Db_lundef=false" \
            "--suite fuzz" ;;
    *) echo "unknown stage '$s' (plain, asan, tsan, fuzz)"; exit 2 ;;
  esac
done

if [[ ${#failed_names[@]} -gt 0 ]]; then
  echo "Failures:"
  printf '  %s\n' "${failed_names[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
