#!/usr/bin/env bash
# The mutation check: does the test suite notice when a feature breaks?
#
# Each mutation below is a deliberate breakage of one feature (a write that
# does not write, a flush that does not flush, a range check removed, ...).
# The script copies the tree at HEAD into a scratch directory, builds it
# once, then for each mutation edits one file, rebuilds (incrementally),
# runs the tests named for that mutation's layer (stopping at the first
# failure), and puts the file back.  A mutation is CAUGHT when a test of
# the normal suite (any suite but fuzz) fails or times out; MISSED when all
# of them pass; STALE when its source line is no longer found exactly once
# (code moved: the mutation must be updated, never skipped silently);
# BROKEN when the mutated tree does not build (the mutation must be fixed).
# With --full, a missed mutation is run against the whole plain suite
# before it is declared missed.
#
# Not part of every CI run: a full pass takes tens of minutes.
#   scripts/mutate.sh [--full] [--keep] [--only ID[,ID...]] [--table FILE]
# Exit 0 only if every mutation was caught.  The table (markdown) goes to
# stdout and, with --table, to FILE.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
full=0 keep=0 only="" table=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --full) full=1 ;;
    --keep) keep=1 ;;
    --only) only=$2; shift ;;
    --table) table=$2; shift ;;
    -h|--help) sed -n 2,21p "$0"; exit 0 ;;
    *) echo "mutate.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

scratch=$(mktemp -d /tmp/sluice-mutate.XXXXXX)
[[ $keep -eq 1 ]] || trap 'rm -rf "$scratch"' EXIT
echo "mutate.sh: scratch copy of $(git rev-parse --short HEAD) in $scratch" >&2
mkdir "$scratch/src"
git archive HEAD | tar -x -C "$scratch/src"
# The simulator tests read ../shared beside the tree, as from /work/main.
[[ -d $root/../shared ]] && ln -s "$(cd "$root/../shared" && pwd)" "$scratch/shared"
(cd "$scratch/src" && scripts/build.sh build >"$scratch/build.log" 2>&1) || {
  echo "mutate.sh: the unmutated tree does not build (see $scratch/build.log)" >&2
  keep=1; exit 2; }

python3 - "$scratch/src" "$full" "$only" "$table" <<'PY'
import json, os, subprocess, sys

src, full, only, table = sys.argv[1], sys.argv[2] == "1", sys.argv[3], sys.argv[4]
build = os.path.join(src, "build")

# (id, what breaks, file, [(exact old text, new text)...], tests to run first)
M = [
 ("write-noop", "qcow2 write returns success without writing", "lib/image/qcow2.c",
  [("  int r = qcow2_write(s, buf, len, off);\n",
    "  int r = 0; (void)s; (void)buf; (void)len; (void)off;\n")],
  ["test-cli-io-roundtrip", "test-image-qemu-interop"]),
 ("flush-noop", "qcow2 flush writes back no metadata", "lib/image/qcow2.c",
  [("    r = write_metadata(s);\n  }\n  /* The final sync",
    "    r = 0;\n  }\n  /* The final sync")],
  ["test-image-crash"]),
 ("discard-noop", "qcow2 discard does nothing", "lib/image/qcow2.c",
  [("  return qcow2_zero_or_discard(img->priv, off, len, true, false);\n",
    "  (void)img; (void)off; (void)len; return 0;\n")],
  ["test-cli-io-roundtrip", "test-image-qcow2"]),
 ("refcount-dropped", "cluster allocation does not raise the refcount",
  "lib/image/qcow2-refcount.c",
  [("    r = qcow2_update_refcount(s, c + i, 1);\n", "    r = 0;\n")],
  ["test-cli-io-roundtrip", "test-image-qemu-interop"]),
 ("backing-not-read", "unallocated qcow2 clusters read zeros, not the backing layer",
  "lib/image/qcow2-cluster.c",
  [("      r = sl_image_read_backing(s->img, p, n, off);\n",
    "      memset(p, 0, n);\n")],
  ["test-image-qemu-interop"]),
 ("layer-depth-ignored", "block status reports every extent as the top layer's",
  "lib/image/image.c",
  [("      ext->depth = l->depth - img->depth;\n", "      ext->depth = 0;\n")],
  ["test-image-qemu-interop", "test-export-nbd-clients"]),
 ("layer-id-ignored", "layer identity ignores the inode", "lib/image/image.c",
  [("  id->ino = (uint64_t)img->st.st_ino;\n", "  id->ino = 0;\n")],
  ["test-image-qcow2"]),
 ("range-check-removed", "image I/O past the end of the image is not refused",
  "lib/image/image.c",
  [("  if (!sl_add_ok(off, len, &end) || end > img->size)\n",
    "  if (!sl_add_ok(off, len, &end))\n")],
  ["test-image-qcow2"]),
 ("read-only-ignored", "an image opened read-only accepts writes", "lib/image/image.c",
  [("  if (img->read_only)\n    return sl_error(EROFS,",
    "  if (0)\n    return sl_error(EROFS,")],
  ["test-image-qcow2"]),
 ("nbd-read-only-flag", "a read-only NBD export does not say so in the handshake",
  "lib/export/nbd-handshake.c",
  [("  if (c->opts->read_only || sl_disk_read_only(h)) {\n", "  if (0) {\n")],
  ["test-export-nbd-clients"]),
 ("nbd-read-error-as-data", "a failed read is replied to as data", "lib/export/nbd-server.c",
  [("  int r = sl_disk_pread(c->h, rq->data, rq->length, rq->offset, 0);\n  if (r < 0) {\n",
    "  int r = sl_disk_pread(c->h, rq->data, rq->length, rq->offset, 0);\n  if (r < 0 && 0) {\n")],
  ["test-export-nbd-filters"]),
 ("nbd-short-read-reply", "a structured read reply carries only half the data",
  "lib/export/nbd-server.c",
  [("                       8 + rq->length);\n", "                       8 + rq->length / 2);\n"),
   ("    rq->iov[rq->iovcnt++] = (struct iovec){rq->data, rq->length};\n",
    "    rq->iov[rq->iovcnt++] = (struct iovec){rq->data, rq->length / 2};\n")],
  ["test-export-nbd-clients", "test-export-nbd-malformed"]),
 ("fuse-punch-noop", "FUSE punch-hole (discard) does nothing", "lib/export/fuse.c",
  [("    return sl_disk_discard(fx->h, (uint64_t)off, (uint64_t)len);\n", "    return 0;\n")],
  ["test-export-fuse-ext4"]),
 ("overlap-check-off", "the qcow2 metadata overlap check lets every write through",
  "lib/image/qcow2-refcount.c",
  [("  unsigned kind = overlap_kind(s, ~ign, off, len);\n  if (!kind)\n",
    "  unsigned kind = overlap_kind(s, ~ign, off, len);\n  if (!kind || 1)\n")],
  ["test-image-overlap"]),
 ("bitmap-store-unchecked", "the dirty-bitmap store writes its data without the overlap check",
  "lib/image/qcow2-bitmap.c",
  [("      r = qcow2_write_checked(s, 0, buf, cs, off);\n",
    "      r = qcow2_io_write(s, buf, cs, off);\n"),
   ("    r = qcow2_write_checked(s, 0, tb, SL_ROUND_UP(tbytes, cs), toff);\n",
    "    r = qcow2_io_write(s, tb, SL_ROUND_UP(tbytes, cs), toff);\n")],
  ["test-image-overlap"]),
 ("qcow2-v2-zero-flag", "version 2 images get the v3 zero flag in their L2 entries",
  "lib/image/qcow2-cluster.c",
  [("      else if (s->version < 3)\n        ne = 0;\n", "      else if (0)\n        ne = 0;\n"),
   ("  if (s->version < 3 && !discard &&\n", "  if (0 && !discard &&\n")],
  ["test-image-qcow2-v2"]),
 ("drain-no-wait", "drain does not wait for requests in flight", "lib/disk/disk.c",
  [("  while (atomic_load(&d->in_flight) > 0)\n    pthread_cond_wait(&d->cond, &d->lock);\n",
    "")],
  ["test-disk-drain-threads", "test-export-serve-multi"]),
 ("module-digest-skipped", "a module whose bytes changed after install still loads",
  "lib/disk/trust.c",
  [("    if (strcmp(digest, e.sha256) != 0)\n", "    if (strcmp(digest, e.sha256) != 0 && digest[0] == 'x')\n")],
  ["test-disk-trusted-modules", "test-disk-filters-basic"]),
 ("crypt-no-encrypt", "crypt writes its plaintext (skips the transform)",
  "filters/crypt/crypt.c",
  [("    r = xts(c, true, b, end - start, start / SECTOR);\n", "    r = 0;\n")],
  ["test-filter-crypt-io"]),
 ("crypt-tweak-order", "crypt's XTS tweak has its bytes in the wrong order",
  "filters/crypt/crypt.c",
  [("      iv[i] = (unsigned char)(sector_no >> (8 * i));\n",
    "      iv[15 - i] = (unsigned char)(sector_no >> (8 * i));\n")],
  ["test-filter-crypt-io"]),
 ("crypt-rmw-unlocked", "crypt's read-modify-write of a partial sector takes no exclusive lock",
  "filters/crypt/crypt.c",
  [("  else\n    pthread_rwlock_wrlock(&c->rmw);\n", "  else\n    pthread_rwlock_rdlock(&c->rmw);\n")],
  ["test-disk-stack-threads"]),
 ("image-lock-not-taken", "a writer does not publish its permission lock bytes (QEMU cannot see it)",
  "lib/image/lock.c",
  [("racing, at least one sees the other. */\n  for (int i = 0; i < SL_PERM_BITS; i++) {\n"
    "    int r = 0;\n    if (perm & (1u << i))\n      r = lock_byte(fd, LOCK_PERM_BASE + i);\n",
    "racing, at least one sees the other. */\n  for (int i = 0; i < SL_PERM_BITS; i++) {\n"
    "    int r = 0;\n    if (perm & (1u << i))\n      r = 0;\n")],
  ["test-image-locking"]),
 ("throttle-no-wait", "throttle never delays a request", "filters/throttle/throttle.c",
  [("  if (wait)\n    fu_sleep_ns(wait);\n", "  (void)wait;\n")],
  ["test-filter-throttle-limit"]),
 ("mirror-no-target", "mirror does not write to its target", "filters/mirror/mirror.c",
  [("    int t = m->target ? issue_write(", "    int t = 0 ? issue_write(")],
  ["test-filter-mirror-resync"]),
 ("bench-write-reads", "sluice bench -w reads instead of writing", "tools/cmd-bench.c",
  [("    int r = b->write ? sl_disk_pwrite(b->h, buf, b->bufsize, off, 0)\n",
    "    int r = b->write ? sl_disk_pread(b->h, buf, b->bufsize, off, 0)\n")],
  ["test-cli-bench-writes"]),
 ("bench-no-flush", "sluice bench --flush-interval never flushes", "tools/cmd-bench.c",
  [("    if (r == 0 && b->flush_interval && (i + 1) % b->flush_interval == 0)\n",
    "    if (0 && r == 0 && b->flush_interval && (i + 1) % b->flush_interval == 0)\n")],
  ["test-cli-bench-writes"]),
 ("cache-hit-no-ref", "a twophase hit records no reference", "lib/cache/twophase-shard.c",
  [("  if (!atomic_compare_exchange_strong_explicit(&t->state[s], &st, (uint8_t)(st + ST_REF),\n",
    "  if (1 || !atomic_compare_exchange_strong_explicit(&t->state[s], &st, (uint8_t)(st + ST_REF),\n")],
  ["test-cache-twophase", "test-cache-twophase-shards"]),
 ("cache-ghost-16x", "the twophase ghost allocation is 16 times too large",
  "lib/cache/twophase-shard.c",
  [("  t->ghost_bytes = (size_t)buckets * GHOST_WAYS * sizeof *t->ghost;\n",
    "  t->ghost_bytes = (size_t)buckets * GHOST_WAYS * sizeof *t->ghost * 16;\n")],
  ["test-cache-twophase"]),
 ("cache-ghost-hit-cold", "a ghost hit enters cold instead of hot", "lib/cache/twophase-shard.c",
  [("  int origin = ghost_take(t, key);\n", "  int origin = ghost_take(t, key) && 0;\n")],
  ["test-cache-twophase", "test-cache-twophase-shards"]),
]

def run_tests(names):
    """Run meson tests (plain build, no fuzz); return the list of failures."""
    log = os.path.join(build, "meson-logs", "testlog.json")
    if os.path.exists(log):
        os.unlink(log)
    cmd = ["meson", "test", "-C", build, "--no-suite", "fuzz", "--num-processes", "2"]
    if names:
        cmd += ["--maxfail", "1"] + names
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    failed = []
    if not os.path.exists(log):
        return ["(no test log: meson test did not run)"]
    for line in open(log):
        if line.strip():
            t = json.loads(line)
            if t.get("result") not in ("OK", "SKIP", "EXPECTEDFAIL"):
                failed.append(t["name"])
    return failed

rows, ok = [], True
for mid, what, path, edits, tests in M:
    if only and mid not in only.split(","):
        continue
    f = os.path.join(src, path)
    orig = open(f).read()
    text = orig
    stale = None
    for old, new in edits:
        n = text.count(old)
        if n != 1:
            stale = "found %d times: %r" % (n, old.splitlines()[0] if old.strip() else old)
            break
        text = text.replace(old, new)
    if stale:
        verdict, by = "STALE", stale
    else:
        open(f, "w").write(text)
        try:
            b = subprocess.run(["ninja", "-C", build], capture_output=True, text=True)
            if b.returncode != 0:
                verdict, by = "BROKEN", "does not build: " + \
                    next((l for l in b.stdout.splitlines() if "error:" in l), "?")[:160]
            else:
                failed = run_tests(tests)
                if not failed and full:
                    failed = run_tests([])
                verdict, by = ("CAUGHT", ", ".join(failed)) if failed else ("MISSED", "")
        finally:
            open(f, "w").write(orig)
    ok &= verdict == "CAUGHT"
    print("mutate.sh: %-24s %-7s %s" % (mid, verdict, by), file=sys.stderr, flush=True)
    rows.append((mid, what, path, verdict, by))

# Rebuild the unmutated tree so a kept scratch copy is consistent.
subprocess.run(["ninja", "-C", build], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
out = ["| mutation | what breaks | file | verdict | caught by |",
       "|---|---|---|---|---|"]
out += ["| %s | %s | `%s` | %s | %s |" % r for r in rows]
missed = [r[0] for r in rows if r[3] != "CAUGHT"]
out.append("")
out.append("%d mutations, %d caught%s" % (len(rows), len(rows) - len(missed),
           (": not caught: " + ", ".join(missed)) if missed else ""))
print("\n".join(out))
if table:
    open(table, "w").write("\n".join(out) + "\n")
sys.exit(0 if ok else 1)
PY
