#!/usr/bin/env bash
# Issue 5, acceptance 1-5 and 7: real NBD clients against `sluice serve`:
# qemu-img compare/info/map, qemu-io, nbdinfo --map, nbdcopy and fio's nbd
# engine with verification.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require qemu-img qemu-io nbdinfo nbdcopy python3
cd "$TMP"

# --- a three-layer chain, served read-only ------------------------------
qemu-img create -q -f qcow2 base.qcow2 32M
qemu-io -c "write -P 0x10 0 32M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -c "write -P 0x11 1M 2M" -c "write -z 4M 1M" mid.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -c "write -P 0x12 1500k 1M" -c "discard 8M 1M" -c "write -P 0x13 12345 678" top.qcow2 >/dev/null
start_server chain.sock --read-only top.qcow2

# 1. the export equals the image.
qemu-img compare -q "$uri" top.qcow2 || die "export differs from the chain"
# 7. qemu's own client sees a raw disk of the right size.
info=$(qemu-img info --output=json "$uri")
python3 -c "
import json,sys; d=json.loads(sys.argv[1])
assert d['virtual-size'] == 32 << 20, d
assert d['format'] == 'raw', d" "$info" || die "qemu-img info over NBD: $info"
# 4. nbdcopy equals qemu-img convert.
nbdcopy "$uri" copy.raw
qemu-img convert -O raw top.qcow2 ref.raw
cmp copy.raw ref.raw || die "nbdcopy output differs from qemu-img convert"
# 3. nbdinfo --map (both contexts) agrees with qemu-img map.
nbdinfo --map --json "$uri" > alloc.json
nbdinfo --map=qemu:allocation-depth --json "$uri" > depth.json
qemu-img map --output=json top.qcow2 > qmap.json
python3 - <<'PY'
import json
def per_block(runs, size, value):
    out = [None] * (size // 4096)
    for r in runs:
        for b in range(r["offset"] // 4096, (r["offset"] + r["length"]) // 4096):
            out[b] = value(r)
    return out
size = 32 << 20
q = json.load(open("qmap.json"))
for e in q:
    e["offset"] = e["start"]
q_alloc = per_block(q, size, lambda e: 0 if e["data"] else 3)
q_depth = per_block(q, size, lambda e: e["depth"] + 1 if e.get("present", True) else 0)
n_alloc = per_block(json.load(open("alloc.json")), size, lambda e: e["type"])
n_depth = per_block(json.load(open("depth.json")), size, lambda e: e["type"])
for name, a, b in (("base:allocation", n_alloc, q_alloc), ("qemu:allocation-depth", n_depth, q_depth)):
    bad = [i for i in range(len(a)) if a[i] != b[i]]
    assert not bad, "%s: block %d: nbd %s, qemu-img map %s" % (name, bad[0], a[bad[0]], b[bad[0]])
PY
# Writes are refused on a read-only export, and the export says it is
# read-only in the handshake (so clients need not try).
if qemu-io -f raw -c "write 0 512" "$uri" >out 2>&1; then die "write accepted on a read-only export"; fi
nbdinfo --json "$uri" | python3 -c '
import json, sys; e = json.load(sys.stdin)["exports"][0]
assert e["is_read_only"] is True, e' || die "a --read-only export does not advertise NBD_FLAG_READ_ONLY"
stop_server
qemu-img convert -O raw top.qcow2 after.raw
cmp -s after.raw ref.raw || die "the read-only export's image changed"

# --- a writable qcow2, through qemu-io and fio ----------------------------
qemu-img create -q -f qcow2 rw.qcow2 64M
start_server rw.sock rw.qcow2
# 2. patterned writes at unaligned offsets and lengths, zeroes, discards.
qemu-io -f raw -c "write -P 0x21 1000 5000" -c "write -P 0x22 70001 131071" \
  -c "write -z 80000 10000" -c "write -P 0x23 3M 1M" -c "discard 3M 512k" \
  -c "write -P 0x24 33554431 1" "$uri" >/dev/null
qemu-io -f raw -c "read -P 0x21 1000 5000" -c "read -P 0x22 70001 9999" \
  -c "read -P 0 80000 10000" -c "read -P 0x22 90000 111072" \
  -c "read -P 0 3M 512k" -c "read -P 0x23 3584k 512k" -c "read -P 0x24 33554431 1" \
  -c "read -P 0 0 1000" "$uri" > reads.out || die "pattern read-back failed: $(cat reads.out)"
# 5. fio random read/write with crc32c verification.
if command -v fio >/dev/null; then
  fio --name=verify --ioengine=nbd --uri="$uri" --rw=randrw --bs=4k --offset=16M --size=8M \
      --iodepth=8 --verify=crc32c --verify_fatal=1 --do_verify=1 --numjobs=1 \
      --runtime=20 --time_based=0 --output=fio.out >/dev/null 2>fio.err \
    || die "fio verify failed: $(tail -20 fio.out fio.err)"
  grep -q "err= 0" fio.out || die "fio reported errors: $(grep err= fio.out)"
fi
stop_server
qemu-img check -q rw.qcow2 || die "qemu-img check after NBD writes"
qemu-io -c "read -P 0x21 1000 5000" -c "read -P 0x23 3584k 512k" rw.qcow2 >/dev/null \
  || die "data written over NBD is not in the image"
echo ok
