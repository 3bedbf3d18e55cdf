#!/usr/bin/env bash
# Issue 2, acceptance 5: corrupt and hostile images get a clear error that
# names the file and the problem, a non-zero exit (never a signal), and
# never hang.  The bad images are made by patching qemu-img-made ones.
. "$(dirname "$0")/../common/lib.sh"
require qemu-img qemu-io python3
cd "$TMP"

# bad IMAGE PATTERN: every reading command fails cleanly, naming IMAGE.
bad() {
  local img=$1 pattern=$2 cmd
  for cmd in "info --backing-chain $img" "convert -O raw $img out.raw" "io $img read 0 64k"; do
    local rc=0
    # shellcheck disable=SC2086
    timeout 20 "$SLUICE" $cmd >out 2>err || rc=$?
    [[ $rc -ne 124 ]] || die "sluice $cmd hung"
    [[ $rc -lt 128 ]] || die "sluice $cmd died of signal $((rc - 128)): $(cat err)"
    if [[ $rc -eq 0 ]]; then
      # A read may legitimately succeed if the damage is elsewhere; info
      # and open must then still have said nothing misleading.  Only the
      # header-level cases below are required to fail.
      [[ ${3:-must} == may ]] || die "sluice $cmd accepted $img"
      continue
    fi
    grep -q "$img" err || die "sluice $cmd: message does not name $img: $(cat err)"
    grep -Eqi "$pattern" err || die "sluice $cmd: expected /$pattern/: $(cat err)"
  done
  rm -f out.raw
}

qemu-img create -q -f qcow2 -o cluster_size=64k good.qcow2 4M
qemu-io -c "write -P 0x61 0 256k" -c "write -P 0x62 3M 64k" good.qcow2 >/dev/null

# patch SRC DST OFFSET FORMAT VALUE: copy SRC and overwrite a big-endian field.
patch() {
  cp "$1" "$2"
  python3 - "$2" "$3" "$4" "$5" <<'PY'
import struct, sys
path, off, fmt, val = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off); f.write(struct.pack(">" + fmt, val))
PY
}
field() { # IMAGE OFFSET FORMAT: read a big-endian header field
  python3 -c "import struct,sys; f=open('$1','rb'); f.seek($2); print(struct.unpack('>$3', f.read(struct.calcsize('>$3')))[0])"
}
l1=$(field good.qcow2 40 Q)
rt=$(field good.qcow2 48 Q)
l2=$(python3 -c "import struct; f=open('good.qcow2','rb'); f.seek($l1); print(struct.unpack('>Q', f.read(8))[0] & 0x00fffffffffffe00)")

head -c 50 good.qcow2 > trunc-header.qcow2
bad trunc-header.qcow2 "truncat|too (short|small)|header"
head -c $((l1)) good.qcow2 > trunc-tables.qcow2
bad trunc-tables.qcow2 "past the end|beyond|truncat|end of (the )?file"
patch good.qcow2 l1-in-header.qcow2 40 Q 0
bad l1-in-header.qcow2 "L1.*(header|overlap|offset)"
patch good.qcow2 l1-past-eof.qcow2 40 Q $((1 << 40))
bad l1-past-eof.qcow2 "L1.*(past|beyond|end)"
patch good.qcow2 l1-misaligned.qcow2 40 Q $((l1 + 8))
bad l1-misaligned.qcow2 "L1.*(align|offset)"
patch good.qcow2 rt-in-header.qcow2 48 Q 0
bad rt-in-header.qcow2 "refcount.*(header|overlap|offset)"
patch good.qcow2 rt-on-l1.qcow2 48 Q "$l1"
bad rt-on-l1.qcow2 "refcount.*(overlap|L1)|L1.*(overlap|refcount)"
patch good.qcow2 rt-past-eof.qcow2 48 Q $((1 << 40))
bad rt-past-eof.qcow2 "refcount.*(past|beyond|end)"
patch good.qcow2 cluster-bits-huge.qcow2 20 L 40
bad cluster-bits-huge.qcow2 "cluster"
patch good.qcow2 cluster-bits-tiny.qcow2 20 L 3
bad cluster-bits-tiny.qcow2 "cluster"
patch good.qcow2 size-absurd.qcow2 24 Q $(( (1 << 62) ))
bad size-absurd.qcow2 "size|L1"
patch good.qcow2 l1-size-huge.qcow2 36 L $(( (1 << 31) - 1 ))
bad l1-size-huge.qcow2 "L1"
patch good.qcow2 version-9.qcow2 4 L 9
bad version-9.qcow2 "version"
patch good.qcow2 incompat.qcow2 72 Q $(( 1 << 40 ))
bad incompat.qcow2 "incompatible|feature"
# L1 entries pointing an L2 table past the end of the file, into the
# header, or onto the refcount table: reading through them fails cleanly.
l2_bad() { # NAME L1-ENTRY PATTERN
  patch good.qcow2 "$1" "$l1" Q "$2"
  local rc=0
  timeout 20 "$SLUICE" io "$1" read 0 64k >/dev/null 2>err || rc=$?
  [[ $rc -ne 0 && $rc -lt 124 ]] || die "$1: rc=$rc $(cat err)"
  grep -q "$1" err || die "$1: message does not name the file: $(cat err)"
  grep -Eqi "$3" err || die "$1: expected /$3/: $(cat err)"
}
l2_bad l2-past-eof.qcow2 "$(printf 0x%x $(( (1 << 63) | (1 << 40) )))" "L2.*(past|beyond|end)"
l2_bad l2-in-header.qcow2 "$(printf 0x%x $(( (1 << 63) | 512 )))" "L2.*(header|align|overlap)"
l2_bad l2-on-refcounts.qcow2 "$(printf 0x%x $(( (1 << 63) | rt )))" "L2.*(overlap|refcount|metadata)"

# Backing chains: loops and missing files.
qemu-img create -q -f qcow2 a.qcow2 1M
qemu-img create -q -f qcow2 -b a.qcow2 -F qcow2 b.qcow2
qemu-img rebase -u -f qcow2 -b b.qcow2 -F qcow2 a.qcow2
bad b.qcow2 "loop"
qemu-img create -q -f qcow2 self.qcow2 1M
qemu-img rebase -u -f qcow2 -b self.qcow2 -F qcow2 self.qcow2
bad self.qcow2 "loop"
qemu-img create -q -f qcow2 gone-base.qcow2 1M
qemu-img create -q -f qcow2 -b gone-base.qcow2 -F qcow2 orphan.qcow2
rm gone-base.qcow2
bad orphan.qcow2 "gone-base.qcow2.*(No such file|missing)"
# info on a single layer does not need the backing file (as qemu-img info):
# it succeeds and names the missing backing file; --backing-chain needs it.
sluice info orphan.qcow2 > orphan.txt 2>&1 || die "info on one layer opened the chain: $(cat orphan.txt)"
qemu-img info orphan.qcow2 > orphan.ref
cmp -s orphan.txt orphan.ref || die "info of an orphan differs from qemu-img info: $(diff orphan.txt orphan.ref)"
expect_fail "orphan.qcow2.*gone-base.qcow2.*No such file" sluice info --backing-chain orphan.qcow2
mkdir dir.qcow2
bad dir.qcow2 "directory"
: > empty.qcow2
sluice info empty.qcow2 >/dev/null   # an empty file is a valid 0-byte raw image
echo ok
