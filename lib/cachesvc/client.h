/* The sluiced client inside libsluice: what the cache filter reaches
 * through the host table (include/sluice/filter.h, struct sl_cache_ops).
 *
 * One client per socket path per process, shared by every disk of the
 * process and reference counted.  The daemon is an accelerator, never a
 * dependency: every call here either gets bytes from the daemon or says so
 * (a negative status per entry), and the caller then reads the image
 * itself.  Nothing here ever blocks longer than the caller's deadline.
 */
#ifndef SLUICE_CACHESVC_CLIENT_H
#define SLUICE_CACHESVC_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sl_csc;
struct sl_csc_layer;

/* The client for SOCKET (NULL: the default socket), created on first use.
 * Never fails because the daemon is absent: it then connects in the
 * background, with backoff. */
int sl_csc_get(const char *socket, struct sl_csc **out);
void sl_csc_put(struct sl_csc *c);

/* A layer file the daemon may read: FD is a read-only descriptor, which the
 * client takes over.  PRIVATE: the writable top layer of one disk,
 * cached in a namespace of this connection alone. */
int sl_csc_layer_add(struct sl_csc *c, int fd, bool private_layer,
                     struct sl_csc_layer **out);
/* An RBD snapshot the daemon opens itself, as the client REQ names (with
 * its key: see REGISTER_RBD in protocol.h); REQ is copied. */
struct sl_cs_register_rbd;
int sl_csc_layer_add_rbd(struct sl_csc *c, const struct sl_cs_register_rbd *req,
                         struct sl_csc_layer **out);
void sl_csc_layer_remove(struct sl_csc *c, struct sl_csc_layer *l);

struct sl_csc_io {
  struct sl_csc_layer *layer;
  uint64_t file_offset;
  uint32_t length;          /* 1 .. 2 MiB */
  void *buf;
  int status;               /* out: 0 = BUF holds the bytes; < 0 = read elsewhere */
  bool hit;                 /* out: every block was already cached */
};
/* Ask the daemon for N ranges (one message).  Returns how many entries were
 * served; the others have status < 0.  Waits at most DEADLINE_NS. */
int sl_csc_read(struct sl_csc *c, struct sl_csc_io *io, unsigned n,
                uint64_t deadline_ns);
/* Forget cached bytes of a (private) layer; best effort. */
void sl_csc_invalidate(struct sl_csc *c, struct sl_csc_layer *l,
                       uint64_t off, uint64_t len);

struct sl_csc_stats {
  uint64_t reads, served, hits, fallbacks, timeouts, connects;
  bool connected;
};
void sl_csc_get_stats(struct sl_csc *c, struct sl_csc_stats *st);

#endif
