#!/usr/bin/env bash
# Issue 10: the crash test (SIGKILL at random instants, as in
# test-image-crash.sh) on an image with an internal snapshot and a
# persistent dirty bitmap.  CRASH_SNAP_ROUNDS rounds; every third one ends
# with a clean close instead of a kill.  After every round qemu-img check
# finds no corruption, the snapshot's content is unchanged (applied with
# `qemu-img snapshot -a` on a copy and compared byte for byte), and the
# bitmap is either flagged in-use (QEMU then treats it as inconsistent)
# or dirty over exactly the 64 KiB chunks the writer touched: never clean
# but wrong.  Each round starts from a fresh, empty bitmap.
#   test-image-crash-snapshot.sh CRASH_WRITER
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io qemu-nbd nbdinfo python3
writer=$(realpath "$1")
cd "$TMP"
snap_rounds=${CRASH_SNAP_ROUNDS:-12}
qemu-img create -q -f qcow2 snap.qcow2 8M
qemu-io -c 'write -P 0x5a 0 6M' snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-img convert -O raw snap.qcow2 snap-a.raw
consistent=0 inconsistent=0
for round in $(seq 1 "$snap_rounds"); do
  # A fresh, empty bitmap each round (a killed round leaves it in use).
  qemu-img bitmap --remove snap.qcow2 b0 2>/dev/null || true
  qemu-img bitmap --add snap.qcow2 b0
  : > journal
  if (( round % 3 == 0 )); then
    "$writer" snap.qcow2 journal "$((round + 1000))" 200 2>writer.err ||
      die "snapshot round $round: writer failed: $(cat writer.err)"
  else
    "$writer" snap.qcow2 journal "$((round + 1000))" 2>writer.err &
    pid=$!
    cleanup_push "kill -9 $pid"
    # Kill while it writes (not while a slow start still opens the image).
    for _ in $(seq 1 200); do [[ -s journal ]] && break; sleep 0.05; done
    sleep "0.$(printf '%02d' $(( RANDOM % 12 + 1 )))"
    kill -9 "$pid" 2>/dev/null || die "snapshot round $round: writer exited early: $(cat writer.err)"
    wait "$pid" 2>/dev/null || true
  fi
  rc=0; qemu-img check -q snap.qcow2 >check.out 2>&1 || rc=$?
  [[ $rc -eq 0 || $rc -eq 3 ]] || die "snapshot round $round: qemu-img check exit $rc: $(cat check.out)"
  cp snap.qcow2 copy.qcow2
  # QEMU refuses to apply a snapshot under an active bitmap.
  qemu-img bitmap --remove copy.qcow2 b0 2>/dev/null || true
  qemu-img snapshot -a s1 copy.qcow2
  qemu-img convert -O raw copy.qcow2 copy.raw
  cmp -s copy.raw snap-a.raw || die "snapshot round $round: snapshot s1 changed"
  # in-use, or absent: a kill while the open rewrote the directory leaves
  # the extension untrusted (autoclear bit 0 clear), so QEMU ignores it.
  state=$(qemu-img info --output=json snap.qcow2 2>/dev/null | python3 -c '
import json, sys
d = json.load(sys.stdin)["format-specific"]["data"]
b = [b for b in d.get("bitmaps", []) if b["name"] == "b0"]
print("absent" if not b else "in-use" if "in-use" in b[0]["flags"] else "clean")')
  if [[ $state != clean ]]; then
    inconsistent=$((inconsistent + 1))
    continue  # inconsistent to QEMU: an incremental backup will not trust it
  fi
  consistent=$((consistent + 1))
  # Not in use: the writer never opened it, or closed it cleanly; either
  # way every journalled operation completed and must be marked.
  nbdinfo --map=qemu:dirty-bitmap:b0 -- [ qemu-nbd -r -f qcow2 -B b0 snap.qcow2 ] |
    awk '$3 == 1 { print $1, $2 }' >dirty.txt
  python3 - "$round" <<'PY' || die "snapshot round $round: bitmap b0 is clean but wrong"
import sys
g, chunks = 65536, set()
for line in open("journal"):
    f = line.split()
    if f and f[0] in "WD" and len(f) >= 4:
        off, n = int(f[2]), int(f[3])
        chunks.update(range(off // g, (off + n - 1) // g + 1))
got = set()
for line in open("dirty.txt"):
    off, n = (int(x) for x in line.split())
    got.update(range(off // g, (off + n) // g))
if got != chunks:
    print("round %s: %d chunks dirty, %d written; missing %s, extra %s" % (
        sys.argv[1], len(got), len(chunks), sorted(chunks - got)[:5], sorted(got - chunks)[:5]))
    sys.exit(1)
PY
done
qemu-img snapshot -d s1 snap.qcow2
rc=0; sluice check -r leaks snap.qcow2 >/dev/null || rc=$?
[[ $rc -eq 0 ]] || die "sluice check -r leaks left exit $rc on the snapshot image"
qemu-img check -q snap.qcow2 || die "qemu-img check not clean after sluice repair (snapshot image)"
# The clean closes were checked as consistent bitmaps, and kills do leave
# bitmaps in use (the comparison above was not skipped every time).
(( consistent >= snap_rounds / 3 )) || die "only $consistent rounds had a consistent bitmap"
(( inconsistent >= 1 )) || die "no killed round left the bitmap in use"
echo "ok: $snap_rounds rounds, $consistent with a consistent bitmap, $inconsistent in use"
