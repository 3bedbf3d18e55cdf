#!/bin/bash
# A throw-away single-node Ceph cluster for the test suite and bench/rbd.sh.
#
# The RBD driver is tested against a real cluster, not a mock: librbd's
# behaviour (exclusive lock, layering, diff iteration, error codes) is the
# thing under test.  This script starts the smallest cluster that serves RBD:
# one monitor and one OSD listening only on 127.0.0.1, the OSD on memstore
# (objects in RAM, nothing written to a disk device), every pool of size 1,
# no manager.  Everything lives in a directory the caller gives, so two test
# files can each run their own cluster, and nothing touches /etc/ceph or
# /var/lib/ceph.
#
#   ceph-single-node.sh start DIR   start; prints "export CEPH_CONF=DIR/ceph.conf"
#   ceph-single-node.sh stop DIR    stop the daemons it started, by their pids
#   ceph-single-node.sh env DIR     print the export line again
#
# start creates the pool "rbd" (initialised for RBD) and writes
# DIR/ceph.conf and DIR/keyring (client.admin, the monitor and osd.0 keys).
# The daemons run in the foreground of background jobs whose pids go to
# DIR/mon.pid and DIR/osd.pid; stop sends SIGTERM, waits, then SIGKILL, and
# only ever to those pids.  A failed start stops what it started and shows
# the daemon logs' tails.
set -euo pipefail

die() { echo "ceph-single-node: $*" >&2; exit 1; }

usage() { die "usage: $0 start|stop|env DIR"; }

[[ $# -eq 2 ]] || usage
cmd=$1
dir=$2

# A pid is ours only if it is still the daemon we started (not a recycled
# pid): its command line names our configuration file.
is_ours() {
  local pid=$1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' </proc/"$pid"/cmdline | grep -qF -- "$dir/ceph.conf"
}

stop_pid() {
  local f=$1 pid i
  [[ -s $f ]] || return 0
  pid=$(cat "$f")
  if is_ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
      is_ours "$pid" || break
      sleep 0.1
    done
    if is_ours "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  rm -f "$f"
}

do_stop() {
  # The OSD first: a monitor gone first leaves it retrying for a while.
  stop_pid "$dir/osd.pid"
  stop_pid "$dir/mon.pid"
}

# A free TCP port on 127.0.0.1 (the kernel picks it; the short window until
# the monitor binds it is acceptable for tests).
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

fail_start() {
  local f
  echo "ceph-single-node: $*" >&2
  for f in "$dir"/log/*.log; do
    [[ -f $f ]] || continue
    echo "--- tail of $f" >&2
    tail -n 15 "$f" >&2
  done
  do_stop
  exit 1
}

do_start() {
  local t0 port fsid osd_uuid i
  t0=$(date +%s.%N)
  command -v ceph-mon >/dev/null || die "ceph-mon is not installed (apt-get install ceph-mon)"
  command -v ceph-osd >/dev/null || die "ceph-osd is not installed (apt-get install ceph-osd)"
  command -v ceph >/dev/null || die "ceph is not installed (apt-get install ceph-common)"
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [[ ! -e $dir/ceph.conf ]] || die "$dir already holds a cluster (stop it first, or use an empty directory)"
  mkdir -p "$dir/mon" "$dir/osd" "$dir/log" "$dir/run"
  port=$(free_port)
  fsid=$(cat /proc/sys/kernel/random/uuid)
  osd_uuid=$(cat /proc/sys/kernel/random/uuid)
  cat >"$dir/ceph.conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$port
public network = 127.0.0.0/8
ms bind msgr1 = false
ms bind ipv4 = true
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $dir/keyring
log file = $dir/log/\$name.log
run dir = $dir/run
crash dir = $dir/log
pid file =
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd pool default pg num = 8
osd pool default pgp num = 8
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1
# Small: one OSD shard and thread pools of one or two threads.
osd objectstore = memstore
memstore device bytes = 4294967296
osd memory target = 939524096
osd op num shards = 1
osd op num threads per shard = 2
ms async op threads = 1
# A client that cannot reach the monitor gives up instead of hanging.
client mount timeout = 30
rados mon op timeout = 30
# A client killed while holding an exclusive lock is seen dead (its watch
# expires) after 10 s instead of 30: crash tests take over sooner.
osd client watch timeout = 10

[mon]
admin socket = $dir/run/\$name.asok
[osd]
admin socket = $dir/run/\$name.asok

[mon.a]
mon data = $dir/mon

[osd.0]
osd data = $dir/osd
EOF
  ceph-authtool --create-keyring "$dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$dir/keyring" --gen-key -n osd.0 \
    --cap mon 'allow profile osd' --cap osd 'allow *' --cap mgr 'allow profile osd' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$port]" \
    "$dir/monmap" >/dev/null
  ceph-mon -c "$dir/ceph.conf" --mkfs -i a --monmap "$dir/monmap" \
    --keyring "$dir/keyring" >/dev/null 2>"$dir/log/mkfs-mon.err" ||
    fail_start "ceph-mon --mkfs failed: $(cat "$dir/log/mkfs-mon.err")"
  ceph-mon -c "$dir/ceph.conf" -i a -f </dev/null >/dev/null 2>"$dir/log/mon.err" &
  echo $! >"$dir/mon.pid"
  export CEPH_CONF=$dir/ceph.conf
  local c=(ceph --connect-timeout 10)
  "${c[@]}" osd create "$osd_uuid" 0 >/dev/null 2>"$dir/log/cmd.err" ||
    fail_start "the monitor did not answer: $(cat "$dir/log/cmd.err")"
  ceph-osd -c "$dir/ceph.conf" -i 0 --mkfs --osd-uuid "$osd_uuid" \
    >/dev/null 2>"$dir/log/mkfs-osd.err" ||
    fail_start "ceph-osd --mkfs failed: $(cat "$dir/log/mkfs-osd.err")"
  ceph-osd -c "$dir/ceph.conf" -i 0 -f </dev/null >/dev/null 2>"$dir/log/osd.err" &
  echo $! >"$dir/osd.pid"
  "${c[@]}" osd pool create rbd 8 8 >/dev/null 2>"$dir/log/cmd.err" ||
    fail_start "cannot create pool rbd: $(cat "$dir/log/cmd.err")"
  "${c[@]}" osd pool application enable rbd rbd >/dev/null 2>&1 || true
  # The placement groups' state is the manager's to report, and there is
  # none: the first I/O to the pool (rbd pool init writes an object) waits
  # until they are active.  Bounded, so a broken OSD fails the start.
  timeout 120 rbd pool init rbd 2>"$dir/log/cmd.err" || {
    is_ours "$(cat "$dir/osd.pid")" || fail_start "ceph-osd exited: $(cat "$dir/log/osd.err")"
    fail_start "rbd pool init failed or timed out: $(cat "$dir/log/cmd.err")"
  }
  printf 'ceph-single-node: started in %.1f s (fsid %s, mon 127.0.0.1:%s)\n' \
    "$(echo "$(date +%s.%N) - $t0" | bc)" "$fsid" "$port" >&2
  echo "export CEPH_CONF=$dir/ceph.conf"
}

case $cmd in
start) do_start ;;
stop)
  [[ -d $dir ]] || exit 0
  dir=$(cd "$dir" && pwd)
  do_stop
  ;;
env)
  dir=$(cd "$dir" && pwd)
  [[ -f $dir/ceph.conf ]] || die "$dir holds no cluster"
  echo "export CEPH_CONF=$dir/ceph.conf"
  ;;
*) usage ;;
esac
