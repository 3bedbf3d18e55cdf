#!/usr/bin/env bash
# Issue 2, acceptance 4: a writer doing random writes, discards and flushes
# is killed with SIGKILL at random instants, 50 rounds.  After every kill
# qemu-img check finds no corruption (leaks are allowed), and every write
# that completed before a completed flush reads back (through qemu-img
# convert, and sluice convert reads the same bytes).  At the end
# `sluice check -r leaks` leaves the image clean.
# test-image-crash-snapshot.sh does the same on an image with an internal
# snapshot and a persistent dirty bitmap.
#   test-image-crash.sh CRASH_WRITER
. "$(dirname "$0")/../common/lib.sh"
require qemu-img python3
writer=$(realpath "$1")
rounds=${CRASH_ROUNDS:-50}
cd "$TMP"

sluice create -q -o cluster_size=64k img.qcow2 8M
for round in $(seq 1 "$rounds"); do
  qemu-img convert -O raw img.qcow2 before.raw
  : > journal
  "$writer" img.qcow2 journal "$round" 2>writer.err &
  pid=$!
  cleanup_push "kill -9 $pid"
  sleep "0.$(printf '%02d' $(( RANDOM % 12 + 1 )))"
  kill -9 "$pid" 2>/dev/null || die "round $round: writer exited early: $(cat writer.err)"
  wait "$pid" 2>/dev/null || true

  rc=0; qemu-img check -q img.qcow2 >check.out 2>&1 || rc=$?
  [[ $rc -eq 0 || $rc -eq 3 ]] || die "round $round: qemu-img check exit $rc: $(cat check.out)"
  qemu-img convert -O raw img.qcow2 after.raw
  # sluice reads the crashed image as qemu-img does (every fifth round, to
  # keep the test's time within bounds on a loaded machine).
  if (( round % 5 == 0 )); then
    sluice convert -O raw img.qcow2 after-sluice.raw ||
      die "round $round: sluice cannot read the crashed image"
    cmp -s after.raw after-sluice.raw ||
      die "round $round: sluice and qemu-img read the crashed image differently"
  fi
  python3 - "$round" <<'PY' || die "round $round: durable data lost"
import sys
data = bytearray(open("before.raw", "rb").read())
unknown = bytearray(len(data))            # 1 = may hold either value
ops, durable_upto = [], 0
for line in open("journal"):
    f = line.split()
    if not f or (f[0] in "WD" and len(f) < 4) or (f[0] == "F" and len(f) < 2):
        continue                          # a line cut by the kill
    if f[0] == "F":
        durable_upto = int(f[1])
    else:
        ops.append(f)
for f in ops:
    seq, off, n = int(f[1]), int(f[2]), int(f[3])
    if seq < durable_upto:
        data[off:off + n] = bytes([int(f[4])]) * n if f[0] == "W" else bytes(n)
        unknown[off:off + n] = bytes(n)
    else:
        unknown[off:off + n] = b"\1" * n  # issued, maybe not completed
after = open("after.raw", "rb").read()
bad = [i for i in range(0, len(data), 512)
       if not unknown[i] and after[i:i + 512] != data[i:i + 512]
       and any(not unknown[k] and after[k] != data[k] for k in range(i, min(i + 512, len(data))))]
if bad:
    i = bad[0]
    k = next(k for k in range(i, i + 512) if not unknown[k] and after[k] != data[k])
    print("round %s: byte %d is %d, expected %d (%d bad sectors)" % (sys.argv[1], k, after[k], data[k], len(bad)))
    sys.exit(1)
PY
done
rc=0; sluice check -r leaks img.qcow2 >/dev/null || rc=$?
[[ $rc -eq 0 ]] || die "sluice check -r leaks left exit $rc"
qemu-img check -q img.qcow2 || die "qemu-img check not clean after sluice repair"
echo "ok: $rounds rounds"

