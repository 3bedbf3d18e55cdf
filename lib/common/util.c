/* Helpers shared by every layer: see util.h. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <sluice/error.h>
#include "common/util.h"

int sl_parse_uint(const char *what, const char *s, uint64_t min, uint64_t max,
                  uint64_t *out)
{
  char *end;
  if (!s || !*s || !isdigit((unsigned char)*s))
    return sl_error(EINVAL, "%s: '%s' is not a number", what, s ? s : "");
  errno = 0;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno == ERANGE || *end)
    return sl_error(EINVAL, "%s: '%s' is not a number", what, s);
  if (v < min || v > max)
    return sl_error(ERANGE, "%s: %llu is out of range [%" PRIu64 ", %" PRIu64 "]",
                    what, v, min, max);
  *out = v;
  return 0;
}

int sl_parse_size(const char *what, const char *s, uint64_t *out)
{
  char *end;
  if (!s || !*s || !(isdigit((unsigned char)*s) || *s == '.'))
    return sl_error(EINVAL, "%s: '%s' is not a size", what, s ? s : "");
  errno = 0;
  double v = strtod(s, &end);
  if (errno == ERANGE || end == s)
    return sl_error(EINVAL, "%s: '%s' is not a size", what, s);
  uint64_t mult = 1;
  const char *units = "bkmgtpe";
  if (*end) {
    const char *u = strchr(units, tolower((unsigned char)*end));
    if (!u)
      return sl_error(EINVAL, "%s: '%s' has an unknown suffix '%s' (use K, M, G, T)",
                      what, s, end);
    for (long i = 0; i < u - units; i++)
      mult *= 1024;
    end++;
    if (tolower((unsigned char)end[0]) == 'i' && tolower((unsigned char)end[1]) == 'b')
      end += 2;
    else if (tolower((unsigned char)end[0]) == 'b' && mult > 1)
      end += 1;
    if (*end)
      return sl_error(EINVAL, "%s: '%s' has trailing characters '%s'", what, s, end);
  }
  double bytes = v * (double)mult;
  if (bytes >= 18446744073709551616.0)
    return sl_error(ERANGE, "%s: '%s' is too large", what, s);
  if (bytes != (double)(uint64_t)bytes)
    return sl_error(EINVAL, "%s: '%s' is not a whole number of bytes", what, s);
  *out = (uint64_t)bytes;
  return 0;
}

const char *sl_human_size(uint64_t bytes, char *buf, size_t len)
{
  static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned u = 0;
  double v = (double)bytes;
  while (v >= 1024 && u + 1 < SL_ARRAY_SIZE(units)) {
    v /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", bytes);
  else if (v == (double)(uint64_t)v)
    snprintf(buf, len, "%.0f %s", v, units[u]);
  else
    snprintf(buf, len, "%.3g %s", v, units[u]);
  return buf;
}

int sl_pread_full(int fd, void *buf, size_t len, uint64_t off)
{
  /* Every 4K read of a depth-1 client comes here: the common case (one
   * pread that reads it all) takes no further call. */
  ssize_t n = pread(fd, buf, len, (off_t)off);
  if (n >= 0 && (size_t)n == len)
    return 0;
  if (n < 0 && errno != EINTR)
    return -errno;
  size_t done = n > 0 ? (size_t)n : 0;
  long r = sl_pread_count(fd, -1, (char *)buf + done, len - done, off + done);
  return r < 0 ? (int)r : 0;
}

long sl_pread_count(int fd, int fallback_fd, void *buf, size_t len, uint64_t off)
{
  char *p = buf;
  size_t got = 0;
  while (got < len) {
    ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EINVAL && fallback_fd >= 0 && fd != fallback_fd) {
        fd = fallback_fd;
        continue;
      }
      return -errno;
    }
    if (n == 0)
      break;
    got += (size_t)n;
  }
  if (got < len)
    memset(p + got, 0, len - got);
  return (long)got;
}

int sl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = pwrite(fd, p, len, (off_t)off);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += n;
    off += (uint64_t)n;
    len -= (size_t)n;
  }
  return 0;
}

void *sl_zalloc_lines(size_t size)
{
  size_t lines = SL_ROUND_UP(size, (size_t)SL_CACHE_LINE);
  void *p = aligned_alloc(SL_CACHE_LINE, lines);
  if (p)
    memset(p, 0, lines);
  return p;
}

uint64_t sl_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
