#!/usr/bin/env bash
# Version 2 (compat=0.10) qcow2 images are written as QEMU writes them.
#
# Many long-lived cloud images are still compat=0.10.  Version 2 has no
# zero flag in L2 entries, so zeros over a backing file or inside a
# cluster that must stay allocated are written as data, and a discard
# over a backing file leaves the cluster unallocated (it then reads the
# backing file, as in QEMU).  The oracle: a twin image given the same
# operations by qemu-io; `qemu-img compare` must find them identical,
# `qemu-img check` clean, and the image still version 2.
source "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io

K=1024 M=$((1024 * 1024))
ops=( # sluice io op | qemu-io op
  "write -P 0x11 0 4M|write -P 0x11 0 4M"
  "write -P 0x22 $((100 * K)) 3K|write -P 0x22 $((100 * K)) 3K"
  "zero $M 64K|write -z $M 64K"
  "zero -u $((2 * M)) 128K|write -z -u $((2 * M)) 128K"
  "zero $((3 * M + 512)) 1K|write -z $((3 * M + 512)) 1K"
  "discard $((3 * M + 64 * K)) 64K|discard $((3 * M + 64 * K)) 64K"
  "zero $((6 * M)) 192K|write -z $((6 * M)) 192K"
  "discard $((7 * M)) 128K|discard $((7 * M)) 128K"
  "write -P 0x33 $((8 * M - 4 * K)) 8K|write -P 0x33 $((8 * M - 4 * K)) 8K"
)

run_case() { # NAME [BACKING]
  local name=$1 backing=${2:-} s=$TMP/$1-sluice.qcow2 q=$TMP/$1-qemu.qcow2 op
  local bopts=()
  [[ -n $backing ]] && bopts=(-b "$backing" -F qcow2)
  qemu-img create -q -f qcow2 -o compat=0.10 "${bopts[@]}" "$s" 16M
  qemu-img create -q -f qcow2 -o compat=0.10 "${bopts[@]}" "$q" 16M
  local sargs=() qargs=()
  for op in "${ops[@]}"; do
    sargs+=(-c "${op%%|*}")
    qargs+=(-c "${op#*|}")
  done
  sluice io -f qcow2 "${sargs[@]}" "$s" >/dev/null || die "$name: sluice io on a v2 image failed"
  qemu-io -f qcow2 "${qargs[@]}" "$q" >/dev/null
  qemu-img check -q "$s" || die "$name: qemu-img check finds errors after sluice wrote"
  qemu-img compare -q "$s" "$q" || die "$name: sluice and qemu-io disagree on the content"
  qemu-img info "$s" | grep -q 'compat: 0.10' || die "$name: the image is no longer compat=0.10"
  sluice check -q "$s" || die "$name: sluice check after the writes"
}

run_case plain
# Over a backing file whose data zeros and discards must hide or show.
qemu-img create -q -f qcow2 -o compat=0.10 "$TMP/base.qcow2" 16M
qemu-io -c 'write -P 0xee 0 16M' "$TMP/base.qcow2" >/dev/null
run_case overlay "$TMP/base.qcow2"
# Zeros written over the base must read as zeros, not the base.
sluice io -r -f qcow2 "$TMP/overlay-sluice.qcow2" read -P 0 $M 64K >/dev/null ||
  die "zeros over the backing file read back as something else"

# sluice creates version 2 images that it, and QEMU, can then write.
sluice create -q -f qcow2 -o compat=0.10 "$TMP/made.qcow2" 8M >/dev/null
sluice io -f qcow2 "$TMP/made.qcow2" write -P 0x44 0 1M >/dev/null
qemu-io -f qcow2 -c 'read -P 0x44 0 1M' "$TMP/made.qcow2" | grep -q 'read 1048576' ||
  die "qemu-io does not read what sluice wrote to its own v2 image"
qemu-img check -q "$TMP/made.qcow2" || die "qemu-img check on sluice's own v2 image"
sluice create -q -f qcow2 -o compat=0.10,preallocation=metadata "$TMP/pre.qcow2" 8M >/dev/null
qemu-img check -q "$TMP/pre.qcow2" || die "qemu-img check on a preallocated v2 image"
echo "ok: qcow2 version 2 images written as QEMU writes them"
