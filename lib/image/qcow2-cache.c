/* A bounded write-back cache of metadata tables (L2 tables, refcount
 * blocks), one cluster each.
 *
 * Callers hold s->lock.  A table returned by qcow2_cache_get() is pinned
 * until qcow2_cache_put(), so code that juggles two tables (copying an L2
 * table) cannot see one evicted under it.  Eviction picks the least
 * recently used unpinned slot; writing back a dirty L2 table first flushes
 * the refcount blocks its new entries depend on (the crash-ordering rule in
 * qcow2.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

int qcow2_cache_init(struct qcow2_cache *c, const char *what, size_t nslots,
                     size_t table_size)
{
  c->what = what;
  c->nslots = nslots;
  c->table_size = table_size;
  c->slots = calloc(nslots, sizeof *c->slots);
  if (!c->slots)
    return -ENOMEM;
  for (size_t i = 0; i < nslots; i++) {
    if (posix_memalign((void **)&c->slots[i].data, 4096, table_size))
      return -ENOMEM;
  }
  return 0;
}

void qcow2_cache_destroy(struct qcow2_cache *c)
{
  if (!c->slots)
    return;
  for (size_t i = 0; i < c->nslots; i++)
    free(c->slots[i].data);
  free(c->slots);
  c->slots = NULL;
}

static int write_back(struct qcow2_state *s, struct qcow2_cache *c,
                      struct qcow2_cache_entry *e)
{
  if (!e->dirty)
    return 0;
  if (c == &s->l2_cache && s->l2_needs_refcount_flush) {
    int r = qcow2_flush_refcounts(s);
    if (r < 0)
      return r;
  }
  /* A table may overlap anything but its own kind. */
  unsigned ign = c == &s->l2_cache ? QCOW2_OL_ACTIVE_L2 : QCOW2_OL_REFBLOCK;
  int r = qcow2_write_checked(s, ign, e->data, c->table_size, e->offset);
  if (r < 0)
    return r;
  e->dirty = false;
  return 0;
}

int qcow2_cache_get(struct qcow2_state *s, struct qcow2_cache *c,
                    uint64_t offset, bool fresh, uint8_t **out)
{
  struct qcow2_cache_entry *e = &c->slots[c->last];
  if (e->offset != offset) {
    e = NULL;
    for (size_t i = 0; i < c->nslots; i++) {
      if (c->slots[i].offset == offset) {
        e = &c->slots[i];
        c->last = i;
        break;
      }
    }
  }
  if (e) {
    if (fresh)
      memset(e->data, 0, c->table_size);
    e->lru = ++c->tick;
    e->pins++;
    *out = e->data;
    return 0;
  }
  /* Miss: take an empty slot or the least recently used unpinned one. */
  struct qcow2_cache_entry *victim = NULL;
  size_t vi = 0;
  for (size_t i = 0; i < c->nslots; i++) {
    struct qcow2_cache_entry *x = &c->slots[i];
    if (x->pins)
      continue;
    if (!victim || x->offset == 0 || x->lru < victim->lru) {
      victim = x;
      vi = i;
      if (x->offset == 0)
        break;
    }
  }
  if (!victim)
    return sl_error(ENOMEM, "%s: every %s cache slot is in use",
                    s->img->filename, c->what);
  int r = write_back(s, c, victim);
  if (r < 0)
    return r;
  victim->offset = 0;
  if (fresh) {
    memset(victim->data, 0, c->table_size);
  } else {
    uint64_t fsize = qcow2_file_size(s), n = c->table_size;
    if (offset + n > fsize && s->for_check) {
      /* check reads what is missing as zeros, as qemu-img does */
      n = offset < fsize ? fsize - offset : 0;
      memset(victim->data + n, 0, c->table_size - n);
    } else if (offset + n > fsize && !s->writable) {
      return sl_error(EIO, "%s: %s at 0x%" PRIx64 " lies past the end of the "
                      "file", s->img->filename, c->what, offset);
    }
    r = n ? qcow2_io_read(s, victim->data, n, offset) : 0;
    if (r < 0)
      return r;
  }
  victim->offset = offset;
  victim->dirty = false;
  victim->lru = ++c->tick;
  victim->pins = 1;
  c->last = vi;
  *out = victim->data;
  return 0;
}

static struct qcow2_cache_entry *find_table(struct qcow2_cache *c,
                                            const uint8_t *table)
{
  for (size_t i = 0; i < c->nslots; i++)
    if (c->slots[i].data == table)
      return &c->slots[i];
  abort(); /* a table not from this cache: a programming error */
}

void qcow2_cache_put(struct qcow2_cache *c, uint8_t *table)
{
  struct qcow2_cache_entry *e = &c->slots[c->last];
  if (e->data != table)
    e = find_table(c, table);
  e->pins--;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, uint8_t *table)
{
  struct qcow2_cache_entry *e = &c->slots[c->last];
  if (e->data != table)
    e = find_table(c, table);
  e->dirty = true;
}

int qcow2_cache_flush(struct qcow2_state *s, struct qcow2_cache *c)
{
  for (size_t i = 0; i < c->nslots; i++) {
    int r = write_back(s, c, &c->slots[i]);
    if (r < 0)
      return r;
  }
  return 0;
}

void qcow2_cache_forget(struct qcow2_cache *c, uint64_t offset)
{
  for (size_t i = 0; i < c->nslots; i++) {
    if (c->slots[i].offset == offset && !c->slots[i].pins) {
      c->slots[i].offset = 0;
      c->slots[i].dirty = false;
    }
  }
}
