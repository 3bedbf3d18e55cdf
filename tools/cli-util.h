/* Helpers shared by the sluice subcommands: JSON output, "-o k=v,..."
 * option lists, the progress bar. */
#ifndef SLUICE_TOOLS_CLI_UTIL_H
#define SLUICE_TOOLS_CLI_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

/* Print S as a JSON string literal (with quotes), or null for NULL. */
void json_string(FILE *f, const char *s);

/* Split "k=v,k2=v2" in place; calls FN for each pair (v may be NULL for a
 * bare key).  Stops at and returns the first non-zero FN result. */
int kv_each(char *list, int (*fn)(void *opaque, const char *k, const char *v),
            void *opaque);
/* "on"/"off"/"true"/"false"/"yes"/"no"/"1"/"0" -> 1/0, else -1. */
int parse_bool(const char *v);

/* qemu-img style progress: "    (45.00/100%)" redrawn in place on stderr. */
struct progress {
  bool enabled;
  uint64_t total;
  int last_hundredths;
};
void progress_init(struct progress *p, bool enabled, uint64_t total);
void progress_update(struct progress *p, uint64_t done);
void progress_finish(struct progress *p);

struct sl_disk;
/* QEMU's warning for a writable image whose format was probed as raw. */
void warn_if_probed_raw(struct sl_disk *disk, const char *path);

#endif
