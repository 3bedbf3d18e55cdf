/* stats: per-operation counts, bytes, errors and latency histograms.
 *
 * Counters are atomics updated on the request path without a lock.  They
 * can be read while the disk is in use: with file=PATH the filter rewrites
 * PATH (atomically, via rename) at most every interval= seconds from the
 * request path, and always at release and close.  At close the summary is
 * also printed on stderr unless print=no.
 *
 * Latency buckets are powers of two in microseconds: bucket b counts
 * requests that took [2^(b-1), 2^b) us (bucket 0: under 1 us). */
#include <stdatomic.h>
#include <unistd.h>

#include "filter-util.h"

enum { OP_READ, OP_WRITE, OP_FLUSH, OP_DISCARD, OP_ZERO, OP_BLOCK_STATUS, N_OPS };
static const char *const op_names[N_OPS] = {
  "read", "write", "flush", "discard", "zero", "block_status",
};
#define N_BUCKETS 32

struct op_stats {
  atomic_uint_fast64_t ops, bytes, errors, ns;
  atomic_uint_fast64_t hist[N_BUCKETS];
};

struct stats {
  char *file;
  char *name;
  double interval;
  bool quiet;                 /* print=no */
  atomic_uint_fast64_t last_write_ns;
  struct op_stats op[N_OPS];
};

static int st_config(void *inst, const char *key, const char *value)
{
  struct stats *s = inst;
  if (strcmp(key, "file") == 0) {
    free(s->file);
    s->file = strdup(value);
    return s->file ? 0 : host->error(ENOMEM, "out of memory");
  }
  if (strcmp(key, "interval") == 0)
    return fu_parse_double("stats", key, value, 0, 86400, &s->interval);
  if (strcmp(key, "print") == 0) {
    if (strcmp(value, "yes") && strcmp(value, "no"))
      return host->error(EINVAL, "print=%s: expected yes or no", value);
    s->quiet = value[0] == 'n';
    return 0;
  }
  return host->error(EINVAL, "unknown parameter '%s' (expected file, "
                     "interval, print)", key);
}

static int st_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct stats *s = inst;
  if (!s->name && !(s->name = strdup(env->instance_name)))
    return host->error(ENOMEM, "out of memory");
  if (s->file) {
    char *p = fu_resolve(env, s->file);
    if (!p)
      return host->error(ENOMEM, "out of memory");
    free(s->file);
    s->file = p;
  }
  return 0;
}

static int st_open(void *inst, struct sl_next *next,
                   const struct sl_filter_env *env)
{
  struct stats *s = inst;
  /* Defaults for what config did not set (the instance starts zeroed). */
  if (s->interval == 0)
    s->interval = 1.0;
  return 0;
}

static void report(struct stats *s, FILE *f)
{
  fprintf(f, "stats %s:\n", s->name);
  for (int i = 0; i < N_OPS; i++) {
    struct op_stats *o = &s->op[i];
    uint64_t ops = atomic_load(&o->ops);
    fprintf(f, "  %s ops %" PRIu64 " bytes %" PRIu64 " errors %" PRIu64,
            op_names[i], ops, (uint64_t)atomic_load(&o->bytes),
            (uint64_t)atomic_load(&o->errors));
    if (ops) {
      fprintf(f, " mean_us %.1f hist_us", atomic_load(&o->ns) / 1e3 / ops);
      for (int b = 0; b < N_BUCKETS; b++) {
        uint64_t c = atomic_load(&o->hist[b]);
        if (c)
          fprintf(f, " <%" PRIu64 ":%" PRIu64, (uint64_t)1 << b, c);
      }
    }
    fputc('\n', f);
  }
}

static void write_file(struct stats *s)
{
  if (!s->file)
    return;
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp%d", s->file, (int)getpid());
  FILE *f = fopen(tmp, "we");
  if (!f)
    return;
  report(s, f);
  if (fclose(f) == 0)
    rename(tmp, s->file);
  else
    unlink(tmp);
}

static void maybe_write_file(struct stats *s, uint64_t now)
{
  uint64_t last = atomic_load(&s->last_write_ns);
  if (!s->file || now - last < (uint64_t)(s->interval * 1e9))
    return;
  /* One request wins the right to rewrite the file this interval. */
  if (atomic_compare_exchange_strong(&s->last_write_ns, &last, now))
    write_file(s);
}

static int account(struct stats *s, int op, uint64_t start, uint64_t bytes,
                   int r)
{
  uint64_t now = host->now_ns(), ns = now - start, us = ns / 1000;
  struct op_stats *o = &s->op[op];
  atomic_fetch_add_explicit(&o->ops, 1, memory_order_relaxed);
  if (r < 0)
    atomic_fetch_add_explicit(&o->errors, 1, memory_order_relaxed);
  else
    atomic_fetch_add_explicit(&o->bytes, bytes, memory_order_relaxed);
  atomic_fetch_add_explicit(&o->ns, ns, memory_order_relaxed);
  int b = us ? 64 - __builtin_clzll(us) : 0;
  atomic_fetch_add_explicit(&o->hist[b < N_BUCKETS ? b : N_BUCKETS - 1], 1,
                            memory_order_relaxed);
  maybe_write_file(s, now);
  return r;
}

static int st_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  uint64_t t = host->now_ns();
  return account(inst, OP_READ, t, len, sl_next_pread(next, buf, len, off, flags));
}

/* A batch (filter API 1.2) is passed on whole, so that the cache filter
 * below still gets it as one; each read counts as a read, with the
 * batch's time as its latency (what its caller waited). */
static int st_pread_batch(void *inst, struct sl_next *next, struct sl_read_vec *v,
                          unsigned count, uint32_t flags)
{
  uint64_t t = host->now_ns();
  int failed = sl_next_pread_batch(next, v, count, flags);
  for (unsigned i = 0; i < count; i++)
    account(inst, OP_READ, t, v[i].len, v[i].status);
  return failed;
}

static int st_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{
  uint64_t t = host->now_ns();
  return account(inst, OP_WRITE, t, len, sl_next_pwrite(next, buf, len, off, flags));
}

static int st_flush(void *inst, struct sl_next *next, uint32_t flags)
{
  uint64_t t = host->now_ns();
  return account(inst, OP_FLUSH, t, 0, sl_next_flush(next, flags));
}

static int st_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{
  uint64_t t = host->now_ns();
  return account(inst, OP_DISCARD, t, len, sl_next_discard(next, off, len, flags));
}

static int st_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{
  uint64_t t = host->now_ns();
  return account(inst, OP_ZERO, t, len, sl_next_write_zeroes(next, off, len, flags));
}

static int st_block_status(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{
  uint64_t t = host->now_ns();
  int r = sl_next_block_status(next, off, len, ext);
  return account(inst, OP_BLOCK_STATUS, t, r < 0 ? 0 : ext->length, r);
}

static int st_release(void *inst, struct sl_next *next)
{
  write_file(inst);
  return 0;
}

static void st_close(void *inst, struct sl_next *next)
{
  struct stats *s = inst;
  if (next) {
    write_file(s);
    uint64_t total = 0;
    for (int i = 0; i < N_OPS; i++)
      total += atomic_load(&s->op[i].ops);
    if (!s->quiet && total > 0)   /* a disk opened and closed unused says nothing */
      report(s, stderr);
  }
  free(s->file);
  free(s->name);
}

/* Batches go on whole (st_pread_batch): the answer is the level below's. */
static int st_query(void *inst, const char *what, uint32_t version, void *out,
                    size_t out_size)
{
  (void)inst;
  return fu_pread_batch_query("stats", SL_PREAD_BATCH_PASS, what, version, out,
                              out_size);
}

static const struct sl_filter stats = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "stats",
  .description = "per-operation counts, bytes and latency histograms",
  .config_help = "file=PATH      rewrite PATH with the figures while in use\n"
                 "interval=SECS  at most this often (default 1)\n"
                 "print=yes|no   print the figures on stderr at close (yes)",
  .filter_class = SL_FILTER_CLASS_OBSERVE,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct stats),
  .load = fu_load,
  .config = st_config,
  .config_complete = st_config_complete,
  .open = st_open,
  .close = st_close,
  .pread = st_pread, .pread_batch = st_pread_batch,
  .pwrite = st_pwrite, .flush = st_flush,
  .discard = st_discard, .write_zeroes = st_zero,
  .block_status = st_block_status,
  .release = st_release,
  .query = st_query,
};

SL_REGISTER_FILTER(stats)
