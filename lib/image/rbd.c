/* The RBD driver: a Ceph RBD image as one layer of a sluice image.
 *
 * An RBD image is a block device striped over RADOS objects; librbd does
 * the striping, the caching and the exclusive lock, so this driver is thin:
 * every request is one asynchronous librbd call (rbd_aio_*) whose
 * completion the calling thread waits for.  librbd's own threads do the
 * network I/O, so many server threads keep many requests in flight without
 * a thread per request, and a request never holds a lock of ours.
 *
 * What makes RBD differ from a file, and how image.c sees it:
 *   - no file descriptor (img->fd is -1): the layer's identity for the
 *     cache is (cluster fsid, pool id, image id, snapshot id), which no
 *     write can alias, instead of (device, inode);
 *   - locking: a writable open takes the RBD exclusive lock explicitly,
 *     which makes librbd refuse (not hand over) the lock to other clients
 *     -- QEMU or another sluice -- for as long as the image is open, as the
 *     QEMU lock bytes do for files.  A read-only open takes no lock;
 *   - layering: a clone of a protected snapshot names its parent as its
 *     backing file ("rbd:POOL/PARENT@SNAP" with the child's connection
 *     options), which image.c opens as the next layer.  Reads of the clone
 *     go through librbd, which reads the parent itself where the clone has
 *     no data; block status reports only the clone's own extents
 *     (rbd_diff_iterate2 without the parent) and UNALLOCATED elsewhere, so
 *     image.c attributes the rest to the parent and the allocation depth
 *     is right;
 *   - an image with no parent reports its holes as ZERO at depth 0, as raw
 *     files do, since reads of them return zeros.
 *
 * Connections (rados_t) are shared between the layers of a chain and the
 * images of a process that use the same ceph.conf, client id and options
 * (rbd-conn.c keeps them).
 */
#include <errno.h>
#include <inttypes.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/driver.h"
#include "image/rbd-spec.h"
#include "image/rbd.h"
#include "cachesvc/protocol.h"

/* Unless ceph.conf or the name says otherwise: a monitor that does not
 * answer fails the open after this long instead of Ceph's 300 s. */
#define DEFAULT_MON_TIMEOUT "30"
/* ... and an OSD request (a read, a write, a flush) after this long. */
#define DEFAULT_OSD_TIMEOUT "30"
/* At close, how long the cluster has to answer one request before it is
 * taken for gone (at most; less if the OSD timeout is shorter). */
#define CLOSE_PROBE_S 15

struct rbd_layer {
  struct sl_rbd_spec spec;
  struct sl_rbd_conn *conn;
  rados_ioctx_t io;
  rbd_image_t image;
  char id[32];               /* the image's id, stable across renames */
  uint64_t snap_id;          /* CEPH_NOSNAP (UINT64_MAX - 1) at the head */
  uint64_t object_size;
  bool has_parent;
  bool locked;
};

/* Who shares a connection: images named with the same conf, id and
 * options (in order). */
static char *conn_key(const struct sl_rbd_spec *s)
{
  char *k = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&k, &len);
  if (!f)
    return NULL;
  fprintf(f, "driver\nconf=%s\n", s->conf ? s->conf : "");
  fprintf(f, "id=%s\n", s->user ? s->user : "");
  for (size_t i = 0; i < s->n_opts; i++)
    fprintf(f, "%s=%s\n", s->keys[i], s->values[i]);
  if (fclose(f) != 0) {
    free(k);
    return NULL;
  }
  return k;
}

/* A connection for SPEC, shared when one with the same options exists:
 * ceph.conf, CEPH_ARGS and the name's options over our defaults. */
static int conn_get(const char *path, const struct sl_rbd_spec *s,
                    struct sl_rbd_conn **out)
{
  char *key = conn_key(s);
  if (!key)
    return sl_error(ENOMEM, "%s: out of memory", path);
  char name[256];
  snprintf(name, sizeof name, "client.%s", s->user ? s->user : "admin");
  /* Defaults first, so that ceph.conf, CEPH_ARGS and the name's options
   * override them: bounded waits, and librados's log kept off stderr (its
   * errors come back as codes, reported by the caller).  Ceph waits for an
   * OSD for ever by default: a flush at exit with the cluster gone would
   * hang the process.  Bounded, an OSD that does not answer fails the
   * request (and the exit's flush) with ETIMEDOUT. */
  static const char *const dkeys[] = {"client_mount_timeout", "rados_mon_op_timeout",
                                      "rados_osd_op_timeout", "log_to_stderr",
                                      "err_to_stderr", "log_file"};
  static const char *const dvalues[] = {DEFAULT_MON_TIMEOUT, DEFAULT_MON_TIMEOUT,
                                        DEFAULT_OSD_TIMEOUT, "false", "false", ""};
  struct sl_rbd_conn_setup su = {
    .what = path, .key = key, .client = name,
    .pre_keys = dkeys, .pre_values = dvalues, .n_pre = SL_ARRAY_SIZE(dkeys),
    .read_conf = true, .conf = s->conf,
    .post_keys = (const char *const *)s->keys, .post_values = (const char *const *)s->values,
    .n_post = s->n_opts,
  };
  int r = sl_rbd_conn_get(&su, out);
  explicit_bzero(key, strlen(key)); /* the options may hold a key */
  free(key);
  return r;
}

static int open_ioctx(const char *path, struct sl_rbd_conn *c, const char *pool,
                      const char *ns, rados_ioctx_t *io)
{
  int r = rados_ioctx_create(sl_rbd_conn_cluster(c), pool, io);
  if (r == -ENOENT)
    return sl_error(ENOENT, "%s: Ceph pool '%s' does not exist", path, pool);
  if (r < 0)
    return sl_error(-r, "%s: cannot open Ceph pool '%s': %s", path, pool,
                    strerror(-r));
  rados_ioctx_set_namespace(*io, ns);
  return 0;
}

static void layer_free(struct rbd_layer *L)
{
  if (!L)
    return;
  bool gone = L->conn && sl_rbd_conn_gone(L->conn);
  if (L->image && !gone)
    rbd_close(L->image);
  if (L->io && !gone)
    rados_ioctx_destroy(L->io);
  sl_rbd_conn_put(L->conn);
  sl_rbd_spec_clear(&L->spec);
  free(L);
}

/* Who holds the exclusive lock, for a message; "another client" if unknown. */
static void lock_owner(rbd_image_t image, char *buf, size_t len)
{
  char *owners[8];
  size_t n = 8;
  rbd_lock_mode_t mode;
  snprintf(buf, len, "another client");
  if (rbd_lock_get_owners(image, &mode, owners, &n) == 0 && n > 0) {
    snprintf(buf, len, "%s", owners[0]);
    rbd_lock_get_owners_cleanup(owners, n);
  }
}

static int rbd_open_layer(struct sl_image *img, const struct sl_image_open_opts *opts)
{
  const char *path = img->filename;
  struct rbd_layer *L = calloc(1, sizeof *L);
  if (!L)
    return sl_error(ENOMEM, "%s: out of memory", path);
  int r = sl_rbd_spec_parse(path, &L->spec);
  if (r < 0)
    goto fail;
  struct sl_rbd_spec *s = &L->spec;
  if (s->snap && !img->read_only) {
    r = sl_error(EROFS, "%s: snapshot '%s' is read-only (open it read-only, "
                 "or write to a clone)", path, s->snap);
    goto fail;
  }
  if ((r = conn_get(path, s, &L->conn)) < 0)
    goto fail;
  if ((r = open_ioctx(path, L->conn, s->pool, s->ns, &L->io)) < 0)
    goto fail;
  if (img->read_only)
    r = rbd_open_read_only(L->io, s->image, &L->image, s->snap);
  else
    r = rbd_open(L->io, s->image, &L->image, NULL);
  if (r == -ENOENT && s->snap) {
    /* Which is missing, the image or its snapshot? */
    rbd_image_t probe;
    if (rbd_open_read_only(L->io, s->image, &probe, NULL) == 0) {
      rbd_close(probe);
      r = sl_error(ENOENT, "%s: RBD image '%s' has no snapshot '%s'", path,
                   s->image, s->snap);
      goto fail;
    }
  }
  if (r < 0) {
    L->image = NULL;
    if (r == -ENOENT)
      r = sl_error(ENOENT, "%s: RBD image '%s' does not exist in pool '%s'%s%s",
                   path, s->image, s->pool, *s->ns ? " namespace " : "", s->ns);
    else
      r = sl_error(-r, "%s: cannot open RBD image: %s", path, strerror(-r));
    goto fail;
  }
  uint64_t features = 0;
  rbd_get_features(L->image, &features);
  if (!img->read_only && (features & RBD_FEATURE_EXCLUSIVE_LOCK)) {
    r = rbd_lock_acquire(L->image, RBD_LOCK_MODE_EXCLUSIVE);
    if (r < 0) {
      char who[256];
      lock_owner(L->image, who, sizeof who);
      r = sl_error(EBUSY, "%s: the RBD exclusive lock is held by %s: the image "
                   "is in use (%s)", path, who, strerror(-r));
      goto fail;
    }
    L->locked = true;
  }
  rbd_image_info_t st;
  if ((r = rbd_stat(L->image, &st, sizeof st)) < 0) {
    r = sl_error(-r, "%s: cannot stat RBD image: %s", path, strerror(-r));
    goto fail;
  }
  img->size = st.size;
  L->object_size = st.obj_size;
  if (rbd_get_id(L->image, L->id, sizeof L->id) < 0)
    snprintf(L->id, sizeof L->id, "%s", st.block_name_prefix);
  L->snap_id = UINT64_MAX - 1; /* CEPH_NOSNAP */
  if (s->snap && (r = rbd_snap_get_id(L->image, s->snap, &L->snap_id)) < 0) {
    r = sl_error(-r, "%s: snapshot '%s': %s", path, s->snap, strerror(-r));
    goto fail;
  }
  rbd_linked_image_spec_t pimg;
  rbd_snap_spec_t psnap;
  r = rbd_get_parent(L->image, &pimg, &psnap);
  if (r == 0) {
    L->has_parent = true;
    /* Recorded even with no_backing (image.c then opens no chain), as a
     * qcow2 header's backing file is. */
    img->backing_file = sl_rbd_spec_format(s, pimg.pool_name, pimg.pool_namespace,
                                           pimg.image_name, psnap.name);
    img->backing_fmt = SL_FORMAT_RAW;
    rbd_linked_image_spec_cleanup(&pimg);
    rbd_snap_spec_cleanup(&psnap);
    if (!img->backing_file) {
      r = sl_error(ENOMEM, "%s: out of memory", path);
      goto fail;
    }
  } else if (r != -ENOENT) {
    r = sl_error(-r, "%s: cannot read the RBD parent: %s", path, strerror(-r));
    goto fail;
  }
  img->priv = L;
  return 0;
fail:
  layer_free(L);
  return r;
}

/* Does the cluster answer one request (a stat of the image's header)
 * within min(CLOSE_PROBE_S, the OSD timeout)?  Asked before closing, which
 * makes several requests that would each wait out the OSD timeout.  When
 * it does not, the request is left in flight: its completion and result
 * are never freed (the process is exiting; it may still complete). */
static bool cluster_answers(struct rbd_layer *L)
{
  char t[32] = "";
  long limit = CLOSE_PROBE_S;
  if (rados_conf_get(sl_rbd_conn_cluster(L->conn), "rados_osd_op_timeout", t, sizeof t) == 0 &&
      atol(t) > 0 && atol(t) < limit)
    limit = atol(t);
  struct probe {
    uint64_t size;
    time_t mtime;
    char oid[64];
  } *p = calloc(1, sizeof *p);
  rados_completion_t c;
  if (!p || rados_aio_create_completion2(NULL, NULL, &c) < 0) {
    free(p);
    return true; /* cannot tell: close as usual */
  }
  snprintf(p->oid, sizeof p->oid, "rbd_header.%s", L->id);
  if (rados_aio_stat(L->io, p->oid, c, &p->size, &p->mtime) < 0) {
    rados_aio_release(c);
    free(p);
    return true;
  }
  for (long i = 0; i < limit * 100; i++) {
    if (rados_aio_is_complete(c)) {
      int e = rados_aio_get_return_value(c);
      rados_aio_release(c);
      free(p);
      return e != -ETIMEDOUT;
    }
    struct timespec ts = {.tv_nsec = 10000000};
    nanosleep(&ts, NULL);
  }
  return false;
}

static int rbd_close_layer(struct sl_image *img)
{
  struct rbd_layer *L = img->priv;
  int r = 0;
  if (L && L->image && !img->read_only && !img->no_flush) {
    int e = rbd_flush(L->image);
    if (e == -ETIMEDOUT)
      sl_rbd_conn_set_gone(L->conn);
    if (e < 0)
      r = sl_error(-e, "%s: flush on close: %s", img->filename, strerror(-e));
  }
  if (L && L->image && !sl_rbd_conn_gone(L->conn) && !cluster_answers(L))
    sl_rbd_conn_set_gone(L->conn);
  if (L && L->image && sl_rbd_conn_gone(L->conn) && r == 0)
    r = sl_error(ETIMEDOUT, "%s: the Ceph cluster does not answer: the image is left "
                 "without closing it (its lock goes when the cluster expires this "
                 "client's watch)", img->filename);
  layer_free(L);
  img->priv = NULL;
  return r;
}

/* Wait for C and release it; the request's result. */
/* The result of the request submitted on C, whose submit returned
 * SUBMITTED: a refused submit releases C at once, else wait for it. */
static ssize_t wait_completion(rbd_completion_t c, int submitted)
{
  if (submitted < 0) {
    rbd_aio_release(c);
    return submitted;
  }
  rbd_aio_wait_for_complete(c);
  ssize_t r = rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  return r;
}

static int io_error(struct sl_image *img, const char *op, ssize_t r,
                    uint64_t off, uint64_t len)
{
  return sl_error((int)-r, "%s: RBD %s of %" PRIu64 " bytes at %" PRIu64 ": %s",
                  img->filename, op, len, off, strerror((int)-r));
}

static int rbd_pread(struct sl_image *img, void *buf, size_t len, uint64_t off)
{
  struct rbd_layer *L = img->priv;
  rbd_completion_t c;
  int r = rbd_aio_create_completion(NULL, NULL, &c);
  if (r < 0)
    return io_error(img, "read", r, off, len);
  ssize_t n = wait_completion(c, rbd_aio_read(L->image, off, len, buf, c));
  if (n < 0)
    return io_error(img, "read", n, off, len);
  if ((size_t)n < len) /* past a shrunk end: zeros, as for files */
    memset((char *)buf + n, 0, len - (size_t)n);
  return 0;
}

static int rbd_do_flush(struct sl_image *img)
{
  struct rbd_layer *L = img->priv;
  if (img->no_flush)
    return 0;
  rbd_completion_t c;
  int r = rbd_aio_create_completion(NULL, NULL, &c);
  if (r == 0)
    r = (int)wait_completion(c, rbd_aio_flush(L->image, c));
  if (r < 0)
    return sl_error(-r, "%s: RBD flush: %s", img->filename, strerror(-r));
  return 0;
}

/* Durable-before-completion writes: librbd has no per-write FUA, so the
 * write is followed by a flush of the image's cache. */
static int after_write(struct sl_image *img, uint32_t flags)
{
  return (flags & SL_FUA) ? rbd_do_flush(img) : 0;
}

static int rbd_pwrite(struct sl_image *img, const void *buf, size_t len,
                      uint64_t off, uint32_t flags)
{
  struct rbd_layer *L = img->priv;
  rbd_completion_t c;
  int r = rbd_aio_create_completion(NULL, NULL, &c);
  if (r < 0)
    return io_error(img, "write", r, off, len);
  ssize_t n = wait_completion(c, rbd_aio_write(L->image, off, len, buf, c));
  if (n < 0)
    return io_error(img, "write", n, off, len);
  return after_write(img, flags);
}

static int drv_discard(struct sl_image *img, uint64_t off, uint64_t len)
{
  struct rbd_layer *L = img->priv;
  rbd_completion_t c;
  int r = rbd_aio_create_completion(NULL, NULL, &c);
  if (r < 0)
    return io_error(img, "discard", r, off, len);
  ssize_t n = wait_completion(c, rbd_aio_discard(L->image, off, len, c));
  return n < 0 ? io_error(img, "discard", n, off, len) : 0;
}

static int drv_write_zeroes(struct sl_image *img, uint64_t off, uint64_t len,
                            uint32_t flags)
{
  struct rbd_layer *L = img->priv;
  rbd_completion_t c;
  int r = rbd_aio_create_completion(NULL, NULL, &c);
  if (r < 0)
    return io_error(img, "write-zeroes", r, off, len);
  int zflags = (flags & SL_NO_HOLE) ? RBD_WRITE_ZEROES_FLAG_THICK_PROVISION : 0;
  ssize_t n = wait_completion(c, rbd_aio_write_zeroes(L->image, off, len, c,
                                                      zflags, 0));
  if (n < 0)
    return io_error(img, "write-zeroes", n, off, len);
  return after_write(img, flags);
}

struct diff_first {
  uint64_t off, end;         /* the range asked about */
  uint64_t start, stop;      /* the first extent found, clipped */
  bool found;
};

static int diff_cb(uint64_t off, size_t len, int exists, void *arg)
{
  struct diff_first *d = arg;
  if (!exists || len == 0)
    return 0;
  uint64_t s = SL_MAX(off, d->off), e = SL_MIN(off + len, d->end);
  if (s >= e)
    return 0;
  if (!d->found) {
    d->found = true;
    d->start = s;
    d->stop = e;
  } else if (s <= d->stop) {
    d->stop = SL_MAX(d->stop, e);  /* contiguous: one longer extent */
  } else {
    return -ECANCELED;             /* a gap: the first extent is complete */
  }
  return d->start > d->off ? -ECANCELED : 0;
}

static int rbd_block_status(struct sl_image *img, uint64_t off, uint64_t len,
                            struct sl_extent *ext)
{
  struct rbd_layer *L = img->priv;
  /* A clone reads its parent only below the parent overlap (shrunk by a
   * resize of the clone, and not grown back by a later one): beyond it
   * its holes read as zeros, and must not be attributed to the parent --
   * a cache that follows block status would serve parent bytes there. */
  uint64_t overlap = 0;
  if (L->has_parent && rbd_get_overlap(L->image, &overlap) < 0)
    overlap = 0;
  struct diff_first d = {.off = off, .end = off + len};
  int r = rbd_diff_iterate2(L->image, NULL, off, len, 0, 0, diff_cb, &d);
  if (r < 0 && r != -ECANCELED)
    return sl_error(-r, "%s: RBD allocation map: %s", img->filename, strerror(-r));
  memset(ext, 0, sizeof *ext);
  ext->offset = off;
  if (d.found && d.start == off) {
    ext->type = SL_EXTENT_DATA;
    ext->length = d.stop - off;
    ext->file_offset = off; /* raw: the image is its own "file" */
  } else {
    /* A hole up to the next extent: the parent's below the overlap,
     * zeros above it. */
    uint64_t end = d.found ? d.start : off + len;
    if (L->has_parent && off < overlap) {
      ext->type = SL_EXTENT_UNALLOCATED;
      end = SL_MIN(end, overlap);
    } else {
      ext->type = SL_EXTENT_ZERO;
    }
    ext->length = end - off;
  }
  return 0;
}

static void rbd_get_info(const struct sl_image *img, struct sl_image_info *info)
{
  const struct rbd_layer *L = img->priv;
  info->format = SL_FORMAT_RAW;
  info->file_size = img->size;
  info->cluster_size = (uint32_t)L->object_size;
}

static int rbd_check(const char *path, unsigned repair, struct sl_check_result *res)
{
  return sl_error(ENOTSUP, "%s: RBD images have no metadata to check", path);
}

int sl_rbd_create(const char *path, const struct sl_image_create_opts *o,
                  uint64_t size)
{
  struct sl_rbd_spec s;
  int r = sl_rbd_spec_parse(path, &s);
  if (r < 0)
    return r;
  struct sl_rbd_conn *c = NULL;
  rados_ioctx_t io = NULL;
  if (s.snap) {
    r = sl_error(EINVAL, "%s: cannot create a snapshot as an image (drop "
                 "'@%s')", path, s.snap);
    goto out;
  }
  if (o->format == SL_FORMAT_QCOW2) {
    r = sl_error(ENOTSUP, "%s: RBD images are raw (use -f raw)", path);
    goto out;
  }
  if (o->backing_file) {
    r = sl_error(ENOTSUP, "%s: a backing file for an RBD image is an RBD clone "
                 "(rbd snap protect, rbd clone)", path);
    goto out;
  }
  if (o->preallocation != SL_PREALLOC_OFF) {
    r = sl_error(ENOTSUP, "%s: RBD images take no preallocation", path);
    goto out;
  }
  if ((r = conn_get(path, &s, &c)) < 0)
    goto out;
  if ((r = open_ioctx(path, c, s.pool, s.ns, &io)) < 0)
    goto out;
  rbd_image_options_t opts;
  rbd_image_options_create(&opts);
  if (o->cluster_size) {
    /* The object size is the RBD image's unit, as qemu-img's cluster_size. */
    uint64_t order = (uint64_t)__builtin_ctz(o->cluster_size);
    if (o->cluster_size < 4096 || (o->cluster_size & (o->cluster_size - 1))) {
      rbd_image_options_destroy(opts);
      r = sl_error(EINVAL, "%s: RBD object size %u is not a power of two of at "
                   "least 4096", path, o->cluster_size);
      goto out;
    }
    rbd_image_options_set_uint64(opts, RBD_IMAGE_OPTION_ORDER, order);
  }
  r = rbd_create4(io, s.image, size, opts);
  rbd_image_options_destroy(opts);
  if (r == -EEXIST)
    r = sl_error(EEXIST, "%s: RBD image '%s' already exists in pool '%s'", path,
                 s.image, s.pool);
  else if (r < 0)
    r = sl_error(-r, "%s: cannot create RBD image: %s", path, strerror(-r));
out:
  if (io)
    rados_ioctx_destroy(io);
  sl_rbd_conn_put(c);
  sl_rbd_spec_clear(&s);
  return r;
}

int sl_rbd_layer_id(const struct sl_image *img, struct sl_layer_id *id)
{
  const struct rbd_layer *L = img->priv;
  snprintf(id->rbd_fsid, sizeof id->rbd_fsid, "%s", sl_rbd_conn_fsid(L->conn));
  id->rbd_pool = rados_ioctx_get_id(L->io);
  snprintf(id->rbd_image, sizeof id->rbd_image, "%s", L->id);
  id->rbd_snap = L->snap_id;
  return 0;
}

bool sl_rbd_same_image(const struct sl_image *img, const struct sl_rbd_spec *s)
{
  const struct rbd_layer *L = img->priv;
  return strcmp(L->spec.pool, s->pool) == 0 && strcmp(L->spec.ns, s->ns) == 0 &&
         strcmp(L->spec.image, s->image) == 0;
}

int sl_rbd_conn_open(const char *path, const struct sl_rbd_spec *spec,
                     struct sl_rbd_conn **conn, rados_ioctx_t *io)
{
  int r = conn_get(path, spec, conn);
  if (r == 0 && (r = open_ioctx(path, *conn, spec->pool, spec->ns, io)) < 0)
    sl_rbd_conn_put(*conn);
  return r;
}

void sl_rbd_conn_close(struct sl_rbd_conn *conn, rados_ioctx_t io)
{
  if (!conn)
    return;
  if (io && !sl_rbd_conn_gone(conn))
    rados_ioctx_destroy(io);
  sl_rbd_conn_put(conn);
}

const struct sl_image_driver sl_rbd_driver = {
  .name = "rbd",
  .format = SL_FORMAT_RAW,
  .create = sl_rbd_create,
  .open = rbd_open_layer,
  .close = rbd_close_layer,
  .pread = rbd_pread,
  .pwrite = rbd_pwrite,
  .flush = rbd_do_flush,
  .discard = drv_discard,
  .write_zeroes = drv_write_zeroes,
  .block_status = rbd_block_status,
  .get_info = rbd_get_info,
  .check = rbd_check,
};

/* ---- what sluiced needs to open a snapshot itself ---------------------- */

/* The cephx key of client NAME ("client.USER") in keyring file PATH, or
 * false. */
static bool key_from_keyring(const char *path, const char *name, char *key, size_t len)
{
  FILE *f = fopen(path, "re");
  if (!f)
    return false;
  char line[1024];
  bool in = false, found = false;
  while (!found && fgets(line, sizeof line, f)) {
    char *p = line + strspn(line, " \t");
    p[strcspn(p, "\r\n")] = 0;
    if (*p == '[') {
      char *e = strchr(p, ']');
      in = e && (size_t)(e - p - 1) == strlen(name) && !strncmp(p + 1, name, strlen(name));
      continue;
    }
    if (!in || strncmp(p, "key", 3))
      continue;
    p += 3;
    p += strspn(p, " \t");
    if (*p != '=')
      continue;
    p++;
    p += strspn(p, " \t");
    size_t n = strcspn(p, " \t");
    if (n > 0 && n < len) {
      memcpy(key, p, n);
      key[n] = 0;
      found = true;
    }
  }
  fclose(f);
  explicit_bzero(line, sizeof line);
  return found;
}

/* The key this process's Ceph client authenticates with: the "key"
 * option, else the "keyfile", else the first keyring that holds one for
 * NAME -- the order librados itself uses. */
static int own_key(rados_t cl, const char *name, char *key, size_t len)
{
  if (rados_conf_get(cl, "key", key, len) == 0 && key[0])
    return 0;
  char buf[4096];
  if (rados_conf_get(cl, "keyfile", buf, sizeof buf) == 0 && buf[0]) {
    FILE *f = fopen(buf, "re");
    if (f) {
      bool ok = fgets(key, (int)len, f) != NULL;
      fclose(f);
      key[strcspn(key, " \t\r\n")] = 0;
      if (ok && key[0])
        return 0;
    }
  }
  if (rados_conf_get(cl, "keyring", buf, sizeof buf) == 0) {
    char *save = NULL;
    for (char *p = strtok_r(buf, ",; \t", &save); p; p = strtok_r(NULL, ",; \t", &save))
      if (key_from_keyring(p, name, key, len))
        return 0;
  }
  return -ENOENT;
}

int sl_rbd_cache_desc(const struct sl_image *img, struct sl_cs_register_rbd *q)
{
  const struct rbd_layer *L = img->priv;
  const struct sl_rbd_spec *s = &L->spec;
  memset(q, 0, sizeof *q);
  if (!s->snap)
    return sl_error(EROFS, "%s: not a snapshot: only snapshots are shared", img->filename);
  char name[256];
  snprintf(name, sizeof name, "client.%s", s->user ? s->user : "admin");
  int n[] = {
    snprintf(q->pool, sizeof q->pool, "%s", s->pool),
    snprintf(q->ns, sizeof q->ns, "%s", s->ns),
    snprintf(q->image, sizeof q->image, "%s", s->image),
    snprintf(q->snap, sizeof q->snap, "%s", s->snap),
    snprintf(q->user, sizeof q->user, "%s", s->user ? s->user : "admin"),
  };
  size_t sz[] = {sizeof q->pool, sizeof q->ns, sizeof q->image, sizeof q->snap,
                 sizeof q->user};
  for (size_t i = 0; i < sizeof n / sizeof n[0]; i++)
    if (n[i] < 0 || (size_t)n[i] >= sz[i])
      return sl_error(ENAMETOOLONG, "%s: a name is too long for sluiced", img->filename);
  /* What this process opened, by id: the daemon opens the same, whatever
   * the names have come to mean since. */
  snprintf(q->fsid, sizeof q->fsid, "%s", sl_rbd_conn_fsid(L->conn));
  snprintf(q->image_id, sizeof q->image_id, "%s", L->id);
  q->pool_id = rados_ioctx_get_id(L->io);
  q->snap_id = L->snap_id;
  q->size = img->size;
  rados_t cl = sl_rbd_conn_cluster(L->conn);
  if (rados_conf_get(cl, "mon_host", q->mon_host, sizeof q->mon_host) < 0 || !q->mon_host[0])
    return sl_error(ENOENT, "%s: no mon_host in the Ceph configuration to give sluiced",
                    img->filename);
  if (own_key(cl, name, q->key, sizeof q->key) < 0) {
    memset(q, 0, sizeof *q);
    return sl_error(ENOENT, "%s: cannot find %s's key (key, keyfile or keyring) to give "
                    "sluiced", img->filename, name);
  }
  return 0;
}
