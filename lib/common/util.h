/* Small helpers shared by every layer: cleanup attributes, size parsing and
 * printing, checked arithmetic.  Internal to libsluice and its tools. */
#ifndef SLUICE_COMMON_UTIL_H
#define SLUICE_COMMON_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define SL_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define SL_MIN(a, b) ((a) < (b) ? (a) : (b))
#define SL_MAX(a, b) ((a) > (b) ? (a) : (b))
#define SL_DIV_ROUND_UP(n, d) (((n) + (d) - 1) / (d))
#define SL_ROUND_UP(n, a) (SL_DIV_ROUND_UP(n, a) * (a))
#define SL_IS_POWER_OF_2(x) ((x) != 0 && (((x) & ((x) - 1)) == 0))

/* Cleanup attributes, nbdkit style: the variable is released when it goes
 * out of scope, so early returns cannot leak. */
static inline void sl_cleanup_free(void *p) { free(*(void **)p); }
static inline void sl_cleanup_close(int *fd) { if (*fd >= 0) close(*fd); }
static inline void sl_cleanup_fclose(FILE **f) { if (*f) fclose(*f); }
static inline void sl_cleanup_unlock(pthread_mutex_t **m) {
  if (*m) pthread_mutex_unlock(*m);
}
#define CLEANUP_FREE __attribute__((cleanup(sl_cleanup_free)))
#define CLEANUP_CLOSE __attribute__((cleanup(sl_cleanup_close)))
#define CLEANUP_FCLOSE __attribute__((cleanup(sl_cleanup_fclose)))

/* A scoped lock: held until the end of the enclosing block. */
#define SL_CONCAT_(a, b) a##b
#define SL_CONCAT(a, b) SL_CONCAT_(a, b)
#define SCOPED_LOCK(mutex)                                                  \
  __attribute__((cleanup(sl_cleanup_unlock), unused)) pthread_mutex_t *     \
      SL_CONCAT(scoped_lock_, __LINE__) =                                   \
          (pthread_mutex_lock(mutex), (mutex))

/* Parse a size with an optional K/M/G/T/P/E suffix (powers of 1024, "b"
 * for bytes, a trailing "iB"/"B" accepted), like qemu-img.  Returns 0 or
 * -EINVAL/-ERANGE with a message naming WHAT. */
int sl_parse_size(const char *what, const char *s, uint64_t *out);
/* Parse a non-negative integer in [min, max]. */
int sl_parse_uint(const char *what, const char *s, uint64_t min, uint64_t max,
                  uint64_t *out);

/* "64 KiB", "1.5 GiB": BUF must hold at least 32 bytes. */
const char *sl_human_size(uint64_t bytes, char *buf, size_t len);

/* Checked arithmetic: false on overflow. */
static inline bool sl_add_ok(uint64_t a, uint64_t b, uint64_t *r) {
  return !__builtin_add_overflow(a, b, r);
}
static inline bool sl_mul_ok(uint64_t a, uint64_t b, uint64_t *r) {
  return !__builtin_mul_overflow(a, b, r);
}

/* Full-length pread/pwrite that retry on short transfers and EINTR.
 * Return 0 or -errno; sl_pread_full zero-fills what lies past EOF. */
int sl_pread_full(int fd, void *buf, size_t len, uint64_t off);
/* sl_pread_full that says how much was there: the bytes read before EOF
 * (the rest of BUF zero-filled), or -errno.  FALLBACK_FD (>= 0) is the
 * same file opened without O_DIRECT: when FD is an O_DIRECT descriptor and
 * a piece does not take it (EINVAL: a short read left the next offset or
 * length unaligned), the rest is read through FALLBACK_FD. */
long sl_pread_count(int fd, int fallback_fd, void *buf, size_t len, uint64_t off);
int sl_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

/* splitmix64's finaliser: spreads sequential block numbers over a hash
 * table's buckets.  Shared by every table keyed by block. */
static inline uint64_t sl_mix64(uint64_t x)
{
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

/* Monotonic time in nanoseconds. */
uint64_t sl_now_ns(void);

#define SL_CACHE_LINE 64
/* SIZE zeroed bytes in whole, aligned cache lines, so that nothing else
 * shares a line with them (free with free()); NULL if out of memory. */
void *sl_zalloc_lines(size_t size);

#endif
