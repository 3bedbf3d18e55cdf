#!/bin/bash
# Probing safety (issue 10 item 4): a raw disk opened without a format is
# served; a guest writes into its first sector a qcow2 header whose backing
# file names a host file.  As QEMU's raw driver does for probed images,
# sluice refuses the write (EPERM at the NBD client), so the next open
# still probes raw and the host file's content never reaches the guest.
# Writes that do not make sector 0 probe as another format still work;
# with an explicit format (-f raw, or a disk descriptor, which now records
# the format) nothing is restricted.  qemu-io and qemu-img are the oracle.
source "$(dirname "$0")/../common/lib.sh"
source "$SRCDIR/tests/export/serve.sh"
require qemu-img qemu-io

cd "$TMP"
printf 'SECRET-HOST-DATA%.0s' $(seq 4096) > secret.raw   # 64 KiB of it
# The attacker's header: a qcow2 whose backing file is the host file.
qemu-img create -q -f qcow2 -b "$TMP/secret.raw" -F raw evil.qcow2 64K
head -c 65536 evil.qcow2 > evil.hdr
qemu-img create -q -f raw disk.raw 1M
qemu-io -f raw -c 'write -P 0x5a 0 1M' disk.raw >/dev/null

# 1. Served without -f: QEMU's warning, and the write is refused with EPERM.
start_server s1 disk.raw
grep -q "probing guessed raw" "$TMP/server.log" || die "serve did not warn that probing raw is unsafe"
rc=0; qemu-io -f raw -c "write -s evil.hdr 0 64k" "$uri" >out 2>&1 || rc=$?
grep -q "Operation not permitted" out || die "the header write was not refused with EPERM: $(cat out)"
# A partial write that completes the magic over the old sector is refused too.
printf 'QFI\xfb' > magic
rc=0; qemu-io -f raw -c "write -s magic 0 4" "$uri" >out 2>&1 || rc=$?
grep -q "Operation not permitted" out || die "a 4-byte qcow2 magic write was not refused: $(cat out)"
grep -q "sector 0 was refused" "$TMP/server.log" || die "the server logged no warning for the refusal"
# Other writes, to sector 0 and beyond, work.
qemu-io -f raw -c 'write -P 0x11 0 4k' -c 'write -s evil.hdr 64k 64k' "$uri" >/dev/null ||
  die "ordinary writes were refused"
stop_server

# The image still probes raw, and nothing of the host file shows through.
qemu-img info --output=json disk.raw | grep -q '"format": "raw"' || die "disk.raw no longer probes raw"
start_server s2 disk.raw
qemu-io -f raw -c 'read -P 0x11 0 4k' -c 'read -P 0x5a 4k 60k' "$uri" | grep -q '^read' ||
  die "sector 0 does not hold what the guest last wrote"
! qemu-io -f raw -c 'read -P 0x11 0 4k' -c 'read -P 0x5a 4k 60k' "$uri" | grep -q 'Pattern verification failed' ||
  die "the first 64 KiB changed"
stop_server
! grep -q SECRET-HOST-DATA <(sluice io disk.raw cat 0 64K) || die "the host file shows through"

# 2. sluice io warns as well, and refuses the same write.
head -c 512 evil.hdr > evil.sector
expect_fail 'sector 0 refused' sluice io disk.raw write -i evil.sector 0
grep -q "probing guessed raw" "$TMP/err" || die "sluice io did not warn that probing raw is unsafe"
cmp <(head -c 512 disk.raw) <(head -c 512 evil.sector) >/dev/null && die "sluice io wrote the header"

# 3. A disk descriptor records the format: no probe, no warning, no limit.
sluice disk create d.disk disk.raw
grep -qx 'format raw' d.disk || die "disk create did not record the format: $(cat d.disk)"
warned=$(grep -c "probing guessed raw" "$TMP/server.log")
start_server s3 d.disk
qemu-io -f raw -c "write -s evil.hdr 0 64k" "$uri" >out 2>&1 || die "explicit raw refused the write: $(cat out)"
stop_server
assert_eq "$(grep -c "probing guessed raw" "$TMP/server.log")" "$warned" "probing warnings after serving d.disk"
# ... and the descriptor keeps opening it as raw, so the guest still sees
# its own bytes, not the host file.
cmp -s evil.hdr <(sluice io d.disk cat 0 64K) || die "the descriptor does not read the raw bytes"
! grep -q SECRET-HOST-DATA <(sluice io d.disk cat 0 1M) || die "the host file shows through the descriptor"
echo "PASS: $TEST_NAME"
