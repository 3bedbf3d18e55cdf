/* sluice image layer: qcow2 and raw disk images with backing chains.
 *
 * An sl_image is one open layer.  Opening an image also opens its backing
 * chain; sl_image_layer() walks it (depth 0 is the image itself).  All I/O
 * functions are thread-safe: reads run in parallel, allocating writes are
 * serialised inside the driver.  Every function returns 0 (or a count) on
 * success and a negative errno on failure, with a message in sl_last_error().
 */
#ifndef SLUICE_IMAGE_H
#define SLUICE_IMAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct sl_image;

enum sl_format {
  SL_FORMAT_AUTO = 0, /* probe the file's contents */
  SL_FORMAT_RAW,
  SL_FORMAT_QCOW2,
};

const char *sl_format_name(enum sl_format fmt);       /* "raw", "qcow2" */
int sl_format_parse(const char *name, enum sl_format *out);

/* I/O flags. */
#define SL_FUA     (1u << 0) /* write: durable before completion */
#define SL_NO_HOLE (1u << 1) /* write_zeroes: keep the range allocated */

struct sl_image_open_opts {
  enum sl_format format;        /* SL_FORMAT_AUTO probes */
  bool read_only;
  bool direct;                  /* O_DIRECT on every layer */
  bool no_backing;              /* open only this layer; unallocated reads as 0 */
  /* qemu-img -U: a read-only open that lets others write and resize (takes
   * no QEMU lock byte but "consistent read").  Refused for writable opens. */
  bool force_share;
  size_t metadata_cache_bytes;  /* L2 + refcount cache budget; 0 = default */
  int max_chain_depth;          /* 0 = default (1024) */
  bool dsync;                   /* O_DSYNC on the writable layer */
  bool no_flush;                /* flush and FUA write metadata, never sync */
};

/* Host page-cache modes, as qemu-nbd's --cache (-t) names them:
 *   none         O_DIRECT, flushes honoured
 *   writeback    page cache, flushes honoured (the default)
 *   writethrough page cache, O_DSYNC
 *   directsync   O_DIRECT and O_DSYNC
 *   unsafe       page cache, flushes ignored
 * Sets the three flags of OPTS-like structures from MODE. */
int sl_cache_mode_parse(const char *mode, bool *direct, bool *dsync,
                        bool *no_flush);

enum sl_prealloc {
  SL_PREALLOC_OFF = 0,
  SL_PREALLOC_METADATA,         /* qcow2: every cluster allocated */
  SL_PREALLOC_FALLOC,           /* ... and the file's blocks reserved */
  SL_PREALLOC_FULL,             /* ... and written (zeros) */
};
const char *sl_prealloc_name(enum sl_prealloc p);
int sl_prealloc_parse(const char *name, enum sl_prealloc *out);

struct sl_image_create_opts {
  enum sl_format format;        /* default qcow2 */
  uint64_t size;                /* 0 with a backing file: take its size */
  bool size_set;                /* SIZE was given: 0 is then a size */
  int compat;                   /* qcow2 version 2 (compat=0.10) or 3 (0 = 3) */
  bool lazy_refcounts;          /* qcow2 v3 */
  unsigned refcount_bits;       /* qcow2: 1..64, a power of two; 0 = 16 */
  enum sl_prealloc preallocation;
  const char *backing_file;     /* stored as given; resolved relative to FILE */
  enum sl_format backing_format;/* AUTO: probe it and record what was found */
  uint32_t cluster_size;        /* 0 = 65536; power of two, 512 .. 2 MiB */
  bool extended_l2;             /* subclusters */
  const char *compression_type; /* NULL/"zlib" or "zstd" (header field only) */
};

int sl_image_create(const char *path, const struct sl_image_create_opts *opts);
int sl_image_open(const char *path, const struct sl_image_open_opts *opts,
                  struct sl_image **out);
/* Flushes a writable image, clears the dirty bit, frees the chain. */
int sl_image_close(struct sl_image *img);

uint64_t sl_image_size(const struct sl_image *img);
const char *sl_image_filename(const struct sl_image *img);
enum sl_format sl_image_format(const struct sl_image *img);
bool sl_image_read_only(const struct sl_image *img);
/* Opened without a format and probed as raw: writes that would make the
 * first sector probe as another format fail with EPERM (as in QEMU). */
bool sl_image_probed_raw(const struct sl_image *img);

/* Data path.  Any offset and length within the virtual size. */
int sl_image_pread(struct sl_image *img, void *buf, size_t len, uint64_t off);
int sl_image_pwrite(struct sl_image *img, const void *buf, size_t len,
                    uint64_t off, uint32_t flags);
int sl_image_flush(struct sl_image *img);
int sl_image_discard(struct sl_image *img, uint64_t off, uint64_t len);
int sl_image_write_zeroes(struct sl_image *img, uint64_t off, uint64_t len,
                          uint32_t flags);

/* Block status: what backs the bytes at OFF.  Fills one extent that starts
 * at OFF and is at most LEN long (never 0 unless LEN is 0).  DEPTH is the
 * chain layer that holds the data (0 = this image), or -1 when no layer
 * does (the range reads as zeros).  Raw images report holes as ZERO at
 * depth 0. */
enum sl_extent_type {
  SL_EXTENT_DATA = 0,      /* allocated, reads data */
  SL_EXTENT_ZERO,          /* allocated as zeros (zero cluster or raw hole) */
  SL_EXTENT_UNALLOCATED,   /* no layer holds it: reads as zeros */
};
struct sl_extent {
  uint64_t offset;
  uint64_t length;
  enum sl_extent_type type;
  int depth;
  uint64_t file_offset;    /* host offset in that layer's file, 0 if none */
};
int sl_image_block_status(struct sl_image *img, uint64_t off, uint64_t len,
                          struct sl_extent *ext);

/* Chain.  sl_image_layer(img, 0) == img; NULL past the end. */
int sl_image_chain_length(const struct sl_image *img);
struct sl_image *sl_image_layer(struct sl_image *img, int depth);
/* Commands that write a file named on their command line call this before
 * touching it: -EEXIST, with a message naming PATH, WHAT it was given as
 * and the layer, when PATH (which need not exist) is the file of any layer
 * of IMG's chain -- the same device and inode, so through symlinks and
 * hard links too.  0 otherwise. */
int sl_image_refuse_layer(const struct sl_image *img, const char *path,
                          const char *what);

/* Layer identity: the cache daemon keys blocks by layer.  The id comes from
 * the file itself so a modified base never matches stale cache entries.
 * An RBD layer has no file: its id is the cluster's fsid, the pool id, the
 * image id and the snapshot id (CEPH_NOSNAP, UINT64_MAX - 1, at the head),
 * which for a snapshot never changes; dev and ino are then 0. */
struct sl_layer_id {
  uint64_t dev, ino;
  uint64_t size;           /* only for read-only layers, else 0 */
  int64_t mtime_ns;        /* only for read-only layers, else 0 */
  char rbd_fsid[40];       /* "" for files */
  int64_t rbd_pool;
  char rbd_image[32];
  uint64_t rbd_snap;
};
int sl_image_layer_id(const struct sl_image *img, struct sl_layer_id *id);
/* A new read-only descriptor for this layer's file; the caller closes it.
 * -ENOTSUP for a layer that is not a file (RBD). */
int sl_image_layer_fd(const struct sl_image *img);

/* Does PATH name an RBD image ("rbd:POOL/IMAGE[@SNAP][:conf=FILE][:id=USER]",
 * QEMU's syntax)?  Such names are not files: they are neither resolved
 * against a directory nor stat()ed. */
bool sl_image_path_is_rbd(const char *path);
/* Was sluice built with RBD support (librbd)? */
bool sl_image_have_rbd(void);

/* An internal snapshot of a qcow2 image, as qemu-img info shows it. */
struct sl_snapshot_info {
  const char *id, *name;
  uint64_t vm_state_size;
  uint32_t date_sec, date_nsec;
  uint64_t vm_clock_nsec;
  uint64_t icount;           /* UINT64_MAX when the image does not record it */
};
/* A persistent dirty bitmap of a qcow2 image. */
struct sl_bitmap_info {
  const char *name;
  uint64_t granularity;      /* bytes */
  bool in_use;               /* a writer has it open, or it is inconsistent */
  bool enabled;              /* "auto": writes set its bits */
};

struct sl_image_info {
  enum sl_format format;
  uint64_t virtual_size;
  uint64_t file_size;        /* st_size */
  uint64_t actual_size;      /* st_blocks * 512 */
  uint32_t cluster_size;     /* qcow2 only */
  int qcow2_version;         /* 2 or 3; 0 for raw */
  int refcount_bits;
  bool extended_l2;
  bool lazy_refcounts;
  bool corrupt;
  bool dirty;
  const char *compression_type;   /* "zlib" or "zstd"; NULL for raw */
  const char *backing_file;       /* as recorded in the header, or NULL */
  const char *backing_format;     /* from the header extension, or NULL */
  const char *backing_path;       /* resolved path actually opened, or NULL */
  size_t n_snapshots;             /* qcow2 internal snapshots */
  const struct sl_snapshot_info *snapshots;
  size_t n_bitmaps;               /* qcow2 bitmaps QEMU would trust */
  const struct sl_bitmap_info *bitmaps;
};
/* Strings point into IMG and live until it is closed. */
int sl_image_get_info(const struct sl_image *img, struct sl_image_info *info);

/* Consistency check (qcow2; raw is always clean). */
#define SL_CHECK_REPAIR_LEAKS (1u << 0)
#define SL_CHECK_REPAIR_ALL   (1u << 1)
#define SL_CHECK_FORCE_SHARE  (1u << 2) /* -U: only without repair */
struct sl_check_result {
  int64_t corruptions;
  int64_t leaks;
  int64_t check_errors;
  int64_t corruptions_fixed;
  int64_t leaks_fixed;
  int64_t allocated_clusters;
  int64_t total_clusters;
  int64_t fragmented_clusters;
  int64_t compressed_clusters;
  uint64_t image_end_offset;
};
/* Opens PATH itself (without its backing chain), writable when repairing.
 * Problems are printed on stderr as qemu-img prints them.  After a repair
 * the image is checked again: corruptions and leaks then count what
 * remains, corruptions_fixed and leaks_fixed what was repaired. */
int sl_image_check(const char *path, unsigned repair,
                   struct sl_check_result *res);

#ifdef __cplusplus
}
#endif
#endif
