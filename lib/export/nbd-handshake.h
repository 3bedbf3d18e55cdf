/* The NBD handshake (fixed newstyle, NetworkBlockDevice/nbd doc/proto.md):
 * option haggling until the client chooses the export, apart from the
 * transmission phase that follows it (nbd-server.c). */
#ifndef SLUICE_EXPORT_NBD_HANDSHAKE_H
#define SLUICE_EXPORT_NBD_HANDSHAKE_H

#include <stdbool.h>
#include <stdint.h>

#include "export/export.h"

#define NBD_MAX_REQUEST (32u << 20)   /* largest read or write we accept */

/* Meta context ids, as the handshake hands them out. */
enum { NBD_CTX_ALLOCATION = 1, NBD_CTX_DEPTH = 2 };

/* What the client and we agreed on. */
struct nbd_session {
  uint64_t size;                  /* of the export, at the time it was chosen */
  uint16_t tflags;                /* transmission flags we sent */
  bool structured;                /* structured replies */
  bool ctx_allocation, ctx_depth; /* meta contexts set */
};

/* Haggle on the connected socket FD for the disk behind H.  Returns 1
 * when the client chose the export (transmission follows, *S filled), 0
 * when it went away cleanly (NBD_OPT_ABORT), -1 on a broken or hostile
 * client.  Everything the client sends is bounded before it is read. */
int nbd_handshake(int fd, struct sl_handle *h, const struct sl_nbd_options *opts,
                  struct nbd_session *s);

#endif
