/* RBD snapshots as layers of sluiced's store.  See rbd.c. */
#ifndef SLUICED_RBD_H
#define SLUICED_RBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cachesvc/protocol.h"

struct sd_rbd;

/* Is this sluiced built with librbd? */
bool sd_rbd_supported(void);

/* Allow the Ceph cluster the configuration file CONF describes (its
 * mon_host and fsid, read now, once): registrations whose monitors share
 * an address with its monitors connect to those.  Before any thread
 * starts.  0, or -errno with a message. */
int sd_rbd_add_cluster(const char *conf);
/* How many clusters are allowed. */
int sd_rbd_nclusters(void);

/* Open the snapshot REQ names, as the client REQ names, with REQ's key:
 * connect (or reuse the connection of the same monitors, client and key),
 * open POOL/NS/IMAGE@SNAP read-only, read its first bytes.  *ID gets the
 * identity the cluster answered (monitors, fsid, pool id, image id,
 * snapshot id; never the client's words), *NAME what STATS shows (the
 * names the cluster gives those ids; the client's in errors), *SIZE
 * the snapshot's size.  0, or -errno with a message: EACCES (Ceph refused
 * the client or its capabilities forbid the read), EPERM (the monitors
 * are of no configured cluster), ENOENT, EROFS (not a
 * snapshot), ETIMEDOUT, ENOTSUP (built without RBD), EAGAIN (too many
 * connections). */
int sd_rbd_open(const struct sl_cs_register_rbd *req, struct sd_rbd **out, char *id,
                size_t id_len, char *name, size_t name_len, uint64_t *size);
/* Read LEN bytes at OFF (inside the snapshot) into BUF: bytes read or
 * -errno.  Thread-safe. */
long sd_rbd_read(struct sd_rbd *r, void *buf, size_t len, uint64_t off);
/* Close (may wait for the cluster: never on the event loop thread). */
void sd_rbd_close(struct sd_rbd *r);

#endif
