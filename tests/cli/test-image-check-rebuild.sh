#!/usr/bin/env bash
# `sluice check -r all` rebuilds a broken refcount structure (a refcount
# block missing, or a refcount table entry corrupt) the way
# `qemu-img check -r all` does: on copies of the same damaged image both
# find the same corruption count, both repair to an image qemu-img check
# finds clean, with the guest data unchanged, and sluice's result can be
# written to afterwards.
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

# make IMAGE CLUSTER: data spread so that with 4K clusters several
# refcount blocks are in use (one block covers 8 MiB there).
make() {
  qemu-img create -q -f qcow2 -o cluster_size="$2" "$1" 40M
  qemu-io -c "write -P 0x33 0 8M" -c "write -P 0x44 9M 8M" \
          -c "write -P 0x55 20M 1M" "$1" >/dev/null
}

# set_rt IMAGE INDEX VALUE: overwrite refcount table entry INDEX.
set_rt() {
  python3 - "$@" <<'PY'
import struct, sys
path, idx, val = sys.argv[1], int(sys.argv[2]), int(sys.argv[3], 0)
with open(path, "r+b") as f:
    f.seek(48); rt = struct.unpack(">Q", f.read(8))[0]
    f.seek(rt + 8 * idx); old = struct.unpack(">Q", f.read(8))[0]
    assert old != 0, "refcount table entry %d is not in use" % idx
    f.seek(rt + 8 * idx); f.write(struct.pack(">Q", val))
PY
}

corruptions() { check_counts "$1" "$2" corruptions; }  # TOOL IMAGE -> "exit corruptions"

# case NAME CLUSTER INDEX VALUE QEMU_REPAIRS
case_() {
  local name=$1 cs=$2 idx=$3 val=$4 qemu_repairs=$5
  make "$name.orig" "$cs"
  cp "$name.orig" "$name.s"
  set_rt "$name.s" "$idx" "$val"
  cp "$name.s" "$name.q"

  local s q
  s=$(corruptions sluice "$name.s"); q=$(corruptions qemu "$name.q")
  # The verdict is qemu-img's: 2 (corrupt), or 1 where qemu-img cannot
  # read the refcounts of a misaligned block (a check error).
  [[ ${s%% *} == "${q%% *}" ]] || die "$name: sluice check exit/corruptions '$s', qemu-img '$q'"
  if $qemu_repairs; then
    [[ ${s%% *} == 2 ]] || die "$name: sluice check exit/corruptions '$s', want exit 2"
    [[ $s == "$q" ]] || die "$name: sluice check says '$s', qemu-img '$q'"
  fi

  local rc=0
  "$SLUICE" check -r all "$name.s" >"$name.out" 2>&1 || rc=$?
  [[ $rc -eq 0 ]] || die "$name: sluice check -r all exit $rc: $(tail -5 "$name.out")"
  grep -q "Rebuilding refcount structure" "$name.out" ||
    die "$name: sluice did not rebuild: $(tail -5 "$name.out")"
  qemu-img check -q "$name.s" || die "$name: qemu-img check not clean after sluice's repair"
  qemu-img compare -q "$name.orig" "$name.s" || die "$name: sluice's repair changed the data"
  if $qemu_repairs; then
    rc=0; qemu-img check -q -r all "$name.q" >/dev/null 2>&1 || rc=$?
    [[ $rc -eq 0 ]] || die "$name: qemu-img check -r all exit $rc"
    qemu-img compare -q "$name.q" "$name.s" || die "$name: sluice and qemu-img repairs differ in data"
  fi

  # The repaired image takes writes that allocate (new clusters must not
  # land on the rebuilt structure).
  "$SLUICE" io -c "write -P 0x66 30M 2M" "$name.s" >/dev/null ||
    die "$name: write after repair failed"
  qemu-img check -q "$name.s" || die "$name: qemu-img check not clean after writing"
  qemu-io -c "read -P 0x66 30M 2M" -c "read -P 0x44 9M 2M" "$name.s" | grep -q "^read" ||
    die "$name: data wrong after writing"
  ! qemu-io -c "read -P 0x66 30M 2M" -c "read -P 0x44 9M 2M" "$name.s" | grep -q "Pattern verification failed" ||
    die "$name: data wrong after writing"
  echo "ok: $name"
}

case_ missing-block     64k 0 0            true
case_ missing-middle    4k  1 0            true
case_ past-eof          64k 0 0x100000000  true
# qemu-img 7.2 marks this image corrupt and gives up on the rebuild
# ("ERROR writing refblock"): sluice alone is checked.
case_ misaligned        4k  1 0x20200      false
