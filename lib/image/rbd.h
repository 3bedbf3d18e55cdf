/* Ceph connections shared within a process (rbd-conn.c), for the RBD
 * driver, other RBD-aware parts of libsluice (lib/owner/rbd.c) and
 * sluiced (daemon/rbd.c).  Only with HAVE_RBD. */
#ifndef SLUICE_IMAGE_RBD_H
#define SLUICE_IMAGE_RBD_H

#include <stdbool.h>
#include <stddef.h>

#include <rados/librados.h>

#include "image/rbd-spec.h"

/* A Ceph connection shared within the process (rbd-conn.c): the RBD
 * driver's, the owner protocol's and sluiced's. */
struct sl_rbd_conn;

/* How to make a connection, and who may share it. */
struct sl_rbd_conn_setup {
  const char *what;          /* messages start with it: a name, or "rbd" */
  const char *key;           /* equal keys share one connection */
  const char *client;        /* the Ceph client, "client.ID" */
  /* Settings before the configuration file, and after it (these
   * override it); a refused one fails the connection. */
  const char *const *pre_keys, *const *pre_values;
  size_t n_pre;
  const char *const *post_keys, *const *post_values;
  size_t n_post;
  bool read_conf;            /* read CONF (NULL: Ceph's search, none found is
                                no error) and CEPH_ARGS; else no file at all */
  const char *conf;
  const char *secret_opt;    /* an option whose value messages never show */
  int max;                   /* a new connection only while fewer than MAX
                                are in use in the process (0: no limit) */
};

/* The connection of SU->key, shared or made now: 0, or -errno with a
 * message (EAGAIN: MAX in use). */
int sl_rbd_conn_get(const struct sl_rbd_conn_setup *su, struct sl_rbd_conn **conn);
/* Drop a reference; the last one shuts the connection down. */
void sl_rbd_conn_put(struct sl_rbd_conn *conn);
rados_t sl_rbd_conn_cluster(struct sl_rbd_conn *conn);
/* The fsid of the cluster the connection reached. */
const char *sl_rbd_conn_fsid(const struct sl_rbd_conn *conn);
/* Did the cluster stop answering while an image of CONN closed?  Then
 * nothing more is asked of it (every request would wait out a timeout),
 * not even a shutdown. */
bool sl_rbd_conn_gone(struct sl_rbd_conn *conn);
void sl_rbd_conn_set_gone(struct sl_rbd_conn *conn);

/* A connection for SPEC's conf, id and options (shared with images that
 * use the same ones) and an I/O context on its pool and namespace.  Errors
 * are reported as the driver reports them, naming PATH. */
int sl_rbd_conn_open(const char *path, const struct sl_rbd_spec *spec,
                     struct sl_rbd_conn **conn, rados_ioctx_t *io);
void sl_rbd_conn_close(struct sl_rbd_conn *conn, rados_ioctx_t io);

/* What sluiced needs to open the snapshot IMG (an RBD layer) itself as
 * this process's Ceph client: names, monitors and the client's key
 * (REGISTER_RBD, lib/cachesvc/protocol.h).  -EROFS if IMG is no snapshot,
 * -ENOENT without monitors or key; with a message. */
struct sl_image;
struct sl_cs_register_rbd;
int sl_rbd_cache_desc(const struct sl_image *img, struct sl_cs_register_rbd *q);

#endif
