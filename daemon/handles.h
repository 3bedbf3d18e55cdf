/* Memory handles: a client's memfd, restricted to a range and rights, mapped
 * by the daemon in sections on demand.  See handles.c. */
#ifndef SLUICED_HANDLES_H
#define SLUICED_HANDLES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct sd_handle;

/* One mapped section; records are reused, never freed while the daemon
 * runs.  USERS counts copies in progress; SD_MAP_EVICTING is set (from 0)
 * by the one thread that unmaps it. */
#define SD_MAP_EVICTING 0x80000000u
struct sd_map {
  _Atomic uint32_t users;
  _Atomic(struct sd_handle *) owner;
  _Atomic uint64_t section;       /* the memfd's section number */
  _Atomic(uint8_t *) addr;
  _Atomic bool ref;               /* used since the hand last passed */
};

/* The bounded set of mapped sections shared by every handle of the daemon
 * (least recently used unmapped first, by a clock hand). */
struct sd_maps {
  pthread_mutex_t lock;
  struct sd_map *recs;
  uint32_t n, hand;
  _Atomic uint64_t mapped;
};

struct sd_handle {
  int fd;
  uint64_t off, len;              /* the range the client allowed */
  uint32_t rights;                /* SL_CS_RIGHT_* */
  int prot;
  uint64_t first;                 /* section number of off */
  uint64_t nsec;
  _Atomic(struct sd_map *) *sec;  /* per section of the range */
};

int sd_maps_init(struct sd_maps *m, uint32_t max_sections);
void sd_maps_fini(struct sd_maps *m);

/* Check FD (a descriptor the handle takes over on success) and build the
 * handle: a memfd sealed against shrinking, [off, off+len) inside it, the
 * access mode and seals compatible with RIGHTS.  0 or -errno with a
 * message. */
int sd_handle_create(int fd, uint64_t off, uint64_t len, uint32_t rights,
                     struct sd_handle **out);
/* Unmap its sections and close it (no copy may be in progress). */
void sd_handle_destroy(struct sd_maps *m, struct sd_handle *h);

/* Where [hoff, hoff+len) of handle H lies in this process, for copying
 * into it (NEED: the rights the copy needs).  The range must fit one
 * section (sd_handle_piece tells how much does).  *MAP must be passed to
 * sd_handle_put when the copy is done.  NULL with -errno in *ERR (EINVAL:
 * outside the range; EACCES: rights; ENOMEM/EAGAIN: cannot map). */
uint8_t *sd_handle_get(struct sd_maps *m, struct sd_handle *h, uint64_t hoff, uint32_t len,
                       uint32_t need, struct sd_map **map, int *err);
void sd_handle_put(struct sd_map *map);
/* How many of LEN bytes from HOFF lie in the same section. */
uint32_t sd_handle_piece(const struct sd_handle *h, uint64_t hoff, uint32_t len);

#endif
