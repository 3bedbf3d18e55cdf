#!/bin/bash
# create parity with qemu-img create (issue 10 item 7), a golden comparison:
# for each size and -o option list, `sluice create` and `qemu-img create`
# must both succeed or both fail, and on success `qemu-img info
# --output=json` (all but the file name and the disk usage) and `qemu-img
# check --output=json` must be identical for the two images.  Also: sizes
# round up to 512, size 0 works, backing names over 1023 bytes, data_file
# and encryption are refused with a clear message, version 2 images made
# by sluice are read by sluice, and preallocated images read as zeros.
source "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

info() { qemu-img info --output=json "$1" | grep -v -e '"filename"' -e '"actual-size"'; }
check() { qemu-img check --output=json "$1" | grep -v '"filename"'; }

# compare FMT SIZE OPTS: both tools on the same arguments.
compare() {
  local fmt=$1 size=$2 opts=$3 rs=0 rq=0
  local o=(); [[ -n $opts ]] && o=(-o "$opts")
  rm -f s.img q.img
  sluice create -q -f "$fmt" "${o[@]}" s.img "$size" 2>s.err || rs=$?
  qemu-img create -q -f "$fmt" "${o[@]}" q.img "$size" 2>q.err || rq=$?
  [[ $rs -lt 128 ]] || die "sluice create -f $fmt $opts $size: killed by a signal"
  if [[ $rq -ne 0 ]]; then
    [[ $rs -ne 0 ]] || die "-f $fmt -o '$opts' $size: qemu-img refuses ($(cat q.err)), sluice accepts"
    [[ -s s.err ]] || die "-f $fmt -o '$opts' $size: sluice refuses without a message"
    return 0
  fi
  [[ $rs -eq 0 ]] || die "-f $fmt -o '$opts' $size: sluice refuses: $(cat s.err)"
  diff <(info s.img) <(info q.img) >diff.out ||
    die "-f $fmt -o '$opts' $size: qemu-img info differs: $(cat diff.out)"
  if [[ $fmt == qcow2 ]]; then
    diff <(check s.img) <(check q.img) >diff.out ||
      die "-f $fmt -o '$opts' $size: qemu-img check differs: $(cat diff.out)"
  fi
  qemu-img compare -q -f "$fmt" -F "$fmt" s.img q.img || die "-f $fmt -o '$opts' $size: contents differ"
}

# Options QEMU refuses (sluice must too, with a message): one size.
for opts in compat=0.10,lazy_refcounts=on compat=0.10,refcount_bits=8 \
            compat=0.10,compression_type=zstd compat=0.10,extended_l2=on \
            refcount_bits=3 cluster_size=1000 extended_l2=on,cluster_size=4k; do
  compare qcow2 1M "$opts"
done
for size in 0 1000 5M; do
  for opts in '' cluster_size=4k lazy_refcounts=on compat=0.10 refcount_bits=1 \
              refcount_bits=8,cluster_size=512 refcount_bits=64 extended_l2=on \
              compression_type=zstd preallocation=metadata; do
    compare qcow2 "$size" "$opts"
  done
  # Full and falloc allocate the same clusters as metadata (the disk usage
  # differs, which info does not compare).  qemu-img also writes data past
  # a 0-byte image's end with these, so size 0 is left out.
  if [[ $size != 0 ]]; then
    compare qcow2 "$size" preallocation=falloc
    compare qcow2 "$size" preallocation=full
  fi
  for opts in '' preallocation=falloc preallocation=full preallocation=metadata; do
    compare raw "$size" "$opts"
  done
done
# A size over several L2 tables and refcount entries, with 2 MiB clusters too.
compare qcow2 67109000 ''
compare qcow2 67109000 cluster_size=2M,preallocation=metadata

# Rounding, directly: 1000 bytes is two sectors, as in QEMU.
sluice create -q -f raw r.raw 1000
assert_eq "$(stat -c %s r.raw)" 1024 "raw size after create 1000"
sluice create -q -f qcow2 z.qcow2 0
sluice io z.qcow2 size | grep -qx 0 || die "a 0-byte qcow2 does not open"

# Backing names: 1023 bytes work, 1024 are refused (the image opens nowhere).
qemu-img create -q -f qcow2 base.qcow2 1M
long=$(python3 -c 'print("./" * 510 + "base.qcow2")')      # 1030 bytes
ok=$(python3 -c 'print("./" * 506 + "base.qcow2")')        # 1022 bytes
expect_fail 'backing file name too long' sluice create -q -f qcow2 -b "$long" -F qcow2 l.qcow2
[[ ! -e l.qcow2 ]] || die "a refused create left l.qcow2 behind"
sluice create -q -f qcow2 -b "$ok" -F qcow2 ok.qcow2
qemu-img info ok.qcow2 >/dev/null || die "qemu-img cannot open an overlay with a 1022-byte backing name"

# Refused with a clear message.
expect_fail 'external data files are not supported' sluice create -q -o data_file=d.raw x.qcow2 1M
expect_fail 'encrypted qcow2 images are not supported' sluice create -q -o encrypt.format=luks x.qcow2 1M
expect_fail 'encrypted qcow2 images are not supported' sluice create -q -o encryption=on x.qcow2 1M
expect_fail 'preallocation' sluice create -q -o preallocation=bogus x.qcow2 1M
[[ ! -e x.qcow2 ]] || die "a refused create left x.qcow2 behind"

# Version 2 images from sluice: qemu-io writes, sluice reads and converts.
sluice create -q -o compat=0.10 v2.qcow2 4M
qemu-io -c 'write -P 0x42 1M 64k' v2.qcow2 >/dev/null
sluice io v2.qcow2 read -P 0x42 1M 64k >/dev/null || die "sluice misreads a v2 image"
sluice info v2.qcow2 | grep -q 'compat: 0.10' || die "sluice info does not show compat 0.10"
sluice convert -O raw v2.qcow2 v2.raw
qemu-img compare -q v2.qcow2 v2.raw || die "convert of a v2 image differs"
sluice check v2.qcow2 >/dev/null || die "sluice check fails on a clean v2 image"

# Preallocated images read as zeros and stay clean after writes.
sluice create -q -o preallocation=metadata p.qcow2 4M
sluice io p.qcow2 write -P 0x5 64k 4k >/dev/null
qemu-io -c 'read -P 0 0 64k' -c 'read -P 5 64k 4k' -c 'read -P 0 68k 1M' p.qcow2 | grep -q 'Pattern verification failed' &&
  die "preallocated image reads wrong data"
qemu-img check -q p.qcow2 || die "preallocated image not clean after a write"
echo "PASS: $TEST_NAME"
