#!/usr/bin/env bash
# sluiced's command line and lifecycle, and `sluice cache stats|drop`:
# bad options are refused with a message; --pidfile and --daemon; a second
# daemon on a live socket is refused; socket activation (systemd's
# LISTEN_FDS protocol, through systemd-socket-activate); SIGTERM removes the
# socket and pidfile.  The stats a client reads after known reads must
# count exactly those blocks (fills, backend bytes, resident), in JSON and
# in the Prometheus exposition format, and drop must empty a layer or all.
source "$SRCDIR/tests/common/lib.sh"
: "${SLUICED:?}" "${PROBE:?}"

expect_fail "block-size.*power of two" "$SLUICED" --socket "$TMP/x.sock" --block-size 3K
expect_fail "block-size.*power of two" "$SLUICED" --socket "$TMP/x.sock" --block-size 4M
expect_fail "memory" "$SLUICED" --socket "$TMP/x.sock" --memory 12Q
expect_fail "fewer than 16 blocks" "$SLUICED" --socket "$TMP/x.sock" --memory 64K
expect_fail "no user" "$SLUICED" --socket "$TMP/x.sock" --allow-user no-such-user-here
expect_fail "unexpected argument" "$SLUICED" --socket "$TMP/x.sock" extra
[[ ! -e $TMP/x.sock ]] || die "a refused start left its socket"

sock=$TMP/d.sock
"$SLUICED" --socket "$sock" --memory 2M --block-size 64K --pidfile "$TMP/pid" --daemon \
  2>"$TMP/log" || die "--daemon start failed: $(cat "$TMP/log")"
[[ -S $sock && -s $TMP/pid ]] || die "no socket or pidfile after --daemon returned"
pid=$(cat "$TMP/pid")
cleanup_push "kill $pid"
kill -0 "$pid" || die "daemon pid $pid not running"
expect_fail "another process is listening" "$SLUICED" --socket "$sock" --memory 1M

head -c 1M /dev/urandom >"$TMP/a.img"
head -c 1M /dev/urandom >"$TMP/b.img"
"$PROBE" "$sock" read "$TMP/a.img" 0 200000 | cmp - <(head -c 200000 "$TMP/a.img") \
  || die "bytes read through the daemon differ"
"$PROBE" "$sock" read "$TMP/a.img" 0 200000 >/dev/null
"$PROBE" "$sock" read "$TMP/b.img" 65536 65536 >/dev/null

sluice cache stats --socket "$sock" --output=json >"$TMP/s.json"
python3 - "$TMP/s.json" "$TMP/a.img" <<'PY' || die "stats: $(cat "$TMP/s.json")"
import json, sys
s = json.load(open(sys.argv[1]))
t = s["total"]
# a.img: 200000 bytes = 4 blocks, read twice (4 misses, then 4 hits); b.img: 1 block
assert s["block_size"] == 65536 and s["capacity_blocks"] == 32, s
assert t["fills"] == 5 and t["misses"] == 5 and t["hits"] == 4, t
assert t["backend_bytes"] == 5 * 65536 and t["resident_blocks"] == 5, t
assert t["bytes_served"] == 2 * 200000 + 65536, t
a = [l for l in s["layers"] if l["path"] == sys.argv[2]]
assert len(a) == 1 and a[0]["resident_blocks"] == 4 and a[0]["hits"] == 4, a
assert "lease" in a[0]["flags"], a
PY
sluice cache stats --socket "$sock" --output=prometheus >"$TMP/s.prom"
python3 - "$TMP/s.prom" <<'PY' || die "prometheus output malformed: $(head "$TMP/s.prom")"
import re, sys
seen_type = set()
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? -?[0-9.e+]+$')
vals = {}
for line in open(sys.argv[1]):
    line = line.rstrip("\n")
    if line.startswith("# TYPE "):
        name, typ = line.split()[2:4]
        assert typ in ("counter", "gauge"), line
        assert name not in seen_type, "TYPE twice: " + name
        assert typ != "counter" or name.endswith("_total"), line
        seen_type.add(name)
        continue
    if line.startswith("# HELP "):
        continue
    m = sample.match(line)
    assert m, "bad sample line: " + line
    assert m.group(1) in seen_type, "sample before its TYPE: " + line
    if not m.group(2):
        vals[m.group(1)] = float(line.split()[-1])
assert vals["sluiced_fills_total"] == 5 and vals["sluiced_resident_blocks"] == 5, vals
assert vals["sluiced_backend_read_bytes_total"] == 5 * 65536, vals
PY
sluice cache stats --socket "$sock" | grep -q "hits: 4, misses: 5" || die "human stats wrong"

sluice cache drop --socket "$sock" "$TMP/a.img"
sluice cache stats --socket "$sock" --output=json | python3 -c '
import json, sys
s = json.load(sys.stdin)
assert s["total"]["resident_blocks"] == 1, s["total"]' || die "drop LAYER left blocks"
sluice cache drop --socket "$sock" --all
sluice cache stats --socket "$sock" --output=json | python3 -c '
import json, sys
assert json.load(sys.stdin)["total"]["resident_blocks"] == 0' || die "drop --all left blocks"
expect_fail "one layer file or --all" sluice cache drop --socket "$sock"
expect_fail "expected human, json or prometheus" sluice cache stats --socket "$sock" --output=xml
expect_fail "cannot reach the cache daemon" sluice cache stats --socket "$TMP/nothing.sock"

kill -TERM "$pid"
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
kill -0 "$pid" 2>/dev/null && die "daemon still running after SIGTERM"
[[ ! -e $sock ]] || die "socket left behind"
[[ ! -e $TMP/pid ]] || die "pidfile left behind"

# Memory stays within --memory plus the metadata: read three times the
# cache's size through a 16 MiB daemon and look at its anonymous memory
# (the data area; the clients' memfd pages it maps are theirs, RssShmem).
msock=$TMP/m.sock
"$SLUICED" --socket "$msock" --memory 16M --block-size 64K --quiet 2>"$TMP/mlog" &
mpid=$!
cleanup_push "kill $mpid"
wait_for_path "$msock"
# What the daemon holds before caching anything (its libraries' own:
# librados's static state alone is about 4 MiB in a build with RBD).
idle=$(awk '/^RssAnon/ {print $2}' /proc/$mpid/status)
head -c 48M /dev/urandom >"$TMP/big.img"
"$PROBE" "$msock" read "$TMP/big.img" 0 2097152 >/dev/null
base=$(awk '/^RssAnon/ {print $2}' /proc/$mpid/status)
for off in $(seq 0 2097152 $((48 * 1048576 - 1))); do
  "$PROBE" "$msock" read "$TMP/big.img" "$off" 2097152 >/dev/null
done
rss=$(awk '/^RssAnon/ {print $2}' /proc/$mpid/status)
sluice cache stats --socket "$msock" --output=json >"$TMP/m.json"
# (a sanitizer's runtime has memory of its own: then only the counts hold)
sanitized=0
grep -aq -e __asan_init -e __tsan_init "$SLUICED" && sanitized=1
python3 - "$TMP/m.json" "$base" "$rss" "$sanitized" "$idle" <<'PY' || die "memory: $(cat "$TMP/m.json")"
import json, sys
s = json.load(open(sys.argv[1]))
base, rss = int(sys.argv[2]) * 1024, int(sys.argv[3]) * 1024
idle = int(sys.argv[5]) * 1024
assert s["total"]["resident_blocks"] == s["capacity_blocks"] == 256, s["total"]
# what it held idle, the data area plus metadata, plus 4 MiB for stacks,
# buffers and the heap
limit = idle + s["memory_bytes"] + s["metadata_bytes"] + (4 << 20)
if sys.argv[4] == "0":
    assert rss <= limit, "RssAnon %d > %d" % (rss, limit)
    assert rss >= 16 << 20, "RssAnon %d: the data area is not in use?" % rss
PY
kill -TERM $mpid
wait $mpid || die "memory daemon exited $?"

# Socket activation: systemd-socket-activate listens and passes the socket.
if command -v systemd-socket-activate >/dev/null; then
  asock=$TMP/act.sock
  systemd-socket-activate -l "$asock" "$SLUICED" --memory 1M --quiet 2>"$TMP/alog" &
  apid=$!
  cleanup_push "kill $apid"
  wait_for_path "$asock"
  "$PROBE" "$asock" read "$TMP/b.img" 0 4096 | cmp - <(head -c 4096 "$TMP/b.img") \
    || die "socket-activated daemon: $(cat "$TMP/alog")"
  grep -q "the socket systemd passed" "$TMP/alog" || die "did not use the passed socket"
  kill -TERM $apid
  wait $apid || die "socket-activated daemon exited $?"
fi
echo ok
