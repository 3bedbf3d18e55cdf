/* Small helpers shared by the filters in this tree.  Header-only on purpose:
 * a filter module links nothing of libsluice, it only gets the host table. */
#ifndef SLUICE_FILTERS_UTIL_H
#define SLUICE_FILTERS_UTIL_H

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/filter.h>

/* Set by each filter's load(). */
static const struct sl_filter_host *host;

static inline int fu_load(const struct sl_filter_host *h)
{
  host = h;
  return 0;
}

/* "4096", "64K", "10M", "1G" (powers of 1024). */
static inline int fu_parse_size(const char *name, const char *key,
                                const char *v, uint64_t *out)
{
  char *end;
  errno = 0;
  unsigned long long n = strtoull(v, &end, 10);
  uint64_t mul = 1;
  if (end == v || *v == '-' || errno)
    goto bad;
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': mul = 1ull << 10; end++; break;
  case 'm': case 'M': mul = 1ull << 20; end++; break;
  case 'g': case 'G': mul = 1ull << 30; end++; break;
  case 't': case 'T': mul = 1ull << 40; end++; break;
  default: goto bad;
  }
  if (*end == 'i' && end[1] == 'B')
    end += 2;
  else if (*end == 'B')
    end++;
  if (*end || (n && mul > UINT64_MAX / n))
    goto bad;
  *out = (uint64_t)n * mul;
  return 0;
bad:
  (void)name;
  return host->error(EINVAL, "%s=%s is not a size (a number with an "
                     "optional K/M/G/T suffix)", key, v);
}

/* A non-negative number, possibly fractional. */
static inline int fu_parse_double(const char *name, const char *key,
                                  const char *v, double min, double max,
                                  double *out)
{
  char *end;
  errno = 0;
  double d = strtod(v, &end);
  (void)name;
  if (end == v || *end || errno || !(d >= min && d <= max))
    return host->error(EINVAL, "%s=%s must be a number from %g to %g",
                       key, v, min, max);
  *out = d;
  return 0;
}

/* PATH relative to the descriptor's directory; caller frees. */
static inline char *fu_resolve(const struct sl_filter_env *env, const char *p)
{
  char *out = NULL;
  if (p[0] == '/' || !env->base_dir)
    return strdup(p);
  if (asprintf(&out, "%s/%s", env->base_dir, p) < 0)
    return NULL;
  return out;
}

static inline void fu_sleep_ns(uint64_t ns)
{
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

#endif
