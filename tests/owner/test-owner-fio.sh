#!/usr/bin/env bash
# Issue 14, acceptance 1: fio (nbd engine) writes with verify=crc32c and a
# completion log to owner A; B takes the disk over mid-run.  Every write
# fio saw acknowledged by A must read back through B with fio's header and
# crc32c intact, and qemu-img check must find the image clean.
. "$(dirname "$0")/../common/lib.sh"
. "$(dirname "$0")/own.sh"
require fio qemu-img python3
fio --enghelp=nbd >/dev/null 2>&1 || skip "fio has no nbd engine"
cd "$TMP"
writer=$SRCDIR/tests/common/nbd-writer.py

qemu-img create -q -f qcow2 disk.qcow2 256M
start_owner A a.sock disk.qcow2
# A completion-latency log with offsets: one line per acknowledged I/O.
# The area (64 Ki blocks) is far larger than what is written before the
# handoff, so no block is written twice.
fio --name=handoff --ioengine=nbd --uri="nbd+unix:///?socket=$TMP/a.sock" \
    --rw=randwrite --bs=4k --iodepth=16 --size=256M --verify=crc32c \
    --do_verify=0 --write_lat_log=acked --log_offset=1 --time_based \
    --runtime=60 --output=fio.out >/dev/null 2>fio.err &
fio_pid=$!
cleanup_push "kill -9 $fio_pid"
# Mid-run: once fio has been writing for a while.
for ((i = 0; i < 200; i++)); do
  [[ $(qemu-img info -U --output=json disk.qcow2 | python3 -c "import json,sys; print(json.load(sys.stdin)['actual-size'])") -gt $((8 << 20)) ]] && break
  sleep 0.05
done
start_owner B b.sock --take-over disk.qcow2
wait_exit "$A" 10
# fio loses its connection and ends (with an error: its server went away).
rc=0
wait "$fio_pid" || rc=$?
[[ -s acked_lat.1.log ]] || die "fio wrote no completion log (exit $rc): $(tail -5 fio.err)"
writes=$(grep -c ', 1, ' acked_lat.1.log || true)
(( writes > 1000 )) || die "only $writes writes completed before the handoff"
dups=$(awk -F', ' '$3 == 1 {print $5}' acked_lat.1.log | sort | uniq -d | wc -l)
[[ $dups -eq 0 ]] || die "$dups blocks written twice: the check would be weak"
python3 "$writer" fio-verify "$TMP/b.sock" acked_lat.1.log ||
  die "writes A acknowledged are missing through B"
kill -TERM "$B"; wait_exit "$B" 10
qemu-img check -q disk.qcow2 || die "qemu-img check: image not clean"
echo "PASS: $TEST_NAME ($writes acknowledged writes read back after the handoff)"
