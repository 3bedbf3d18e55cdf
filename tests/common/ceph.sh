# Sourced (after lib.sh) by tests that need a Ceph cluster.
#
# ceph_start: start one single-node cluster (scripts/ceph-single-node.sh)
# for the whole test file in $TMP/ceph, stopped by pid on any exit through
# the cleanup stack, and export CEPH_CONF so librbd, qemu-img's rbd driver,
# rbd and rados all find it.  Skips, saying why, when Ceph or sluice's RBD
# support is not installed.  Sets POOL (the initialised pool "rbd").

# ceph_require: skip unless the daemons, the tools and sluice's RBD driver
# are present.
ceph_require() {
  local c
  for c in ceph-mon ceph-osd ceph rbd rados monmaptool ceph-authtool; do
    command -v "$c" >/dev/null 2>&1 ||
      skip "needs $c (apt-get install ceph-mon ceph-osd ceph-common)"
  done
  "$SLUICE" --version 2>/dev/null | grep -q '+rbd' ||
    skip "sluice was built without RBD support (librbd-dev absent at configure time)"
}

ceph_start() {
  ceph_require
  local dir=$TMP/ceph out
  cleanup_push "'$SRCDIR/scripts/ceph-single-node.sh' stop '$dir'"
  out=$("$SRCDIR/scripts/ceph-single-node.sh" start "$dir") ||
    die "the single-node Ceph cluster did not start"
  eval "$out"
  POOL=rbd
}

# rbd_md5 IMAGE: md5 of the whole RBD image as `rbd export` reads it.
rbd_md5() { rbd export --no-progress "$POOL/$1" - | md5sum | cut -d' ' -f1; }
