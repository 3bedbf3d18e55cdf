/* The host table's cache service: what ties a filter's `next` to sluiced.
 *
 * Filters link nothing of libsluice, so the cache filter sees layers only
 * as block status reports them: a depth in the chain and an offset in that
 * layer's file.  This file turns them into registered layers of the shared
 * client (client.c): at attach, every layer the daemon may cache gets a
 * read-only descriptor of its own (sl_image_layer_fd), from which the
 * daemon derives the layer's identity itself (DESIGN.md, "Layer
 * identity").
 *
 * Which layers: those open read-only (the backing files of a chain, and the
 * top when the disk is served read-only) go to the shared cache; the
 * writable top only with SL_CACHE_PRIVATE, in a namespace of this
 * connection.  Attaching is refused when a filter between the cache filter
 * and the image handles reads (encryption, say): the files' bytes are then
 * not what the cache filter would read from next.
 *
 * RBD snapshots (the parents of RBD clones) have no descriptor: the daemon
 * opens them itself with this process's Ceph identity (its monitors and
 * key), and derives their identity from the cluster (REGISTER_RBD).
 *
 * qcow2 reports compressed clusters as data with no file offset (0, where
 * a qcow2 file always has its header): those, and anything else the
 * daemon cannot serve byte for byte, come back unserved, and the filter
 * reads them from next.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

#include <sluice/error.h>
#include <sluice/filter.h>
#include <sluice/image.h>
#include "cachesvc/client.h"
#include "cachesvc/host.h"
#include "disk/next-image.h"
#if HAVE_RBD
#include "cachesvc/protocol.h"
#include "image/rbd.h"
#endif

struct sl_cache_disk {
  struct sl_csc *client;
  int n;                        /* layers in the chain */
  struct sl_csc_layer **layers; /* NULL where the daemon is not asked */
  bool *qcow2;
};

int sl_cache_host_attach(struct sl_next *next, const char *socket,
                         unsigned flags, struct sl_cache_disk **out)
{
  struct sl_image *img = sl_disk_next_image(next);
  if (!img)
    return -ENOTSUP;
  struct sl_cache_disk *cd = calloc(1, sizeof *cd);
  if (!cd)
    return sl_error(ENOMEM, "cache: out of memory");
  cd->n = sl_image_chain_length(img);
  cd->layers = calloc((size_t)cd->n, sizeof *cd->layers);
  cd->qcow2 = calloc((size_t)cd->n, sizeof *cd->qcow2);
  int r = cd->layers && cd->qcow2 ? sl_csc_get(socket, &cd->client)
                                  : sl_error(ENOMEM, "cache: out of memory");
  for (int d = 0; r == 0 && d < cd->n; d++) {
    struct sl_image *l = sl_image_layer(img, d);
    bool shared = sl_image_read_only(l);
    if (!shared && !(flags & SL_CACHE_PRIVATE))
      continue;
    cd->qcow2[d] = sl_image_format(l) == SL_FORMAT_QCOW2;
    /* A layer that is no file (RBD) has no descriptor to hand the daemon:
     * a snapshot is opened by the daemon itself, as this process's Ceph
     * client (REGISTER_RBD); anything else is read directly, uncached. */
    if (sl_image_path_is_rbd(sl_image_filename(l))) {
#if HAVE_RBD
      if (!shared)
        continue;
      struct sl_cs_register_rbd q;
      int e = sl_rbd_cache_desc(l, &q);
      if (e == -EROFS)
        continue; /* an image head: never shared */
      if (e < 0) {
        fprintf(stderr, "sluice: cache: %s\n", sl_last_error());
        continue;
      }
      r = sl_csc_layer_add_rbd(cd->client, &q, &cd->layers[d]);
      explicit_bzero(&q, sizeof q);
#endif
      continue;
    }
    int fd = sl_image_layer_fd(l);
    if (fd < 0) {
      r = fd;
      break;
    }
    r = sl_csc_layer_add(cd->client, fd, !shared, &cd->layers[d]);
  }
  if (r < 0) {
    sl_cache_host_detach(cd);
    return r;
  }
  *out = cd;
  return 0;
}

void sl_cache_host_detach(struct sl_cache_disk *cd)
{
  if (!cd)
    return;
  for (int d = 0; cd->layers && d < cd->n; d++)
    sl_csc_layer_remove(cd->client, cd->layers[d]);
  sl_csc_put(cd->client);
  free(cd->layers);
  free(cd->qcow2);
  free(cd);
}

int sl_cache_host_read(struct sl_cache_disk *cd, struct sl_cache_read *rd,
                       unsigned n, uint64_t deadline_ns)
{
  struct sl_csc_io io[SL_CACHE_MAX_BATCH];
  unsigned map[SL_CACHE_MAX_BATCH], m = 0;
  for (unsigned i = 0; i < n; i++) {
    struct sl_cache_read *x = &rd[i];
    x->status = -ENOENT;
    x->hit = false;
    if (m == SL_CACHE_MAX_BATCH || x->depth < 0 || x->depth >= cd->n ||
        !cd->layers[x->depth] || x->length == 0 || x->length > SL_CACHE_MAX_READ ||
        (cd->qcow2[x->depth] && x->file_offset == 0))
      continue;
    io[m] = (struct sl_csc_io){.layer = cd->layers[x->depth],
                               .file_offset = x->file_offset,
                               .length = x->length, .buf = x->buf};
    map[m++] = i;
  }
  int served = sl_csc_read(cd->client, io, m, deadline_ns);
  for (unsigned j = 0; j < m; j++) {
    rd[map[j]].status = io[j].status;
    rd[map[j]].hit = io[j].hit;
  }
  return served;
}

void sl_cache_host_invalidate(struct sl_cache_disk *cd, int depth,
                              uint64_t file_offset, uint64_t len)
{
  if (depth >= 0 && depth < cd->n && cd->layers[depth])
    sl_csc_invalidate(cd->client, cd->layers[depth], file_offset, len);
}

void sl_cache_host_stats(struct sl_cache_disk *cd, struct sl_cache_stats *st)
{
  struct sl_csc_stats s;
  sl_csc_get_stats(cd->client, &s);
  *st = (struct sl_cache_stats){.reads = s.reads, .served = s.served,
                                .hits = s.hits, .fallbacks = s.fallbacks,
                                .timeouts = s.timeouts, .connects = s.connects,
                                .connected = s.connected};
}
