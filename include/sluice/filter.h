/* sluice filter ABI: what a filter module implements and what it may call.
 *
 * A filter is a shared object exporting one function,
 *
 *   const struct sl_filter *sluice_filter_init(void);
 *
 * returning a static registration record.  The record starts with the API
 * version and its own size: the core copies only the bytes the filter
 * declares into a zeroed record of the size it knows, so a filter built
 * against an older (shorter) header gets NULL for fields added later and a
 * newer filter's extra fields are ignored.  Fields are only ever appended.
 *
 * A filter implements only what it changes.  Every operation it leaves NULL
 * goes straight to the layer below.  It reaches that layer through its
 * `next` handle with the sl_next_*() calls below, which are plain function
 * pointers: a filter links against nothing of libsluice, so the same module
 * works in the sluice command, in an export and in a test program.
 *
 * The core checks every request once, where it enters the stack (range,
 * read-only, known flags), so filters need not.  Requests a filter issues to
 * its `next` are checked again against that layer's size (cheaply), so a
 * filter bug fails a request instead of corrupting the image.
 *
 * Lifecycle, per module:  load -> (instances) -> unload
 *           per instance: config (each k=v) -> config_complete -> open ->
 *                         requests and events -> close
 * The instance state is a zeroed block of `instance_size` bytes the core
 * allocates before config and frees after close.  close is called for every
 * instance whose config began, so it must cope with a partial setup; its
 * `next` is NULL when open did not succeed (do no I/O then).
 *
 * Every int-returning function returns 0 (or a count / boolean) on success
 * and a negative errno on failure, after setting a message with
 * host->error() that names the thing and the problem.
 */
#ifndef SLUICE_FILTER_H
#define SLUICE_FILTER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sluice/image.h>   /* SL_FUA, SL_NO_HOLE, struct sl_extent */

#ifdef __cplusplus
extern "C" {
#endif

#define SL_FILTER_API_VERSION 1

/* How much concurrency a filter can take.  The core gives each disk the
 * strictest model of any filter in its stack. */
enum sl_filter_thread_model {
  SL_FILTER_PARALLEL = 0,           /* any number of requests at once */
  SL_FILTER_SERIALIZE_REQUESTS = 1, /* one request at a time per disk */
  SL_FILTER_SERIALIZE_ALL = 2,      /* one request at a time in the process */
};

/* Where a filter belongs in a stack.  The default order, top to bottom, is
 * the order of this enum (see docs/disk-descriptor.md for why); a stack
 * whose classed filters are out of this order is refused.  ANY filters
 * (fault injection, tracing) may sit anywhere. */
enum sl_filter_class {
  SL_FILTER_CLASS_ANY = 0,
  SL_FILTER_CLASS_OBSERVE,      /* stats: sees what the user issued */
  SL_FILTER_CLASS_THROTTLE,     /* rate limits */
  SL_FILTER_CLASS_CACHE,        /* caches plaintext, above encryption */
  SL_FILTER_CLASS_ENCRYPTION,   /* everything below holds ciphertext */
  SL_FILTER_CLASS_REPLICATION,  /* mirror: replicas hold ciphertext too */
};

struct sl_filter_env;

/* One read of a batch (pread_batch): COUNT of them go down the stack as
 * one call, so that a layer that can serve many reads at the cost of one
 * (the cache filter: one message to sluiced for all of them) may.  Each
 * entry succeeds or fails alone: STATUS is 0 or -errno; on failure the
 * message (host->error) is the last failed entry's. */
struct sl_read_vec {
  void *buf;
  size_t len;
  uint64_t off;
  int status;                /* out */
};
#define SL_READ_BATCH_MAX 256u /* entries in one pread_batch call, at most */

/* The layer below a filter.  Opaque apart from its operations table. */
struct sl_next;
struct sl_next_ops {
  uint32_t struct_size;
  int64_t (*get_size)(struct sl_next *n);
  int (*can_write)(struct sl_next *n);
  int (*can_trim)(struct sl_next *n);
  int (*can_zero)(struct sl_next *n);
  int (*can_fua)(struct sl_next *n);
  int (*can_multi_conn)(struct sl_next *n);
  int (*pread)(struct sl_next *n, void *buf, size_t len, uint64_t off,
               uint32_t flags);
  int (*pwrite)(struct sl_next *n, const void *buf, size_t len, uint64_t off,
                uint32_t flags);
  int (*flush)(struct sl_next *n, uint32_t flags);
  int (*discard)(struct sl_next *n, uint64_t off, uint64_t len, uint32_t flags);
  int (*write_zeroes)(struct sl_next *n, uint64_t off, uint64_t len,
                      uint32_t flags);
  int (*block_status)(struct sl_next *n, uint64_t off, uint64_t len,
                      struct sl_extent *ext);
  /* ---- appended in filter API 1.2: test with sl_next_pread_batch() ---- */
  int (*pread_batch)(struct sl_next *n, struct sl_read_vec *v, unsigned count,
                     uint32_t flags);
};
struct sl_next {
  const struct sl_next_ops *ops;
};

static inline int64_t sl_next_get_size(struct sl_next *n) { return n->ops->get_size(n); }
static inline int sl_next_can_write(struct sl_next *n) { return n->ops->can_write(n); }
static inline int sl_next_can_trim(struct sl_next *n) { return n->ops->can_trim(n); }
static inline int sl_next_can_zero(struct sl_next *n) { return n->ops->can_zero(n); }
static inline int sl_next_can_fua(struct sl_next *n) { return n->ops->can_fua(n); }
static inline int sl_next_can_multi_conn(struct sl_next *n) { return n->ops->can_multi_conn(n); }
static inline int sl_next_pread(struct sl_next *n, void *buf, size_t len,
                                uint64_t off, uint32_t flags)
{ return n->ops->pread(n, buf, len, off, flags); }
static inline int sl_next_pwrite(struct sl_next *n, const void *buf, size_t len,
                                 uint64_t off, uint32_t flags)
{ return n->ops->pwrite(n, buf, len, off, flags); }
static inline int sl_next_flush(struct sl_next *n, uint32_t flags)
{ return n->ops->flush(n, flags); }
static inline int sl_next_discard(struct sl_next *n, uint64_t off, uint64_t len,
                                  uint32_t flags)
{ return n->ops->discard(n, off, len, flags); }
static inline int sl_next_write_zeroes(struct sl_next *n, uint64_t off,
                                       uint64_t len, uint32_t flags)
{ return n->ops->write_zeroes(n, off, len, flags); }
static inline int sl_next_block_status(struct sl_next *n, uint64_t off,
                                       uint64_t len, struct sl_extent *ext)
{ return n->ops->block_status(n, off, len, ext); }
/* COUNT (<= SL_READ_BATCH_MAX) reads at once; returns how many failed
 * (their status < 0).  A core whose table predates pread_batch gets one
 * pread per entry, so a filter may call this against any core. */
static inline int sl_next_pread_batch(struct sl_next *n, struct sl_read_vec *v,
                                      unsigned count, uint32_t flags)
{
  if (n->ops->struct_size >= offsetof(struct sl_next_ops, pread_batch) +
                                 sizeof n->ops->pread_batch &&
      n->ops->pread_batch)
    return n->ops->pread_batch(n, v, count, flags);
  int failed = 0;
  for (unsigned i = 0; i < count; i++) {
    v[i].status = n->ops->pread(n, v[i].buf, v[i].len, v[i].off, flags);
    if (v[i].status > 0)
      v[i].status = 0;
    failed += v[i].status < 0;
  }
  return failed;
}

/* The host cache daemon as the host table offers it (see cache_attach). */
struct sl_cache_disk;
#define SL_CACHE_PRIVATE (1u << 0)  /* also cache the writable top layer */
struct sl_cache_read {
  int depth;                 /* chain layer, as in struct sl_extent */
  uint64_t file_offset;      /* in that layer's file */
  uint32_t length;           /* 1 .. SL_CACHE_MAX_READ */
  void *buf;
  int status;                /* out: 0 served, < 0 read it from next */
  bool hit;                  /* out: the daemon had every block */
};
#define SL_CACHE_MAX_READ (2u << 20)
#define SL_CACHE_MAX_BATCH 256u
struct sl_cache_stats {
  uint64_t reads, served, hits, fallbacks, timeouts, connects;
  bool connected;
};

/* Services of the core, handed to load() and kept in the environment.
 *
 * This table is everything a filter may call in the core: a module links
 * nothing of libsluice (the build links filters with -z defs, and the
 * sluice executable exports no symbols, so a call to an internal function
 * is refused when the module is built or, for a module built elsewhere,
 * when it is installed or loaded).  Fields are only ever appended;
 * struct_size says how many this core fills.  A field added after the
 * first version of the table (the first version ends at disk_close) must be
 * tested with SL_FILTER_HOST_HAS(host, field) before use, so that a newer
 * filter still loads in an older core and can fall back.  The cache
 * daemon's client (issue 13) was the first such addition. */
struct sl_filter_host {
  uint32_t struct_size;
  /* Record a message for the calling thread; returns -errnum. */
  int (*error)(int errnum, const char *fmt, ...)
      __attribute__((format(printf, 2, 3)));
  const char *(*last_error)(void);
  uint64_t (*now_ns)(void);          /* CLOCK_MONOTONIC */
  /* Open another disk (image or descriptor) as a `next` the filter may call,
   * e.g. a mirror's target.  *handle is what to give disk_close. */
  int (*disk_open)(const char *path, bool read_only, struct sl_next **next,
                   void **handle);
  int (*disk_close)(void *handle);

  /* ---- appended for the host cache daemon (issue 13) ----
   * Present when struct_size covers them.  The client of sluiced lives in
   * libsluice; a filter reaches it only through these.  Nothing here ever
   * makes a request fail: an entry the daemon does not serve (absent,
   * killed, slower than the deadline, a layer it refused) comes back with
   * a negative status and the filter reads it from next.
   *
   * cache_attach: bind the image under NEXT to the daemon at SOCKET (NULL:
   * the default socket).  Its read-only layers are registered for the
   * shared cache; with SL_CACHE_PRIVATE also the writable top layer, in a
   * namespace of this disk alone.  Fails (ENOTSUP, with a message) only
   * when what NEXT reads is not the image's bytes (a filter below handles
   * reads), never because the daemon is away. */
  int (*cache_attach)(struct sl_next *next, const char *socket,
                      unsigned flags, struct sl_cache_disk **out);
  void (*cache_detach)(struct sl_cache_disk *cd);
  /* N ranges of layer files, given as block status reports them (DEPTH,
   * FILE_OFFSET), in one message to the daemon.  Returns how many entries
   * were served (status 0); the others must be read from next. */
  int (*cache_read)(struct sl_cache_disk *cd, struct sl_cache_read *rd,
                    unsigned n, uint64_t deadline_ns);
  /* After a write to the (private) layer at DEPTH: forget those bytes. */
  void (*cache_invalidate)(struct sl_cache_disk *cd, int depth,
                           uint64_t file_offset, uint64_t len);
  void (*cache_stats)(struct sl_cache_disk *cd, struct sl_cache_stats *st);

  /* ---- appended for the filter ABI (issue 12; SL_FILTER_HOST_HAS) ---- */
  /* The core's size grammar (as qemu-img: K/M/G/T/P/E powers of 1024, an
   * optional "iB"/"B", fractions that come out whole): 0, or -EINVAL /
   * -ERANGE with a message naming WHAT. */
  int (*parse_size)(const char *what, const char *s, uint64_t *out);
  /* PATH relative to the descriptor's directory (env->base_dir), as the
   * core resolves backing files; absolute paths unchanged.  *out is
   * malloc'ed (the filter frees it). */
  int (*resolve_path)(const struct sl_filter_env *env, const char *path,
                      char **out);
};

#define SL_FILTER_HOST_HAS(host, field)                                     \
  ((host)->struct_size >= offsetof(struct sl_filter_host, field) +          \
                              sizeof((host)->field))

/* What an instance learns about where it runs (config_complete, open). */
struct sl_filter_env {
  uint32_t struct_size;
  const struct sl_filter_host *host;
  const char *instance_name;   /* name in the stack (the module's, or name=) */
  const char *base_dir;        /* resolve relative paths here */
  const char *descriptor;      /* the descriptor's path, or NULL */
  const char *image;           /* the image's path */
  bool read_only;
};

struct sl_filter {
  uint32_t api_version;        /* SL_FILTER_API_VERSION */
  uint32_t struct_size;        /* sizeof(struct sl_filter) */
  const char *name;
  const char *description;
  const char *config_help;     /* "key=VALUE  meaning" lines */
  enum sl_filter_class filter_class;
  enum sl_filter_thread_model thread_model;
  size_t instance_size;

  /* Module lifecycle. */
  int (*load)(const struct sl_filter_host *host);
  void (*unload)(void);

  /* Instance lifecycle.  config is called once per k=v, in order; it must
   * reject unknown keys and bad values with a message naming both. */
  int (*config)(void *inst, const char *key, const char *value);
  int (*config_complete)(void *inst, const struct sl_filter_env *env);
  int (*open)(void *inst, struct sl_next *next, const struct sl_filter_env *env);
  void (*close)(void *inst, struct sl_next *next);

  /* Capabilities: >0 true, 0 false, <0 error.  NULL asks next. */
  int64_t (*get_size)(void *inst, struct sl_next *next);
  int (*can_write)(void *inst, struct sl_next *next);
  int (*can_trim)(void *inst, struct sl_next *next);
  int (*can_zero)(void *inst, struct sl_next *next);
  int (*can_fua)(void *inst, struct sl_next *next);
  int (*can_multi_conn)(void *inst, struct sl_next *next);

  /* Requests. */
  int (*pread)(void *inst, struct sl_next *next, void *buf, size_t len,
               uint64_t off, uint32_t flags);
  int (*pwrite)(void *inst, struct sl_next *next, const void *buf, size_t len,
                uint64_t off, uint32_t flags);
  int (*flush)(void *inst, struct sl_next *next, uint32_t flags);
  int (*discard)(void *inst, struct sl_next *next, uint64_t off, uint64_t len,
                 uint32_t flags);
  int (*write_zeroes)(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags);
  /* Fills EXT as sl_image_block_status() does; ext->depth is the owning
   * chain layer and is passed up unchanged unless the filter changes it. */
  int (*block_status)(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, struct sl_extent *ext);

  /* Events.  snapshot: an overlay was created under the disk.  release:
   * ownership is being handed over; requests are drained, finish any
   * background work and flush.  resume: requests may flow again. */
  int (*snapshot)(void *inst, struct sl_next *next);
  int (*release)(void *inst, struct sl_next *next);
  int (*resume)(void *inst, struct sl_next *next);

  /* ---- added in filter API 1.1 (NULL in a record that predates it) ---- */
  /* A versioned query about the instance's state, so that tools ask the
   * filter instead of reading its private files.  WHAT names the query
   * (the filter documents it, e.g. "mirror.dirty"), VERSION the reply
   * layout the caller understands; the filter fills at most OUT_SIZE bytes
   * of OUT and returns how many it wrote, or -ENOTSUP (with a message) for
   * a query or version it does not answer. */
  int (*query)(void *inst, const char *what, uint32_t version, void *out,
               size_t out_size);

  /* ---- added in filter API 1.2 (NULL in a record that predates it) ---- */
  /* COUNT reads (1..SL_READ_BATCH_MAX) in one call: an export that has
   * parsed several read requests at once hands them down together, so a
   * filter that pays per call rather than per byte (one round trip to a
   * daemon, one lock) pays once.  Fill every entry's status (0 or -errno,
   * with host->error() for a failure) and return how many failed; entries
   * are independent (one failing fails only itself) and may overlap.
   * Used only in a filter that also implements pread.  A filter that
   * leaves it NULL gets one pread call per entry from the core, and below
   * it the batch is split the same way, so implementing it is never
   * needed for correctness; a filter that implements it passes what it
   * does not serve down with sl_next_pread_batch().
   *
   * Whether a batch pays: an export gathers reads into batches only if
   * some level takes a batch as ONE (see SL_QUERY_PREAD_BATCH); a filter
   * that implements pread_batch answers that query, or the core assumes it
   * takes batches as one. */
  int (*pread_batch)(void *inst, struct sl_next *next, struct sl_read_vec *v,
                     unsigned count, uint32_t flags);
};

/* The query (filter API 1.2) a filter implementing pread_batch answers so
 * the core knows what it does with a batch: version 1, OUT an int, one of
 * SL_PREAD_BATCH_*.  ONE: this instance serves a batch at the cost of one
 * call (the cache filter with a daemon attached); SPLIT: it does not, and
 * nothing below it sees the batch whole either (the cache filter with
 * mode=off or no daemon: it passes the batch on to an image, which reads
 * entry by entry); PASS: it forwards batches whole to next (stats,
 * throttle), so the answer is the next reading level's.  A filter with
 * pread_batch that does not answer counts as ONE.  sl_disk_can_pread_batch
 * is true only if the walk ends at ONE: otherwise gathering reads would
 * only serialize, in the export's reader, reads the image serves one by
 * one anyway. */
#define SL_QUERY_PREAD_BATCH "sluice.pread-batch"
enum { SL_PREAD_BATCH_SPLIT = 0, SL_PREAD_BATCH_ONE = 1, SL_PREAD_BATCH_PASS = 2 };

/* The symbols a module exports (both defined by SL_REGISTER_FILTER). */
#define SL_FILTER_INIT_SYMBOL "sluice_filter_init"
typedef const struct sl_filter *(*sl_filter_init_fn)(void);

/* What the filter was compiled against, stamped by SL_REGISTER_FILTER from
 * this header (not typed by the filter's author): the loader refuses a
 * module whose stamp it does not understand, and trusts these sizes over
 * the record's own fields. */
#define SL_FILTER_ABI_SYMBOL "sluice_filter_abi"
#define SL_FILTER_ABI_MAGIC 0x534c4654u   /* "SLFT" */
struct sl_filter_abi {
  uint32_t magic;              /* SL_FILTER_ABI_MAGIC */
  uint32_t api_version;        /* SL_FILTER_API_VERSION */
  uint32_t filter_size;        /* sizeof(struct sl_filter) */
  uint32_t host_size;          /* sizeof(struct sl_filter_host) */
};

#define SL_REGISTER_FILTER(rec)                                             \
  __attribute__((visibility("default")))                                    \
  extern const struct sl_filter_abi sluice_filter_abi;                     \
  __attribute__((visibility("default")))                                    \
  const struct sl_filter_abi sluice_filter_abi = {                         \
    SL_FILTER_ABI_MAGIC, SL_FILTER_API_VERSION,                             \
    (uint32_t)sizeof(struct sl_filter),                                     \
    (uint32_t)sizeof(struct sl_filter_host)};                               \
  __attribute__((visibility("default")))                                    \
  const struct sl_filter *sluice_filter_init(void);                        \
  const struct sl_filter *sluice_filter_init(void) { return &(rec); }

#ifdef __cplusplus
}
#endif
#endif
