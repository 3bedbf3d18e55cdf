#!/usr/bin/env bash
# Issue 12, item 5: the one O_DIRECT rule (lib/image/direct-io.c) for raw
# and qcow2.  Served with --cache none (O_DIRECT), unaligned writes --
# inside one block, across a block boundary, and (raw) into a file tail
# shorter than a block -- land exactly, and leave every other byte as it
# was: the file's bytes (raw) or qemu-img's reading of the image (qcow2)
# equal a model built in Python.
. "$(dirname "$0")/../common/lib.sh"
. "$SRCDIR/tests/export/serve.sh"
require qemu-io qemu-img python3
cd "$TMP"
python3 -c "import os; open('raw.img','wb').write(os.urandom(10000))"
cp raw.img model.img
sluice create -q -f qcow2 q.qcow2 1M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" q.qcow2 >/dev/null
python3 -c "open('qmodel.img','wb').write(b'\x33' * (1 << 20))"

# OFF LEN BYTE: through the server (unaligned), and into the model.
writes=("5 100 0x41" "4090 20 0x42" "8190 1810 0x43" "9999 1 0x44" "12 4096 0x45")
start_server raw.sock -f raw --cache none raw.img
for w in "${writes[@]}"; do
  read -r off len byte <<<"$w"
  qemu-io -f raw -c "write -P $byte $off $len" "$uri" >/dev/null || die "write $w failed"
  python3 - model.img "$off" "$len" "$byte" <<'PY'
import sys
p, off, n, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
d = bytearray(open(p, 'rb').read()); d[off:off + n] = bytes([b]) * n; open(p, 'wb').write(d)
PY
done
stop_server
[[ $(stat -c %s raw.img) -eq 10000 ]] || die "raw file size changed to $(stat -c %s raw.img)"
cmp raw.img model.img || die "raw: bytes differ from the model"

start_server q.sock -f qcow2 --cache none q.qcow2
for w in "${writes[@]}" "65530 12 0x46"; do
  read -r off len byte <<<"$w"
  qemu-io -f raw -c "write -P $byte $off $len" "$uri" >/dev/null || die "write $w failed"
  python3 - qmodel.img "$off" "$len" "$byte" <<'PY'
import sys
p, off, n, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4], 16)
d = bytearray(open(p, 'rb').read()); d[off:off + n] = bytes([b]) * n; open(p, 'wb').write(d)
PY
done
stop_server
qemu-img compare -q -f qcow2 -F raw q.qcow2 qmodel.img || die "qcow2: qemu-img sees other bytes than the model"
qemu-img check -q q.qcow2 || die "qcow2: qemu-img check fails"
echo OK
