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
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
cd "$TMP"

export SLUICE_FILTER_DIR=$TMP/mods
sluice filter install "$BUILDDIR/filters/fault.so" >/dev/null
sluice create -q -f raw disk.raw 16M
start_server s.sock --filter fault:op=read,error=none,delay=100,prob=1 disk.raw
t0=$(date +%s%N)
fio --name=par --ioengine=nbd --uri="$uri" --rw=randread --bs=4k --iodepth=8 \
    --size=16M --number_ios=16 --output-format=json --output=fio.json >/dev/null 2>fio.err ||
  die "fio failed: $(cat fio.err)"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
python3 - fio.json <<'PY' || die "fio did not complete 16 reads without error"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
sys.exit(0 if j["error"] == 0 and j["read"]["total_ios"] == 16 else 1)
PY
# The delay must have applied: even fully parallel, depth 8 needs two
# rounds of 100 ms.
[[ $ms -ge 200 ]] || die "16 reads took only $ms ms: the fault filter's delay did not apply"
# Serial: 16 x 100 ms = 1600 ms.  Four workers: the first read runs in the
# reader (no service time measured yet), the rest in rounds of four, plus
# fio's start-up: about 5 rounds.  1200 ms leaves room for a slow machine.
[[ $ms -lt 1200 ]] || die "16 slow reads at depth 8 took $ms ms: not run in parallel"
stop_server
echo "ok (16 reads of 100 ms at depth 8 in $ms ms)"
