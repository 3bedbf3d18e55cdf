/* Block I/O traces for the simulator: read any supported format into one
 * array of block ids (one entry per cache access, in trace order).
 */
#ifndef SLUICE_SIM_TRACE_H
#define SLUICE_SIM_TRACE_H

#include <stdbool.h>
#include <stdint.h>

struct sl_trace {
  char *name;           /* the path given, or "-" */
  uint64_t *blocks;     /* one id per access */
  uint64_t len, cap;
};

struct sl_trace_options {
  bool reads_only;      /* keep only reads (formats that record the op) */
};

/* Read PATH ("-" = standard input) in FORMAT into T.  Compressed input
 * (gzip, xz, zstd, bzip2) is recognised by its magic bytes.  Returns 0 or
 * -errno with a message naming the file, the record or line, and the
 * problem.  T is empty and needs no free on failure. */
int sl_trace_read(const char *path, const char *format,
                  const struct sl_trace_options *opts, struct sl_trace *t);
void sl_trace_free(struct sl_trace *t);

/* NULL-terminated list of format names, and a one-line description. */
const char *const *sl_trace_formats(void);
const char *sl_trace_format_description(const char *format);

/* Distinct blocks in T (its footprint).  -errno on allocation failure. */
int64_t sl_trace_footprint(const struct sl_trace *t);
/* NEXT[i] = index of the next access to T->blocks[i], UINT64_MAX if none.
 * The caller frees *NEXT. */
int sl_trace_next_use(const struct sl_trace *t, uint64_t **next);

#endif
