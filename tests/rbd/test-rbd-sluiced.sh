#!/bin/bash
# Issue 16 with the host cache daemon: RBD clones of one snapshot share
# their parent through sluiced.
#   - 4 RBD clones of one protected snapshot, each with data of its own,
#     served read-only by 4 `sluice serve` processes at once and read whole
#     over NBD: each reads exactly what `qemu-img convert` (QEMU's rbd
#     driver) reads;
#   - without the daemon each process reads the parent from RADOS itself
#     (about 4 x its data, counted by the OSD: op_out_bytes of
#     `ceph daemon osd.0 perf dump`, since a cluster without a manager
#     keeps no pool statistics); with `serve --sluiced` the parent is read
#     from RADOS about once, by the daemon (its backend bytes agree);
#   - the parent overlap: a clone shrunk then grown back reads zeros beyond
#     the overlap, not the parent's bytes -- in its block status (depth 0,
#     zero), plain, and through the daemon; as `rbd export` and qemu-img.
# The daemon's own checks of RBD registrations (a wrong key, a client whose
# capabilities forbid the pool, an image head, forged layer numbers, two
# snapshots each served its own bytes) run through sluiced-probe's rbd cases,
# once more on a snapshot of 64 MiB + 12345 bytes through a daemon of 16
# blocks: the bytes past its end read as zeros, not as another layer's.
# The daemon connects only to the clusters its --ceph-conf files describe:
# monitors a client names of any other cluster are refused (EPERM, logged),
# and so is everything when it is configured for another cluster.
# A client's Ceph connection goes with its last registration, the
# snapshot's cached blocks stay: 17 clients in turn, each its own Ceph
# identity, are all served by a daemon that keeps at most 16 connections.
# The daemon opens the snapshot a client opened by its ids, not its names:
# after `snap rename gold old; snap create gold` and a daemon restart, a
# running clone still reads the parent it opened through the daemon, and
# `sluice cache stats` names it as the cluster does now (base@old).
source "$(dirname "$0")/../common/lib.sh"
source "$(dirname "$0")/../common/ceph.sh"
require qemu-img nbdcopy python3
: "${SLUICED:?}"
ceph_start
cd "$TMP"
export SLUICE_FILTER_DIR=$TMP/mods
sluice filter install "$BUILDDIR/filters/cache.so" >/dev/null

M=$((1024 * 1024))
# The parent: 48 MiB of random bytes in a 64 MiB image (the tail a hole).
head -c $((48 * M)) /dev/urandom >base.raw
rbd import --no-progress --object-size 1M base.raw "$POOL/base"
rbd resize --no-progress --size 64M "$POOL/base"
rbd snap create "$POOL/base@gold" 2>/dev/null
rbd snap protect "$POOL/base@gold"
for i in 1 2 3 4; do
  rbd clone "$POOL/base@gold" "$POOL/c$i"
  sluice io -f raw -c "write -P 0x$((40 + i)) $((i * 4 + 1))M 1M" "rbd:$POOL/c$i" >/dev/null
  qemu-img convert -f raw -O raw "rbd:$POOL/c$i" "ref$i.raw"
done

asok=$TMP/ceph/run/osd.0.asok
osd_out() { # bytes the OSD has sent to clients so far
  ceph --admin-daemon "$asok" perf dump |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["osd"]["op_out_bytes"])'
}

spids=()
serve_all() { # [--sluiced=SOCK]: 4 servers, one per clone
  local i
  for i in 1 2 3 4; do
    rm -f "$TMP/n$i.sock"
    "$SLUICE" serve --read-only "$@" --nbd "unix:$TMP/n$i.sock" "rbd:$POOL/c$i" \
      2>>serve.log &
    spids+=($!)
    cleanup_push "kill ${spids[-1]} 2>/dev/null"
  done
  for i in 1 2 3 4; do wait_for_path "$TMP/n$i.sock" 60; done
}
stop_all() {
  local p
  for p in "${spids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  spids=()
}
serve_one() { # N DAEMON_SOCK IMAGE LOG: one server of IMAGE through the daemon, at
  # $TMP/nN.sock, its pid in SPID (stopped on exit)
  rm -f "$TMP/n$1.sock"
  "$SLUICE" serve --read-only "--sluiced=$2" --nbd "unix:$TMP/n$1.sock" "rbd:$POOL/$3" \
    2>>"$4" &
  SPID=$!
  cleanup_push "kill $SPID 2>/dev/null"
  wait_for_path "$TMP/n$1.sock" 60
}
read_one() { # N OUT REF WHY: read disk N whole into OUT, which must be REF, else die WHY
  nbdcopy "nbd+unix:///?socket=$TMP/n$1.sock" "$2"
  cmp "$2" "$3" || die "$4"
}
read_all() { # TAG: read the 4 disks at once, compare, print the OSD's bytes
  local i before after pids=()
  before=$(osd_out)
  for i in 1 2 3 4; do
    nbdcopy "nbd+unix:///?socket=$TMP/n$i.sock" "$1-$i.raw" &
    pids+=($!)
  done
  for i in "${pids[@]}"; do wait "$i" || die "$1: nbdcopy failed"; done
  after=$(osd_out)
  for i in 1 2 3 4; do
    cmp "$1-$i.raw" "ref$i.raw" || die "$1: clone $i reads unlike qemu-img convert"
    rm -f "$1-$i.raw"
  done
  echo $((after - before))
}

# Without the daemon: every process reads the parent itself.
serve_all
without=$(read_all plain)
stop_all

# With it.
"$SLUICED" --socket "$TMP/sd.sock" --memory 256M --check-on-exit --ceph-conf "$CEPH_CONF" \
  2>sluiced.log &
dpid=$!
cleanup_push "kill $dpid 2>/dev/null"
wait_for_path "$TMP/sd.sock"
serve_all "--sluiced=$TMP/sd.sock"
with=$(read_all cached)
stop_all
stats=$(sluice cache stats --socket "$TMP/sd.sock" --output=json)
backend=$(echo "$stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
l = [x for x in s["layers"] if x["path"] == "rbd:'"$POOL"'/base@gold"]
assert len(l) == 1, s["layers"]
print(l[0]["backend_bytes"])') || die "the parent is not a layer of sluiced: $stats"

parent=$((48 * M)) # the parent's data; each clone replaces 1 MiB of it
echo "RADOS bytes read for 4 clones: $without without sluiced, $with with it" \
     "(parent data $parent; sluiced read $backend from it)"
((without >= 3 * parent)) ||
  die "without sluiced the OSD sent $without bytes, expected about 4 x $parent"
((with <= parent * 3 / 2)) ||
  die "with sluiced the OSD sent $with bytes: the parent ($parent) was read more than about once"
((with * 5 / 2 <= without)) || die "sluiced saved too little: $with against $without"
((backend >= parent - 4 * M && backend <= 64 * M)) ||
  die "sluiced read $backend bytes of the parent (data $parent, size $((64 * M)))"
grep -q "sluiced does not cache" serve.log && die "a registration was refused: $(cat serve.log)"

# The parent overlap: c5 shrunk to 16 MiB then grown back to 64 MiB sees
# the parent below 16 MiB only.
rbd clone "$POOL/base@gold" "$POOL/c5"
sluice io -f raw -c "write -P 0x55 2M 1M" "rbd:$POOL/c5" >/dev/null
rbd resize --no-progress --allow-shrink --size 16M "$POOL/c5"
rbd resize --no-progress --size 64M "$POOL/c5"
rbd export --no-progress "$POOL/c5" export5.raw
qemu-img convert -f raw -O raw "rbd:$POOL/c5" ref5.raw
cmp export5.raw ref5.raw || die "rbd export and qemu-img disagree on c5"
cmp -n $((48 * M)) -i $((16 * M)):0 ref5.raw /dev/zero ||
  die "the oracle does not read zeros beyond the overlap"
sluice convert -O raw "rbd:$POOL/c5" plain5.raw
cmp plain5.raw ref5.raw || die "c5 reads unlike qemu-img convert (no daemon)"
map=$(sluice io -f raw -r "rbd:$POOL/c5" map | awk '{print $1/1048576, $2/1048576, $3, $4}' |
  paste -sd';')
assert_eq "$map" "0 2 data 1;2 1 data 0;3 13 data 1;16 48 zero 0" "c5's map (MiB)"
serve_one 5 "$TMP/sd.sock" c5 serve.log
read_one 5 cached5.raw ref5.raw "c5 through sluiced reads parent bytes beyond the overlap"
kill $SPID; wait $SPID 2>/dev/null

# The daemon's checks of RBD registrations.
ceph osd pool create other 8 >/dev/null 2>&1
ceph auth get-or-create client.limited mon 'profile rbd' osd 'profile rbd pool=other' \
  >/dev/null
sluice io -f raw -c "write -P 0x66 0 4M" "rbd:$POOL/base" >/dev/null
rbd snap create "$POOL/base@gold2" 2>/dev/null
rbd export --no-progress "$POOL/base@gold" x1.raw
rbd export --no-progress "$POOL/base@gold2" x2.raw
mon=$(sed -n 's/^mon host = //p' "$CEPH_CONF")
[[ -n ${PROBE:-} ]] || PROBE=$BUILDDIR/tests/daemon/sluiced-probe
rbd_ids() { # IMAGE SNAP1 SNAP2: FSID POOL_ID IMAGE_ID SNAP_ID1 SNAP_ID2
  local pid
  pid=$(ceph osd lspools --format=json | python3 -c '
import json, sys
print([p["poolnum"] for p in json.load(sys.stdin) if p["poolname"] == sys.argv[1]][0])' "$POOL")
  echo "$(ceph fsid) $pid $(rbd info --format=json "$POOL/$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')" \
    "$(rbd snap ls --format=json "$POOL/$1" | python3 -c '
import json, sys
d = {s["name"]: s["id"] for s in json.load(sys.stdin)}
print(d[sys.argv[1]], d[sys.argv[2]])' "$2" "$3")"
}
"$PROBE" "$TMP/sd.sock" rbd "$mon" "$POOL" base gold x1.raw gold2 x2.raw \
  admin "$(ceph auth get-key client.admin)" limited "$(ceph auth get-key client.limited)" \
  $(rbd_ids base gold gold2) || die "sluiced-probe's RBD cases failed (daemon log: $(tail -5 sluiced.log))"
grep -q "refused a layer: rbd: the monitors 127.0.0.1:1 are not of a Ceph cluster" sluiced.log ||
  die "sluiced did not log the foreign monitors it refused: $(tail -5 sluiced.log)"

# More clients in turn than the daemon keeps Ceph connections (16), each
# its own Ceph identity and snapshot (all with gold2's bytes): the
# snapshots stay cached, but a client's connection goes with its last
# registration, so none is refused.
clients=()
for i in $(seq 17); do
  rbd snap create "$POOL/base@c$i" 2>/dev/null
done
for i in $(seq 17); do
  sid=$(rbd snap ls --format=json "$POOL/base" | python3 -c '
import json, sys
print([s["id"] for s in json.load(sys.stdin) if s["name"] == sys.argv[1]][0])' "c$i")
  key=$(ceph auth get-or-create-key "client.u$i" mon 'profile rbd' osd 'profile rbd')
  clients+=("u$i:c$i:$sid:$key")
done
"$PROBE" "$TMP/sd.sock" rbd-conns "$mon" "$POOL" base x2.raw \
  $(rbd_ids base gold gold2 | cut -d' ' -f1-3) "${clients[@]}" ||
  die "sluiced refused clients past its connection limit (daemon log: $(tail -5 sluiced.log))"


# The snapshot a process opened stays its parent, whatever its name comes
# to mean: c1 is served through sluiced, then gold is renamed and a new
# gold (other bytes) made, and sluiced restarted -- the process registers
# its parent again, and must get the bytes it opened, not the new gold's.
serve_one 7 "$TMP/sd.sock" c1 serve7.log
p7=$SPID
rbd snap rename "$POOL/base@gold" "$POOL/base@old"
sluice io -f raw -c "write -P 0x99 8M 16M" "rbd:$POOL/base" >/dev/null
rbd snap create "$POOL/base@gold" 2>/dev/null
kill -TERM $dpid
wait $dpid || die "sluiced exited $? (its cache checks on exit: $(tail -3 sluiced.log))"
"$SLUICED" --socket "$TMP/sd.sock" --memory 256M --check-on-exit --ceph-conf "$CEPH_CONF" \
  2>sluiced-again.log &
dpid=$!
cleanup_push "kill $dpid 2>/dev/null"
wait_for_path "$TMP/sd.sock"
parent_backend() { # the daemon's backend bytes of base's snapshot layer, or nothing
  sluice cache stats --socket "$TMP/sd.sock" --output=json | python3 -c '
import json, sys
l = [x for x in json.load(sys.stdin)["layers"] if x["path"].startswith("rbd:'"$POOL"'/base@")]
print(l[0]["backend_bytes"] if l else "")'
}
# the client notices the restart on its next request, reads that itself,
# and registers its layers again on the new connection
read_one 7 renamed1.raw ref1.raw "c1 reads wrong while sluiced restarts"
for _ in $(seq 120); do [[ -n $(parent_backend) ]] && break; sleep 0.5; done
[[ -n $(parent_backend) ]] || die "c1's server did not register its parent again: $(cat serve7.log)"
read_one 7 renamed1.raw ref1.raw \
  "after 'snap rename gold old; snap create gold' c1 reads the new gold through sluiced"
got=$(parent_backend)
((got >= 16 * M)) || die "c1's parent was read by sluiced only $got bytes: not through it"
# STATS names the layer as the cluster names the ids the client opened
# ("old"), not by the client's word for them ("gold", now another snapshot).
names=$(sluice cache stats --socket "$TMP/sd.sock" --output=json | python3 -c '
import json, sys
print(" ".join(x["path"] for x in json.load(sys.stdin)["layers"]
               if x["path"].startswith("rbd:'"$POOL"'/base@")))')
assert_eq "$names" "rbd:$POOL/base@old" "sluiced's name for c1's parent after the rename"
grep -q "sluiced does not cache" serve7.log && die "the parent was refused: $(cat serve7.log)"
kill $p7; wait $p7 2>/dev/null
kill -TERM $dpid
wait $dpid || die "sluiced exited $? (its cache checks on exit: $(tail -3 sluiced-again.log))"

# A snapshot whose size is not a block multiple (64 MiB + 12345), read by a
# daemon of 16 blocks: its last block lands in a slot that held another
# layer's bytes, and a read crossing the end must see zeros past it (the
# probe's "the tail" case), not what the slot held.
odd=$((64 * M + 12345))
head -c $odd /dev/urandom >odd.raw # no holes: every slot it fills is not zeros
rbd import --no-progress odd.raw "$POOL/odd"
rbd snap create "$POOL/odd@s1" 2>/dev/null
sluice io -f raw -c "write -P 0x77 0 4M" "rbd:$POOL/odd" >/dev/null
rbd snap create "$POOL/odd@s2" 2>/dev/null
rbd export --no-progress "$POOL/odd@s1" o1.raw
rbd export --no-progress "$POOL/odd@s2" o2.raw
assert_eq "$(stat -c %s o1.raw)" "$odd" "the odd snapshot's size"
"$SLUICED" --socket "$TMP/sd2.sock" --memory 1M --check-on-exit --ceph-conf "$CEPH_CONF" \
  2>sluiced2.log &
dpid=$!
cleanup_push "kill $dpid 2>/dev/null"
wait_for_path "$TMP/sd2.sock"
"$PROBE" "$TMP/sd2.sock" rbd "$mon" "$POOL" odd s1 o1.raw s2 o2.raw \
  admin "$(ceph auth get-key client.admin)" limited "$(ceph auth get-key client.limited)" \
  $(rbd_ids odd s1 s2) || die "sluiced-probe's RBD cases on a $odd-byte snapshot failed (daemon log: $(tail -5 sluiced2.log))"
kill -TERM $dpid
wait $dpid || die "the second sluiced exited $? ($(tail -3 sluiced2.log))"

# A daemon given a configuration file it cannot use does not start; one
# whose configured cluster is another refuses this one's snapshots.
printf '[global]\nfsid = 1\n' >nomon.conf
expect_fail "nomon.conf: no mon_host" "$SLUICED" --socket "$TMP/sd3.sock" --ceph-conf nomon.conf
expect_fail "absent.conf: No such file" \
  "$SLUICED" --socket "$TMP/sd3.sock" --ceph-conf "$TMP/absent.conf"
printf '[global]\nmon host = 192.0.2.7:6789\n' >other.conf
"$SLUICED" --socket "$TMP/sd3.sock" --memory 16M --ceph-conf other.conf 2>sluiced3.log &
dpid=$!
cleanup_push "kill $dpid 2>/dev/null"
wait_for_path "$TMP/sd3.sock"
serve_one 6 "$TMP/sd3.sock" c1 serve6.log
read_one 6 other6.raw ref1.raw "c1 reads wrong when sluiced refuses its parent"
kill $SPID; wait $SPID 2>/dev/null
grep -q "not of a Ceph cluster this sluiced is configured for" sluiced3.log ||
  die "sluiced configured for another cluster did not refuse this one: $(cat sluiced3.log)"
kill -TERM $dpid; wait $dpid
echo "PASS: $TEST_NAME"
