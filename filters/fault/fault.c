/* fault: inject errors and delays, to prove that failures travel up the
 * stack cleanly (tests) and that the disk survives a failing layer below
 * (e.g. a mirror's target).
 *
 *   op=OP[+OP...]   read, write, flush, discard, zero, block_status, all
 *                   (default all)
 *   start=OFF end=OFF  only requests overlapping [start, end) (default all)
 *   prob=P          probability a matching request is hit (default 1)
 *   error=NAME      EIO (default), ENOSPC, EPERM, EROFS, ETIMEDOUT or none
 *   delay=MS        sleep this long before a hit request (default 0)
 *   seed=N          random seed (default 1) for reproducible runs */
#include <pthread.h>

#include "filter-util.h"

enum { F_READ = 1, F_WRITE = 2, F_FLUSH = 4, F_DISCARD = 8, F_ZERO = 16,
       F_BS = 32, F_ALL = 63 };

struct fault {
  unsigned ops;
  uint64_t start, end;
  double prob;
  int error;
  uint64_t delay_ns;
  unsigned seed;
  bool prob_set, end_set, error_set;
  bool ready;                /* config_complete ran: the lock exists */
  pthread_mutex_t lock;
};

static int parse_ops(const char *v, unsigned *out)
{
  static const struct { const char *n; unsigned bit; } names[] = {
    {"read", F_READ}, {"write", F_WRITE}, {"flush", F_FLUSH},
    {"discard", F_DISCARD}, {"zero", F_ZERO}, {"block_status", F_BS},
    {"all", F_ALL},
  };
  *out = 0;
  const char *p = v;
  while (*p) {
    size_t n = strcspn(p, "+");
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++)
      if (strlen(names[i].n) == n && strncmp(p, names[i].n, n) == 0)
        break;
    if (i == sizeof names / sizeof names[0])
      return host->error(EINVAL, "op=%s: unknown operation '%.*s' (expected "
                         "read, write, flush, discard, zero, block_status or "
                         "all, joined with +)", v, (int)n, p);
    *out |= names[i].bit;
    p += n + (p[n] == '+');
  }
  return *out ? 0 : host->error(EINVAL, "op= is empty");
}

static int parse_error(const char *v, int *out)
{
  static const struct { const char *n; int e; } names[] = {
    {"EIO", EIO}, {"ENOSPC", ENOSPC}, {"EPERM", EPERM}, {"EROFS", EROFS},
    {"ETIMEDOUT", ETIMEDOUT}, {"none", 0},
  };
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    if (strcmp(v, names[i].n) == 0) {
      *out = names[i].e;
      return 0;
    }
  return host->error(EINVAL, "error=%s: expected EIO, ENOSPC, EPERM, EROFS, "
                     "ETIMEDOUT or none", v);
}

static int fa_config(void *inst, const char *key, const char *v)
{
  struct fault *f = inst;
  uint64_t n = 0;
  int r;
  if (strcmp(key, "op") == 0)
    return parse_ops(v, &f->ops);
  if (strcmp(key, "start") == 0)
    return fu_parse_size("fault", key, v, &f->start);
  if (strcmp(key, "end") == 0) {
    f->end_set = true;
    return fu_parse_size("fault", key, v, &f->end);
  }
  if (strcmp(key, "prob") == 0) {
    f->prob_set = true;
    return fu_parse_double("fault", key, v, 0, 1, &f->prob);
  }
  if (strcmp(key, "error") == 0) {
    f->error_set = true;
    return parse_error(v, &f->error);
  }
  if (strcmp(key, "delay") == 0) {
    if ((r = fu_parse_size("fault", key, v, &n)) < 0)
      return r;
    f->delay_ns = n * 1000000u;
    return 0;
  }
  if (strcmp(key, "seed") == 0) {
    if ((r = fu_parse_size("fault", key, v, &n)) < 0)
      return r;
    f->seed = (unsigned)n;
    return 0;
  }
  return host->error(EINVAL, "unknown parameter '%s' (expected op, start, "
                     "end, prob, error, delay, seed)", key);
}

static int fa_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct fault *f = inst;
  if (!f->ops)
    f->ops = F_ALL;
  if (!f->prob_set)
    f->prob = 1;
  if (!f->end_set)
    f->end = UINT64_MAX;
  if (f->end <= f->start)
    return host->error(EINVAL, "end=%" PRIu64 " must be above start=%" PRIu64,
                       f->end, f->start);
  if (!f->seed)
    f->seed = 1;
  if (!f->error_set)
    f->error = EIO;          /* error=none leaves 0: delays only */
  pthread_mutex_init(&f->lock, NULL);
  f->ready = true;
  return 0;
}

static int maybe_fault(struct fault *f, unsigned op, const char *opname,
                       uint64_t off, uint64_t len)
{
  if (!(f->ops & op))
    return 0;
  if (op != F_FLUSH && (off >= f->end || off + len <= f->start))
    return 0;
  pthread_mutex_lock(&f->lock);
  bool hit = f->prob >= 1 || (double)rand_r(&f->seed) / RAND_MAX < f->prob;
  pthread_mutex_unlock(&f->lock);
  if (!hit)
    return 0;
  if (f->delay_ns)
    fu_sleep_ns(f->delay_ns);
  if (f->error <= 0)
    return 0;
  return host->error(f->error, "fault: injected %s on %s of %" PRIu64
                     " bytes at %" PRIu64, strerror(f->error), opname, len, off);
}

static int fa_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  int r = maybe_fault(inst, F_READ, "read", off, len);
  return r < 0 ? r : sl_next_pread(next, buf, len, off, flags);
}

static int fa_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{
  int r = maybe_fault(inst, F_WRITE, "write", off, len);
  return r < 0 ? r : sl_next_pwrite(next, buf, len, off, flags);
}

static int fa_flush(void *inst, struct sl_next *next, uint32_t flags)
{
  int r = maybe_fault(inst, F_FLUSH, "flush", 0, 0);
  return r < 0 ? r : sl_next_flush(next, flags);
}

static int fa_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{
  int r = maybe_fault(inst, F_DISCARD, "discard", off, len);
  return r < 0 ? r : sl_next_discard(next, off, len, flags);
}

static int fa_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{
  int r = maybe_fault(inst, F_ZERO, "write-zeroes", off, len);
  return r < 0 ? r : sl_next_write_zeroes(next, off, len, flags);
}

static int fa_block_status(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{
  int r = maybe_fault(inst, F_BS, "block-status", off, len);
  return r < 0 ? r : sl_next_block_status(next, off, len, ext);
}

static void fa_close(void *inst, struct sl_next *next)
{
  struct fault *f = inst;
  if (f->ready)
    pthread_mutex_destroy(&f->lock);
}

static const struct sl_filter fault = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "fault",
  .description = "injects errors and delays (testing)",
  .config_help = "op=OP[+OP..] start=OFF end=OFF prob=P error=EIO|...|none "
                 "delay=MS seed=N",
  .filter_class = SL_FILTER_CLASS_ANY,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct fault),
  .load = fu_load,
  .config = fa_config,
  .config_complete = fa_config_complete,
  .close = fa_close,
  .pread = fa_pread, .pwrite = fa_pwrite, .flush = fa_flush,
  .discard = fa_discard, .write_zeroes = fa_zero,
  .block_status = fa_block_status,
};

SL_REGISTER_FILTER(fault)
