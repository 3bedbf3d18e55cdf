#!/usr/bin/env bash
# `sluice bench -w` is checked by what it did, not by what it printed: the
# header line is printed before any I/O, so a worker that read instead of
# writing, or never flushed, would still print it.  Here the image must hold
# the --pattern bytes where the requests went (qemu-img compare against a
# raw file built by python3), --random must spread the writes over the
# image (qemu-img map), and a stats filter under the bench counts exactly
# the writes and the flushes --flush-interval asks for.
. "$(dirname "$0")/../common/lib.sh"
require python3 qemu-img
cd "$TMP"

# Sequential writes: 64 requests of 64 KiB, 64 KiB apart, cover a 4 MiB
# image exactly once, so every byte must be the pattern afterwards.
sluice create -q w.qcow2 4M
sluice bench -w -q -c 64 -s 64K -S 64K -d 4 --pattern 0x5a w.qcow2
python3 -c "open('ref.raw', 'wb').write(b'\x5a' * (4 << 20))"
qemu-img compare -q w.qcow2 ref.raw || die "bench -w did not write the pattern over the image"
qemu-img check -q w.qcow2 || die "bench writes left w.qcow2 inconsistent"

# A step larger than the buffer leaves the gaps unwritten (zero), -o shifts
# the start: 8 requests of 4 KiB at 1M + k*128K on a raw file.
sluice create -q -f raw s.raw 4M
sluice bench -w -q -c 8 -s 4K -S 128K -o 1M --pattern 0x33 -t none s.raw
python3 - <<'EOF' || die "bench -w -S/-o wrote somewhere else than asked"
img = open('s.raw', 'rb').read()
want = bytearray(4 << 20)
for k in range(8):
    off = (1 << 20) + k * (128 << 10)
    want[off:off + 4096] = b'\x33' * 4096
assert img == bytes(want), [i for i in range(0, len(img), 4096) if img[i:i + 4096] != want[i:i + 4096]][:8]
EOF

# --random spreads 256 writes of 4 KiB over a 64 MiB image: far more than
# the first MiB (where sequential writes would stay) holds data.
sluice create -q r.qcow2 64M
sluice bench -w -q -c 256 --random --pattern 0x77 r.qcow2
qemu-img map --output=json r.qcow2 > map.json
python3 - map.json <<'EOF' || die "bench -w --random did not spread its writes: $(cat map.json)"
import json, sys
m = json.load(open(sys.argv[1]))
data = [e for e in m if e["data"]]
beyond = sum(e["length"] for e in data if e["start"] >= 1 << 20)
assert beyond >= 8 << 20, beyond   # ~230 distinct 64K clusters expected
assert max(e["start"] for e in data) >= 32 << 20
EOF
# Each written cluster holds the pattern at a 4 KiB-aligned spot.
qemu-img convert -O raw r.qcow2 r.raw
python3 - <<'EOF' || die "bench -w --random did not write the pattern"
img = open('r.raw', 'rb').read()
n = sum(img[i:i + 4096] == b'\x77' * 4096 for i in range(0, len(img), 4096))
assert 200 <= n <= 256, n   # 256 requests, a few may land on the same block
EOF

# Flushes: a stats filter below the bench counts every request that
# reaches the image.  100 writes with --flush-interval 10 are 10 flushes,
# plus the one bench makes at the end.
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/stats.so" >/dev/null
sluice create -q -f raw f.raw 4M
printf 'sluice-disk 1\nimage f.raw\nfilter stats file=st print=no\n' > d.disk
field() { awk -v op="$2" -v f="$3" '$1 == op { for (i = 2; i < NF; i++) if ($i == f) print $(i + 1) }' "$1"; }
sluice bench -w -q -c 100 -d 4 --flush-interval 10 d.disk
assert_eq "$(field st write ops) $(field st write bytes)" "100 409600" "writes counted below bench"
assert_eq "$(field st flush ops)" 11 "flushes counted below bench (--flush-interval 10)"
assert_eq "$(field st read ops)" 0 "reads counted below bench -w"
# Without --flush-interval only the final flush; reads are reads.
sluice bench -q -c 50 -d 2 d.disk
assert_eq "$(field st read ops) $(field st write ops) $(field st flush ops)" "50 0 1" \
  "bench without -w"
echo ok
