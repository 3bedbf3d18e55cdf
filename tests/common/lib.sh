# Sourced by every shell test.  Gives a private temporary directory, a
# cleanup stack that runs on any exit (so mounts, loop devices and servers
# are released even when a test fails), and small assertion helpers.
# Exit 77 means "skipped" to meson.
set -euo pipefail

: "${SLUICE:?run through meson test, or set SLUICE=build/sluice}"
SRCDIR=${SRCDIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
TEST_NAME=$(basename "$0" .sh)
# The shared traces sit beside the main checkout (/work/shared beside
# /work/main); a git worktree elsewhere finds them beside its main tree.
if [[ -n ${SHARED:-} && ! -d $SHARED ]]; then
  _common=$(git -C "$SRCDIR" rev-parse --path-format=absolute --git-common-dir 2>/dev/null || true)
  [[ -n $_common && -d $(dirname "$_common")/../shared ]] &&
    SHARED=$(cd "$(dirname "$_common")/../shared" && pwd)
fi
TMP=$(mktemp -d "/tmp/$TEST_NAME.XXXXXX")

_cleanups=()
# cleanup_push CMD...: run CMD at exit, last pushed first.
cleanup_push() { _cleanups+=("$*"); }
_run_cleanups() {
  local rc=$?
  local i
  for ((i = ${#_cleanups[@]} - 1; i >= 0; i--)); do
    eval "${_cleanups[$i]}" >/dev/null 2>&1 || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap _run_cleanups EXIT
trap 'exit 130' INT TERM

die() { echo "FAIL: $TEST_NAME: $*" >&2; exit 1; }
skip() { echo "SKIP: $TEST_NAME: $*" >&2; exit 77; }
require() { local c; for c in "$@"; do command -v "$c" >/dev/null 2>&1 || skip "needs $c"; done; }
require_root() { [[ $(id -u) -eq 0 ]] || skip "needs root"; }

# expect_fail PATTERN CMD...: CMD must exit non-zero (not by a signal) and
# print PATTERN (an extended regex) on stderr.
expect_fail() {
  local pattern=$1; shift
  local rc=0
  "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
  [[ $rc -ne 0 ]] || die "expected failure from: $*"
  [[ $rc -lt 128 ]] || die "killed by signal $((rc - 128)): $* ($(cat "$TMP/err"))"
  grep -Eq -- "$pattern" "$TMP/err" || die "expected /$pattern/ from: $* -- got: $(cat "$TMP/err")"
}

# assert_eq ACTUAL EXPECTED [WHAT]
assert_eq() { [[ "$1" == "$2" ]] || die "${3:-value}: got '$1', expected '$2'"; }

# wait_for_path PATH [SECONDS]: wait until PATH exists (socket, file).
wait_for_path() {
  local p=$1 t=${2:-10} i
  for ((i = 0; i < t * 20; i++)); do [[ -e $p ]] && return 0; sleep 0.05; done
  die "timed out waiting for $p"
}

# mount_hangfs MNT CTL [DELAY_MS]: mount $HANGFS (tests/daemon/hangfs.c) on
# MNT: its disk.img hangs every read while the file CTL exists, and takes
# DELAY_MS per read if given.  Killed, CTL removed and MNT unmounted at
# exit; skips when FUSE cannot mount here.
mount_hangfs() {
  local mnt=$1 ctl=$2 i
  [[ -c /dev/fuse ]] || skip "no /dev/fuse"
  require fusermount3
  mkdir -p "$mnt"
  "$HANGFS" "$mnt" "$ctl" ${3:+"$3"} 2>"$TMP/fuse.log" &
  cleanup_push "kill $!"
  cleanup_push "rm -f $ctl; fusermount3 -u -z $mnt"
  for ((i = 0; i < 100; i++)); do [[ -e $mnt/disk.img ]] && return 0; sleep 0.1; done
  skip "cannot mount a FUSE file system: $(cat "$TMP/fuse.log")"
}

sluice() { "$SLUICE" "$@"; }

# check_counts TOOL IMAGE FIELD...: run `qemu-img check` (TOOL=qemu) or
# `sluice check` on IMAGE and print its exit code, then each FIELD of its
# JSON output (0 when absent), so the two tools' verdicts compare as text.
check_counts() {
  local tool=$1 image=$2 rc=0 out; shift 2
  if [[ $tool == qemu ]]; then
    out=$(qemu-img check --output=json "$image" 2>/dev/null) || rc=$?
  else
    out=$("$SLUICE" check --output=json "$image" 2>/dev/null) || rc=$?
  fi
  python3 -c "
import json, sys
d = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
print(' '.join([sys.argv[2]] + [str(d.get(f, 0)) for f in sys.argv[3:]]))" "$out" "$rc" "$@"
}
