#!/usr/bin/env bash
# `sluice info DESC` shows a disk's filter stack (top first, each filter's
# class and parameters, then its image) in human and JSON forms, showing a
# key file's path but never its bytes; and `sluice convert SRC DESC` writes
# through the destination disk's stack: into a crypt disk the image receives
# ciphertext, stale data in the destination is overwritten with zeros where
# SRC is zero, and the descriptor itself is left intact.
. "$(dirname "$0")/../common/lib.sh"
require python3 qemu-img qemu-io
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in crypt throttle stats; do
  sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null
done

# A printable key, so that a leak would be easy to see in the output.
# (The two XTS halves must differ.)
key=$(printf 'KEYBYTES%.0s' 1 2 3 4; printf 'keybytes%.0s' 1 2 3 4)
printf '%s' "$key" >disk.key
sluice create -q -f raw img.raw 8M
sluice disk create d.disk img.raw
sluice filter attach d.disk crypt key=disk.key
sluice filter attach d.disk throttle iops=100000,burst=1000
sluice filter attach d.disk stats name=top

# ---- info, human ------------------------------------------------------------
sluice info d.disk >info.txt 2>/dev/null
grep -q '^disk descriptor: d.disk$' info.txt || die "no descriptor line: $(cat info.txt)"
grep -q '^virtual size: 8 MiB (8388608 bytes)$' info.txt || die "no disk size: $(cat info.txt)"
# The stack in order, top first, with classes and parameters.
order=$(sed -n 's/^  [0-9]\. \([a-z]*\).*/\1/p' info.txt | tr '\n' ' ')
assert_eq "$order" "top throttle crypt " "filter order in sluice info"
grep -q '^  1\. top (module stats), class observe: ' info.txt || die "stats line: $(cat info.txt)"
grep -q '^  2\. throttle, class throttle: ' info.txt || die "throttle line: $(cat info.txt)"
grep -q 'parameters: iops=100000 burst=1000$' info.txt || die "throttle parameters missing"
grep -q '^  3\. crypt, class encryption: ' info.txt || die "crypt line: $(cat info.txt)"
grep -q 'parameters: key=disk.key$' info.txt || die "key path not shown"
grep -q '^file format: raw$' info.txt || die "no image section: $(cat info.txt)"
! grep -qi KEYBYTES info.txt || die "sluice info printed the key's bytes"

# sluice disk show lists the same stack with its parameters.
sluice disk show d.disk >show.txt 2>/dev/null
grep -q 'parameters: iops=100000 burst=1000$' show.txt || die "disk show: no parameters: $(cat show.txt)"
! grep -qi KEYBYTES show.txt || die "sluice disk show printed the key's bytes"

# ---- info, JSON -------------------------------------------------------------
sluice info --output=json d.disk >info.json 2>/dev/null
! grep -qi KEYBYTES info.json || die "sluice info --output=json printed the key's bytes"
python3 - info.json <<'EOF' || die "JSON output wrong: $(cat info.json)"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["disk-descriptor"] == "d.disk", d
assert d["virtual-size"] == 8 << 20, d
f = d["filters"]
assert [x["name"] for x in f] == ["top", "throttle", "crypt"], f
assert [x["module"] for x in f] == ["stats", "throttle", "crypt"], f
assert [x["class"] for x in f] == ["observe", "throttle", "encryption"], f
assert f[1]["parameters"] == {"iops": "100000", "burst": "1000"}, f[1]
assert f[2]["parameters"] == {"key": "disk.key"}, f[2]
assert d["image"]["format"] == "raw" and d["image"]["filename"].endswith("img.raw"), d
EOF
sluice info --output=json --backing-chain d.disk 2>/dev/null |
  python3 -c 'import json, sys; d = json.load(sys.stdin); assert len(d["backing-chain"]) == 1' ||
  die "--backing-chain JSON of a disk is not one layer"

# A disk whose stack does not open is an error naming it, not a partial listing.
rm disk.key
expect_fail "disk.key" sluice info d.disk
printf '%s' "$key" >disk.key

# ---- convert into a disk ----------------------------------------------------
# The destination image holds stale plaintext where SRC is zero: it must read
# back as zeros afterwards.
sluice io img.raw write -s "STALE-PLAINTEXT" 6M >/dev/null
# SRC and the expected bytes come from qemu-img/qemu-io, not from sluice.
qemu-img create -q -f qcow2 src.qcow2 8M
printf the-secret-payload > payload
qemu-io -f qcow2 -c "write -s payload 1M 18" -c "write -P 0x5a 3M 64K" src.qcow2 >/dev/null
sluice convert src.qcow2 d.disk 2>/dev/null
assert_eq "$(head -1 d.disk)" "sluice-disk 1" "descriptor survives convert into it"
! grep -q the-secret-payload img.raw || die "plaintext reached the image of a crypt disk"
assert_eq "$(sluice io d.disk cat 1M 18 2>/dev/null)" "the-secret-payload" "read back through the disk"
sluice io d.disk read -P 0x5a 3M 64K >/dev/null 2>&1 || die "pattern not read back through the disk"
sluice io d.disk read -P 0 6M 4K >/dev/null 2>&1 || die "stale data where SRC is zero"
# The whole disk equals SRC.
qemu-img convert -O raw src.qcow2 expect.raw
sluice convert d.disk got.raw 2>/dev/null
cmp -s expect.raw got.raw || die "disk content after convert differs from SRC"

# Refusals: a destination smaller than SRC, and image-creation options.
sluice create -q -f raw big.raw 16M
expect_fail "smaller than big.raw" sluice convert big.raw d.disk
expect_fail "disk descriptor.*-O" sluice convert -O qcow2 src.qcow2 d.disk
assert_eq "$(head -1 d.disk)" "sluice-disk 1" "descriptor survives refused converts"
echo "PASS: $TEST_NAME"
