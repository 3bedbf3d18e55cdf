/* Small helpers shared by the filters in this tree.  Header-only on purpose:
 * a filter module links nothing of libsluice, it only gets the host table,
 * and the rules (size grammar, path resolution) are the core's, reached
 * through that table, so that there is one copy of each. */
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

/* A size in the core's grammar (host->parse_size, i.e. sl_parse_size: "4096",
 * "64K", "1.5M", "1GiB"), with the filters' message naming KEY=VALUE. */
static inline int fu_parse_size(const char *name, const char *key,
                                const char *v, uint64_t *out)
{
  (void)name;
  if (!SL_FILTER_HOST_HAS(host, parse_size))
    return host->error(ENOTSUP, "%s=%s: this sluice is too old to parse sizes "
                       "for filters", key, v);
  if (host->parse_size(key, v, out) == 0)
    return 0;
  char why[256];
  snprintf(why, sizeof why, "%s", host->last_error());
  return host->error(EINVAL, "%s=%s is not a size (a number with an "
                     "optional K/M/G/T suffix): %s", key, v, why);
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

/* PATH relative to the descriptor's directory (host->resolve_path); caller
 * frees; NULL on failure. */
static inline char *fu_resolve(const struct sl_filter_env *env, const char *p)
{
  char *out = NULL;
  if (!SL_FILTER_HOST_HAS(host, resolve_path))
    return NULL;
  return host->resolve_path(env, p, &out) == 0 ? out : NULL;
}

static inline void fu_sleep_ns(uint64_t ns)
{
  struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Answer SL_QUERY_PREAD_BATCH (version 1) with A, for a filter whose only
 * query it is; any other query is refused with a message naming NAME. */
static inline int fu_pread_batch_query(const char *name, int a, const char *what,
                                       uint32_t version, void *out, size_t out_size)
{
  if (strcmp(what, SL_QUERY_PREAD_BATCH) != 0 || version != 1)
    return host->error(ENOTSUP, "%s: no query %s version %u (it answers "
                       SL_QUERY_PREAD_BATCH " version 1)", name, what, version);
  if (out_size < sizeof a)
    return host->error(EINVAL, "%s: " SL_QUERY_PREAD_BATCH " needs %zu bytes, "
                       "given %zu", name, sizeof a, out_size);
  memcpy(out, &a, sizeof a);
  return (int)sizeof a;
}

#endif
