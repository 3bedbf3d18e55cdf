/* Memory handles (DESIGN.md mechanisms 2 and 3).
 *
 * A client registers a memfd with a restriction it chooses: the range the
 * daemon may touch and the rights (write into it, read from it).  The daemon
 * refuses any descriptor that is not a memfd sealed against shrinking: the
 * seal is what makes mapping a client's file safe, since a client that
 * could truncate it would turn the daemon's next copy into a SIGBUS.
 *
 * Sections (SL_CS_SECTION_SIZE, 2 MiB) of a handle are mapped on first use,
 * with only the protection its rights allow, and kept in one bounded pool
 * of mapping records shared by every handle (sd_maps): when the pool is
 * full, a clock hand unmaps the least recently used section nobody is
 * copying into.  The common case -- the section is mapped -- takes no lock:
 * the handle's table points at the record, and the copier announces itself
 * with one atomic increment of the record's user count, then checks that
 * the record still maps what it wanted.  The evicter claims a record only
 * by turning a user count of 0 into SD_MAP_EVICTING (one CAS), so a
 * mapping is never unmapped under a copy, and a copier that arrives late
 * sees the flag or the record's new owner and takes the slow path.
 *
 * Every request is checked against the handle's range and rights before
 * any address is computed.
 *
 * Whose memory: a page of a memfd is charged to the memory cgroup of the
 * process that first touches it.  Were the daemon to write into a page the
 * client never allocated, the daemon would pay for the client's memory
 * (and a client could grow it beyond its own limit).  So every page of a
 * handle's range must be allocated by the client before the daemon writes
 * to it: checked for the whole range at registration (SEEK_HOLE finds the
 * first page that holds nothing: on shmem, pages only fallocated count as
 * holes too, so the client writes them, e.g. MADV_POPULATE_WRITE), and
 * again for each section when it is mapped.  A client that punches holes
 * into a section after it was mapped can make the daemon fault in at most
 * the sections mapped at that moment (--max-sections x 2 MiB, shared by
 * all clients) until the section is unmapped and checked again; the man
 * page states that bound. */
#include "handles.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/protocol.h"
#include "common/util.h"

#define SEC_SHIFT 21
_Static_assert(SL_CS_SECTION_SIZE == 1u << SEC_SHIFT, "section size");

int sd_maps_init(struct sd_maps *m, uint32_t max_sections)
{
  memset(m, 0, sizeof *m);
  if (max_sections < 8)
    return sl_error(EINVAL, "at least 8 mapped sections are needed (asked %u)", max_sections);
  m->recs = calloc(max_sections, sizeof *m->recs);
  if (!m->recs)
    return sl_error(ENOMEM, "out of memory for %u mapping records", max_sections);
  m->n = max_sections;
  pthread_mutex_init(&m->lock, NULL);
  return 0;
}

void sd_maps_fini(struct sd_maps *m)
{
  for (uint32_t i = 0; m->recs && i < m->n; i++) {
    uint8_t *a = atomic_load(&m->recs[i].addr);
    if (a)
      munmap(a, SL_CS_SECTION_SIZE);
  }
  free(m->recs);
  memset(m, 0, sizeof *m);
}

/* Is every page of [off, off+len) of memfd FD allocated? */
static bool allocated(int fd, uint64_t off, uint64_t len)
{
  if (len == 0)
    return true;
  off_t hole = lseek(fd, (off_t)off, SEEK_HOLE);
  return hole >= 0 && (uint64_t)hole >= off + len;
}

int sd_handle_create(int fd, uint64_t off, uint64_t len, uint32_t rights,
                     struct sd_handle **out)
{
  int seals = fcntl(fd, F_GET_SEALS);
  char self[64], target[64] = "";
  snprintf(self, sizeof self, "/proc/self/fd/%d", fd);
  ssize_t n = readlink(self, target, sizeof target - 1);
  if (n > 0)
    target[n] = 0;
  if (seals < 0 || strncmp(target, "/memfd:", 7) != 0)
    return sl_error(EINVAL, "memory handle: the descriptor is not a memfd (%s)",
                    n > 0 ? target : "unknown");
  if (!(seals & F_SEAL_SHRINK))
    return sl_error(EPERM, "memory handle: the memfd is not sealed against shrinking "
                    "(F_SEAL_SHRINK)");
  if ((rights & SL_CS_RIGHT_WRITE) && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
    return sl_error(EPERM, "memory handle: write right asked on a memfd sealed against writing");
  if (rights == 0)
    return sl_error(EINVAL, "memory handle: no rights: the daemon could do nothing with it");
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return sl_error(EBADF, "memory handle: %s", strerror(errno));
  int acc = fl & O_ACCMODE;
  if (((rights & SL_CS_RIGHT_WRITE) && acc == O_RDONLY) ||
      ((rights & SL_CS_RIGHT_READ) && acc == O_WRONLY))
    return sl_error(EACCES, "memory handle: the descriptor's access mode does not allow "
                    "the rights asked");
  struct stat st;
  if (fstat(fd, &st) < 0)
    return sl_error(errno, "memory handle: %s", strerror(errno));
  if (off > (uint64_t)st.st_size || len > (uint64_t)st.st_size - off)
    return sl_error(EINVAL, "memory handle: range [%" PRIu64 ", +%" PRIu64
                    ") lies beyond the memfd's %jd bytes", off, len, (intmax_t)st.st_size);
  if (len == 0)
    return sl_error(EINVAL, "memory handle: an empty range");
  if (!allocated(fd, off, len))
    return sl_error(EFAULT, "memory handle: range [%" PRIu64 ", +%" PRIu64 ") holds pages "
                    "the client never wrote: write every page first (MADV_POPULATE_WRITE), "
                    "the daemon does not allocate a client's memory", off, len);
  struct sd_handle *h = calloc(1, sizeof *h);
  if (!h)
    return sl_error(ENOMEM, "out of memory for a memory handle");
  h->fd = fd;
  h->off = off;
  h->len = len;
  h->rights = rights;
  h->prot = ((rights & SL_CS_RIGHT_WRITE) ? PROT_WRITE : 0) |
            ((rights & SL_CS_RIGHT_READ) ? PROT_READ : 0);
  h->first = off >> SEC_SHIFT;
  h->nsec = ((off + len - 1) >> SEC_SHIFT) - h->first + 1;
  h->sec = calloc(h->nsec, sizeof *h->sec);
  if (!h->sec) {
    free(h);
    return sl_error(ENOMEM, "out of memory for a memory handle");
  }
  *out = h;
  return 0;
}

/* Under m->lock: unmap record R, which the caller has claimed
 * (users == SD_MAP_EVICTING), and free it for reuse. */
static void unmap_claimed(struct sd_maps *m, struct sd_map *r)
{
  struct sd_handle *h = atomic_load(&r->owner);
  uint64_t sec = atomic_load(&r->section);
  if (h)
    atomic_store(&h->sec[sec - h->first], NULL);
  munmap(atomic_load(&r->addr), SL_CS_SECTION_SIZE);
  atomic_store(&r->addr, NULL);
  atomic_store(&r->owner, NULL);
  atomic_fetch_sub(&m->mapped, 1);
  /* Late copiers may have added themselves to the count (and will take
   * themselves off again): clear only the flag. */
  atomic_fetch_sub(&r->users, SD_MAP_EVICTING);
}

void sd_handle_destroy(struct sd_maps *m, struct sd_handle *h)
{
  if (!h)
    return;
  pthread_mutex_lock(&m->lock);
  for (uint64_t i = 0; i < h->nsec; i++) {
    struct sd_map *r = atomic_load(&h->sec[i]);
    if (!r)
      continue;
    uint32_t zero = 0;
    /* no copy is in progress (the connection is idle); a late copier of
     * another thread may hold it for an instant while it backs off */
    while (!atomic_compare_exchange_weak(&r->users, &zero, SD_MAP_EVICTING))
      zero = 0;
    unmap_claimed(m, r);
  }
  pthread_mutex_unlock(&m->lock);
  close(h->fd);
  free(h->sec);
  free(h);
}

uint32_t sd_handle_piece(const struct sd_handle *h, uint64_t hoff, uint32_t len)
{
  uint64_t fo = h->off + hoff;
  uint64_t room = SL_CS_SECTION_SIZE - (fo & (SL_CS_SECTION_SIZE - 1));
  return len < room ? len : (uint32_t)room;
}

/* The record for section index I of H, with a user taken, if mapped. */
static struct sd_map *try_get(struct sd_handle *h, uint64_t i)
{
  struct sd_map *r = atomic_load(&h->sec[i]);
  if (!r)
    return NULL;
  uint32_t u = atomic_fetch_add(&r->users, 1);
  if (!(u & SD_MAP_EVICTING) && atomic_load(&r->owner) == h &&
      atomic_load(&r->section) == h->first + i) {
    if (!atomic_load_explicit(&r->ref, memory_order_relaxed))
      atomic_store_explicit(&r->ref, true, memory_order_relaxed);
    return r;
  }
  atomic_fetch_sub(&r->users, 1);
  return NULL;
}

uint8_t *sd_handle_get(struct sd_maps *m, struct sd_handle *h, uint64_t hoff, uint32_t len,
                       uint32_t need, struct sd_map **map, int *err)
{
  if ((h->rights & need) != need) {
    *err = -EACCES;
    return NULL;
  }
  if (len == 0 || hoff > h->len || len > h->len - hoff ||
      sd_handle_piece(h, hoff, len) != len) {
    *err = -EINVAL;
    return NULL;
  }
  uint64_t fo = h->off + hoff;
  uint64_t i = (fo >> SEC_SHIFT) - h->first;
  struct sd_map *r = try_get(h, i);
  if (!r) {
    pthread_mutex_lock(&m->lock);
    r = try_get(h, i);
    for (uint32_t step = 0; !r && step < 3 * m->n; step++) {
      struct sd_map *c = &m->recs[m->hand];
      m->hand = (m->hand + 1) % m->n;
      if (atomic_load(&c->owner)) {
        if (atomic_exchange(&c->ref, false))
          continue; /* used since the last pass: a second chance */
        uint32_t zero = 0;
        if (!atomic_compare_exchange_strong(&c->users, &zero, SD_MAP_EVICTING))
          continue; /* a copy is in progress */
        unmap_claimed(m, c);
      }
      /* c is free; claim it as an evicter would (a late copier may be
       * counting itself in for an instant) */
      uint32_t zero = 0;
      if (!atomic_compare_exchange_strong(&c->users, &zero, SD_MAP_EVICTING))
        continue;
      uint64_t s0 = SL_MAX((h->first + i) << SEC_SHIFT, h->off);
      uint64_t s1 = SL_MIN((h->first + i + 1) << SEC_SHIFT, h->off + h->len);
      void *a = allocated(h->fd, s0, s1 - s0)
          ? mmap(NULL, SL_CS_SECTION_SIZE, h->prot, MAP_SHARED, h->fd,
                 (off_t)((h->first + i) << SEC_SHIFT))
          : NULL;
      if (a == MAP_FAILED || a == NULL) {
        atomic_fetch_sub(&c->users, SD_MAP_EVICTING);
        pthread_mutex_unlock(&m->lock);
        *err = a == NULL ? -EFAULT : -ENOMEM;
        return NULL;
      }
      atomic_store(&c->section, h->first + i);
      atomic_store(&c->addr, (uint8_t *)a);
      atomic_store(&c->owner, h);
      atomic_store(&c->ref, true);
      atomic_fetch_add(&c->users, 1u - SD_MAP_EVICTING); /* ours, usable */
      atomic_store(&h->sec[i], c);
      atomic_fetch_add(&m->mapped, 1);
      r = c;
    }
    pthread_mutex_unlock(&m->lock);
    if (!r) {
      *err = -EAGAIN; /* every section is being copied into: the pool is too small */
      return NULL;
    }
  }
  *map = r;
  return atomic_load(&r->addr) + (fo & (SL_CS_SECTION_SIZE - 1));
}

void sd_handle_put(struct sd_map *map)
{
  atomic_fetch_sub(&map->users, 1);
}
