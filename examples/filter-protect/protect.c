/* protect: an example sluice filter, built outside the sluice tree.
 *
 * It write-protects a byte range of a disk: writes, write-zeroes and
 * discards that touch [start, end) fail with EPERM and a message naming
 * the request and the range; everything else, and all reads, go through
 * unchanged.  Think of a partition table or a boot sector that a guest
 * must not overwrite.
 *
 * It is here to show, in one short file, what a filter is: a shared
 * object built with only <sluice/filter.h> (found with `pkg-config
 * --cflags sluice-filter`), linking nothing of sluice, registering one
 * static record with SL_REGISTER_FILTER, and calling the core only through
 * the host table it is given at load.  docs/writing-filters.md walks
 * through it.  Build, trust and use it:
 *
 *   make                                  # cc $(pkg-config ...) -shared -fPIC
 *   sluice filter install ./protect.so    # (as root for the system directory)
 *   sluice filter attach vm.disk protect start=0 end=1M
 *
 * The operations it leaves NULL (reads, flush, block status, the
 * capabilities) go straight to the layer below, so it costs nothing on
 * the read path.  It keeps no state that changes after open, so any
 * number of requests may run in it at once (SL_FILTER_PARALLEL). */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/filter.h>

/* The core's services (errors, sizes); set once at load. */
static const struct sl_filter_host *host;

/* One instance per disk that uses the filter: the core allocates
 * instance_size zeroed bytes before config and frees them after close. */
struct protect {
  uint64_t start, end;
  bool end_set;
};

static int protect_load(const struct sl_filter_host *h)
{
  host = h;
  return 0;
}

/* A byte offset.  parse_size (the core's size grammar: 64K, 1M, ...) was
 * added to the host table after its first version, so a filter must ask
 * whether this core has it; an older core gets plain numbers only. */
static int parse_offset(const char *key, const char *value, uint64_t *out)
{
  if (SL_FILTER_HOST_HAS(host, parse_size))
    return host->parse_size(key, value, out);
  char *end;
  errno = 0;
  unsigned long long n = strtoull(value, &end, 10);
  if (end == value || *end || errno || value[0] == '-')
    return host->error(EINVAL, "protect: %s=%s is not a number of bytes",
                       key, value);
  *out = n;
  return 0;
}

/* Called once per key=value, in order.  Unknown keys are errors that name
 * the key and what is accepted. */
static int protect_config(void *inst, const char *key, const char *value)
{
  struct protect *p = inst;
  if (strcmp(key, "start") == 0)
    return parse_offset(key, value, &p->start);
  if (strcmp(key, "end") == 0) {
    p->end_set = true;
    return parse_offset(key, value, &p->end);
  }
  return host->error(EINVAL, "protect: unknown parameter '%s' (start=OFFSET, "
                     "end=OFFSET)", key);
}

static int protect_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct protect *p = inst;
  (void)env;
  if (p->end_set && p->end <= p->start)
    return host->error(EINVAL, "protect: end=%" PRIu64 " must be above "
                       "start=%" PRIu64, p->end, p->start);
  return 0;
}

/* Without end=, protect to the end of the disk (known once open). */
static int protect_open(void *inst, struct sl_next *next,
                        const struct sl_filter_env *env)
{
  struct protect *p = inst;
  (void)env;
  if (!p->end_set) {
    int64_t size = sl_next_get_size(next);
    if (size < 0)
      return (int)size;
    p->end = (uint64_t)size;
  }
  return 0;
}

/* 0 if [off, off+len) misses the range, else -EPERM with a message. */
static int check(const struct protect *p, const char *what, uint64_t off,
                 uint64_t len)
{
  if (len == 0 || off >= p->end || off + len <= p->start)
    return 0;
  return host->error(EPERM, "protect: %s of %" PRIu64 " bytes at offset %"
                     PRIu64 " touches the protected range [%" PRIu64 ", %"
                     PRIu64 ")", what, len, off, p->start, p->end);
}

static int protect_pwrite(void *inst, struct sl_next *next, const void *buf,
                          size_t len, uint64_t off, uint32_t flags)
{
  int r = check(inst, "write", off, len);
  return r < 0 ? r : sl_next_pwrite(next, buf, len, off, flags);
}

static int protect_write_zeroes(void *inst, struct sl_next *next,
                                uint64_t off, uint64_t len, uint32_t flags)
{
  int r = check(inst, "write-zeroes", off, len);
  return r < 0 ? r : sl_next_write_zeroes(next, off, len, flags);
}

static int protect_discard(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, uint32_t flags)
{
  int r = check(inst, "discard", off, len);
  return r < 0 ? r : sl_next_discard(next, off, len, flags);
}

static const struct sl_filter protect_filter = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "protect",                 /* must match the file name: protect.so */
  .description = "refuse writes to a byte range",
  .config_help = "start=OFFSET  first protected byte (default 0)\n"
                 "end=OFFSET    end of the range (default: the disk's end)\n",
  .filter_class = SL_FILTER_CLASS_ANY,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct protect),
  .load = protect_load,
  .config = protect_config,
  .config_complete = protect_config_complete,
  .open = protect_open,
  .pwrite = protect_pwrite,
  .write_zeroes = protect_write_zeroes,
  .discard = protect_discard,
};

/* Exports sluice_filter_init() and the ABI stamp the loader checks. */
SL_REGISTER_FILTER(protect_filter)
