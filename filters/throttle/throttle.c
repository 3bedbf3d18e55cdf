/* throttle: limit a disk's request rate (IOPS) and bandwidth (bytes/s).
 *
 * Two token buckets, refilled continuously at the limit and holding at most
 * `burst` tokens.  A request takes its tokens (1 op; its length in bytes
 * for reads and writes) and, if a bucket goes negative, sleeps until the
 * debt is repaid.  Charging first and sleeping after keeps the long-run
 * rate at the limit whatever the request sizes, and lets an idle disk
 * absorb a short burst.  Flush and block status are not charged.
 *
 *   iops=N          requests per second (0 = unlimited)
 *   bps=SIZE        bytes per second, K/M/G suffixes (0 = unlimited)
 *   burst=N         requests that may pass at once (default iops/10, >= 1)
 *   burst-bytes=SIZE  bytes that may pass at once (default bps/10) */
#include <pthread.h>

#include "filter-util.h"

struct bucket {
  double rate, cap, tokens;
  uint64_t last_ns;
};

struct throttle {
  double iops, bps, burst, burst_bytes;
  pthread_mutex_t lock;
  bool ready;
  struct bucket ops, bytes;
};

static int th_config(void *inst, const char *key, const char *v)
{
  struct throttle *t = inst;
  uint64_t n = 0;
  int r;
  if (strcmp(key, "iops") == 0)
    return fu_parse_double("throttle", key, v, 0, 1e9, &t->iops);
  if (strcmp(key, "burst") == 0)
    return fu_parse_double("throttle", key, v, 1, 1e9, &t->burst);
  if (strcmp(key, "bps") == 0 || strcmp(key, "burst-bytes") == 0) {
    if ((r = fu_parse_size("throttle", key, v, &n)) < 0)
      return r;
    *(key[0] == 'b' && key[1] == 'p' ? &t->bps : &t->burst_bytes) = (double)n;
    return 0;
  }
  return host->error(EINVAL, "unknown parameter '%s' (expected iops, bps, "
                     "burst, burst-bytes)", key);
}

static void bucket_init(struct bucket *b, double rate, double cap)
{
  b->rate = rate;
  b->cap = cap;
  b->tokens = cap;
  b->last_ns = host->now_ns();
}

static int th_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct throttle *t = inst;
  if (t->iops == 0 && t->bps == 0)
    return host->error(EINVAL, "give iops=N and/or bps=SIZE");
  if (t->burst == 0)
    t->burst = t->iops / 10 >= 1 ? t->iops / 10 : 1;
  if (t->burst_bytes == 0)
    t->burst_bytes = t->bps / 10;
  bucket_init(&t->ops, t->iops, t->burst);
  bucket_init(&t->bytes, t->bps, t->burst_bytes);
  pthread_mutex_init(&t->lock, NULL);
  t->ready = true;
  return 0;
}

/* Charge COST and return how long the caller must wait (ns). */
static uint64_t charge(struct bucket *b, double cost, uint64_t now)
{
  if (b->rate <= 0)
    return 0;
  b->tokens += (double)(now - b->last_ns) * 1e-9 * b->rate;
  if (b->tokens > b->cap)
    b->tokens = b->cap;
  b->last_ns = now;
  b->tokens -= cost;
  return b->tokens >= 0 ? 0 : (uint64_t)(-b->tokens / b->rate * 1e9);
}

static void throttle_n(struct throttle *t, unsigned ops, uint64_t bytes)
{
  pthread_mutex_lock(&t->lock);
  uint64_t now = host->now_ns();
  uint64_t w1 = charge(&t->ops, ops, now);
  uint64_t w2 = charge(&t->bytes, (double)bytes, now);
  pthread_mutex_unlock(&t->lock);
  uint64_t wait = w1 > w2 ? w1 : w2;
  if (wait)
    fu_sleep_ns(wait);
}

static void throttle(struct throttle *t, uint64_t bytes)
{
  throttle_n(t, 1, bytes);
}

static int th_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  throttle(inst, len);
  return sl_next_pread(next, buf, len, off, flags);
}

/* A batch (filter API 1.2): charged as its reads and bytes together, then
 * passed on whole, so that the cache filter below still gets it as one. */
static int th_pread_batch(void *inst, struct sl_next *next, struct sl_read_vec *v,
                          unsigned count, uint32_t flags)
{
  uint64_t bytes = 0;
  for (unsigned i = 0; i < count; i++)
    bytes += v[i].len;
  throttle_n(inst, count, bytes);
  return sl_next_pread_batch(next, v, count, flags);
}

static int th_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{
  throttle(inst, len);
  return sl_next_pwrite(next, buf, len, off, flags);
}

static int th_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{
  throttle(inst, 0);
  return sl_next_discard(next, off, len, flags);
}

static int th_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{
  throttle(inst, 0);
  return sl_next_write_zeroes(next, off, len, flags);
}

static void th_close(void *inst, struct sl_next *next)
{
  struct throttle *t = inst;
  if (t->ready)
    pthread_mutex_destroy(&t->lock);
}

/* Batches go on whole (th_pread_batch): the answer is the level below's. */
static int th_query(void *inst, const char *what, uint32_t version, void *out,
                    size_t out_size)
{
  (void)inst;
  return fu_pread_batch_query("throttle", SL_PREAD_BATCH_PASS, what, version, out,
                              out_size);
}

static const struct sl_filter throttle_filter = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "throttle",
  .description = "IOPS and bandwidth limits (token buckets with burst)",
  .config_help = "iops=N bps=SIZE burst=N burst-bytes=SIZE",
  .filter_class = SL_FILTER_CLASS_THROTTLE,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct throttle),
  .load = fu_load,
  .config = th_config,
  .config_complete = th_config_complete,
  .close = th_close,
  .pread = th_pread, .pread_batch = th_pread_batch, .pwrite = th_pwrite,
  .discard = th_discard, .write_zeroes = th_zero,
  .query = th_query,
};

SL_REGISTER_FILTER(throttle_filter)
