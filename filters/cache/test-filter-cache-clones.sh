#!/usr/bin/env bash
# Issue 13 acceptance 1, "clones share": 8 `sluice serve --sluiced` on 8
# qcow2 clones of one base (half of them with data of their own in their
# top layer) all read their whole disk at once.  Every read equals
# `qemu-img convert -O raw` of that clone; the daemon read the base at most
# 1.1x its allocated size (its own counters, `sluice cache stats`), and the
# servers themselves read little from storage (/proc/PID/io).  Then the same
# without the daemon, where the servers read the base about 8 times
# (/proc/PID/io read_bytes, with --cache=none so the page cache does not
# hide it).
. "$(dirname "$0")/../../tests/common/lib.sh"
require qemu-img qemu-io python3
SLUICED=${SLUICED:-$BUILDDIR/sluiced}
[[ -x $SLUICED ]] || SLUICED=$BUILDDIR/daemon/sluiced
[[ -x $SLUICED ]] || skip "no sluiced in $BUILDDIR"
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
mkdir -m 755 mods
sluice filter install "$BUILDDIR/filters/cache.so" >/dev/null

N=8 MB=32
head -c $((MB << 20)) /dev/urandom >base.raw
qemu-img convert -f raw -O qcow2 base.raw base.qcow2
rm base.raw
for i in $(seq $N); do
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 c$i.qcow2
  if (( i % 2 == 0 )); then
    qemu-io -f qcow2 -c "write -P $i $((i))M 1M" -c "write -P $((i + 100)) 20M 64k" c$i.qcow2 >/dev/null
  fi
  qemu-img convert -O raw c$i.qcow2 expect$i.raw
done
base_alloc=$(stat -c '%b * %B' base.qcow2)
base_alloc=$((base_alloc))

"$SLUICED" --socket "$TMP/d.sock" --memory 256M 2>sluiced.log &
dpid=$!
cleanup_push "kill -9 $dpid"
wait_for_path "$TMP/d.sock"

# storm LABEL [SERVE ARGS...]: 8 servers, 8 whole-disk reads at once; sets
# storm_total to the servers' storage read bytes in total.
storm() {
  local label=$1 i; shift
  local pids=()
  for i in $(seq $N); do
    "$SLUICE" serve --cache=none "$@" --nbd "unix:$TMP/$label$i.nbd" c$i.qcow2 2>>"$label$i.log" &
    pids+=($!)
    cleanup_push "kill -9 $!"
  done
  for i in $(seq $N); do wait_for_path "$TMP/$label$i.nbd"; done
  local readers=()
  for i in $(seq $N); do
    qemu-img convert -f raw -O raw "nbd+unix:///?socket=$TMP/$label$i.nbd" "got$i.raw" &
    readers+=($!)
  done
  for i in $(seq $N); do
    wait "${readers[$((i - 1))]}" || die "$label: reading clone $i failed"
    cmp -s "got$i.raw" "expect$i.raw" || die "$label: clone $i read differs from qemu-img convert"
    rm -f "got$i.raw"
  done
  local total=0 rb
  for i in $(seq $N); do
    rb=$(awk '/^read_bytes:/ {print $2}' "/proc/${pids[$((i - 1))]}/io")
    total=$((total + rb))
    kill -TERM "${pids[$((i - 1))]}"
    wait "${pids[$((i - 1))]}" || die "$label: server $i exited non-zero: $(tail -3 "$label$i.log")"
  done
  storm_total=$total
}

storm with --sluiced="$TMP/d.sock"
with=$storm_total
"$SLUICE" cache stats --socket "$TMP/d.sock" --output=json >stats.json ||
  die "sluice cache stats failed"
read -r backend served <<<"$(python3 - stats.json "$TMP/base.qcow2" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
base = [l for l in d["layers"] if l["path"] == sys.argv[2]]
assert base, "the base is not among the daemon's layers: %s" % [l["path"] for l in d["layers"]]
print(base[0]["backend_bytes"], base[0]["bytes_served"])
PY
)"
echo "with sluiced: daemon read $backend bytes of the base (allocated $base_alloc), served $served; servers read $with bytes"
(( backend > 0 && served > 0 )) || die "the daemon served nothing"
(( backend * 10 <= base_alloc * 11 )) ||
  die "the daemon read the base $backend bytes, more than 1.1x its $base_alloc allocated"
grep -q " 0 from the image" with1.log || echo "note: some reads fell back: $(grep cache: with*.log)"

storm without
without=$storm_total
echo "without sluiced: the servers read $without bytes ($((without * 10 / base_alloc))/10 of the base)"
(( without >= base_alloc * 6 )) || die "without the daemon the servers read only $without bytes"
(( with * 2 < without )) || die "with the daemon the servers still read $with bytes (without: $without)"
echo PASS
