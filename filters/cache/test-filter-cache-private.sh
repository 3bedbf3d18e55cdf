#!/usr/bin/env bash
# private=on with the real sluiced: the writable top layer is cached too,
# and what is written, zeroed or discarded is never read back stale.  The
# top's data is read (so sluiced caches it), overwritten, read again; at
# the end the image equals what qemu-io wrote into a raw copy, and the
# daemon did serve top-layer bytes (its counters for the private layer are
# in the totals: served bytes beyond what the base alone can explain).
. "$(dirname "$0")/../../tests/common/lib.sh"
require qemu-img qemu-io python3
SLUICED=$BUILDDIR/sluiced
[[ -x $SLUICED ]] || skip "no sluiced in $BUILDDIR"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/cache.so" >/dev/null
qemu-img create -q -f qcow2 base.qcow2 16M
qemu-io -f qcow2 -c "write -P 0x11 0 16M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c "write -P 0x22 4M 4M" top.qcow2 >/dev/null

"$SLUICED" --socket "$TMP/d.sock" --memory 64M 2>sluiced.log &
dpid=$!
cleanup_push "kill -9 $dpid"
wait_for_path "$TMP/d.sock"
"$SLUICE" serve --nbd "unix:$TMP/s.nbd" \
  --filter "cache:socket=$TMP/d.sock,private=on,deadline-ms=10000" top.qcow2 2>serve.log &
spid=$!
cleanup_push "kill -9 $spid"
wait_for_path "$TMP/s.nbd"
uri="nbd+unix:///?socket=$TMP/s.nbd"
io() { qemu-io -f raw "$@" "$uri" >/dev/null || die "qemu-io $* failed: $(tail -3 serve.log)"; }

io -c "read -P 0x22 4M 4M" -c "read -P 0x22 4M 4M"          # cached
io -c "write -P 0x33 5M 64k" -c "read -P 0x33 5M 64k" -c "read -P 0x22 4M 64k"
io -c "write -z 6M 64k" -c "read -P 0 6M 64k"
io -c "read -P 0x22 7M 64k" -c "discard 7M 64k"   # what it reads now is unspecified
io -c "write -P 0x44 7M 64k" -c "read -P 0x44 7M 64k"
io -c "read -P 0x11 0 4M" -c "read -P 0x11 8M 8M"
# 12 MiB of the reads lie in the base; more than that served means the
# private top layer was served by sluiced too.
served=$("$SLUICE" cache stats --socket "$TMP/d.sock" --output=json |
         python3 -c "import json, sys; print(json.load(sys.stdin)['total']['bytes_served'])")
echo "sluiced served $served bytes"
(( served > 13 << 20 )) || die "the private top layer was not served by sluiced ($served bytes)"
kill -TERM "$spid"; wait "$spid" || die "serve exited non-zero"
grep -q "served by sluiced" serve.log || die "no cache summary"
grep -Eq " [1-9][0-9]* served by sluiced" serve.log || die "sluiced served nothing: $(grep cache: serve.log)"
qemu-img convert -O raw base.qcow2 expect.raw
qemu-io -f raw -c "write -P 0x22 4M 4M" -c "write -P 0x33 5M 64k" -c "write -z 6M 64k" \
  -c "write -P 0x44 7M 64k" expect.raw >/dev/null
qemu-img compare -q -f qcow2 -F raw top.qcow2 expect.raw || die "image differs from what was written"
qemu-img check -q top.qcow2 || die "image inconsistent"
echo PASS
