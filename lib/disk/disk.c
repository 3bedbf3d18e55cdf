/* The disk: an image under an ordered stack of filters (design mechanism 6).
 *
 * A disk is an array of levels.  Level i < n is filter i (0 = top), level n
 * is the image.  Each filter level embeds the `struct sl_next` its filter
 * calls; its operations dispatch to level i+1, skipping every filter that
 * leaves the operation NULL.  A handle is just an entry level: sl_disk_top()
 * enters at 0, sl_disk_at(NAME) just below NAME, so NAME and everything above
 * it never see that I/O.
 *
 * Invariants are checked here once, where a request enters: range against
 * the entry level's size, writes against its read-only state, known flags.
 * Requests filters send down are re-checked for range only (cheap), so a
 * buggy filter fails its request rather than writing past an image.
 *
 * Sizes and capabilities are computed once at open, bottom up, as each
 * filter is opened; they are constant for the life of the disk.
 *
 * Concurrency: the disk runs at the strictest thread model any of its
 * filters declares (one lock per disk, or one per process).  Drain counts
 * in-flight requests at the entry points only, with an atomic counter and
 * flag: no lock is taken on the request path unless a drain is under way. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include <sluice/filter.h>
#include "common/util.h"
#include "disk/descriptor.h"
#include "disk/host.h"
#include "disk/module.h"
#include "disk/next-image.h"

struct sl_handle {
  struct sl_disk *disk;
  int level;
};

enum op { OP_PREAD, OP_PWRITE, OP_FLUSH, OP_DISCARD, OP_ZERO,
          OP_BLOCK_STATUS, N_OPS };

struct level {
  struct sl_next next;          /* given to this level's filter; calls level+1 */
  struct sl_disk *disk;
  int idx;
  struct sl_module *mod;        /* NULL for the image level */
  const struct sl_filter *f;
  void *inst;
  bool opened;
  char *name;
  size_t n_params;              /* as configured, for sl_disk_filter_info() */
  char **keys, **values;
  struct sl_filter_env env;
  struct sl_handle handle;      /* enters at this level */
  uint64_t size;
  bool can_write, can_trim, can_zero, can_fua, can_multi_conn;
  int first[N_OPS];             /* see first_implementing() */
};

struct sl_disk {
  struct sl_image *img;
  char *desc_path;              /* NULL for a plain image */
  char *image_path;
  char *base_dir;
  int n;                        /* number of filters */
  struct level *lv;             /* n + 1 levels */
  bool read_only;
  enum sl_filter_thread_model model;
  pthread_mutex_t serial;       /* SERIALIZE_REQUESTS */
  /* Drain accounting: an atomic count and flag on the request path, the
   * lock and condition only when a drain is under way (see enter()). */
  atomic_uint in_flight;
  atomic_bool draining;
  pthread_mutex_t lock;
  pthread_cond_t cond;
};

static pthread_mutex_t serialize_all_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- dispatch ----------------------------------------------------------- */

/* For every level and operation, the first level at or below it whose
 * filter implements the operation (n = the image), computed once at open.
 * A request then goes straight to the next filter that wants it: a stack
 * of filters that leave reads alone costs a read nothing per filter. */
static int first_implementing(const struct sl_disk *d, int i, enum op op)
{
  for (; i < d->n; i++) {
    const struct sl_filter *f = d->lv[i].f;
    const void *fn = op == OP_PREAD ? (const void *)f->pread
                   : op == OP_PWRITE ? (const void *)f->pwrite
                   : op == OP_FLUSH ? (const void *)f->flush
                   : op == OP_DISCARD ? (const void *)f->discard
                   : op == OP_ZERO ? (const void *)f->write_zeroes
                   : (const void *)f->block_status;
    if (fn)
      return i;
  }
  return d->n;
}

static void compute_shortcuts(struct sl_disk *d)
{
  for (int i = 0; i <= d->n; i++)
    for (int op = 0; op < N_OPS; op++)
      d->lv[i].first[op] = first_implementing(d, i, (enum op)op);
}

/* The level that serves OP for a request entering at level I. */
#define TARGET(d, i, op) (&(d)->lv[(d)->lv[i].first[op]])
#define IS_IMAGE(d, L) ((L)->idx == (d)->n)

static int do_pread(struct sl_disk *d, int i, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_PREAD);
  if (IS_IMAGE(d, L))
    return sl_image_pread(d->img, buf, len, off);
  return L->f->pread(L->inst, &L->next, buf, len, off, flags);
}

/* One pread per entry at level I, each entry failing alone; RANGE_OK, if
 * given, refuses an entry before it is read. */
static int pread_each(struct sl_disk *d, int i, struct sl_read_vec *v, unsigned n,
                      uint32_t flags, int (*range_ok)(void *ctx, uint64_t off, uint64_t len),
                      void *ctx)
{
  int failed = 0;
  for (unsigned k = 0; k < n; k++) {
    int r = range_ok ? range_ok(ctx, v[k].off, v[k].len) : 0;
    if (r == 0)
      r = do_pread(d, i, v[k].buf, v[k].len, v[k].off, flags);
    v[k].status = r < 0 ? r : 0;
    failed += r < 0;
  }
  return failed;
}

/* A batch of reads entering at level I: to the first filter at or below I
 * that reads, as one call if it takes batches (pread_batch), else one
 * pread per entry at that level -- below a filter without it, a batch is
 * split, and a filter that has it gets it whole. */
static int do_pread_batch(struct sl_disk *d, int i, struct sl_read_vec *v,
                          unsigned n, uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_PREAD);
  if (!IS_IMAGE(d, L) && L->f->pread_batch)
    return L->f->pread_batch(L->inst, &L->next, v, n, flags);
  return pread_each(d, i, v, n, flags, NULL, NULL);
}

/* Entries whose range RANGE_OK refuses fail alone; the others go down as
 * one batch (the common case: all of them) or, when some were refused,
 * one by one (rare: a filter's bug). */
static int batch_checked(struct sl_disk *d, int i, struct sl_read_vec *v, unsigned n,
                         uint32_t flags, int (*range_ok)(void *ctx, uint64_t off, uint64_t len),
                         void *ctx)
{
  bool all = true;
  for (unsigned k = 0; k < n; k++)
    all &= range_ok(ctx, v[k].off, v[k].len) == 0;
  if (all)
    return do_pread_batch(d, i, v, n, flags);
  return pread_each(d, i, v, n, flags, range_ok, ctx);
}

/* Every batch that enters a level, from the entry point or from a filter
 * (which may send more than it was given, or nothing), goes down in calls
 * of 1..SL_READ_BATCH_MAX entries, as the filter API promises filters. */
static int batch_chunks(struct sl_disk *d, int i, struct sl_read_vec *v, unsigned count,
                        uint32_t flags, int (*range_ok)(void *ctx, uint64_t off, uint64_t len),
                        void *ctx)
{
  int failed = 0;
  for (unsigned k = 0; k < count; k += SL_READ_BATCH_MAX)
    failed += batch_checked(d, i, v + k, SL_MIN(count - k, SL_READ_BATCH_MAX), flags,
                            range_ok, ctx);
  return failed;
}

static int do_pwrite(struct sl_disk *d, int i, const void *buf, size_t len,
                     uint64_t off, uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_PWRITE);
  if (IS_IMAGE(d, L))
    return sl_image_pwrite(d->img, buf, len, off, flags);
  return L->f->pwrite(L->inst, &L->next, buf, len, off, flags);
}

static int do_flush(struct sl_disk *d, int i, uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_FLUSH);
  if (IS_IMAGE(d, L))
    return sl_image_flush(d->img);
  return L->f->flush(L->inst, &L->next, flags);
}

static int do_discard(struct sl_disk *d, int i, uint64_t off, uint64_t len,
                      uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_DISCARD);
  if (IS_IMAGE(d, L))
    return sl_image_discard(d->img, off, len);
  return L->f->discard(L->inst, &L->next, off, len, flags);
}

static int do_zero(struct sl_disk *d, int i, uint64_t off, uint64_t len,
                   uint32_t flags)
{
  struct level *L = TARGET(d, i, OP_ZERO);
  if (IS_IMAGE(d, L))
    return sl_image_write_zeroes(d->img, off, len, flags);
  return L->f->write_zeroes(L->inst, &L->next, off, len, flags);
}

static int do_block_status(struct sl_disk *d, int i, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{
  struct level *L = TARGET(d, i, OP_BLOCK_STATUS);
  if (IS_IMAGE(d, L))
    return sl_image_block_status(d->img, off, len, ext);
  return L->f->block_status(L->inst, &L->next, off, len, ext);
}

/* ---- the `next` a filter calls ------------------------------------------ */

#define LV(n) ((struct level *)(n))
#define BELOW(n) (&LV(n)->disk->lv[LV(n)->idx + 1])

static int next_range(struct sl_next *n, uint64_t off, uint64_t len,
                      bool write)
{
  struct level *b = BELOW(n);
  uint64_t end;
  if (!sl_add_ok(off, len, &end) || end > b->size)
    return sl_error(EINVAL, "filter %s sent %" PRIu64 " bytes at %" PRIu64
                    " past the end of the layer below (%" PRIu64 " bytes)",
                    LV(n)->name, len, off, b->size);
  if (write && !b->can_write)
    return sl_error(EROFS, "filter %s wrote to a read-only layer", LV(n)->name);
  return 0;
}

static int64_t next_get_size(struct sl_next *n) { return (int64_t)BELOW(n)->size; }
static int next_can_write(struct sl_next *n) { return BELOW(n)->can_write; }
static int next_can_trim(struct sl_next *n) { return BELOW(n)->can_trim; }
static int next_can_zero(struct sl_next *n) { return BELOW(n)->can_zero; }
static int next_can_fua(struct sl_next *n) { return BELOW(n)->can_fua; }
static int next_can_multi_conn(struct sl_next *n) { return BELOW(n)->can_multi_conn; }

static int next_pread(struct sl_next *n, void *buf, size_t len, uint64_t off,
                      uint32_t flags)
{
  int r = next_range(n, off, len, false);
  return r < 0 ? r : do_pread(LV(n)->disk, LV(n)->idx + 1, buf, len, off, flags);
}

static int next_range_ok(void *n, uint64_t off, uint64_t len)
{
  return next_range(n, off, len, false);
}

static int next_pread_batch(struct sl_next *n, struct sl_read_vec *v, unsigned count,
                            uint32_t flags)
{
  return batch_chunks(LV(n)->disk, LV(n)->idx + 1, v, count, flags, next_range_ok, n);
}

static int next_pwrite(struct sl_next *n, const void *buf, size_t len,
                       uint64_t off, uint32_t flags)
{
  int r = next_range(n, off, len, true);
  return r < 0 ? r : do_pwrite(LV(n)->disk, LV(n)->idx + 1, buf, len, off, flags);
}

static int next_flush(struct sl_next *n, uint32_t flags)
{
  return do_flush(LV(n)->disk, LV(n)->idx + 1, flags);
}

static int next_discard(struct sl_next *n, uint64_t off, uint64_t len,
                        uint32_t flags)
{
  int r = next_range(n, off, len, true);
  return r < 0 ? r : do_discard(LV(n)->disk, LV(n)->idx + 1, off, len, flags);
}

static int next_zero(struct sl_next *n, uint64_t off, uint64_t len,
                     uint32_t flags)
{
  int r = next_range(n, off, len, true);
  return r < 0 ? r : do_zero(LV(n)->disk, LV(n)->idx + 1, off, len, flags);
}

static int next_block_status(struct sl_next *n, uint64_t off, uint64_t len,
                             struct sl_extent *ext)
{
  int r = next_range(n, off, len, false);
  return r < 0 ? r : do_block_status(LV(n)->disk, LV(n)->idx + 1, off, len, ext);
}

static const struct sl_next_ops next_ops = {
  .struct_size = sizeof next_ops,
  .get_size = next_get_size, .can_write = next_can_write,
  .can_trim = next_can_trim, .can_zero = next_can_zero,
  .can_fua = next_can_fua, .can_multi_conn = next_can_multi_conn,
  .pread = next_pread, .pwrite = next_pwrite, .flush = next_flush,
  .discard = next_discard, .write_zeroes = next_zero,
  .block_status = next_block_status, .pread_batch = next_pread_batch,
};

/* ---- order rules -------------------------------------------------------- */

static const struct {
  const char *name;
  bool many;
} classes[] = {
  [SL_FILTER_CLASS_ANY] = {"any", true},
  [SL_FILTER_CLASS_OBSERVE] = {"observe", true},
  [SL_FILTER_CLASS_THROTTLE] = {"throttle", false},
  [SL_FILTER_CLASS_CACHE] = {"cache", false},
  [SL_FILTER_CLASS_ENCRYPTION] = {"encryption", false},
  [SL_FILTER_CLASS_REPLICATION] = {"replication", false},
};

const char *sl_filter_class_name(int c)
{
  return c >= 0 && c < (int)SL_ARRAY_SIZE(classes) ? classes[c].name : "unknown";
}

/* Classed filters must appear in enum order, top to bottom, and at most one
 * per class unless the class allows more. */
static int check_order(struct sl_disk *d)
{
  int last = -1;
  const char *last_name = NULL;
  for (int i = 0; i < d->n; i++) {
    int c = d->lv[i].f->filter_class;
    if (c <= SL_FILTER_CLASS_ANY || c >= (int)SL_ARRAY_SIZE(classes))
      continue;
    if (c == last && !classes[c].many)
      return sl_error(EINVAL, "filters %s and %s are both %s filters: a stack "
                      "takes at most one", last_name, d->lv[i].name,
                      classes[c].name);
    if (c < last)
      return sl_error(EINVAL, "filter %s (%s) is below %s (%s): %s filters "
                      "belong above %s filters (see sluice-disk(1))",
                      last_name, classes[last].name, d->lv[i].name,
                      classes[c].name, classes[c].name, classes[last].name);
    last = c;
    last_name = d->lv[i].name;
  }
  return 0;
}

/* ---- open and close ----------------------------------------------------- */

static int capability(int r, bool below, const char *name, const char *what,
                      bool *out)
{
  if (r < 0)
    return sl_error_prefix(-r, "filter %s: %s", name, what);
  *out = r > 0 && below;
  return 0;
}

/* Open filter level i (everything below it is open) and compute its size
 * and capabilities. */
static int open_level(struct sl_disk *d, int i)
{
  struct level *L = &d->lv[i], *B = &d->lv[i + 1];
  const struct sl_filter *f = L->f;
  int r;
  if (f->open && (r = f->open(L->inst, &L->next, &L->env)) < 0)
    return sl_error_prefix(-r, "filter %s: open", L->name);
  L->opened = true;
  L->size = B->size;
  if (f->get_size) {
    int64_t s = f->get_size(L->inst, &L->next);
    if (s < 0)
      return sl_error_prefix((int)-s, "filter %s: size", L->name);
    L->size = (uint64_t)s;
  }
#define CAP(fn, field, dep)                                                  \
  if ((r = capability(f->fn ? f->fn(L->inst, &L->next) : B->field, dep,     \
                      L->name, #fn, &L->field)) < 0)                        \
    return r;
  CAP(can_write, can_write, !d->read_only)
  CAP(can_trim, can_trim, L->can_write)
  CAP(can_zero, can_zero, L->can_write)
  CAP(can_fua, can_fua, L->can_write)
  CAP(can_multi_conn, can_multi_conn, true)
#undef CAP
  return 0;
}

/* Load and configure one filter instance into level I. */
static int setup_level(struct sl_disk *d, int i, const struct sl_desc_filter *df)
{
  struct level *L = &d->lv[i];
  int r = sl_module_get(df->module, &L->mod);
  if (r < 0)
    return r;
  L->f = sl_module_filter(L->mod);
  if (!(L->name = strdup(df->name)) ||
      !(L->keys = calloc(df->n_params + 1, sizeof *L->keys)) ||
      !(L->values = calloc(df->n_params + 1, sizeof *L->values)))
    return sl_error(ENOMEM, "out of memory");
  for (; L->n_params < df->n_params; L->n_params++) {
    size_t k = L->n_params;
    if (!(L->keys[k] = strdup(df->keys[k])) ||
        !(L->values[k] = strdup(df->values[k]))) {
      free(L->keys[k]);
      return sl_error(ENOMEM, "out of memory");
    }
  }
  L->env = (struct sl_filter_env){
    .struct_size = sizeof L->env, .host = &sl_filter_host,
    .instance_name = L->name, .base_dir = d->base_dir,
    .descriptor = d->desc_path, .image = d->image_path,
    .read_only = d->read_only,
  };
  if (!(L->inst = calloc(1, L->f->instance_size ? L->f->instance_size : 1)))
    return sl_error(ENOMEM, "out of memory");
  for (size_t k = 0; k < df->n_params; k++) {
    if (!L->f->config)
      return sl_error(EINVAL, "filter %s: takes no parameters (got %s=%s)",
                      L->name, df->keys[k], df->values[k]);
    if ((r = L->f->config(L->inst, df->keys[k], df->values[k])) < 0)
      return sl_error_prefix(-r, "filter %s", L->name);
  }
  if (L->f->config_complete && (r = L->f->config_complete(L->inst, &L->env)) < 0)
    return sl_error_prefix(-r, "filter %s", L->name);
  if (L->f->thread_model > d->model)
    d->model = L->f->thread_model;
  return 0;
}

static void free_disk(struct sl_disk *d)
{
  if (!d)
    return;
  if (d->lv) {
    for (int i = 0; i < d->n; i++) {
      struct level *L = &d->lv[i];
      if (L->inst && L->f->close)
        L->f->close(L->inst, L->opened ? &L->next : NULL);
      free(L->inst);
      free(L->name);
      for (size_t k = 0; k < L->n_params; k++) {
        free(L->keys[k]);
        free(L->values[k]);
      }
      free(L->keys);
      free(L->values);
      sl_module_put(L->mod);
    }
    free(d->lv);
  }
  pthread_mutex_destroy(&d->serial);
  pthread_cond_destroy(&d->cond);
  pthread_mutex_destroy(&d->lock);
  free(d->desc_path);
  free(d->image_path);
  free(d->base_dir);
  free(d);
}

int sl_disk_open_descriptor(const struct sl_descriptor *desc,
                            const struct sl_disk_open_opts *opts,
                            struct sl_disk **out)
{
  static const struct sl_disk_open_opts defaults;
  if (!opts)
    opts = &defaults;
  struct sl_disk *d = calloc(1, sizeof *d);
  if (!d)
    return sl_error(ENOMEM, "out of memory");
  atomic_init(&d->in_flight, 0);
  atomic_init(&d->draining, false);
  pthread_mutex_init(&d->serial, NULL);
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, NULL);
  d->read_only = opts->read_only;
  d->image_path = sl_descriptor_image_path(desc);
  d->base_dir = strdup(desc->dir ? desc->dir : ".");
  if (desc->path && !(d->desc_path = strdup(desc->path)))
    goto nomem;
  if (!d->image_path || !d->base_dir)
    goto nomem;

  /* The stack: extra filters (top first), then the descriptor's. */
  d->n = (int)(opts->n_extra_filters + desc->n_filters);
  if (!(d->lv = calloc((size_t)d->n + 1, sizeof *d->lv)))
    goto nomem;
  for (int i = 0; i <= d->n; i++) {
    d->lv[i].next.ops = &next_ops;
    d->lv[i].disk = d;
    d->lv[i].idx = i;
    d->lv[i].handle = (struct sl_handle){d, i};
  }
  int r = 0;
  for (size_t i = 0; r == 0 && i < opts->n_extra_filters; i++) {
    struct sl_desc_filter df;
    if ((r = sl_desc_filter_parse(opts->extra_filters[i], &df)) < 0)
      break;
    for (size_t j = 0; j < desc->n_filters; j++)
      if (strcmp(desc->filters[j].name, df.name) == 0)
        r = sl_error(EEXIST, "a filter named '%s' is already in the stack of "
                     "%s (give another with name=)", df.name, desc->path);
    for (size_t j = 0; j < i; j++)
      if (strcmp(d->lv[j].name, df.name) == 0)
        r = sl_error(EEXIST, "filter '%s' given twice (give another with "
                     "name=)", df.name);
    if (r == 0)
      r = setup_level(d, (int)i, &df);
    sl_desc_filter_clear(&df);
  }
  for (size_t i = 0; r == 0 && i < desc->n_filters; i++)
    r = setup_level(d, (int)(opts->n_extra_filters + i), &desc->filters[i]);
  if (r == 0)
    r = check_order(d);
  if (r < 0)
    goto fail;

  enum sl_format fmt = opts->format;
  if (desc->format && (r = sl_format_parse(desc->format, &fmt)) < 0)
    goto fail;
  struct sl_image_open_opts io = {
    .format = fmt, .read_only = opts->read_only, .direct = opts->direct,
    .dsync = opts->dsync, .no_flush = opts->no_flush,
    .force_share = opts->force_share,
  };
  if ((r = sl_image_open(d->image_path, &io, &d->img)) < 0)
    goto fail;
  struct level *img = &d->lv[d->n];
  img->size = sl_image_size(d->img);
  img->can_write = !d->read_only && !sl_image_read_only(d->img);
  img->can_trim = img->can_zero = img->can_fua = img->can_write;
  img->can_multi_conn = true;
  img->name = NULL;
  compute_shortcuts(d);
  for (int i = d->n - 1; i >= 0; i--)
    if ((r = open_level(d, i)) < 0)
      goto fail;
  *out = d;
  return 0;

nomem:
  r = sl_error(ENOMEM, "out of memory");
fail:
  {
    /* Close what was opened, keeping the first error's message. */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", sl_last_error());
    struct sl_image *im = d->img;
    free_disk(d);
    if (im)
      sl_image_close(im);
    return sl_error(-r, "%s", msg);
  }
}

int sl_disk_open(const char *path, const struct sl_disk_open_opts *opts,
                 struct sl_disk **out)
{
  struct sl_descriptor *desc = NULL;
  int r;
  if (sl_is_descriptor(path)) {
    if ((r = sl_descriptor_load(path, &desc)) < 0)
      return r;
  } else {
    /* A plain image: a descriptor with no filters, in memory only. */
    desc = calloc(1, sizeof *desc);
    if (!desc || !(desc->image = strdup(path))) {
      sl_descriptor_free(desc);
      return sl_error(ENOMEM, "out of memory");
    }
  }
  r = sl_disk_open_descriptor(desc, opts, out);
  sl_descriptor_free(desc);
  return r;
}

static int for_each_event(struct sl_disk *d, bool bottom_up, int which)
{
  int first = 0;
  for (int k = 0; k < d->n; k++) {
    struct level *L = &d->lv[bottom_up ? d->n - 1 - k : k];
    int (*ev)(void *, struct sl_next *) =
        which == 0 ? L->f->release : which == 1 ? L->f->resume : L->f->snapshot;
    if (!ev)
      continue;
    int r = ev(L->inst, &L->next);
    if (r < 0 && first == 0)
      first = sl_error_prefix(-r, "filter %s", L->name);
  }
  return first;
}

int sl_disk_drain(struct sl_disk *d)
{
  pthread_mutex_lock(&d->lock);
  atomic_store(&d->draining, true);
  while (atomic_load(&d->in_flight) > 0)
    pthread_cond_wait(&d->cond, &d->lock);
  pthread_mutex_unlock(&d->lock);
  /* Top down: what a filter flushes on release reaches the ones below. */
  int r = for_each_event(d, false, 0);
  int r2 = d->read_only ? 0 : sl_image_flush(d->img);
  return r < 0 ? r : r2;
}

void sl_disk_resume(struct sl_disk *d)
{
  for_each_event(d, true, 1);
  pthread_mutex_lock(&d->lock);
  atomic_store(&d->draining, false);
  pthread_cond_broadcast(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

int sl_disk_snapshot_event(struct sl_disk *d)
{
  return for_each_event(d, true, 2);
}

int sl_disk_close(struct sl_disk *d)
{
  if (!d)
    return 0;
  int r = sl_disk_drain(d);
  struct sl_image *img = d->img;
  free_disk(d);               /* closes filters, top first */
  int r2 = sl_image_close(img);
  return r < 0 ? r : r2;
}

struct sl_handle *sl_disk_top(struct sl_disk *d) { return &d->lv[0].handle; }

struct sl_handle *sl_disk_at(struct sl_disk *d, const char *name)
{
  for (int i = 0; i < d->n; i++)
    if (strcmp(d->lv[i].name, name) == 0)
      return &d->lv[i + 1].handle;
  sl_error(ENOENT, "no filter '%s' in the stack of %s", name,
           d->desc_path ? d->desc_path : d->image_path);
  return NULL;
}

struct sl_image *sl_disk_image(struct sl_disk *d) { return d->img; }

#define HL(h) (&(h)->disk->lv[(h)->level])
uint64_t sl_disk_size(struct sl_handle *h) { return HL(h)->size; }
bool sl_disk_read_only(struct sl_handle *h) { return !HL(h)->can_write; }
bool sl_disk_can_trim(struct sl_handle *h) { return HL(h)->can_trim; }
bool sl_disk_can_zero(struct sl_handle *h) { return HL(h)->can_zero; }
bool sl_disk_can_fua(struct sl_handle *h) { return HL(h)->can_fua; }
bool sl_disk_can_multi_conn(struct sl_handle *h) { return HL(h)->can_multi_conn; }

int sl_disk_filter_count(struct sl_disk *d) { return d->n; }
const char *sl_disk_filter_name(struct sl_disk *d, int i)
{
  return i >= 0 && i < d->n ? d->lv[i].name : NULL;
}

const char *sl_disk_descriptor_path(struct sl_disk *d) { return d->desc_path; }
const char *sl_disk_image_path(struct sl_disk *d) { return d->image_path; }

int sl_disk_filter_info(struct sl_disk *d, int i, struct sl_disk_filter_info *out)
{
  if (i < 0 || i >= d->n)
    return sl_error(ERANGE, "filter %d: the stack of %s has %d filters", i,
                    d->desc_path ? d->desc_path : d->image_path, d->n);
  const struct level *L = &d->lv[i];
  *out = (struct sl_disk_filter_info){
    .name = L->name, .module = L->f->name,
    .description = L->f->description ? L->f->description : "",
    .filter_class = L->f->filter_class,
    .size = L->size, .read_only = !L->can_write,
    .n_params = L->n_params,
    .keys = (const char *const *)L->keys,
    .values = (const char *const *)L->values,
  };
  return 0;
}

int sl_disk_filter_query(struct sl_disk *d, int i, const char *what,
                         uint32_t version, void *out, size_t out_size)
{
  if (i < 0 || i >= d->n)
    return sl_error(ERANGE, "filter %d: the stack of %s has %d filters", i,
                    d->desc_path ? d->desc_path : d->image_path, d->n);
  const struct level *L = &d->lv[i];
  if (!L->f->query)
    return sl_error(ENOTSUP, "filter %s: answers no queries (asked %s v%u)",
                    L->name, what, version);
  int r = L->f->query(L->inst, what, version, out, out_size);
  if (r < 0)
    return sl_error_prefix(-r, "filter %s", L->name);
  if ((size_t)r > out_size)
    return sl_error(EPROTO, "filter %s: query %s wrote %d bytes into %zu",
                    L->name, what, r, out_size);
  return r;
}

void sl_disk_describe(struct sl_disk *d, FILE *f)
{
  if (d->desc_path)
    fprintf(f, "disk descriptor: %s\n", d->desc_path);
  fprintf(f, "image: %s (%s)\n", d->image_path,
          sl_format_name(sl_image_format(d->img)));
  fprintf(f, "filters (top first):%s\n", d->n ? "" : " none");
  for (int i = 0; i < d->n; i++) {
    const struct level *L = &d->lv[i];
    fprintf(f, "  %d. %s", i + 1, L->name);
    if (strcmp(L->name, L->f->name) != 0)
      fprintf(f, " (module %s)", L->f->name);
    fprintf(f, ": %s, class %s, %" PRIu64 " bytes%s\n",
            L->f->description ? L->f->description : "",
            sl_filter_class_name(L->f->filter_class), L->size,
            L->can_write ? "" : ", read-only");
    if (L->n_params) {
      fprintf(f, "     parameters:");
      for (size_t k = 0; k < L->n_params; k++)
        fprintf(f, " %s=%s", L->keys[k], L->values[k]);
      fputc('\n', f);
    }
  }
}

/* ---- entry points ------------------------------------------------------- */

/* A request leaves the count; the last one out wakes a drain waiting for
 * it (under the lock, so the wake-up cannot fall between the drain's check
 * of the count and its wait). */
static void count_out(struct sl_disk *d)
{
  if (atomic_fetch_sub(&d->in_flight, 1) == 1 && atomic_load(&d->draining)) {
    pthread_mutex_lock(&d->lock);
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
  }
}

static int enter(struct sl_handle *h, bool write, uint64_t off, uint64_t len,
                 uint32_t flags, uint32_t allowed)
{
  struct sl_disk *d = h->disk;
  const struct level *L = HL(h);
  uint64_t end;
  if (flags & ~allowed)
    return sl_error(EINVAL, "unknown or misplaced request flags 0x%x", flags);
  if (write && !L->can_write)
    return sl_error(EROFS, "disk is read-only");
  if ((flags & SL_FUA) && !L->can_fua)
    return sl_error(EINVAL, "FUA requested but not supported here");
  if (!sl_add_ok(off, len, &end) || end > L->size)
    return sl_error(EINVAL, "request of %" PRIu64 " bytes at %" PRIu64
                    " is beyond the end of the disk (%" PRIu64 " bytes)",
                    len, off, L->size);
  /* Count the request in, then look for a drain; sl_disk_drain() sets the
   * flag, then looks at the count.  Both sequentially consistent, so at
   * least one of the two sees the other: either the drain waits for this
   * request, or this request backs out and waits for the drain. */
  for (;;) {
    atomic_fetch_add(&d->in_flight, 1);
    if (!atomic_load(&d->draining))
      break;
    count_out(d);
    pthread_mutex_lock(&d->lock);
    while (atomic_load(&d->draining))
      pthread_cond_wait(&d->cond, &d->lock);
    pthread_mutex_unlock(&d->lock);
  }
  if (d->model == SL_FILTER_SERIALIZE_REQUESTS)
    pthread_mutex_lock(&d->serial);
  else if (d->model == SL_FILTER_SERIALIZE_ALL)
    pthread_mutex_lock(&serialize_all_lock);
  return 0;
}

static int leave(struct sl_handle *h, int r)
{
  struct sl_disk *d = h->disk;
  if (d->model == SL_FILTER_SERIALIZE_REQUESTS)
    pthread_mutex_unlock(&d->serial);
  else if (d->model == SL_FILTER_SERIALIZE_ALL)
    pthread_mutex_unlock(&serialize_all_lock);
  count_out(d);
  return r;
}

int sl_disk_pread(struct sl_handle *h, void *buf, size_t len, uint64_t off,
                  uint32_t flags)
{
  int r = enter(h, false, off, len, flags, 0);
  return r < 0 ? r : leave(h, do_pread(h->disk, h->level, buf, len, off, flags));
}

static int entry_range_ok(void *h, uint64_t off, uint64_t len)
{
  const struct level *L = HL((struct sl_handle *)h);
  uint64_t end;
  if (!sl_add_ok(off, len, &end) || end > L->size)
    return sl_error(EINVAL, "request of %" PRIu64 " bytes at %" PRIu64
                    " is beyond the end of the disk (%" PRIu64 " bytes)",
                    len, off, L->size);
  return 0;
}

int sl_disk_pread_batch(struct sl_handle *h, struct sl_read_vec *v, unsigned count,
                        uint32_t flags)
{
  int r = enter(h, false, 0, 0, flags, 0);
  if (r < 0) {
    for (unsigned k = 0; k < count; k++)
      v[k].status = r;
    return (int)count;
  }
  return leave(h, batch_chunks(h->disk, h->level, v, count, flags, entry_range_ok, h));
}

/* What the filter at L does with a batch (SL_QUERY_PREAD_BATCH): a filter
 * with pread_batch that does not answer is taken at its word (ONE). */
static int batch_answer(const struct level *L)
{
  int a = SL_PREAD_BATCH_ONE;
  if (L->f->query &&
      L->f->query(L->inst, SL_QUERY_PREAD_BATCH, 1, &a, sizeof a) != (int)sizeof a)
    a = SL_PREAD_BATCH_ONE;
  return a;
}

/* Walk down the reading levels while they pass batches on whole; true if
 * the walk ends at a level that serves a batch as one call.  Not cached at
 * open: the answer is the instances' (the cache filter's daemon client is
 * attached in its open), and an export asks once per connection. */
bool sl_disk_can_pread_batch(struct sl_handle *h)
{
  struct sl_disk *d = h->disk;
  for (struct level *L = TARGET(d, h->level, OP_PREAD);
       !IS_IMAGE(d, L) && L->f->pread_batch;
       L = TARGET(d, L->idx + 1, OP_PREAD)) {
    int a = batch_answer(L);
    if (a != SL_PREAD_BATCH_PASS)
      return a == SL_PREAD_BATCH_ONE;
  }
  return false;
}

int sl_disk_pwrite(struct sl_handle *h, const void *buf, size_t len,
                   uint64_t off, uint32_t flags)
{
  int r = enter(h, true, off, len, flags, SL_FUA);
  return r < 0 ? r : leave(h, do_pwrite(h->disk, h->level, buf, len, off, flags));
}

int sl_disk_flush(struct sl_handle *h)
{
  int r = enter(h, false, 0, 0, 0, 0);
  return r < 0 ? r : leave(h, do_flush(h->disk, h->level, 0));
}

int sl_disk_discard(struct sl_handle *h, uint64_t off, uint64_t len)
{
  int r = enter(h, true, off, len, 0, 0);
  if (r == 0 && !HL(h)->can_trim)
    return leave(h, sl_error(EOPNOTSUPP, "discard is not supported here"));
  return r < 0 ? r : leave(h, do_discard(h->disk, h->level, off, len, 0));
}

int sl_disk_write_zeroes(struct sl_handle *h, uint64_t off, uint64_t len,
                         uint32_t flags)
{
  int r = enter(h, true, off, len, flags, SL_FUA | SL_NO_HOLE);
  return r < 0 ? r : leave(h, do_zero(h->disk, h->level, off, len, flags));
}

int sl_disk_block_status(struct sl_handle *h, uint64_t off, uint64_t len,
                         struct sl_extent *ext)
{
  int r = enter(h, false, off, len, 0, 0);
  return r < 0 ? r : leave(h, do_block_status(h->disk, h->level, off, len, ext));
}

/* ---- the image under a filter (the cache service) ------------------------ */

struct sl_image *sl_disk_next_image(struct sl_next *n)
{
  struct level *L = LV(n);
  struct sl_disk *d = L->disk;
  for (int i = L->idx + 1; i < d->n; i++) {
    const struct sl_filter *f = d->lv[i].f;
    if (f->pread || f->block_status) {
      sl_error(ENOTSUP, "filter %s below %s handles reads: the image files "
               "do not hold what %s reads", d->lv[i].name, L->name, L->name);
      return NULL;
    }
  }
  return d->img;
}
