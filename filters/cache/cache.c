/* cache: read a disk's backing layers through sluiced, the host cache
 * daemon, so that every clone of a golden image on the host shares one
 * cached copy of it (DESIGN.md, "The host cache daemon").
 *
 * For a read, block status names the layer that holds each extent and the
 * offset in that layer's file.  Extents in read-only layers are asked of
 * the daemon, all of one request in one message; everything else (the
 * writable top layer, zeros, holes, and whatever the daemon does not
 * serve) is read from next, adjacent pieces together.  A batch of reads
 * (pread_batch, filter API 1.2: the NBD export's burst of guest reads) is
 * planned the same way and all its pieces go in one message, so the burst
 * costs one round trip to the daemon, not one per read.  The filter links
 * nothing of libsluice: the client of the daemon is the host table's
 * (cache_attach, cache_read, ...).
 *
 * The daemon is an accelerator, never a dependency: absent at open, killed
 * mid-run, or slower than the deadline, the piece is read from next and
 * the request never fails because of the cache; the client reconnects in
 * the background.
 *
 *   mode=shared|off   shared (default): read-only layers through the
 *                     daemon; off: pass everything through
 *   private=on|off    also cache the writable top layer, in a namespace of
 *                     this disk alone; written through to next, and the
 *                     bytes written, discarded or zeroed are invalidated
 *   socket=PATH       the daemon's socket (default /run/sluice/sluiced.sock)
 *   deadline-ms=N     how long a read waits for the daemon (default 5000)
 */
#include "filter-util.h"

#define MAX_SEGS 128u
#define BATCH_SEGS 512u            /* pieces of one batch's requests */
#define DEFAULT_DEADLINE_MS 5000

struct cache {
  bool off, private_layer;
  char *socket;
  uint64_t deadline_ns;
  struct sl_cache_disk *cd;
};

static bool host_has_cache(void)
{
  return host->struct_size >= offsetof(struct sl_filter_host, cache_stats) +
                              sizeof host->cache_stats;
}

static int parse_bool(const char *key, const char *v, bool *out)
{
  if (strcmp(v, "on") == 0 || strcmp(v, "yes") == 0 || strcmp(v, "1") == 0)
    *out = true;
  else if (strcmp(v, "off") == 0 || strcmp(v, "no") == 0 || strcmp(v, "0") == 0)
    *out = false;
  else
    return host->error(EINVAL, "%s=%s: expected on or off", key, v);
  return 0;
}

static int ca_config(void *inst, const char *key, const char *v)
{
  struct cache *c = inst;
  if (strcmp(key, "mode") == 0) {
    if (strcmp(v, "shared") == 0)
      c->off = false;
    else if (strcmp(v, "off") == 0)
      c->off = true;
    else
      return host->error(EINVAL, "mode=%s: expected shared or off", v);
    return 0;
  }
  if (strcmp(key, "private") == 0)
    return parse_bool(key, v, &c->private_layer);
  if (strcmp(key, "socket") == 0) {
    free(c->socket);
    if (!(c->socket = strdup(v)))
      return host->error(ENOMEM, "out of memory");
    return 0;
  }
  if (strcmp(key, "deadline-ms") == 0) {
    double ms = 0;
    int r = fu_parse_double("cache", key, v, 1, 600000, &ms);
    if (r == 0)
      c->deadline_ns = (uint64_t)(ms * 1e6);
    return r;
  }
  return host->error(EINVAL, "unknown parameter '%s' (expected mode, private, "
                     "socket, deadline-ms)", key);
}

static int ca_open(void *inst, struct sl_next *next, const struct sl_filter_env *env)
{
  struct cache *c = inst;
  if (!c->deadline_ns)
    c->deadline_ns = DEFAULT_DEADLINE_MS * 1000000ull;
  if (c->off)
    return 0;
  if (!host_has_cache())
    return host->error(ENOTSUP, "this sluice has no cache service in its host table");
  if (c->private_layer && env->read_only)
    c->private_layer = false;
  int r = host->cache_attach(next, c->socket, c->private_layer ? SL_CACHE_PRIVATE : 0,
                             &c->cd);
  if (r == -ENOTSUP) {
    /* Caching what a filter below transforms would serve the wrong bytes;
     * the disk still works, uncached. */
    fprintf(stderr, "sluice: filter %s: not caching: %s\n", env->instance_name,
            host->last_error());
    c->cd = NULL;
    return 0;
  }
  return r;
}

static void ca_close(void *inst, struct sl_next *next)
{
  struct cache *c = inst;
  (void)next;
  if (c->cd) {
    /* One line for the log: what the daemon did for this disk. */
    struct sl_cache_stats st;
    host->cache_stats(c->cd, &st);
    fprintf(stderr, "sluice: cache: %" PRIu64 " layer reads, %" PRIu64
            " served by sluiced (%" PRIu64 " hits), %" PRIu64 " from the image, %"
            PRIu64 " timeouts, %" PRIu64 " connections\n", st.reads, st.served,
            st.hits, st.fallbacks, st.timeouts, st.connects);
    host->cache_detach(c->cd);
  }
  c->cd = NULL;
  free(c->socket);
  c->socket = NULL;
}

struct seg {
  uint64_t off;
  uint64_t len;
  int rd;                /* index into the batch, -1: read from next */
};

/* Read [off, off+len) of the segments S[0..n) that the daemon did not
 * serve from next, adjacent ones in one call. */
static int read_rest(struct sl_next *next, uint8_t *buf, uint64_t base,
                     const struct seg *s, unsigned n,
                     const struct sl_cache_read *rd, uint32_t flags)
{
  unsigned i = 0;
  while (i < n) {
    if (s[i].rd >= 0 && rd[s[i].rd].status == 0) {
      i++;
      continue;
    }
    uint64_t start = s[i].off, end = s[i].off + s[i].len;
    for (i++; i < n && !(s[i].rd >= 0 && rd[s[i].rd].status == 0); i++)
      end = s[i].off + s[i].len;
    int r = sl_next_pread(next, buf + (start - base), (size_t)(end - start), start,
                          flags);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Plan [off, off+len) of BUF (the request's bytes): append its pieces to
 * S (at most SCAP) and the daemon's share of them to RD (at most RCAP),
 * as block status places them.  Returns how many bytes from OFF were
 * planned: all of them, or, when the pieces do not fit, with WHOLE none
 * (*NS and *NR are then where they were: a batch's entry waits for the
 * next message), else those planned up to the cap (at least one piece's
 * when S and RD start empty): the read goes on from there in another
 * round, so a fragmented read costs one block status call per extent. */
static uint64_t plan(struct sl_next *next, uint8_t *buf, uint64_t off, uint64_t len,
                     struct seg *s, unsigned *ns, unsigned scap,
                     struct sl_cache_read *rd, unsigned *nr, unsigned rcap, bool whole)
{
  unsigned ns0 = *ns, nr0 = *nr;
  uint64_t pos = off, end = off + len;
  while (pos < end) {
    struct sl_extent e;
    if (sl_next_block_status(next, pos, end - pos, &e) < 0 || e.length == 0) {
      /* Cannot tell where the bytes live: next reads them. */
      if (*ns == scap)
        goto full;
      s[(*ns)++] = (struct seg){.off = pos, .len = end - pos, .rd = -1};
      return len;
    }
    uint64_t elen = e.length < end - pos ? e.length : end - pos;
    if (e.type == SL_EXTENT_DATA && e.depth >= 0) {
      for (uint64_t d = 0; d < elen;) {
        if (*ns == scap || *nr == rcap) {
          pos += d;
          goto full;
        }
        uint32_t piece = (uint32_t)(elen - d < SL_CACHE_MAX_READ ? elen - d
                                                                 : SL_CACHE_MAX_READ);
        rd[*nr] = (struct sl_cache_read){.depth = e.depth,
                                         .file_offset = e.file_offset + d,
                                         .length = piece,
                                         .buf = buf + (pos + d - off)};
        s[(*ns)++] = (struct seg){.off = pos + d, .len = piece, .rd = (int)(*nr)++};
        d += piece;
      }
    } else if (*ns > ns0 && s[*ns - 1].rd < 0) {
      s[*ns - 1].len += elen;
    } else {
      if (*ns == scap)
        goto full;
      s[(*ns)++] = (struct seg){.off = pos, .len = elen, .rd = -1};
    }
    pos += elen;
  }
  return len;
full:
  if (!whole)
    return pos - off;
  *ns = ns0;
  *nr = nr0;
  return 0;
}

static int ca_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  struct cache *c = inst;
  if (!c->cd)
    return sl_next_pread(next, buf, len, off, flags);
  struct seg s[MAX_SEGS];
  struct sl_cache_read rd[MAX_SEGS];
  /* In rounds of at most MAX_SEGS pieces (one message each): a large read
   * of a fragmented image goes on where the last round's plan stopped. */
  for (uint64_t done = 0; done < len;) {
    unsigned ns = 0, nr = 0;
    uint8_t *b = (uint8_t *)buf + done;
    uint64_t got = plan(next, b, off + done, len - done, s, &ns, MAX_SEGS, rd, &nr,
                        MAX_SEGS, false);
    if (nr > 0)
      host->cache_read(c->cd, rd, nr, c->deadline_ns);
    int r = read_rest(next, b, off + done, s, ns, rd, flags);
    if (r < 0)
      return r;
    done += got;
  }
  return 0;
}

/* The reads of a batch: the daemon's pieces of all of them in one message
 * (one round trip for the batch, which is what it is for), then each
 * request's other pieces from next.  Entries whose pieces do not fit
 * beside the others wait for the next message; one that does not fit
 * alone is read as pread does. */
static int ca_pread_batch(void *inst, struct sl_next *next, struct sl_read_vec *v,
                          unsigned count, uint32_t flags)
{
  struct cache *c = inst;
  if (!c->cd)
    return sl_next_pread_batch(next, v, count, flags);
  struct seg s[BATCH_SEGS];
  struct sl_cache_read rd[SL_CACHE_MAX_BATCH];
  unsigned first[SL_READ_BATCH_MAX + 1];  /* entry i's pieces: s[first[i - done]...] */
  int failed = 0;
  unsigned done = 0;
  while (done < count) {
    unsigned ns = 0, nr = 0, k = done;
    for (; k < count && k - done < SL_READ_BATCH_MAX; k++) {
      first[k - done] = ns;
      if (plan(next, v[k].buf, v[k].off, v[k].len, s, &ns, BATCH_SEGS, rd, &nr,
               SL_CACHE_MAX_BATCH, true) < v[k].len)
        break;
    }
    first[k - done] = ns;
    if (k == done) {
      /* too many pieces for one message by itself */
      v[k].status = ca_pread(inst, next, v[k].buf, v[k].len, v[k].off, flags);
      failed += v[k].status < 0;
      done++;
      continue;
    }
    if (nr > 0)
      host->cache_read(c->cd, rd, nr, c->deadline_ns);
    for (unsigned i = done; i < k; i++) {
      unsigned a = first[i - done], b = first[i - done + 1];
      int r = read_rest(next, v[i].buf, v[i].off, s + a, b - a, rd, flags);
      v[i].status = r < 0 ? r : 0;
      failed += r < 0;
    }
    done = k;
  }
  return failed;
}

/* private=on: forget the top layer's file bytes under [off, off+len). */
static void invalidate_top(struct cache *c, struct sl_next *next, uint64_t off,
                           uint64_t len)
{
  uint64_t pos = off, end = off + len;
  while (pos < end) {
    struct sl_extent e;
    if (sl_next_block_status(next, pos, end - pos, &e) < 0 || e.length == 0) {
      host->cache_invalidate(c->cd, 0, 0, UINT64_MAX);  /* all of it */
      return;
    }
    if (e.type == SL_EXTENT_DATA && e.depth == 0)
      host->cache_invalidate(c->cd, 0, e.file_offset, e.length);
    pos += e.length;
  }
}

static bool caching_top(const struct cache *c) { return c->cd && c->private_layer; }

static int ca_pwrite(void *inst, struct sl_next *next, const void *buf, size_t len,
                     uint64_t off, uint32_t flags)
{
  struct cache *c = inst;
  int r = sl_next_pwrite(next, buf, len, off, flags);
  if (caching_top(c))
    invalidate_top(c, next, off, len);    /* where the bytes are now */
  return r;
}

static int ca_discard(void *inst, struct sl_next *next, uint64_t off, uint64_t len,
                      uint32_t flags)
{
  struct cache *c = inst;
  if (caching_top(c))
    invalidate_top(c, next, off, len);    /* where they were */
  int r = sl_next_discard(next, off, len, flags);
  if (caching_top(c))
    invalidate_top(c, next, off, len);
  return r;
}

static int ca_zero(void *inst, struct sl_next *next, uint64_t off, uint64_t len,
                   uint32_t flags)
{
  struct cache *c = inst;
  if (caching_top(c))
    invalidate_top(c, next, off, len);
  int r = sl_next_write_zeroes(next, off, len, flags);
  if (caching_top(c))
    invalidate_top(c, next, off, len);
  return r;
}

/* A batch is one message to the daemon only with a daemon attached
 * (c->cd, set in open); with mode=off, or when what is below is not the
 * image's bytes, it goes on to next and is split at the image. */
static int ca_query(void *inst, const char *what, uint32_t version, void *out,
                    size_t out_size)
{
  const struct cache *c = inst;
  return fu_pread_batch_query("cache", c->cd ? SL_PREAD_BATCH_ONE : SL_PREAD_BATCH_SPLIT,
                              what, version, out, out_size);
}

static const struct sl_filter cache_filter = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "cache",
  .description = "reads backing layers through sluiced, the host cache daemon",
  .config_help = "mode=shared|off private=on|off socket=PATH deadline-ms=N",
  .filter_class = SL_FILTER_CLASS_CACHE,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct cache),
  .load = fu_load,
  .config = ca_config,
  .open = ca_open,
  .close = ca_close,
  .pread = ca_pread,
  .pread_batch = ca_pread_batch,
  .pwrite = ca_pwrite,
  .discard = ca_discard,
  .write_zeroes = ca_zero,
  .query = ca_query,
};

SL_REGISTER_FILTER(cache_filter)
