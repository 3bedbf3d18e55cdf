#!/usr/bin/env bash
# Requests of one NBD connection run in parallel when the disk is slow.
# The reader runs fast requests itself (cheaper than a hand-off); this
# checks that slow ones still reach the workers instead of queueing behind
# each other: 16 reads that each sleep 100 ms in the fault filter, 8 in
# flight at a time on one connection, must take well under the 1.6 s they
# would take one at a time.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require fio
cd "$TMP"

export SLUICE_FILTER_DIR=$TMP/mods
sluice filter install "$BUILDDIR/filters/fault.so" >/dev/null
sluice create -q -f raw disk.raw 16M
start_server s.sock --filter fault:op=read,error=none,delay=100,prob=1 disk.raw
t0=$(date +%s%N)
fio --name=par --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=8 \
    --size=16M --number_ios=16 --output=fio.out >/dev/null 2>fio.err ||
  die "fio failed: $(cat fio.err)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
# Serial: 16 x 100 ms = 1600 ms.  Four workers: 4 rounds of 100 ms, plus
# fio's and the server's start-up.  1200 ms leaves room for a slow machine.
[[ $ms -lt 1200 ]] || die "16 slow reads at depth 8 took $ms ms: not run in parallel"
stop_server
echo "ok (16 reads of 100 ms at depth 8 in $ms ms)"
