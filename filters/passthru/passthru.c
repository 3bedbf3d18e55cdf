/* passthru: a filter that changes nothing but still takes every call and
 * forwards it to next.  It exists to measure what a layer of the stack
 * costs (bench/filter-stack) and as the smallest example of a filter. */
#include <sluice/filter.h>

static int64_t pt_size(void *inst, struct sl_next *next) { return sl_next_get_size(next); }

static int pt_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{ return sl_next_pread(next, buf, len, off, flags); }

static int pt_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{ return sl_next_pwrite(next, buf, len, off, flags); }

static int pt_flush(void *inst, struct sl_next *next, uint32_t flags)
{ return sl_next_flush(next, flags); }

static int pt_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{ return sl_next_discard(next, off, len, flags); }

static int pt_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{ return sl_next_write_zeroes(next, off, len, flags); }

static int pt_block_status(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{ return sl_next_block_status(next, off, len, ext); }

static const struct sl_filter passthru = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "passthru",
  .description = "forwards every request unchanged",
  .filter_class = SL_FILTER_CLASS_ANY,
  .thread_model = SL_FILTER_PARALLEL,
  .get_size = pt_size,
  .pread = pt_pread, .pwrite = pt_pwrite, .flush = pt_flush,
  .discard = pt_discard, .write_zeroes = pt_zero,
  .block_status = pt_block_status,
};

SL_REGISTER_FILTER(passthru)
