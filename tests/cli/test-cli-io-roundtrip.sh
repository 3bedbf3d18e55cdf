#!/usr/bin/env bash
# sluice io writes, zeroes and discards through the image API and reads the
# data back; convert produces a sparse copy with the same bytes; info's JSON
# parses and names the backing file; bench runs the requested requests.
. "$(dirname "$0")/../common/lib.sh"
require python3 qemu-img
cd "$TMP"

sluice create -q img.qcow2 8M
sluice io -c 'write -P 0x5a 1000 70000' -c 'write -s hello 4M' -c 'zero 2M 64K' \
          -c 'write -P 0x11 6M 64K' -c 'discard 6M 64K' img.qcow2 >/dev/null
sluice io img.qcow2 read -P 0x5a 1000 70000 >/dev/null
sluice io img.qcow2 read -P 0 0 1000 >/dev/null
sluice io img.qcow2 read -P 0 6M 64K >/dev/null
assert_eq "$(sluice io img.qcow2 cat 4M 5)" hello "string at 4M"

# The same bytes as qemu-img reads, and a sparse raw copy.
sluice convert -O raw img.qcow2 out.raw
qemu-img convert -O raw img.qcow2 ref.raw
cmp out.raw ref.raw || die "sluice convert differs from qemu-img convert"
blocks=$(stat -c %b out.raw)
[[ $blocks -lt 1024 ]] || die "convert output is not sparse ($blocks blocks)"

# qcow2 output, progress bar, and qemu-img agrees it is clean and equal.
sluice convert -p -O qcow2 -o cluster_size=4K img.qcow2 out.qcow2 2>progress
grep -q '100.00/100%' progress || die "no progress bar"
qemu-img check -q out.qcow2 || die "qemu-img check failed on convert output"
qemu-img compare -q out.qcow2 ref.raw || die "qcow2 copy differs"

# info JSON of a chain.
sluice create -q -b img.qcow2 -F qcow2 top.qcow2
sluice info --output=json --backing-chain top.qcow2 > info.json
python3 - info.json <<'PY'
import json, sys
chain = json.load(open(sys.argv[1]))
assert len(chain) == 2, chain
assert chain[0]["backing-filename"] == "img.qcow2", chain[0]
assert chain[0]["backing-filename-format"] == "qcow2"
assert chain[0]["virtual-size"] == 8 << 20
assert chain[1]["format"] == "qcow2" and "backing-filename" not in chain[1]
assert chain[0]["format-specific"]["data"]["compat"] == "1.1"
PY

# bench: the header line and the request count are honoured.
out=$(sluice bench -c 1000 -d 4 -s 4K -S 64K top.qcow2)
grep -q "^Sending 1000 read requests, 4096 bytes each, 4 in parallel (starting at offset 0, step size 65536)" <<<"$out" \
  || die "bench header: $out"
grep -q "^Run completed in" <<<"$out" || die "bench did not complete"
sluice bench -w -c 500 --flush-interval 50 --random -t none top.qcow2 >/dev/null
qemu-img check -q top.qcow2 || die "bench writes left top.qcow2 inconsistent"
echo ok
