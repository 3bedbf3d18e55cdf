#!/usr/bin/env bash
# Issue 5: `sluice serve --filter NAME[:k=v,...]` stacks filters above the
# descriptor's, and `--at FILTER` enters below one, over NBD.  A crypt
# descriptor served with --filter stats --filter trace: NBD clients see
# plaintext, the image holds ciphertext, and both added filters saw the
# writes; --at trace bypasses the trace filter (its log stays empty) but
# still decrypts; --at crypt serves the ciphertext itself.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require qemu-io qemu-img python3
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
for m in crypt stats trace; do sluice filter install "$BUILDDIR/filters/$m.so" >/dev/null; done

sluice create -q -f raw img.raw 16M
sluice disk create d.disk img.raw
head -c 64 /dev/urandom > key
sluice filter attach d.disk crypt key="$TMP/key"

# --- filters added on the command line, above crypt ----------------------
start_server f.sock --filter "stats:file=$TMP/stats.txt,print=no" \
  --filter "trace:log=$TMP/trace.log" d.disk
qemu-io -f raw -c "write -P 0x61 1M 64k" -c "write -P 0x62 3000 5000" "$uri" >/dev/null \
  || die "writes over NBD failed: $(tail -3 server.log)"
qemu-io -f raw -c "read -P 0x61 1M 64k" -c "read -P 0x62 3000 5000" \
  "$uri" >reads.out || die "NBD does not read back the plaintext: $(cat reads.out)"
stop_server

# The image holds ciphertext, which the descriptor's crypt decrypts.
python3 -c "
d = open('img.raw', 'rb').read()
assert b'a' * 64 not in d and b'b' * 64 not in d, 'plaintext in the image'
assert d[1 << 20:(1 << 20) + 4096] != bytes(4096), 'nothing written'" \
  || die "the image does not hold ciphertext"
assert_eq "$(sluice io d.disk cat 1048576 8)" "aaaaaaaa" "descriptor reads the plaintext back"
# Both command-line filters were in the path of the NBD writes.
grep -q "> write" trace.log || die "trace filter saw no write: $(head -5 trace.log)"
grep -Eq "^ *write ops ([2-9]|[1-9][0-9]+) " stats.txt || die "stats did not count the writes: $(cat stats.txt)"
grep -Eq "^ *read ops [1-9]" stats.txt || die "stats did not count the reads: $(cat stats.txt)"

# --- --at trace: requests enter below the trace filter ---------------------
start_server a.sock --filter "trace:log=$TMP/trace2.log" --at trace d.disk
qemu-io -f raw -c "read -P 0x61 1M 64k" -c "write -P 0x63 2M 4k" -c "read -P 0x63 2M 4k" \
  "$uri" >at.out || die "reads below trace are not plaintext: $(cat at.out)"
stop_server
if [[ -s trace2.log ]] && grep -Eq "> (read|write)" trace2.log; then
  die "--at trace: the bypassed filter saw requests: $(head -3 trace2.log)"
fi
assert_eq "$(sluice io d.disk cat 2097152 4)" "cccc" "write below trace went through crypt"

# --- --at crypt: the export is the ciphertext, byte for byte ----------------
start_server c.sock --read-only --at crypt d.disk
qemu-img compare -q -f raw -F raw "$uri" img.raw || die "--at crypt does not serve the image as stored"
stop_server

# --- a failing read reaches the NBD client as an error, not as data --------
sluice filter install "$BUILDDIR/filters/fault.so" >/dev/null
sluice create -q -f raw f.raw 4M
start_server e.sock --filter fault:op=read,start=1M,end=2M,error=EIO,prob=1 f.raw
qemu-io -f raw -c "read 0 64k" "$uri" >/dev/null || die "a read outside the faulty range failed"
if qemu-io -f raw -c "read 1M 4k" "$uri" >eio.out 2>&1; then
  die "a read that failed below the export was answered as data: $(cat eio.out)"
fi
grep -q "Input/output error" eio.out || die "the read error is not EIO: $(cat eio.out)"
stop_server

# An unknown --at names the problem and fails.
expect_fail "no filter 'nope'" sluice serve --nbd "unix:$TMP/x.sock" --at nope d.disk
echo ok
