/* Ceph connections of the RBD driver, for other RBD-aware parts of
 * libsluice (lib/owner/rbd.c).  Only with HAVE_RBD. */
#ifndef SLUICE_IMAGE_RBD_H
#define SLUICE_IMAGE_RBD_H

#include <stdbool.h>

#include <rados/librados.h>

#include "image/rbd-spec.h"

struct sl_rbd_conn;

/* A connection for SPEC's conf, id and options (shared with images that
 * use the same ones) and an I/O context on its pool and namespace.  Errors
 * are reported as the driver reports them, naming PATH. */
int sl_rbd_conn_open(const char *path, const struct sl_rbd_spec *spec,
                     struct sl_rbd_conn **conn, rados_ioctx_t *io);
void sl_rbd_conn_close(struct sl_rbd_conn *conn, rados_ioctx_t io);
rados_t sl_rbd_conn_cluster(struct sl_rbd_conn *conn);
/* Did the cluster stop answering while an image of CONN closed?  Then
 * nothing more is asked of it (every request would wait out a timeout). */
bool sl_rbd_conn_gone(struct sl_rbd_conn *conn);

/* What sluiced needs to open the snapshot IMG (an RBD layer) itself as
 * this process's Ceph client: names, monitors and the client's key
 * (REGISTER_RBD, lib/cachesvc/protocol.h).  -EROFS if IMG is no snapshot,
 * -ENOENT without monitors or key; with a message. */
struct sl_image;
struct sl_cs_register_rbd;
int sl_rbd_cache_desc(const struct sl_image *img, struct sl_cs_register_rbd *q);

#endif
