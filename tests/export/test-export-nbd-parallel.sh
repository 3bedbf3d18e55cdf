#!/usr/bin/env bash
# Requests of one NBD connection run in parallel when the disk is slow.
# The reader runs fast requests itself (cheaper than a hand-off); this
# checks that slow ones still reach the workers instead of queueing behind
# each other: 16 reads that each sleep 100 ms in the fault filter, 8 in
# flight at a time on one connection, must take well under what they take
# one at a time (the same server with one worker, measured in the test),
# also when the reader gathers reads into batches.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/serve.sh"
require fio
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
cd "$TMP"

export SLUICE_FILTER_DIR=$TMP/mods
sluice filter install "$BUILDDIR/filters/fault.so" >/dev/null
sluice create -q -f raw disk.raw 16M
# run WORKERS: milliseconds fio takes for the 16 reads against a server
# with that many workers.
run() {
  start_server s.sock --workers "$1" --filter fault:op=read,error=none,delay=100,prob=1 disk.raw
  local t0
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
  stop_server
}
# One worker: the reads run one at a time, 16 x 100 ms at least (this
# also proves the fault filter's delay applied).
run 1; serial=$ms
[[ $serial -ge 1600 ]] || die "16 reads took only $serial ms with one worker: the delay did not apply"
# Four workers (the default): the first read runs in the reader (no service
# time measured yet), the rest in rounds of four: about 5 rounds against
# 16.  A loaded machine slows both runs alike, so the test compares them
# rather than trusting a fixed time: well under three quarters.
run 4; parallel=$ms
[[ $parallel -ge 200 ]] || die "16 reads took only $parallel ms: the fault filter's delay did not apply"
[[ $((parallel * 4)) -lt $((serial * 3)) ]] ||
  die "16 slow reads at depth 8 took $parallel ms with 4 workers, $serial ms with one: not run in parallel"
# The reader's batches of reads (SLUICE_NBD_BATCH=1 forces them on a disk
# whose filters do not take batches, where the core runs a batch's reads
# one after another): batches that are no faster per read than single
# reads must stop being made, or the 16 reads would take about as long as
# with one worker.
SLUICE_NBD_BATCH=1 run 4; batched=$ms
[[ $((batched * 4)) -lt $((serial * 3)) ]] ||
  die "16 slow reads at depth 8 took $batched ms with batches forced, $serial ms one at a time: batches serialised them"
echo "ok (16 reads of 100 ms at depth 8: $parallel ms with 4 workers, $batched ms with batches forced, $serial ms with one)"

# A batch holds the reader for all of its reads: the first batch of a
# connection (its time not yet measured) must go to a worker, so that the
# reader goes on reading what follows it.  One connection sends 15 single
# reads (chances not taken), then 8 reads and a write in one send: the
# 16th chance makes a probe batch of the 8 reads, which the core runs one
# after another (8 x 100 ms); the write, which the fault filter does not
# delay, must be answered long before them -- a reader running the batch
# itself would read the write only after the 800 ms.
SLUICE_NBD_BATCH=1 start_server w.sock --workers 16 \
  --filter fault:op=read,error=none,delay=100,prob=1 disk.raw
python3 - "$TMP/w.sock" "$SRCDIR/tests/common/nbd-writer.py" <<'PY' || die "a batch's first run held the reader"
import importlib.util, struct, sys, time
spec = importlib.util.spec_from_file_location("w", sys.argv[2])
w = importlib.util.module_from_spec(spec); spec.loader.exec_module(w)
s, size = w.handshake(sys.argv[1], timeout=30)
def req(cmd, handle, off, length, payload=b""):
    return struct.pack(">IHHQQI", w.REQ, 0, cmd, handle, off, length) + payload
def replies(n, reads):
    """N simple replies: {handle: seconds since t0}."""
    got = {}
    while len(got) < n:
        magic, err, handle = struct.unpack(">IIQ", w.recv_exact(s, 16))
        if magic != w.SIMPLE or err:
            sys.exit("bad reply: magic 0x%x error %d" % (magic, err))
        if handle in reads:
            w.recv_exact(s, 4096)
        got[handle] = time.monotonic() - t0
    return got
t0 = time.monotonic()
s.sendall(b"".join(req(w.CMD_READ, h, h * 65536, 4096) for h in range(15)))
replies(15, set(range(15)))
reads = set(range(100, 108))
t0 = time.monotonic()
s.sendall(b"".join(req(w.CMD_READ, h, h * 65536, 4096) for h in sorted(reads)) +
          req(w.CMD_WRITE, 200, 0, 4096, bytes(4096)))
got = replies(9, reads)
first_read = min(got[h] for h in reads)
print("write answered after %.0f ms, the reads after %.0f-%.0f ms" %
      (got[200] * 1000, first_read * 1000, max(got[h] for h in reads) * 1000))
if first_read < 0.6:
    sys.exit("the 8 reads were not run as one batch (answered after %.0f ms, "
             "not about 800): the test tests nothing" % (first_read * 1000))
if got[200] > 0.4:
    sys.exit("the write waited %.0f ms behind a batch of 8 slow reads run in the reader"
             % (got[200] * 1000))
s.sendall(req(w.CMD_DISC, 0, 0, 0))
PY
stop_server
echo "ok (a connection's first batch ran on a worker)"
