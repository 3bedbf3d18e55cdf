/* sluice disk: an image (or chain) under an ordered stack of filters.
 *
 * A disk is opened from an image file or from a disk descriptor (a small
 * text file naming the image and its filters, see sluice-disk(1) and
 * docs/disk-descriptor.md).  The stack is entered through handles:
 * sl_disk_top() is the top of the stack, sl_disk_at(disk, NAME) enters just
 * below filter NAME, so NAME and every filter above it are bypassed
 * (filter-level access).  Handles live as long as the disk.
 *
 * Invariants (range, read-only, flags) are checked once here, in the core,
 * before a request reaches any filter.
 */
#ifndef SLUICE_DISK_H
#define SLUICE_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/image.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_disk;
struct sl_handle;

struct sl_disk_open_opts {
  bool read_only;
  bool direct;                  /* O_DIRECT on the image files */
  bool dsync;                   /* O_DSYNC on the writable image file */
  bool no_flush;                /* ignore flush (cache=unsafe) */
  bool force_share;             /* -U (read-only only): see sl_image_open_opts */
  enum sl_format format;        /* for a plain image; AUTO probes */
  /* Extra filters stacked above those of the descriptor, top first,
   * each "NAME[:k=v,...]" as on the command line. */
  const char *const *extra_filters;
  size_t n_extra_filters;
};

int sl_disk_open(const char *path, const struct sl_disk_open_opts *opts,
                 struct sl_disk **out);
/* Drains, flushes, closes every filter (bottom last) and the image. */
int sl_disk_close(struct sl_disk *disk);

/* Stop taking new requests, wait for in-flight ones, flush.  Requests
 * issued while draining wait until sl_disk_resume(). */
int sl_disk_drain(struct sl_disk *disk);
void sl_disk_resume(struct sl_disk *disk);

struct sl_handle *sl_disk_top(struct sl_disk *disk);
/* NULL (with a message) if no filter NAME is in the stack. */
struct sl_handle *sl_disk_at(struct sl_disk *disk, const char *filter_name);
/* The image at the bottom of the stack. */
struct sl_image *sl_disk_image(struct sl_disk *disk);

uint64_t sl_disk_size(struct sl_handle *h);
bool sl_disk_read_only(struct sl_handle *h);
bool sl_disk_can_trim(struct sl_handle *h);
bool sl_disk_can_zero(struct sl_handle *h);
bool sl_disk_can_fua(struct sl_handle *h);
/* True if every connection sees the same data after a flush on any one. */
bool sl_disk_can_multi_conn(struct sl_handle *h);

int sl_disk_pread(struct sl_handle *h, void *buf, size_t len, uint64_t off,
                  uint32_t flags);
int sl_disk_pwrite(struct sl_handle *h, const void *buf, size_t len,
                   uint64_t off, uint32_t flags);
/* COUNT reads at once (struct sl_read_vec, <sluice/filter.h>), each with
 * its own status; returns how many failed.  The first filter that reads
 * gets them as one pread_batch call if it implements it; otherwise, and
 * below any filter without it, one pread each. */
struct sl_read_vec;
int sl_disk_pread_batch(struct sl_handle *h, struct sl_read_vec *v, unsigned count,
                        uint32_t flags);
/* True if a batch entering at H reaches a filter that takes it whole (an
 * export then has a reason to gather reads; otherwise it gains nothing). */
bool sl_disk_can_pread_batch(struct sl_handle *h);
int sl_disk_flush(struct sl_handle *h);
int sl_disk_discard(struct sl_handle *h, uint64_t off, uint64_t len);
int sl_disk_write_zeroes(struct sl_handle *h, uint64_t off, uint64_t len,
                         uint32_t flags);
int sl_disk_block_status(struct sl_handle *h, uint64_t off, uint64_t len,
                         struct sl_extent *ext);

/* ---- added by the filter stack (issue 4) ---- */
#include <stdio.h>
/* Filters in the stack (top first) and their instance names. */
int sl_disk_filter_count(struct sl_disk *disk);
const char *sl_disk_filter_name(struct sl_disk *disk, int i);
/* Print the disk: descriptor, image and its filter stack (for `sluice info`). */
void sl_disk_describe(struct sl_disk *disk, FILE *f);
/* The descriptor's path (NULL for a plain image) and the image's. */
const char *sl_disk_descriptor_path(struct sl_disk *disk);
const char *sl_disk_image_path(struct sl_disk *disk);
/* Filter I of the stack (0 = top), valid while the disk is open.  The
 * parameters are those of the descriptor (paths, never what a file holds). */
struct sl_disk_filter_info {
  const char *name, *module, *description;
  int filter_class;             /* enum sl_filter_class */
  uint64_t size;                /* as this filter presents the disk */
  bool read_only;
  size_t n_params;
  const char *const *keys, *const *values;
};
int sl_disk_filter_info(struct sl_disk *disk, int i,
                        struct sl_disk_filter_info *out);
/* Ask filter I (0 = top) the versioned query WHAT (see the query operation
 * in <sluice/filter.h>; each filter's man page lists its queries): the
 * number of bytes of OUT it filled, or -ENOTSUP when it does not answer WHAT
 * at VERSION. */
int sl_disk_filter_query(struct sl_disk *disk, int i, const char *what,
                         uint32_t version, void *out, size_t out_size);
/* Tell every filter an overlay was created under the disk. */
int sl_disk_snapshot_event(struct sl_disk *disk);
/* "observe", "throttle", ... for an enum sl_filter_class value. */
const char *sl_filter_class_name(int filter_class);
/* Open a parsed descriptor (lib/disk/descriptor.h). */
struct sl_descriptor;
int sl_disk_open_descriptor(const struct sl_descriptor *desc,
                            const struct sl_disk_open_opts *opts,
                            struct sl_disk **out);

#ifdef __cplusplus
}
#endif
#endif
