/* qcow2 driver internals: on-disk constants and the per-image state.
 *
 * The driver handles one layer (driver.h).  One mutex (s->lock) protects
 * all metadata: the L1 table, the L2 and refcount-block caches and the
 * allocator.  Data I/O of reads and of writes into already-allocated
 * clusters runs outside the lock so many threads proceed in parallel;
 * allocating writes hold the lock, which serialises allocation.
 *
 * Crash ordering (a SIGKILL at any instant leaves at worst leaked
 * clusters): refcount increments and the new cluster's data reach the
 * file (and are fdatasync'd) before any L2/L1 entry that references the
 * new cluster is written (s->l2_needs_refcount_flush; tables stay dirty in
 * their caches until a flush or an eviction, so one sync covers a batch),
 * and a reference is removed on disk before
 * the refcount is decremented (decrements are queued in s->pending_free
 * and applied only after the L2/L1 tables are written).
 */
#ifndef SLUICE_IMAGE_QCOW2_H
#define SLUICE_IMAGE_QCOW2_H

#include <endian.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "image/driver.h"

#define QCOW2_MAGIC 0x514649fbu
#define QCOW2_V3_HEADER_LEN 112
#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21
#define QCOW2_MAX_L1_BYTES (32u << 20)
#define QCOW2_MAX_REFTABLE_BYTES (8u << 20)

/* Incompatible / compatible feature bits. */
#define QCOW2_INCOMPAT_DIRTY      (1ull << 0)
#define QCOW2_INCOMPAT_CORRUPT    (1ull << 1)
#define QCOW2_INCOMPAT_DATA_FILE  (1ull << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ull << 3)
#define QCOW2_INCOMPAT_EXTL2      (1ull << 4)
#define QCOW2_INCOMPAT_KNOWN (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT | \
                              QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_EXTL2)
#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ull << 0)

/* Header extensions. */
#define QCOW2_EXT_END          0x00000000u
#define QCOW2_EXT_BACKING_FMT  0xe2792acau
#define QCOW2_EXT_FEATURE_NAMES 0x6803f857u
#define QCOW2_EXT_DATA_FILE    0x44415441u
#define QCOW2_EXT_BITMAPS      0x23852875u

/* Autoclear feature bits. */
#define QCOW2_AUTOCLEAR_BITMAPS (1ull << 0)

/* Bitmap directory entry flags. */
#define QCOW2_BME_IN_USE (1u << 0)
#define QCOW2_BME_AUTO   (1u << 1)

/* L1/L2 entry bits. */
#define QCOW2_OFLAG_COPIED     (1ull << 63)
#define QCOW2_OFLAG_COMPRESSED (1ull << 62)
#define QCOW2_OFLAG_ZERO       (1ull << 0)
#define QCOW2_OFFSET_MASK      0x00fffffffffffe00ull
#define QCOW2_L1_RESERVED      0x7f000000000001ffull
#define QCOW2_L2_RESERVED      0x3f000000000001feull

#define QCOW2_RT_RESERVED      0x00000000000001ffull

/* Kinds of metadata for the overlap check (QEMU's QCOW2_OL_*). */
#define QCOW2_OL_HEADER        (1u << 0)
#define QCOW2_OL_ACTIVE_L1     (1u << 1)
#define QCOW2_OL_ACTIVE_L2     (1u << 2)
#define QCOW2_OL_REFTABLE      (1u << 3)
#define QCOW2_OL_REFBLOCK      (1u << 4)
#define QCOW2_OL_SNAPTABLE     (1u << 5)
#define QCOW2_OL_INACTIVE_L1   (1u << 6)
#define QCOW2_OL_BITMAP_DIR    (1u << 7)

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

struct qcow2_cache_entry {
  uint64_t offset;      /* host offset of the table; 0 = slot empty */
  uint8_t *data;
  uint64_t lru;
  int pins;
  bool dirty;
};

struct qcow2_cache {
  const char *what;     /* "L2 table", "refcount block" */
  size_t nslots;
  size_t table_size;    /* bytes per table (= cluster size) */
  uint64_t tick;
  size_t last;          /* last hit, a cheap fast path for sequential I/O */
  struct qcow2_cache_entry *slots;
};

/* A queued refcount decrement, applied once the references are on disk. */
struct qcow2_free {
  uint64_t offset;
  uint64_t bytes;
};

/* One internal snapshot (qcow2-snapshot.c), from the snapshot table. */
struct qcow2_snapshot {
  uint64_t l1_offset;
  uint32_t l1_size;             /* entries */
  char *id, *name;
  uint32_t date_sec, date_nsec;
  uint64_t vm_clock_nsec;
  uint64_t vm_state_size;
  uint64_t disk_size;           /* the image's size if not recorded */
  uint64_t icount;              /* UINT64_MAX when not recorded */
  uint32_t extra_size;
};

/* One persistent dirty bitmap (qcow2-bitmap.c), from the directory. */
struct qcow2_bitmap {
  char *name;
  uint64_t table_offset;        /* bitmap table: table_size 64-bit entries */
  uint32_t table_size;
  uint32_t flags;               /* QCOW2_BME_* as on disk */
  uint8_t type, granularity_bits;
  size_t dir_pos;               /* the entry's offset in the directory */
  /* Writable opens: the bits in memory (NULL when not tracked). */
  _Atomic uint64_t *dirty;
  uint64_t nbits;
  bool track;                   /* enabled: writes set bits */
  bool opened_clean;            /* this open marked it IN_USE; store at close */
};

struct qcow2_state {
  pthread_mutex_t lock;
  pthread_mutex_t rmw_lock;     /* O_DIRECT read-modify-write of partial blocks */
  struct sl_image *img;

  /* Header. */
  uint32_t version;
  uint32_t cluster_bits;
  uint64_t cluster_size;
  uint64_t size;
  uint64_t incompat, compat, autoclear;
  uint32_t refcount_order;
  uint32_t refcount_bits;
  uint32_t header_length;
  uint8_t compression_type;
  uint64_t backing_file_offset;
  uint32_t backing_file_size;
  uint32_t nb_snapshots;
  uint64_t snapshots_offset;
  /* Internal snapshots (qcow2-snapshot.c): NSNAPSHOTS entries parsed from
   * the table at snapshots_offset, SNAPSHOTS_SIZE bytes long.  When the
   * table does not parse, snapshot_error says why (read-only opens only). */
  struct qcow2_snapshot *snapshots;
  uint32_t nsnapshots;
  uint64_t snapshots_size;
  char *snapshot_error;
  /* Bitmaps extension (qcow2-bitmap.c).  bitmap_ext: the extension is in
   * the header, its 24 data bytes at bitmap_ext_pos in cluster 0.
   * bitmaps_valid: it is trusted (autoclear bit 0 set, directory parsed);
   * then BITMAPS holds the NBITMAPS directory entries and the directory is
   * bitmap_dir_size bytes at bitmap_dir_offset.  Otherwise bitmap_error
   * says why (NULL when there is no extension at all). */
  bool bitmap_ext, bitmap_ext_bad, bitmaps_valid;
  size_t bitmap_ext_pos;
  uint32_t nb_bitmaps;
  uint64_t bitmap_dir_offset, bitmap_dir_size;
  struct qcow2_bitmap *bitmaps;
  uint32_t nbitmaps;
  char *bitmap_error;
  /* What get_info hands out (built on first use, freed with the state). */
  struct sl_snapshot_info *info_snapshots;
  struct sl_bitmap_info *info_bitmaps;
  uint64_t rt_used;             /* refcount table entries up to the last set */
  uint8_t *unknown_exts;        /* raw bytes of extensions we preserve */
  size_t unknown_exts_len;
  bool extended_l2;
  bool writable;
  bool for_check;               /* opened by check: tables past EOF read as 0 */

  /* Geometry. */
  uint32_t l2_bits;             /* log2 of entries per L2 table */
  uint64_t l2_entries;
  uint32_t l2_entry_size;       /* 8 or 16 */
  uint64_t subcluster_size;
  uint32_t subclusters;         /* per cluster: 1 or 32 */
  uint64_t rb_entries;          /* refcount entries per block */
  uint32_t rb_bits;             /* log2(rb_entries) */

  /* L1. */
  uint64_t l1_offset;
  uint32_t l1_size;
  uint64_t *l1;                 /* host byte order */
  bool l1_dirty;

  /* Refcount table. */
  uint64_t rt_offset;
  uint32_t rt_clusters;
  uint64_t rt_size;             /* entries */
  uint64_t *rt;                 /* host byte order */

  struct qcow2_cache l2_cache;
  struct qcow2_cache rb_cache;
  /* Set when a dirty L2 table refers to something not yet durable: new
   * refcounts, or data just written into a new cluster or subcluster.
   * Writing that table back first writes the refcount blocks and
   * fdatasyncs (one sync per batch, as qemu's cache dependency). */
  bool l2_needs_refcount_flush;
  uint64_t free_hint;           /* lowest cluster index that may be free */

  /* Guest clusters whose new host clusters are being written outside the
   * lock; other writers of those clusters wait on alloc_done. */
  struct qcow2_inflight { uint64_t first, count; } *inflight;
  size_t ninflight, inflight_cap;
  pthread_cond_t alloc_done;

  struct qcow2_free *pending_free;
  size_t npending, pending_cap;
  int64_t file_clusters_hint;
  atomic_bool no_zero_range;    /* the file system lacks FALLOC_FL_ZERO_RANGE */
};

/* qcow2.c */
int qcow2_io_read(struct qcow2_state *s, void *buf, size_t len, uint64_t off);
/* N big-endian 64-bit entries at OFF (an L1, refcount or bitmap table),
 * host order, in an aligned buffer (*out NULL when N is 0; free()). */
int qcow2_read_table(struct qcow2_state *s, uint64_t off, uint64_t n,
                     uint64_t **out);
int qcow2_io_write(struct qcow2_state *s, const void *buf, size_t len,
                   uint64_t off);
int qcow2_sync(struct qcow2_state *s);
uint64_t qcow2_file_size(struct qcow2_state *s);
int qcow2_write_header_fields(struct qcow2_state *s);
int qcow2_mark_corrupt(struct qcow2_state *s, const char *why);
/* FOR_CHECK: open as check does, accepting what QEMU's check accepts
 * (tables past the end of the file read as zeros, tables overlapping). */
int qcow2_open_state(struct sl_image *img, const char *path, int fd,
                     bool writable, bool for_check, size_t cache_bytes,
                     struct qcow2_state **out);
void qcow2_free_state(struct qcow2_state *s);
int qcow2_flush_locked(struct qcow2_state *s);

/* qcow2-refcount.c: the metadata overlap check.  Returns -EIO (the image
 * then marked corrupt and no longer writable) when [off, off+len) overlaps
 * metadata of a kind not in IGN.  Caller holds s->lock. */
int qcow2_overlap_check(struct qcow2_state *s, unsigned ign, uint64_t off,
                        uint64_t len);
/* qcow2_overlap_check() then qcow2_io_write(). */
int qcow2_write_checked(struct qcow2_state *s, unsigned ign, const void *buf,
                        size_t len, uint64_t off);
void qcow2_update_rt_used(struct qcow2_state *s);

/* qcow2-cache.c */
int qcow2_cache_init(struct qcow2_cache *c, const char *what, size_t nslots,
                     size_t table_size);
void qcow2_cache_destroy(struct qcow2_cache *c);
/* Pins and returns the table at OFFSET, reading it if absent (or zeroing
 * it when FRESH: a newly allocated table). */
int qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c,
                    uint64_t offset, bool fresh, uint8_t **out);
void qcow2_cache_put(struct qcow2_cache *c, uint8_t *table);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *table);
int qcow2_cache_flush(struct qcow2_state *s, struct qcow2_cache *c);
void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset);

/* qcow2-refcount.c */
int qcow2_get_refcount(struct qcow2_state *s, uint64_t cluster, uint64_t *rc);
int qcow2_update_refcount(struct qcow2_state *s, uint64_t cluster, int64_t delta);
/* Allocate up to N contiguous clusters (at least one); returns the host
 * offset and the count through *GOT. */
int qcow2_alloc_clusters(struct qcow2_state *s, uint64_t n, uint64_t *offset,
                         uint64_t *got);
int qcow2_queue_free(struct qcow2_state *s, uint64_t offset, uint64_t bytes);
int qcow2_install_reftable(struct qcow2_state *s, uint64_t *table,
                           uint64_t clusters, uint64_t off);
/* Refcount blocks, then L2 tables, then L1: the order that keeps a crash
 * at any instant to leaked clusters at worst. */
int qcow2_write_tables(struct qcow2_state *s);
int qcow2_apply_pending_frees(struct qcow2_state *s);
int qcow2_flush_refcounts(struct qcow2_state *s);
uint64_t qcow2_rc_get_entry(const struct qcow2_state *s, const uint8_t *blk,
                            uint64_t i);
void qcow2_rc_set_entry(const struct qcow2_state *s, uint8_t *blk, uint64_t i,
                        uint64_t v);

/* qcow2-cluster.c */
enum qcow2_map_type { QMAP_UNALLOC, QMAP_ZERO, QMAP_DATA, QMAP_COMPRESSED };
struct qcow2_map {
  enum qcow2_map_type type;
  uint64_t length;
  uint64_t host;       /* DATA: host offset of the first byte */
  uint64_t l2_entry;   /* COMPRESSED: the descriptor */
};
int qcow2_map(struct qcow2_state *s, uint64_t off, uint64_t len,
              struct qcow2_map *m);
int qcow2_read(struct qcow2_state *s, void *buf, size_t len, uint64_t off,
               bool locked);
int qcow2_write(struct qcow2_state *s, const void *buf, size_t len,
                uint64_t off);
int qcow2_zero_or_discard(struct qcow2_state *s, uint64_t off, uint64_t len,
                          bool discard, bool keep_alloc);
int qcow2_flush_l1(struct qcow2_state *s);
void qcow2_compressed_range(const struct qcow2_state *s, uint64_t entry,
                            uint64_t *host, uint64_t *bytes);

/* qcow2-compress.c */
int qcow2_decompress(struct qcow2_state *s, uint8_t *dst, size_t dst_len,
                     const uint8_t *src, size_t src_len);

/* qcow2-snapshot.c */
int qcow2_read_snapshots(struct qcow2_state *s);
void qcow2_free_snapshots(struct qcow2_state *s);

/* qcow2-bitmap.c */
int qcow2_parse_bitmap_ext(struct qcow2_state *s, const uint8_t *data,
                           uint32_t len, size_t pos);
int qcow2_read_bitmaps(struct qcow2_state *s);
void qcow2_free_bitmaps(struct qcow2_state *s);
/* Writable open: clear unknown autoclear bits, load the bitmaps and mark
 * them IN_USE on disk (before any guest write). */
int qcow2_bitmaps_open_rw(struct qcow2_state *s);
/* Set the bits of the enabled bitmaps over guest [off, off+len).
 * Lock-free; any thread. */
void qcow2_bitmaps_mark(struct qcow2_state *s, uint64_t off, uint64_t len);
/* Close: store the bitmaps this open marked IN_USE (s->lock held). */
int qcow2_bitmaps_store(struct qcow2_state *s);

/* qcow2-check.c */
int qcow2_check(const char *path, unsigned repair, struct sl_check_result *res);

static inline uint64_t qcow2_be64(const void *p)
{
  uint64_t v;
  __builtin_memcpy(&v, p, 8);
  return be64toh(v);
}
static inline uint32_t qcow2_be32(const void *p)
{
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return be32toh(v);
}
static inline void qcow2_put_be64(void *p, uint64_t v)
{
  v = htobe64(v);
  __builtin_memcpy(p, &v, 8);
}
static inline void qcow2_put_be32(void *p, uint32_t v)
{
  v = htobe32(v);
  __builtin_memcpy(p, &v, 4);
}

#endif
