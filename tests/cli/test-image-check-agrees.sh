#!/usr/bin/env bash
# Issue 2, acceptance 3: on images with injected leaks and corruptions,
# `sluice check` and `qemu-img check` agree on the exit code and on the
# leak and corruption counts; `-r leaks` and `-r all` repair what they
# should, as judged by qemu-img check afterwards.
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

make_base() { # NAME: a small image with data in a few clusters
  qemu-img create -q -f qcow2 -o cluster_size=64k "$1" 8M
  qemu-io -c "write -P 0x71 0 192k" -c "write -P 0x72 4M 64k" "$1" >/dev/null
}

# inject IMAGE KIND: damage the image's metadata with python.
inject() {
  python3 - "$1" "$2" <<'PY'
import struct, sys
path, kind = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
def rd(off, fmt):
    f.seek(off); return struct.unpack(">" + fmt, f.read(struct.calcsize(">" + fmt)))[0]
def wr(off, fmt, v):
    f.seek(off); f.write(struct.pack(">" + fmt, v))
cluster = 1 << rd(20, "L")
rt = rd(48, "Q"); l1 = rd(40, "Q")
rb = rd(rt, "Q")                                  # first refcount block
l2 = rd(l1, "Q") & 0x00fffffffffffe00             # first L2 table
def refcount_off(idx): return rb + 2 * idx        # 16-bit refcounts
entry0 = rd(l2, "Q"); data0 = entry0 & 0x00fffffffffffe00
f.seek(0, 2); end = f.tell()
if kind == "leak":                                # an extra, unreferenced cluster
    f.truncate(end + cluster)
    wr(refcount_off(end // cluster), "H", 1)
elif kind == "leak2":
    f.truncate(end + 2 * cluster)
    wr(refcount_off(end // cluster), "H", 1)
    wr(refcount_off(end // cluster + 1), "H", 1)
elif kind == "refcount-low":                      # a used data cluster at 0
    wr(refcount_off(data0 // cluster), "H", 0)
elif kind == "shared":                            # entries 0 and 1 share a cluster
    wr(l2 + 8, "Q", entry0)
elif kind == "l2-past-eof":                       # a data pointer past the end
    wr(l2 + 16, "Q", (1 << 63) | ((end + 100 * cluster) & ~(cluster - 1)))
PY
}

counts() { check_counts "$1" "$2" leaks corruptions; }  # TOOL IMAGE -> "exit leaks corruptions"

for kind in clean leak leak2 refcount-low shared l2-past-eof; do
  make_base "$kind.qcow2"
  [[ $kind == clean ]] || inject "$kind.qcow2" "$kind"
  q=$(counts qemu "$kind.qcow2")
  s=$(counts sluice "$kind.qcow2")
  assert_eq "$s" "$q" "$kind: sluice check (exit leaks corruptions) vs qemu-img"
  echo "$kind: $s"
done

# Repairs, judged by qemu-img.
for kind in leak leak2; do
  make_base "r-$kind.qcow2"; inject "r-$kind.qcow2" "$kind"
  rc=0; sluice check -r leaks "r-$kind.qcow2" >/dev/null 2>&1 || rc=$?
  assert_eq "$rc" 0 "$kind: exit after -r leaks"
  qemu-img check -q "r-$kind.qcow2" || die "$kind: qemu-img check not clean after -r leaks"
  qemu-io -c "read -P 0x71 0 192k" -c "read -P 0x72 4M 64k" "r-$kind.qcow2" >/dev/null \
    || die "$kind: data changed by the repair"
done
make_base r-low.qcow2; inject r-low.qcow2 refcount-low
rc=0; sluice check -r leaks r-low.qcow2 >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 2 "refcount-low: -r leaks does not fix corruptions"
rc=0; sluice check -r all r-low.qcow2 >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 0 "refcount-low: exit after -r all"
qemu-img check -q r-low.qcow2 || die "refcount-low: qemu-img check not clean after -r all"
qemu-io -c "read -P 0x71 0 192k" r-low.qcow2 >/dev/null || die "refcount-low: data changed"
echo ok
