/* Synthetic workloads: the patterns a replacement policy has to adapt to,
 * generated from a short spec so that a test or a benchmark names its
 * workload in one string ("loop:n=1500,len=150000") and anyone can
 * regenerate it.  Real traces tell how a policy does on a workload;
 * these tell why, one pattern at a time:
 *
 *   loop       0..n-1 over and over: reuse at a distance of n.  LRU and
 *              FIFO miss every access once n exceeds the cache; the best
 *              keeps a fixed cache-sized part resident (LIRS does).
 *   zigzag     0..n-1, then n-1..0, and so on: the most recent blocks are
 *              reused first, so LRU is optimal and FIFO-like designs lose.
 *   scanhot    a Zipf-distributed hot set of `hot` blocks, each access
 *              replaced with probability `scan` by the next block of an
 *              endless sequential scan (never reused).
 *   phases     uniform over one working set of n blocks for `phase`
 *              accesses, then over a disjoint one, alternating.
 *   zipf       Zipf(alpha) over n blocks (block 0 the most popular,
 *              ids scattered so that neighbours are unrelated).
 *   zipfshift  Zipf over n blocks whose skew moves from `from` to `to` in
 *              `phases` steps, the popular blocks changing each step.
 *
 * Every kind takes len= (accesses, default 100000) and seed= (default 1);
 * the generator is a splitmix64 stream, so a spec always yields the same
 * trace on every machine.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sluice/error.h"
#include "sim/synth.h"

struct spec {
  char kind[16];
  double n, len, seed, hot, scan, phase, alpha, from, to, phases;
};

static uint64_t next_rand(uint64_t *s)
{
  uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

static double uniform(uint64_t *s)
{
  return (double)(next_rand(s) >> 11) / 9007199254740992.0;
}

static int parse(const char *text, struct spec *sp)
{
  *sp = (struct spec){ .n = 1000, .len = 100000, .seed = 1, .hot = 1000,
                       .scan = 0.5, .phase = 20000, .alpha = 1.0,
                       .from = 0.6, .to = 1.2, .phases = 4 };
  const char *colon = strchr(text, ':');
  size_t klen = colon ? (size_t)(colon - text) : strlen(text);
  if (klen == 0 || klen >= sizeof sp->kind)
    return sl_error(EINVAL, "synthetic trace \"%s\": no kind before ':'", text);
  memcpy(sp->kind, text, klen);
  sp->kind[klen] = 0;
  static const char *const kinds[] = { "loop", "zigzag", "scanhot", "phases",
                                       "zipf", "zipfshift" };
  bool known = false;
  for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
    known |= strcmp(kinds[i], sp->kind) == 0;
  if (!known)
    return sl_error(EINVAL, "synthetic trace \"%s\": unknown kind \"%s\" (valid:"
                    " loop, zigzag, scanhot, phases, zipf, zipfshift)", text,
                    sp->kind);
  const char *p = colon ? colon + 1 : "";
  while (*p) {
    const char *eq = strchr(p, '=');
    const char *end = strchr(p, ',');
    if (!end)
      end = p + strlen(p);
    if (!eq || eq > end)
      return sl_error(EINVAL, "synthetic trace \"%s\": \"%.*s\" is not key=value",
                      text, (int)(end - p), p);
    char *stop;
    double v = strtod(eq + 1, &stop);
    if (stop != end || !(v >= 0) || !isfinite(v))
      return sl_error(EINVAL, "synthetic trace \"%s\": bad value in \"%.*s\"",
                      text, (int)(end - p), p);
    struct { const char *k; double *f; } keys[] = {
      { "n", &sp->n }, { "len", &sp->len }, { "seed", &sp->seed },
      { "hot", &sp->hot }, { "scan", &sp->scan }, { "phase", &sp->phase },
      { "alpha", &sp->alpha }, { "from", &sp->from }, { "to", &sp->to },
      { "phases", &sp->phases },
    };
    bool found = false;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
      if ((size_t)(eq - p) == strlen(keys[i].k) &&
          strncmp(p, keys[i].k, (size_t)(eq - p)) == 0) {
        *keys[i].f = v;
        found = true;
      }
    if (!found)
      return sl_error(EINVAL, "synthetic trace \"%s\": unknown key \"%.*s\"", text,
                      (int)(eq - p), p);
    p = *end ? end + 1 : end;
  }
  if (sp->n < 1 || sp->hot < 1 || sp->len < 1 || sp->len > 1e9 || sp->n > 1e8 ||
      sp->hot > 1e8 || sp->phase < 1 || sp->phases < 1 || sp->scan > 1)
    return sl_error(EINVAL, "synthetic trace \"%s\": n, hot, len, phase and phases"
                    " must be at least 1 (len at most 1e9, n and hot 1e8), scan"
                    " at most 1", text);
  return 0;
}

/* Cumulative Zipf(alpha) weights over n ranks, for sampling by bisection. */
static double *zipf_cdf(uint64_t n, double alpha)
{
  double *c = malloc(n * sizeof *c);
  if (!c)
    return NULL;
  double sum = 0;
  for (uint64_t i = 0; i < n; i++)
    c[i] = sum += pow((double)(i + 1), -alpha);
  for (uint64_t i = 0; i < n; i++)
    c[i] /= sum;
  return c;
}

static uint64_t zipf_draw(const double *cdf, uint64_t n, uint64_t *rs)
{
  double u = uniform(rs);
  uint64_t lo = 0, hi = n - 1;
  while (lo < hi) {
    uint64_t mid = (lo + hi) / 2;
    if (cdf[mid] < u)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Rank R of popularity to a block id: a bijection of [0, n) (an odd
 * multiplier modulo a power of two, walked until it lands below n), so
 * that popular blocks are not neighbours; BASE separates id ranges. */
static uint64_t scatter(uint64_t r, uint64_t n, uint64_t base)
{
  uint64_t m = 1;
  while (m < n)
    m <<= 1;
  uint64_t x = r;
  do
    x = (x * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL) & (m - 1);
  while (x >= n);
  return base + x;
}

int sl_synth_generate(const char *text, struct sl_trace *t)
{
  struct spec sp;
  int r = parse(text, &sp);
  if (r < 0)
    return r;
  memset(t, 0, sizeof *t);
  uint64_t len = (uint64_t)sp.len, n = (uint64_t)sp.n;
  t->name = strdup(text);
  t->blocks = malloc(len * sizeof *t->blocks);
  double *cdf = NULL;
  if (!strcmp(sp.kind, "zipf") || !strcmp(sp.kind, "zipfshift"))
    cdf = zipf_cdf(n, !strcmp(sp.kind, "zipf") ? sp.alpha : sp.from);
  else if (!strcmp(sp.kind, "scanhot"))
    cdf = zipf_cdf((uint64_t)sp.hot, sp.alpha);
  bool need_cdf = strcmp(sp.kind, "loop") && strcmp(sp.kind, "zigzag") &&
                  strcmp(sp.kind, "phases");
  if (!t->name || !t->blocks || (need_cdf && !cdf)) {
    free(cdf);
    sl_trace_free(t);
    return sl_error(ENOMEM, "synthetic trace \"%s\": out of memory", text);
  }
  uint64_t rs = (uint64_t)sp.seed, scan_next = 0;
  uint64_t step_len = len / (uint64_t)sp.phases + 1;
  for (uint64_t i = 0; i < len; i++) {
    uint64_t b;
    if (!strcmp(sp.kind, "loop")) {
      b = i % n;
    } else if (!strcmp(sp.kind, "zigzag")) {
      uint64_t k = i % (2 * n);
      b = k < n ? k : 2 * n - 1 - k;
    } else if (!strcmp(sp.kind, "scanhot")) {
      if (uniform(&rs) < sp.scan)
        b = (1ULL << 40) + scan_next++;
      else
        b = scatter(zipf_draw(cdf, (uint64_t)sp.hot, &rs), (uint64_t)sp.hot, 0);
    } else if (!strcmp(sp.kind, "phases")) {
      uint64_t which = i / (uint64_t)sp.phase % 2;
      b = which * n + (next_rand(&rs) % n);
    } else if (!strcmp(sp.kind, "zipf")) {
      b = scatter(zipf_draw(cdf, n, &rs), n, 0);
    } else { /* zipfshift */
      uint64_t step = i / step_len;
      if (i % step_len == 0 && i > 0) {
        double a = sp.from + (sp.to - sp.from) * (double)step /
                   (sp.phases > 1 ? sp.phases - 1 : 1);
        free(cdf);
        cdf = zipf_cdf(n, a);
        if (!cdf) {
          sl_trace_free(t);
          return sl_error(ENOMEM, "synthetic trace \"%s\": out of memory", text);
        }
      }
      /* each step rotates which blocks are popular by a third of n */
      uint64_t rank = (zipf_draw(cdf, n, &rs) + step * (n / 3)) % n;
      b = scatter(rank, n, 0);
    }
    t->blocks[i] = b;
  }
  t->len = t->cap = len;
  free(cdf);
  return 0;
}
