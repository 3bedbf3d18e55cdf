#!/usr/bin/env bash
# Issue 2, acceptance 1 and 2: images sluice writes pass qemu-img check and
# compare equal to independently built expected data; images and chains
# qemu-img/qemu-io make read through sluice byte for byte as qemu reads them.
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

qio() { qemu-io "$@" >/dev/null; }
same_as_qemu() { # IMAGE: sluice's raw view equals qemu's
  sluice convert -O raw "$1" s.raw
  qemu-img convert -O raw "$1" q.raw
  cmp s.raw q.raw || die "$1: sluice and qemu-img read different data"
  rm -f s.raw q.raw
}

# --- 1. what sluice writes, qemu accepts -------------------------------
# Source data with holes and zero runs, built with python (not sluice).
python3 - <<'PY'
import os, random
random.seed(7)
size = 24 << 20
with open("data.raw", "wb") as f:
    f.truncate(size)
    for off in range(0, size, 1 << 20):
        kind = random.choice(["hole", "zero", "data", "partial"])
        if kind == "zero":
            f.seek(off); f.write(bytes(1 << 20))
        elif kind == "data":
            f.seek(off); f.write(os.urandom(1 << 20))
        elif kind == "partial":
            f.seek(off + random.randrange(0, 60000)); f.write(os.urandom(random.randrange(1, 9000)))
PY
for cs in 512 4K 64K 2M; do
  sluice convert -O qcow2 -o cluster_size=$cs data.raw conv-$cs.qcow2
  qemu-img check -q conv-$cs.qcow2 || die "qemu-img check: convert output, cluster $cs"
  qemu-img compare -q data.raw conv-$cs.qcow2 || die "convert output differs, cluster $cs"
done
sluice convert -O qcow2 -o extended_l2=on data.raw conv-l2.qcow2
qemu-img check -q conv-l2.qcow2 && qemu-img compare -q data.raw conv-l2.qcow2 \
  || die "extended_l2 convert output"

# Overlays with partial-cluster writes at unaligned offsets; the expected
# image is built by applying the same writes to a copy of the base.
# (Discards are cluster-aligned: a partial-cluster discard may be ignored.)
for opts in "cluster_size=64K" "cluster_size=4K" "cluster_size=64K,extended_l2=on"; do
  rm -f base.qcow2 over.qcow2 expect.raw
  sluice convert -O qcow2 -o "$opts" data.raw base.qcow2
  sluice create -q -o "$opts" -b base.qcow2 -F qcow2 over.qcow2
  cp data.raw expect.raw
  # One python run draws the writes, applies them to expect.raw and prints
  # them as sluice io operations, one per line.
  mapfile -t lines < <(python3 - <<'PY'
import random
random.seed()
size = 24 << 20
ops = []
with open("expect.raw", "r+b") as f:
    for _ in range(40):
        off = random.randrange(0, size - 70000); n = random.randrange(1, 70000)
        pat = random.randrange(1, 256)
        f.seek(off); f.write(bytes([pat]) * n)
        ops.append("write -P %d %d %d" % (pat, off, n))
    f.seek(3000); f.write(bytes(100000)); ops.append("zero 3000 100000")
    f.seek(5 << 20); f.write(bytes(327680)); ops.append("discard 5M 327680")
print("\n".join(ops))
PY
)
  ops=()
  for l in "${lines[@]}"; do ops+=(-c "$l"); done
  sluice io "${ops[@]}" over.qcow2 >/dev/null
  qemu-img check -q over.qcow2 || die "qemu-img check: overlay ($opts)"
  qemu-img check -q base.qcow2 || die "qemu-img check: base ($opts)"
  qemu-img compare -q expect.raw over.qcow2 || die "overlay data differs ($opts)"
  qemu-img compare -q data.raw base.qcow2 || die "base changed under overlay ($opts)"
done

# --- 2. what qemu writes, sluice reads ---------------------------------
for cs in 4k 64k 2M; do
  qemu-img create -q -f qcow2 -o cluster_size=$cs q-$cs.qcow2 16M
  qio -c "write -P 0xa1 0 100k" -c "write -P 0xa2 5M 3M" -c "write -z 5M 64k" \
      -c "discard 6M 1M" -c "write -P 0xa3 15M 7k" q-$cs.qcow2
  same_as_qemu q-$cs.qcow2
done

# A chain of three layers, each with its own data, qcow2 over qcow2 over raw.
qemu-img create -q -f raw c0.raw 16M
qio -f raw -c "write -P 0x10 0 16M" c0.raw
qemu-img create -q -f qcow2 -b c0.raw -F raw c1.qcow2
qio -c "write -P 0x11 1M 2M" -c "write -z 4M 1M" c1.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k -b c1.qcow2 -F qcow2 c2.qcow2
qio -c "write -P 0x12 1500k 1M" -c "discard 8M 1M" -c "write -P 0x13 12345 678" c2.qcow2
same_as_qemu c2.qcow2
# A smaller backing file: the overlay reads zeros past its end.
qemu-img create -q -f qcow2 small.qcow2 1M
qio -c "write -P 0x33 0 1M" small.qcow2
qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 big.qcow2 4M
same_as_qemu big.qcow2

# Compressed clusters, zlib and zstd.
for ct in zlib zstd; do
  qemu-img convert -c -O qcow2 -o compression_type=$ct data.raw comp-$ct.qcow2
  same_as_qemu comp-$ct.qcow2
  cmp <(sluice io comp-$ct.qcow2 cat 0 24M) data.raw || die "compressed $ct differs from source"
done

# Extended L2 entries with subcluster writes, zero subclusters, in an overlay.
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k l2base.qcow2 8M
qio -c "write -P 0x41 0 8M" l2base.qcow2
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=64k -b l2base.qcow2 -F qcow2 l2.qcow2
qio -c "write -P 0x42 2k 2k" -c "write -P 0x43 70k 5k" -c "write -z 200k 8k" \
    -c "discard 1M 64k" l2.qcow2
same_as_qemu l2.qcow2

# A version 2 image.
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
qio -c "write -P 0x55 100k 300k" v2.qcow2
same_as_qemu v2.qcow2
sluice info v2.qcow2 | grep -q "compat: 0.10" || die "v2 image not reported as compat 0.10"

# Block status agrees with qemu-img map on the three-layer chain.
python3 - "$SLUICE" <<'PY'
import json, subprocess, sys
sl = sys.argv[1]
q = json.loads(subprocess.check_output(["qemu-img", "map", "--output=json", "c2.qcow2"]))
def expand(runs):
    out = {}
    for off, length, kind, depth in runs:
        for b in range(off // 4096, (off + length) // 4096):
            out[b] = (kind, depth)
    return out
qruns = []
for e in q:
    if not e["data"] and e["zero"] and e["depth"] == 0 and not e.get("present", True):
        kind = "hole"
    kind = "data" if e["data"] else "zero"
    depth = e["depth"] if e.get("present", True) else -1
    if not e.get("present", True):
        kind = "zero"
    qruns.append((e["start"], e["length"], kind, depth))
sruns = []
for line in subprocess.check_output([sl, "io", "c2.qcow2", "map"], text=True).splitlines():
    off, length, kind, depth = line.split()
    kind = "zero" if kind in ("zero", "unallocated") else "data"
    sruns.append((int(off), int(length), kind, int(depth)))
qm, sm = expand(qruns), expand(sruns)
bad = [b for b in qm if qm[b] != sm.get(b)]
assert not bad, "first mismatch at block %d: qemu %s sluice %s" % (bad[0], qm[bad[0]], sm.get(bad[0]))
PY
echo ok
