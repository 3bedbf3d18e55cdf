#!/usr/bin/env bash
# Persistent dirty bitmaps survive sluice, with QEMU as the oracle.
#
# An incremental backup copies what a bitmap says changed; a write that
# sluice makes without setting the bit would be missed.  Bitmaps made by
# `qemu-img bitmap` are written through `sluice io` (write, zero, discard)
# and `sluice serve` (qemu-io over NBD); then QEMU itself (qemu-nbd -B,
# read through nbdinfo --map) must report dirty exactly the written
# ranges rounded out to each bitmap's granularity, together with what was
# dirty before, a disabled bitmap unchanged, no bitmap in use, and
# qemu-img check clean.  A SIGKILLed server leaves the bitmaps flagged
# in-use (inconsistent to QEMU), never clean but wrong.  Images whose
# bitmaps QEMU refuses (unknown flags) open read-only but are refused for
# writing; an extension with autoclear bit 0 clear stays untrusted; other
# autoclear bits are cleared by the first writable open (the spec).
source "$(dirname "$0")/../common/lib.sh"
source "$SRCDIR/tests/export/serve.sh"
require qemu-img qemu-io qemu-nbd nbdinfo python3

img=$TMP/a.qcow2
qemu-img create -q -f qcow2 "$img" 64M
qemu-io -c 'write -P 0xaa 0 1M' "$img" >/dev/null
qemu-img bitmap --add "$img" b0
qemu-img bitmap --add -g 512K "$img" b2
qemu-img bitmap --add --disable "$img" b1
# Dirty before sluice ever sees the image: kept across sluice's open.
qemu-io -c 'write -P 0x11 40M 4K' "$img" >/dev/null

# dirty IMAGE BITMAP: "offset length" of each dirty extent, as QEMU sees it.
dirty() {
  nbdinfo --map="qemu:dirty-bitmap:$2" -- [ qemu-nbd -r -f qcow2 -B "$2" "$1" ] |
    awk '$3 == 1 { print $1, $2 }'
}
# expect GRANULARITY OFF:LEN...: the extents the writes must have dirtied.
expect() {
  python3 - "$@" <<'EOF'
import sys
g = int(sys.argv[1]); chunks = set()
for w in sys.argv[2:]:
    off, ln = (int(x) for x in w.split(':'))
    chunks.update(range(off // g, (off + ln - 1) // g + 1))
run = None
for c in sorted(chunks) + [None]:
    if run and c == run[1]:
        run[1] += 1
        continue
    if run:
        print(run[0] * g, (run[1] - run[0]) * g)
    run = [c, c + 1] if c is not None else None
EOF
}
# in_use IMAGE: the names of the bitmaps qemu-img info flags in-use.
in_use() {
  qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)["format-specific"]["data"]
print(" ".join(b["name"] for b in d.get("bitmaps", []) if "in-use" in b["flags"]))'
}
K=1024 M=$((1024 * 1024))
writes=("$((40 * M)):4096")

# Through sluice io: unaligned write, write, write-zeroes, discard.
sluice io -c "write -P 0xbb $((100 * K)) $((10 * K))" -c "write $((5 * M)) 64K" \
  -c "zero $((10 * M)) 1M" -c "discard $((20 * M)) 128K" "$img" >/dev/null
writes+=("$((100 * K)):$((10 * K))" "$((5 * M)):$((64 * K))" \
         "$((10 * M)):$M" "$((20 * M)):$((128 * K))")
assert_eq "$(in_use "$img")" "" "bitmaps in use after sluice io"
qemu-img check -q "$img" || die "qemu-img check after sluice io"
assert_eq "$(dirty "$img" b0)" "$(expect 65536 "${writes[@]}")" "b0 after io"
assert_eq "$(dirty "$img" b2)" "$(expect 524288 "${writes[@]}")" "b2 after io"
assert_eq "$(dirty "$img" b1)" "" "disabled b1 after io"

# Through sluice serve: the bitmaps are in use while it runs.
start_server s.sock -f qcow2 "$img"
assert_eq "$(in_use "$img")" "b0 b2 b1" "bitmaps in use while served"
qemu-io -f raw -c "write -P 0xcc $((30 * M + 512)) 1K" \
  -c "write -z $((50 * M)) 192K" -c "discard $((60 * M)) 64K" "$uri" >/dev/null
stop_server
writes+=("$((30 * M + 512)):1024" "$((50 * M)):$((192 * K))" "$((60 * M)):$((64 * K))")
assert_eq "$(in_use "$img")" "" "bitmaps in use after serve"
qemu-img check -q "$img" || die "qemu-img check after serve"
assert_eq "$(dirty "$img" b0)" "$(expect 65536 "${writes[@]}")" "b0 after serve"
assert_eq "$(dirty "$img" b2)" "$(expect 524288 "${writes[@]}")" "b2 after serve"
assert_eq "$(dirty "$img" b1)" "" "disabled b1 after serve"
qemu-img convert -U -O raw "$img" "$TMP/q.raw"
sluice io -r "$img" cat 0 64M >"$TMP/s.raw"
cmp "$TMP/q.raw" "$TMP/s.raw" || die "data differs between QEMU and sluice"
# sluice check agrees: every bitmap cluster counted, no leak; and its
# leak repair leaves the bitmaps whole for QEMU.
sluice check -q "$img" || die "sluice check after the bitmaps were stored"
cp "$img" "$TMP/r.qcow2"
sluice check -q -r leaks "$TMP/r.qcow2" || die "sluice check -r leaks"
qemu-img check -q "$TMP/r.qcow2" || die "qemu-img check after sluice check -r leaks"
assert_eq "$(dirty "$TMP/r.qcow2" b0)" "$(expect 65536 "${writes[@]}")" "b0 after check -r leaks"

# SIGKILL while serving: flagged in-use (QEMU: inconsistent), never clean.
cp "$img" "$TMP/k.qcow2"
start_server k.sock -f qcow2 "$TMP/k.qcow2"
qemu-io -f raw -c "write -P 0xdd $((33 * M)) 64K" "$uri" >/dev/null
kill -9 "$server_pid"
wait "$server_pid" 2>/dev/null || true
assert_eq "$(in_use "$TMP/k.qcow2")" "b0 b2 b1" "bitmaps in use after SIGKILL"
# A later writable open leaves inconsistent bitmaps as they are.
sluice io -c "write $((34 * M)) 4K" "$TMP/k.qcow2" >/dev/null
assert_eq "$(in_use "$TMP/k.qcow2")" "b0 b2 b1" "inconsistent bitmaps after reopen"
qemu-img check -q "$TMP/k.qcow2" || die "qemu-img check after SIGKILL and reopen"

# hdr IMAGE FIELD [VALUE]: read or set autoclear, or the flags of the first
# bitmap directory entry.
hdr() {
  python3 - "$@" <<'EOF'
import struct, sys
path, field = sys.argv[1], sys.argv[2]
with open(path, 'r+b') as f:
    h = f.read(65536)
    if field == 'autoclear':
        at = 88
    else:
        p = struct.unpack('>I', h[100:104])[0]
        while True:
            t, n = struct.unpack('>II', h[p:p + 8])
            if t == 0x23852875:
                break
            p += 8 + (n + 7) // 8 * 8
        at = struct.unpack('>Q', h[p + 24:p + 32])[0] + 12
    size = 8 if field == 'autoclear' else 4
    fmt = '>Q' if size == 8 else '>I'
    if len(sys.argv) > 3:
        f.seek(at); f.write(struct.pack(fmt, int(sys.argv[3], 0)))
    else:
        f.seek(at); print(struct.unpack(fmt, f.read(size))[0])
EOF
}

# Unknown bitmap flags: QEMU refuses the image; sluice reads it, never
# writes it.
cp "$img" "$TMP/u.qcow2"
hdr "$TMP/u.qcow2" flags 0x12
if qemu-io -c 'write 0 4K' "$TMP/u.qcow2" >/dev/null 2>&1; then
  die "oracle: qemu-io wrote an image with unknown bitmap flags"
fi
sluice io -r "$TMP/u.qcow2" read -P 0xaa 0 64K >/dev/null || die "read-only open refused"
expect_fail "bitmap 'b0' does not satisfy the constraints.*read-only" \
  sluice io "$TMP/u.qcow2" write 0 4K
cmp "$img" "$TMP/u.qcow2" >/dev/null && die "patch did not apply"
hdr "$TMP/u.qcow2" flags 0x2
cmp "$img" "$TMP/u.qcow2" || die "the refused writable open changed the image"

# Autoclear bit 0 clear: the extension is untrusted and stays so; QEMU
# shows no bitmaps afterwards.  Unknown autoclear bits are cleared.
cp "$img" "$TMP/c.qcow2"
hdr "$TMP/c.qcow2" autoclear 0x20
sluice io "$TMP/c.qcow2" write 0 4K >/dev/null
assert_eq "$(hdr "$TMP/c.qcow2" autoclear)" 0 "autoclear after a writable open"
assert_eq "$(qemu-img info --output=json "$TMP/c.qcow2" | python3 -c '
import json, sys; print(len(json.load(sys.stdin)["format-specific"]["data"].get("bitmaps", [])))')" \
  0 "bitmaps QEMU trusts after autoclear bit 0 was cleared"
# The writable open removed the untrusted extension, as QEMU does; its
# clusters are leaks, which either tool's repair frees.
python3 - "$TMP/c.qcow2" <<'EOF' || die "the untrusted bitmaps extension is still in the header"
import struct, sys
h = open(sys.argv[1], 'rb').read(65536)
p = struct.unpack('>I', h[100:104])[0]
while p + 8 <= len(h):
    t, n = struct.unpack('>II', h[p:p + 8])
    if t == 0:
        sys.exit(0)
    if t == 0x23852875:
        sys.exit(1)
    p += 8 + (n + 7) // 8 * 8
EOF
rc=0; qemu-img check -q "$TMP/c.qcow2" || rc=$?
assert_eq "$rc" 3 "qemu-img check exit (leaked bitmap clusters)"
sluice check -q -r leaks "$TMP/c.qcow2" || die "sluice check -r leaks on the dropped extension"
qemu-img check -q "$TMP/c.qcow2" || die "qemu-img check after repairing the leaks"
sluice io -r "$TMP/c.qcow2" read -P 0xaa 8K 56K >/dev/null || die "data after dropping the extension"
cp "$img" "$TMP/d.qcow2"
hdr "$TMP/d.qcow2" autoclear 0x21
sluice io "$TMP/d.qcow2" write 0 4K >/dev/null
assert_eq "$(hdr "$TMP/d.qcow2" autoclear)" 1 "unknown autoclear bits after a writable open"
assert_eq "$(dirty "$TMP/d.qcow2" b0)" "$(expect 65536 "${writes[@]}" 0:4096)" "b0 after autoclear cleanup"
echo "PASS: $TEST_NAME"
