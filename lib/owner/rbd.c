/* Ownership of RBD images between hosts (issue 16, item 3).
 *
 * The local backend's record file and UNIX socket cannot reach another
 * host; Ceph can.  Here:
 *   - THAT the image is held is the RBD exclusive lock, which a writable
 *     open takes (lib/image/rbd.c) and which librbd then refuses to anyone
 *     else -- the safety floor, as the QEMU lock bytes are for files;
 *   - WHO holds it and how to ask is a RADOS object beside the image,
 *     "sluice_owner.IMAGE" in the image's pool and namespace, holding an
 *     owner record (record.h; backend "rbd", the socket field naming the
 *     object as /rados/POOL/OBJECT) that the owner watches;
 *   - a release request is a notify on that object.  The owner's watch
 *     callback accepts it and calls on_release (serve stops its exports,
 *     drains, flushes and closes the image, which releases the exclusive
 *     lock); release_done then acknowledges the notify with "released", so
 *     the requester's notify returns once the lock is free;
 *   - a dead owner (killed, its host gone, or stopped) does not acknowledge
 *     within the timeout: only then does the requester break its lock with
 *     rbd_lock_break, which blocklists the old owner's client as Ceph's own
 *     tools do, so that if it was only stopped its late writes are refused.
 * A live owner serving with --no-release answers "refused" and is never
 * broken.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include <sluice/error.h>
#include "image/rbd.h"
#include "owner/owner.h"

#define OBJ_PREFIX "sluice_owner."

struct rbd_owner {
  struct sl_owner_base base;
  struct sl_owner_claim_opts opts;
  struct sl_rbd_spec spec;
  struct sl_rbd_conn *conn;
  rados_ioctx_t io;
  char oid[512];
  uint64_t cookie;
  bool watching;
  struct sl_owner_record rec;
  pthread_mutex_t lock;
  bool releasing;            /* a request was accepted */
  uint64_t notify_id;        /* ... and is answered by release_done */
  char requester[256];
};

static void object_name(const struct sl_rbd_spec *s, char *buf, size_t len)
{
  snprintf(buf, len, OBJ_PREFIX "%s", s->image);
}

static void logf_(const struct sl_owner_release_opts *o, const char *fmt, ...)
  __attribute__((format(printf, 2, 3)));
static void logf_(const struct sl_owner_release_opts *o, const char *fmt, ...)
{
  if (!o || !o->log)
    return;
  char line[600];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  o->log(o->log_arg, line);
}

static uint64_t now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The record in the object: 1 with REC filled, 0 when there is none. */
static int read_record(rados_ioctx_t io, const char *oid, const char *image,
                       struct sl_owner_record *rec)
{
  char buf[SL_OWNER_RECORD_MAX];
  int n = rados_read(io, oid, buf, sizeof buf, 0);
  if (n == -ENOENT || n == 0)
    return 0;
  if (n < 0)
    return sl_error(-n, "%s: cannot read the owner object %s: %s", image, oid,
                    strerror(-n));
  int r = sl_owner_record_parse(buf, (size_t)n, rec);
  if (r < 0)
    return sl_error_prefix(-r, "%s: owner object %s", image, oid);
  return 1;
}

/* Who holds the image's exclusive lock ("" if nobody).  The image is
 * opened writable (librbd has no lock state on a read-only open) but not
 * written, which takes no lock. */
static int lock_holder(rados_ioctx_t io, const struct sl_rbd_spec *s,
                       const char *image, char *holder, size_t len, bool do_break)
{
  holder[0] = '\0';
  rbd_image_t img;
  int r = rbd_open(io, s->image, &img, NULL);
  if (r < 0)
    return sl_error(-r, "%s: cannot open the RBD image: %s", image, strerror(-r));
  char *owners[4];
  size_t n = 4;
  rbd_lock_mode_t mode;
  r = rbd_lock_get_owners(img, &mode, owners, &n);
  if (r == 0 && n > 0) {
    snprintf(holder, len, "%s", owners[0]);
    if (do_break) {
      r = rbd_lock_break(img, RBD_LOCK_MODE_EXCLUSIVE, owners[0]);
      if (r < 0)
        r = sl_error(-r, "%s: cannot break the exclusive lock of %s: %s", image,
                     owners[0], strerror(-r));
    }
    rbd_lock_get_owners_cleanup(owners, n);
  } else if (r == -ENOENT) {
    r = 0; /* no lock */
  } else if (r < 0) {
    r = sl_error(-r, "%s: cannot list the lock owners: %s", image, strerror(-r));
  }
  rbd_close(img);
  return r;
}

/* Is someone watching OID?  A notify that a watcher acknowledges at once
 * (librados has no C call to list an object's watchers). */
static bool has_watchers(rados_ioctx_t io, const char *oid)
{
  char *reply = NULL;
  size_t len = 0;
  bool alive = false;
  if (rados_notify2(io, oid, "ping", 4, 3000, &reply, &len) == 0 && reply) {
    struct notify_ack_t *acks = NULL;
    struct notify_timeout_t *tos = NULL;
    size_t nacks = 0, ntos = 0;
    if (rados_decode_notify_response(reply, len, &acks, &nacks, &tos, &ntos) == 0) {
      alive = nacks > 0;
      rados_free_notify_response(acks, nacks, tos);
    }
  }
  if (reply)
    rados_buffer_free(reply);
  return alive;
}

static int open_spec(const char *image, struct sl_rbd_spec *s,
                     struct sl_rbd_conn **conn, rados_ioctx_t *io)
{
  int r = sl_rbd_spec_parse(image, s);
  if (r < 0)
    return r;
  r = sl_rbd_conn_open(image, s, conn, io);
  if (r < 0)
    sl_rbd_spec_clear(s);
  return r;
}

static int rbd_query(const char *image, struct sl_owner_info *out)
{
  memset(out, 0, sizeof *out);
  out->backend = "rbd";
  snprintf(out->image, sizeof out->image, "%s", image);
  struct sl_rbd_spec s;
  struct sl_rbd_conn *conn;
  rados_ioctx_t io;
  int r = open_spec(image, &s, &conn, &io);
  if (r < 0)
    return r;
  char oid[512];
  object_name(&s, oid, sizeof oid);
  snprintf(out->record_path, sizeof out->record_path, "rados:%s/%s", s.pool, oid);
  r = read_record(io, oid, image, &out->rec);
  if (r >= 0) {
    out->has_record = r == 1;
    out->pid_alive = out->has_record && has_watchers(io, oid);
    if (out->pid_alive)
      snprintf(out->proc_state, sizeof out->proc_state, "watching");
    r = lock_holder(io, &s, image, out->holder, sizeof out->holder, false);
  }
  if (r >= 0) {
    out->locked = out->holder[0] != '\0';
    if (out->has_record && out->pid_alive)
      out->state = out->locked ? SL_OWNER_OWNED : SL_OWNER_RELEASED;
    else if (out->has_record)
      out->state = out->locked ? SL_OWNER_STALE : SL_OWNER_STALE;
    else
      out->state = out->locked ? SL_OWNER_FOREIGN : SL_OWNER_NONE;
    r = 0;
  }
  sl_rbd_conn_close(conn, io);
  sl_rbd_spec_clear(&s);
  return r;
}

static int rbd_release(const char *image, const struct sl_owner_release_opts *o,
                       struct sl_owner_release_result *res)
{
  memset(res, 0, sizeof *res);
  int r = rbd_query(image, &res->before);
  if (r < 0)
    return r;
  struct sl_owner_info *b = &res->before;
  if (!b->has_record) {
    if (b->locked)
      return sl_error(EBUSY, "%s: the RBD exclusive lock is held by %s, which "
                      "is not a sluice owner (QEMU, or sluice io?): not asking "
                      "and not breaking it", image, b->holder);
    logf_(o, "%s: nobody holds the image", image);
    return 0;
  }
  bool stale_free = !b->pid_alive && !b->locked;
  struct sl_rbd_spec s;
  struct sl_rbd_conn *conn;
  rados_ioctx_t io;
  if ((r = open_spec(image, &s, &conn, &io)) < 0)
    return r;
  char oid[512];
  object_name(&s, oid, sizeof oid);
  if (stale_free) {
    /* A record nobody answers for, and the lock is free: a released or
     * dead owner's leftover.  Nothing to ask, nothing to break. */
    logf_(o, "%s: the recorded owner (pid %d on %s) is gone and the lock is "
          "free", image, (int)b->rec.pid, b->rec.host);
    rados_remove(io, oid);
    res->stale = true;
    sl_rbd_conn_close(conn, io);
    sl_rbd_spec_clear(&s);
    return 0;
  }
  double timeout = o && o->timeout_s > 0 ? o->timeout_s : 30;
  char msg[512];
  snprintf(msg, sizeof msg, "release %s (client %" PRIu64 ", pid %d)",
           o && o->requester ? o->requester : "sluice",
           rados_get_instance_id(sl_rbd_conn_cluster(conn)), (int)getpid());
  logf_(o, "%s: asking the owner (%s, pid %d on %s) to release it", image,
        b->rec.command, (int)b->rec.pid, b->rec.host);
  char *reply = NULL;
  size_t reply_len = 0;
  res->request_ns = now_ns();
  /* Returns when every watcher has answered, or after the timeout. */
  int nr = rados_notify2(io, oid, msg, (int)strlen(msg), (uint64_t)(timeout * 1000),
                         &reply, &reply_len);
  res->released_ns = now_ns();
  bool answered = false, refused = false, busy = false;
  char failure[256] = "";
  struct notify_ack_t *acks = NULL;
  struct notify_timeout_t *tos = NULL;
  size_t nacks = 0, ntos = 0;
  if (reply && rados_decode_notify_response(reply, reply_len, &acks, &nacks,
                                            &tos, &ntos) == 0) {
    for (size_t i = 0; i < nacks; i++) {
      char p[256] = "";
      size_t n = acks[i].payload_len < sizeof p - 1 ? acks[i].payload_len : sizeof p - 1;
      if (acks[i].payload)
        memcpy(p, acks[i].payload, n);
      if (strcmp(p, "released") == 0)
        answered = true;
      else if (strcmp(p, "refused") == 0)
        refused = true;
      else if (strcmp(p, "busy") == 0)
        busy = true;
      else if (p[0] && strcmp(p, "ignored") != 0)
        snprintf(failure, sizeof failure, "%s", p);
    }
    rados_free_notify_response(acks, nacks, tos);
  }
  if (reply)
    rados_buffer_free(reply);
  if (refused) {
    r = sl_error(EPERM, "%s: the owner (pid %d on %s) refuses to release it "
                 "(--no-release)", image, (int)b->rec.pid, b->rec.host);
  } else if (busy) {
    r = sl_error(EBUSY, "%s: the owner is already releasing it to another "
                 "requester", image);
  } else if (failure[0]) {
    r = sl_error(EIO, "%s: the owner could not release it: %s", image, failure);
  } else if (answered) {
    res->asked = true;
  } else {
    /* Nobody answered within the timeout (or nobody watches any more):
     * the owner is dead or stopped.  Break its lock, which blocklists its
     * client, and remove its record. */
    char holder[400];
    logf_(o, "%s: the owner (pid %d on %s) did not answer within %.0f s "
          "(notify: %s, %zu answers): breaking its lock", image, (int)b->rec.pid,
          b->rec.host, timeout, nr < 0 ? strerror(-nr) : "no timeout", nacks);
    r = lock_holder(io, &s, image, holder, sizeof holder, true);
    if (r == 0) {
      res->stale = true;
      if (holder[0])
        logf_(o, "%s: broke the exclusive lock of %s and blocklisted it", image,
              holder);
      rados_remove(io, oid);
    }
  }
  sl_rbd_conn_close(conn, io);
  sl_rbd_spec_clear(&s);
  return r;
}

static void watch_cb(void *arg, uint64_t notify_id, uint64_t handle,
                     uint64_t notifier_id, void *data, size_t len)
{
  struct rbd_owner *o = arg;
  char msg[256] = "";
  memcpy(msg, data, len < sizeof msg - 1 ? len : sizeof msg - 1);
  if (strncmp(msg, "release ", 8) != 0) {
    rados_notify_ack(o->io, o->oid, notify_id, handle, "ignored", 7);
    return;
  }
  if (o->opts.no_release) {
    rados_notify_ack(o->io, o->oid, notify_id, handle, "refused", 7);
    return;
  }
  pthread_mutex_lock(&o->lock);
  bool busy = o->releasing;
  if (!busy) {
    o->releasing = true;
    o->notify_id = notify_id;
    snprintf(o->requester, sizeof o->requester, "%s", msg + 8);
  }
  pthread_mutex_unlock(&o->lock);
  if (busy) {
    rados_notify_ack(o->io, o->oid, notify_id, handle, "busy", 4);
    return;
  }
  o->opts.on_release(o->opts.arg);
}

static void watch_err(void *arg, uint64_t cookie, int err)
{
  (void)arg; (void)cookie; (void)err;
  /* The watch was lost (a network partition longer than the watch
   * timeout): requests can no longer reach us, and a requester will break
   * our lock; librbd then fails our writes.  Nothing to do here. */
}

static int rbd_claim(const char *image, const struct sl_owner_claim_opts *opts,
                     struct sl_owner **out)
{
  struct rbd_owner *o = calloc(1, sizeof *o);
  if (!o)
    return sl_error(ENOMEM, "out of memory");
  o->base.backend = &sl_owner_rbd;
  o->opts = *opts;
  pthread_mutex_init(&o->lock, NULL);
  int r = open_spec(image, &o->spec, &o->conn, &o->io);
  if (r < 0) {
    free(o);
    return r;
  }
  object_name(&o->spec, o->oid, sizeof o->oid);
  struct sl_owner_record *rec = &o->rec;
  rec->version = SL_OWNER_RECORD_VERSION;
  snprintf(rec->backend, sizeof rec->backend, "rbd");
  rec->pid = getpid();
  snprintf(rec->boot_id, sizeof rec->boot_id, "client.%" PRIu64,
           rados_get_instance_id(sl_rbd_conn_cluster(o->conn)));
  if (gethostname(rec->host, sizeof rec->host - 1) < 0 || !rec->host[0])
    snprintf(rec->host, sizeof rec->host, "localhost");
  rec->uid = geteuid();
  rec->started = (long long)time(NULL);
  if (snprintf(rec->socket, sizeof rec->socket, "/rados/%.*s/%s", 60, o->spec.pool,
               o->oid) >= (int)sizeof rec->socket) {
    /* The field only tells operators where to look; the object is found
     * from the image name, so a long name is cut, not refused. */
    rec->socket[sizeof rec->socket - 1] = '\0';
  }
  rec->release = !opts->no_release;
  snprintf(rec->command, sizeof rec->command, "%s", opts->command ? opts->command : "");
  snprintf(rec->image, sizeof rec->image, "%s", image);
  char text[SL_OWNER_RECORD_MAX];
  int n = sl_owner_record_format(rec, text, sizeof text);
  if (n < 0) {
    r = sl_error(-n, "%s: owner record too long", image);
    goto fail;
  }
  /* Watch first, then publish: a requester that reads the record can
   * always reach us. */
  r = rados_write_full(o->io, o->oid, "", 0);
  if (r == 0)
    r = rados_watch3(o->io, o->oid, &o->cookie, watch_cb, watch_err, 0, o);
  if (r < 0) {
    r = sl_error(-r, "%s: cannot watch the owner object %s: %s", image, o->oid,
                 strerror(-r));
    goto fail;
  }
  o->watching = true;
  r = rados_write_full(o->io, o->oid, text, (size_t)n);
  if (r < 0) {
    r = sl_error(-r, "%s: cannot write the owner object %s: %s", image, o->oid,
                 strerror(-r));
    goto fail;
  }
  *out = (struct sl_owner *)o;
  return 0;
fail:
  if (o->watching)
    rados_unwatch2(o->io, o->cookie);
  sl_rbd_conn_close(o->conn, o->io);
  sl_rbd_spec_clear(&o->spec);
  free(o);
  return r;
}

/* Remove the record if it is still ours (a requester may have replaced it
 * after breaking our lock). */
static void remove_if_mine(struct rbd_owner *o)
{
  struct sl_owner_record cur;
  if (read_record(o->io, o->oid, o->rec.image, &cur) == 1 &&
      strcmp(cur.boot_id, o->rec.boot_id) == 0 && cur.pid == o->rec.pid)
    rados_remove(o->io, o->oid);
}

static void rbd_release_done(struct sl_owner *own, int status, const char *message)
{
  struct rbd_owner *o = (struct rbd_owner *)own;
  /* The record stays: removing the watched object now would end the
   * requester's notify before this answer reaches it (an object's removal
   * drops its watches), and the requester overwrites it when it claims. */
  char reply[256];
  snprintf(reply, sizeof reply, "%s", status == 0 ? "released" : message);
  pthread_mutex_lock(&o->lock);
  uint64_t id = o->notify_id;
  pthread_mutex_unlock(&o->lock);
  rados_notify_ack(o->io, o->oid, id, o->cookie, reply, (int)strlen(reply));
}

static const char *rbd_requester(struct sl_owner *own)
{
  struct rbd_owner *o = (struct rbd_owner *)own;
  pthread_mutex_lock(&o->lock);
  const char *r = o->releasing ? o->requester : "";
  pthread_mutex_unlock(&o->lock);
  return r;
}

static void rbd_drop(struct sl_owner *own)
{
  struct rbd_owner *o = (struct rbd_owner *)own;
  if (!o)
    return;
  /* A cluster that stopped answering while the image closed would make
   * each of these wait out the OSD timeout: the process is leaving, its
   * watch expires with it. */
  bool gone = sl_rbd_conn_gone(o->conn);
  if (o->watching && !gone) {
    rados_unwatch2(o->io, o->cookie);
    rados_watch_flush(sl_rbd_conn_cluster(o->conn));
  }
  if (!o->releasing && !gone)
    remove_if_mine(o);
  sl_rbd_conn_close(o->conn, o->io);
  sl_rbd_spec_clear(&o->spec);
  pthread_mutex_destroy(&o->lock);
  free(o);
}

static bool rbd_handles(const char *image)
{
  return sl_rbd_is_path(image);
}

const struct sl_owner_backend sl_owner_rbd = {
  .name = "rbd",
  .handles = rbd_handles,
  .query = rbd_query,
  .release = rbd_release,
  .claim = rbd_claim,
  .release_done = rbd_release_done,
  .requester = rbd_requester,
  .drop = rbd_drop,
};
