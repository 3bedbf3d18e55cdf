/* sluiced's RBD backend: the daemon opens RBD snapshots itself.
 *
 * A file layer reaches the daemon as a descriptor the client opened; an
 * RBD snapshot has none (DESIGN.md: "Layers on storage without
 * descriptors (RBD snapshots) are identified by the backend's immutable ids
 * and opened by the daemon itself").  Two rules shape this file:
 *
 *  - The daemon never reads for a client what that client's own Ceph
 *    identity could not read.  A registration carries the client's id, its
 *    cephx key and the monitors; the daemon connects *as that client* and
 *    opens the snapshot and reads its first bytes with that connection
 *    before it grants anything, every time, even when the layer is cached
 *    already.  A wrong key fails at the monitor (EACCES), missing
 *    capabilities at the OSD.  The client's ceph.conf is never read here:
 *    a configuration file can load plugins and name log and socket files,
 *    which no client may choose for the daemon; only the client id and the
 *    key cross, and the client read them with its own rights.
 *  - The daemon talks only to the clusters its administrator configured
 *    (sluiced --ceph-conf, by default /etc/ceph/ceph.conf): their monitors
 *    and fsid are read from those files once, at start.  The monitors a
 *    client names only select one of them (an address in common); a
 *    client naming any other cluster is refused (EPERM).  Otherwise a
 *    client could bring a cluster of its own making that claims the real
 *    fsid and ids and poison every other client's blocks, feed librados
 *    whatever it likes, or have the daemon connect anywhere on its behalf.
 *    Sessions are cephx-authenticated (auth_client_required=cephx) and the
 *    cluster's fsid must be the configured one.
 *  - The snapshot is opened by the ids the client opened (fsid, pool id,
 *    namespace, image id, snapshot id), never by its names: after `snap
 *    rename gold old; snap create gold` the name is another snapshot, and
 *    a client registers the same request again after a daemon restart,
 *    hours later.  Ids of nothing (deleted), another fsid or another size
 *    are ESTALE.  They are the layer key: snapshot ids are never reused in
 *    a pool and a snapshot's bytes never change, so cached blocks stay true
 *    for as long as the daemon runs.
 *    Only snapshots are accepted: a writable image head is never shared.
 *
 * One rados connection (a dozen librados threads and a session with the
 * monitors) per (cluster, client id, key), shared by every registration
 * that names the same three, so a boot storm of clones of one snapshot
 * costs one connection (lib/image/rbd-conn.c keeps them); at most
 * SD_RBD_MAX_CONNS are in use, and one is shut down with the last
 * snapshot open on it -- store.c closes a snapshot with its last
 * registration, keeping its cached blocks.  Fills are rbd_aio_read calls waited for on the
 * worker thread that fills (store.c keeps them single-flight).  Timeouts
 * are always set: a cluster that stops answering fails fills (the client
 * then reads from its own connection) instead of holding workers for
 * ever. */
#include "rbd.h"

#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sluice/error.h>

#if HAVE_RBD
#include "image/rbd-spec.h"
#include "image/rbd.h"
#include <inttypes.h>
#include <stdlib.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#define SD_RBD_MAX_CONNS 16
#define SD_RBD_TIMEOUT "20"      /* monitor: connect and commands, seconds */
#define SD_RBD_OSD_TIMEOUT "30"  /* one OSD request, seconds */

/* A cluster the administrator configured: what its ceph.conf says. */
#define SD_RBD_MAX_CLUSTERS 8
struct cluster {
  char conf[256];
  char mon[SL_CS_RBD_MON];
  char fsid[40]; /* "" when the file names none: then not checked */
};
static struct cluster clusters[SD_RBD_MAX_CLUSTERS];
static int nclusters;

struct sd_rbd {
  struct sl_rbd_conn *conn;
  rados_ioctx_t io;
  rbd_image_t image;
};

bool sd_rbd_supported(void) { return true; }

/* The configured cluster whose monitors share an address with MON, or
 * NULL.  Names are not resolved: a client names the monitors as the
 * daemon's configuration does (normally from the same /etc/ceph/ceph.conf). */
static const struct cluster *find_cluster(const char *mon)
{
  for (int i = 0; i < nclusters; i++)
    if (sl_rbd_mons_overlap(mon, clusters[i].mon))
      return &clusters[i];
  return NULL;
}

int sd_rbd_add_cluster(const char *conf)
{
  if (nclusters >= SD_RBD_MAX_CLUSTERS)
    return sl_error(E2BIG, "--ceph-conf %s: at most %d clusters", conf, SD_RBD_MAX_CLUSTERS);
  struct cluster *c = &clusters[nclusters];
  memset(c, 0, sizeof *c);
  if (snprintf(c->conf, sizeof c->conf, "%s", conf) >= (int)sizeof c->conf)
    return sl_error(ENAMETOOLONG, "--ceph-conf %s: name too long", conf);
  FILE *f = fopen(conf, "re");
  if (!f)
    return sl_error(errno, "--ceph-conf %s: %s", conf, strerror(errno));
  fclose(f);
  rados_t cl;
  int e = rados_create2(&cl, "ceph", "client.admin", 0);
  if (e < 0)
    return sl_error(-e, "--ceph-conf %s: cannot set up a Ceph client: %s", conf, strerror(-e));
  e = rados_conf_read_file(cl, conf);
  if (e < 0) {
    rados_shutdown(cl);
    return sl_error(-e, "--ceph-conf %s: Ceph cannot read it: %s", conf, strerror(-e));
  }
  if (rados_conf_get(cl, "mon_host", c->mon, sizeof c->mon) < 0 || !c->mon[0]) {
    rados_shutdown(cl);
    return sl_error(EINVAL, "--ceph-conf %s: no mon_host in it", conf);
  }
  if (rados_conf_get(cl, "fsid", c->fsid, sizeof c->fsid) < 0 ||
      !strcmp(c->fsid, "00000000-0000-0000-0000-000000000000"))
    c->fsid[0] = 0;
  rados_shutdown(cl);
  nclusters++;
  return 0;
}

int sd_rbd_nclusters(void) { return nclusters; }

/* Names of clients and keys go to librados: keep them to what Ceph uses. */
static bool plain(const char *s, const char *extra)
{
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
          strchr(extra, *s)))
      return false;
  return true;
}

/* The connection of Q's client to the configured cluster Q's monitors
 * are of, shared by every registration of the same client and key. */
static int conn_get(const struct sl_cs_register_rbd *q, struct sl_rbd_conn **out)
{
  const struct cluster *cl = find_cluster(q->mon_host);
  if (!cl)
    return nclusters
               ? sl_error(EPERM, "rbd: the monitors %s are not of a Ceph cluster this "
                          "sluiced is configured for (--ceph-conf): refused", q->mon_host)
               : sl_error(EPERM, "rbd: this sluiced is configured for no Ceph cluster "
                          "(--ceph-conf; /etc/ceph/ceph.conf absent): refused");
  char name[SL_CS_RBD_USER + 8];
  snprintf(name, sizeof name, "client.%s", q->user);
  /* cluster, client and key: a connection is shared only by those who
   * showed the same key */
  char key[64 + SL_CS_RBD_USER + SL_CS_RBD_KEY];
  snprintf(key, sizeof key, "sluiced\n%d\n%s\n%s", (int)(cl - clusters), q->user, q->key);
  /* No configuration file, no environment: these settings and no others.
   * No log, no admin socket, no keyring search. */
  static const char *const keys[] = {
    "log_to_stderr", "err_to_stderr", "log_file", "admin_socket", "keyring",
    "client_mount_timeout", "rados_mon_op_timeout", "rados_osd_op_timeout",
    "rbd_cache",            /* the daemon is the cache */
    "auth_client_required", /* never an unauthenticated session */
    "mon_host", "key"};
  const char *const values[] = {
    "false", "false", "", "", "", SD_RBD_TIMEOUT, SD_RBD_TIMEOUT, SD_RBD_OSD_TIMEOUT,
    "false", "cephx", cl->mon, q->key};
  struct sl_rbd_conn_setup su = {
    .what = "rbd", .key = key, .client = name,
    .post_keys = keys, .post_values = values, .n_post = sizeof keys / sizeof keys[0],
    .read_conf = false, .secret_opt = "key", .max = SD_RBD_MAX_CONNS,
  };
  int r = sl_rbd_conn_get(&su, out);
  explicit_bzero(key, sizeof key);
  if (r < 0)
    return r;
  const char *fsid = sl_rbd_conn_fsid(*out);
  if (cl->fsid[0] && strcmp(cl->fsid, fsid)) {
    r = sl_error(EPERM, "rbd: the monitors %s answer for cluster %s, not %s as %s says: "
                 "refused", cl->mon, fsid, cl->fsid, cl->conf);
    sl_rbd_conn_put(*out);
    *out = NULL;
  }
  return r;
}

/* What STATS shows for the snapshot R opened by Q's ids: the names the
 * cluster gives those ids now, not the ones the client sent -- which are
 * only its words, may since name another snapshot (after a rename), and
 * are shown to every client that shares the layer.  A name the cluster
 * does not give is shown as its id ("pool 3", "image 1f2e...", "snap 7"). */
static void resolved_name(struct sd_rbd *r, const struct sl_cs_register_rbd *q, char *name,
                          size_t name_len)
{
  char pool[SL_CS_RBD_NAME], image[SL_CS_RBD_NAME], snap[SL_CS_RBD_NAME];
  size_t n = sizeof image;
  if (rados_pool_reverse_lookup(sl_rbd_conn_cluster(r->conn), q->pool_id, pool,
                                sizeof pool) < 0)
    snprintf(pool, sizeof pool, "pool %" PRId64, q->pool_id);
  if (rbd_get_name(r->image, image, &n) < 0)
    snprintf(image, sizeof image, "image %s", q->image_id);
  n = sizeof snap;
  if (rbd_snap_get_name(r->image, q->snap_id, snap, &n) < 0)
    snprintf(snap, sizeof snap, "snap %" PRIu64, q->snap_id);
  snprintf(name, name_len, "rbd:%s/%s%s%s@%s", pool, q->ns, *q->ns ? "/" : "", image, snap);
}

int sd_rbd_open(const struct sl_cs_register_rbd *q, struct sd_rbd **out, char *id,
                size_t id_len, char *name, size_t name_len, uint64_t *size)
{
  snprintf(name, name_len, "rbd:%s/%s%s%s@%s", q->pool, q->ns, *q->ns ? "/" : "", q->image,
           q->snap);
  if (!*q->snap || q->snap_id >= UINT64_MAX - 1) /* CEPH_NOSNAP: the head */
    return sl_error(EROFS, "rbd: %s/%s%s%s is an image, not a snapshot: only snapshots "
                    "(immutable) are shared", q->pool, q->ns, *q->ns ? "/" : "", q->image);
  if (!plain(q->user, "._-"))
    return sl_error(EINVAL, "rbd: client id '%s': only letters, digits and . _ -", q->user);
  if (!plain(q->key, "+/="))
    return sl_error(EINVAL, "rbd: the key is not base64");
  struct sd_rbd *r = calloc(1, sizeof *r);
  if (!r)
    return sl_error(ENOMEM, "rbd: out of memory");
  int e = conn_get(q, &r->conn);
  if (e < 0) {
    free(r);
    return e;
  }
  /* The snapshot the client opened, by its ids: its names may since
   * name another one (`snap rename gold old; snap create gold`), and a
   * client re-registers the same request after a daemon restart. */
  if (strcmp(sl_rbd_conn_fsid(r->conn), q->fsid)) {
    e = sl_error(ESTALE, "%s: the client opened it in cluster %s, the daemon's monitors "
                 "answer for %s", name, q->fsid, sl_rbd_conn_fsid(r->conn));
    goto fail;
  }
  e = rados_ioctx_create2(sl_rbd_conn_cluster(r->conn), q->pool_id, &r->io);
  if (e < 0) {
    r->io = NULL;
    e = e == -ENOENT ? sl_error(ESTALE, "%s: no pool of id %" PRId64 " (deleted?)", name,
                                q->pool_id)
                     : sl_error(-e, "%s: cannot open pool %" PRId64 ": %s", name, q->pool_id,
                                strerror(-e));
    goto fail;
  }
  rados_ioctx_set_namespace(r->io, q->ns);
  e = rbd_open_by_id_read_only(r->io, q->image_id, &r->image, NULL);
  if (e < 0) {
    r->image = NULL;
    e = e == -ENOENT ? sl_error(ESTALE, "%s: no image of id %s (deleted?)", name, q->image_id)
        : (e == -EPERM || e == -EACCES)
            ? sl_error(EACCES, "%s: client.%s may not read it", name, q->user)
            : sl_error(-e, "%s: cannot open: %s", name, strerror(-e));
    goto fail;
  }
  e = rbd_snap_set_by_id(r->image, q->snap_id);
  if (e < 0) {
    e = e == -ENOENT ? sl_error(ESTALE, "%s: the image has no snapshot of id %" PRIu64
                                " (deleted?)", name, q->snap_id)
        : (e == -EPERM || e == -EACCES)
            ? sl_error(EACCES, "%s: client.%s may not read it", name, q->user)
            : sl_error(-e, "%s: cannot open snapshot %" PRIu64 ": %s", name, q->snap_id,
                       strerror(-e));
    goto fail;
  }
  if ((e = rbd_get_size(r->image, size)) < 0) {
    e = sl_error(-e, "%s: cannot read its size: %s", name, strerror(-e));
    goto fail;
  }
  if (*size != q->size) {
    e = sl_error(ESTALE, "%s: %" PRIu64 " bytes, the client opened %" PRIu64, name, *size,
                 q->size);
    goto fail;
  }
  /* The client's rights on the data objects, not only on the header. */
  char probe[4096];
  size_t plen = *size < sizeof probe ? (size_t)*size : sizeof probe;
  if (plen) {
    ssize_t n = rbd_read(r->image, 0, plen, probe);
    if (n < 0) {
      e = (n == -EPERM || n == -EACCES)
              ? sl_error(EACCES, "%s: client.%s may not read it", name, q->user)
              : sl_error((int)-n, "%s: reading it failed: %s", name, strerror((int)-n));
      goto fail;
    }
  }
  snprintf(id, id_len, "%s|%" PRId64 "|%s|%s|%" PRIu64, sl_rbd_conn_fsid(r->conn), q->pool_id, q->ns,
           q->image_id, q->snap_id);
  resolved_name(r, q, name, name_len);
  *out = r;
  return 0;
fail:
  sd_rbd_close(r);
  return e;
}

long sd_rbd_read(struct sd_rbd *r, void *buf, size_t len, uint64_t off)
{
  rbd_completion_t c;
  int e = rbd_aio_create_completion(NULL, NULL, &c);
  if (e < 0)
    return e;
  e = rbd_aio_read(r->image, off, len, buf, c);
  if (e < 0) {
    rbd_aio_release(c);
    return e;
  }
  rbd_aio_wait_for_complete(c);
  long n = (long)rbd_aio_get_return_value(c);
  rbd_aio_release(c);
  return n;
}

void sd_rbd_close(struct sd_rbd *r)
{
  if (!r)
    return;
  if (r->image)
    rbd_close(r->image);
  if (r->io)
    rados_ioctx_destroy(r->io);
  sl_rbd_conn_put(r->conn);
  free(r);
}

#else /* !HAVE_RBD */

bool sd_rbd_supported(void) { return false; }

int sd_rbd_add_cluster(const char *conf)
{
  return sl_error(ENOTSUP, "--ceph-conf %s: this sluiced was built without RBD support "
                  "(librbd)", conf);
}

int sd_rbd_nclusters(void) { return 0; }

int sd_rbd_open(const struct sl_cs_register_rbd *q, struct sd_rbd **out, char *id,
                size_t id_len, char *name, size_t name_len, uint64_t *size)
{
  (void)out, (void)id, (void)id_len, (void)size;
  snprintf(name, name_len, "rbd:%s/%s", q->pool, q->image);
  return sl_error(ENOTSUP, "rbd:%s/%s@%s: this sluiced was built without RBD support "
                  "(librbd): RBD layers are not cached", q->pool, q->image, q->snap);
}

long sd_rbd_read(struct sd_rbd *r, void *buf, size_t len, uint64_t off)
{
  (void)r, (void)buf, (void)len, (void)off;
  return -ENOTSUP;
}

void sd_rbd_close(struct sd_rbd *r) { (void)r; }

#endif
