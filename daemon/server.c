/* sluiced's connections: one event loop thread and a small worker pool.
 *
 * The loop thread owns every connection's input.  It reads what a client
 * sent (with any descriptors, SCM_RIGHTS), cuts it into messages
 * (sl_cs_frame), validates each completely (sl_cs_parse_request) and acts:
 * registrations, invalidation, stats and drops are quick and done in place.
 * A READ batch is resolved (every layer and memory handle number looked up
 * in this connection's own tables, ranges and rights checked) and its
 * entries are tried against the cache on the spot: when all of them hit, the
 * loop copies them into the client's memory and replies without any other
 * thread waking up -- the hit path DESIGN.md asks for, with no lock but
 * twophase's own and no sleep.  A batch with a miss goes whole to a worker,
 * which fills the missing blocks (single-flight, store.c), copies, and
 * replies; replies may therefore overtake each other (the protocol says
 * so).  After serving, the loop polls its sockets for --poll-us before
 * sleeping, since a client at queue depth 1 sends its next request within
 * microseconds and a wake-up costs far more (DESIGN.md: hop costs).
 *
 * Hostile clients: a message that breaks the protocol ends that connection
 * (an ERROR message with the reason first); a request that names something
 * the connection does not own fails alone.  A client that floods requests
 * without reading replies stops being read (its replies queue, bounded);
 * one that queues more than SD_MAX_OUT bytes of replies is disconnected.
 * Workers hold a reference on their connection, so an abrupt disconnect
 * mid-fill only loses the reply: the fill completes and stays cached, and
 * the connection's memory handles and layers are released when its last
 * job ends. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/protocol.h"
#include "common/util.h"
#include "ipc/socket.h"

#define SD_MAX_LAYER_HANDLES 1024
#define SD_MAX_MEM_HANDLES 256
#define SD_MAX_FDQ 4
#define SD_MAX_JOBS 256           /* READ batches in workers per connection */
#define SD_MAX_OUT (8u << 20)     /* reply bytes queued for a client not reading */
#define RBUF (2 * SL_CS_MAX_MSG)

struct conn {
  int fd;
  pid_t pid;
  uid_t uid;
  gid_t gid;
  _Atomic int refs;
  bool closed;                    /* loop thread only */
  uint16_t version;
  uint64_t *rbuf;                 /* RBUF bytes, 8-aligned */
  size_t rlen;
  int fdq[SD_MAX_FDQ];
  int nfdq;
  _Atomic(struct sd_layer *) layers[SD_MAX_LAYER_HANDLES];   /* handle - 1 */
  _Atomic(struct sd_handle *) handles[SD_MAX_MEM_HANDLES];   /* handle - 1 */
  /* unregistered while jobs were in flight: released with the connection */
  struct sd_layer **dead_layers;
  size_t n_dead_layers;
  struct sd_handle **dead_handles;
  size_t n_dead_handles;
  _Atomic int jobs;
  pthread_mutex_t out_lock;       /* replies come from the loop and workers */
  char *out;
  size_t outlen, outcap;
  bool reading;                   /* EPOLLIN armed (under out_lock) */
  bool writing;                   /* EPOLLOUT armed (under out_lock) */
  bool drop;                      /* disconnect (out queue overflow) */
  struct conn *next;              /* the server's list, loop thread only */
};

struct piece {
  struct sd_layer *l;
  struct sd_handle *h;
  uint64_t file_off, hoff;
  uint32_t len;
  uint32_t entry;
};

struct job {
  struct conn *c;
  uint64_t id;
  uint32_t count;
  struct sl_cs_read_result *res;  /* count */
  struct piece *pieces;           /* entries not served by the loop */
  uint32_t npieces;
  struct job *next;
};

struct sd_server {
  struct sd_options o;
  struct sd_store store;
  struct sd_maps maps;
  int lfd, epfd, sigfd, stopfd;
  pthread_t loop;
  bool loop_started;
  pthread_t *workers;
  uint32_t nworkers;
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  struct job *qhead, *qtail;
  bool stopping;
  struct conn *conns;
  _Atomic uint64_t nconns;
  _Atomic bool some_drop;         /* a connection's reply queue overflowed */
  pthread_mutex_t idle_lock;
  pthread_cond_t idle_cond;
  int adoptfd;                    /* eventfd: sockets handed over by sd_server_adopt */
  pthread_mutex_t adopt_lock;
  int *adopt;
  size_t n_adopt;
};

static void conn_unref(struct sd_server *srv, struct conn *c);

/* ---- output ------------------------------------------------------------ */

/* Under out_lock: the epoll interest C should have now. */
static void rearm_locked(struct sd_server *srv, struct conn *c)
{
  bool want_in = c->outlen == 0 && atomic_load(&c->jobs) < SD_MAX_JOBS && !c->drop;
  bool want_out = c->outlen > 0 && !c->drop;
  if (want_in == c->reading && want_out == c->writing)
    return;
  struct epoll_event ev = {.events = (want_in ? EPOLLIN : 0) | (want_out ? EPOLLOUT : 0) |
                                     EPOLLRDHUP,
                           .data.ptr = c};
  if (epoll_ctl(srv->epfd, EPOLL_CTL_MOD, c->fd, &ev) == 0) {
    c->reading = want_in;
    c->writing = want_out;
  }
}

/* Under out_lock: send what is queued, as far as the socket takes it. */
static void flush_locked(struct conn *c)
{
  size_t done = 0;
  while (done < c->outlen) {
    ssize_t n = send(c->fd, c->out + done, c->outlen - done, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      if (errno != EAGAIN && errno != EWOULDBLOCK)
        done = c->outlen; /* the peer is gone: the loop will see it */
      break;
    }
    done += (size_t)n;
  }
  memmove(c->out, c->out + done, c->outlen - done);
  c->outlen -= done;
}

/* Send one message to C (from any thread); queued if the socket is full. */
static void send_msg(struct sd_server *srv, struct conn *c, const void *msg, size_t len)
{
  pthread_mutex_lock(&c->out_lock);
  if (!c->drop) {
    if (c->outlen + len > SD_MAX_OUT) {
      c->drop = true; /* a client that does not read its replies */
      atomic_store(&srv->some_drop, true);
    } else {
      if (c->outlen + len > c->outcap) {
        size_t cap = SL_MAX(c->outcap * 2, c->outlen + len + 65536);
        char *p = realloc(c->out, cap);
        if (!p) {
          c->drop = true;
          goto out;
        }
        c->out = p;
        c->outcap = cap;
      }
      memcpy(c->out + c->outlen, msg, len);
      c->outlen += len;
      flush_locked(c);
    }
  }
out:
  rearm_locked(srv, c);
  pthread_mutex_unlock(&c->out_lock);
}

static void reply(struct sd_server *srv, struct conn *c, uint16_t op, uint64_t id,
                  const void *body, size_t blen)
{
  uint64_t buf[(sizeof(struct sl_cs_hdr) + 256) / 8];
  char *big = NULL;
  void *p = buf;
  if (sizeof(struct sl_cs_hdr) + blen > sizeof buf)
    p = big = malloc(sizeof(struct sl_cs_hdr) + blen);
  if (!p)
    return;
  long n = sl_cs_encode(p, sizeof(struct sl_cs_hdr) + blen, c->version, op | SL_CS_REPLY, 0,
                        id, body, blen);
  if (n > 0)
    send_msg(srv, c, p, (size_t)n);
  free(big);
}

static void reply_error(struct sd_server *srv, struct conn *c, uint16_t op, uint64_t id,
                        int err, const char *text)
{
  uint64_t buf[(sizeof(struct sl_cs_hdr) + SL_CS_MAX_ERRMSG) / 8 + 1];
  long n = sl_cs_encode_error(buf, sizeof buf, c->version ? c->version : SL_CS_VERSION_MIN,
                              op | SL_CS_REPLY, err, id, text);
  if (n > 0)
    send_msg(srv, c, buf, (size_t)n);
}

/* ---- connections ------------------------------------------------------- */

static void release_conn(struct sd_server *srv, struct conn *c)
{
  for (int i = 0; i < SD_MAX_LAYER_HANDLES; i++)
    if (c->layers[i])
      sd_layer_unregister(&srv->store, c->layers[i]);
  for (size_t i = 0; i < c->n_dead_layers; i++)
    sd_layer_unregister(&srv->store, c->dead_layers[i]);
  for (int i = 0; i < SD_MAX_MEM_HANDLES; i++)
    if (c->handles[i])
      sd_handle_destroy(&srv->maps, c->handles[i]);
  for (size_t i = 0; i < c->n_dead_handles; i++)
    sd_handle_destroy(&srv->maps, c->dead_handles[i]);
  for (int i = 0; i < c->nfdq; i++)
    close(c->fdq[i]);
  close(c->fd);
  free(c->dead_layers);
  free(c->dead_handles);
  free(c->rbuf);
  free(c->out);
  pthread_mutex_destroy(&c->out_lock);
  free(c);
  pthread_mutex_lock(&srv->idle_lock);
  atomic_fetch_sub(&srv->nconns, 1);
  pthread_cond_broadcast(&srv->idle_cond);
  pthread_mutex_unlock(&srv->idle_lock);
}

static void conn_unref(struct sd_server *srv, struct conn *c)
{
  if (atomic_fetch_sub(&c->refs, 1) == 1)
    release_conn(srv, c);
}

/* Loop thread: stop serving C (its jobs may still run; they hold refs). */
static void conn_close(struct sd_server *srv, struct conn *c, const char *why)
{
  if (c->closed)
    return;
  c->closed = true;
  if (why && !srv->o.quiet)
    fprintf(stderr, "sluiced: client pid %d uid %u: %s\n", (int)c->pid, (unsigned)c->uid, why);
  epoll_ctl(srv->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  shutdown(c->fd, SHUT_RDWR);
  for (struct conn **pp = &srv->conns; *pp; pp = &(*pp)->next)
    if (*pp == c) {
      *pp = c->next;
      break;
    }
  conn_unref(srv, c);
}

/* A protocol violation: say why, then close. */
static void conn_fail(struct sd_server *srv, struct conn *c, uint64_t id, const char *why)
{
  reply_error(srv, c, SL_CS_ERROR, id, -EPROTO, why);
  pthread_mutex_lock(&c->out_lock);
  flush_locked(c);
  pthread_mutex_unlock(&c->out_lock);
  conn_close(srv, c, why);
}

static bool allowed(const struct sd_server *srv, uid_t uid, gid_t gid, pid_t pid)
{
  if (uid == 0)
    return true;
  for (size_t i = 0; i < srv->o.n_allow_uid; i++)
    if (srv->o.allow_uid[i] == uid)
      return true;
  for (size_t i = 0; i < srv->o.n_allow_gid; i++)
    if (srv->o.allow_gid[i] == gid)
      return true;
  /* supplementary groups, as the kernel's access check would count them */
  char p[64], line[512];
  snprintf(p, sizeof p, "/proc/%d/status", (int)pid);
  FILE *f = fopen(p, "re");
  bool ok = false;
  while (f && !ok && fgets(line, sizeof line, f)) {
    if (strncmp(line, "Groups:", 7) != 0)
      continue;
    char *s = line + 7, *end;
    for (;;) {
      unsigned long g = strtoul(s, &end, 10);
      if (end == s)
        break;
      for (size_t i = 0; i < srv->o.n_allow_gid; i++)
        ok |= srv->o.allow_gid[i] == (gid_t)g;
      s = end;
    }
  }
  if (f)
    fclose(f);
  return ok;
}

static int add_conn(struct sd_server *srv, int fd, bool check)
{
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  if (sl_ipc_peer_cred(fd, &pid, &uid, &gid) < 0 && check) {
    fprintf(stderr, "sluiced: refused a client: %s\n", sl_last_error());
    close(fd);
    return -EPERM;
  }
  if (check && !allowed(srv, uid, gid, pid)) {
    fprintf(stderr, "sluiced: refused client pid %d uid %u gid %u: not root and not in "
            "--allow-user/--allow-group\n", (int)pid, (unsigned)uid, (unsigned)gid);
    close(fd);
    return -EPERM;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  struct conn *c = calloc(1, sizeof *c);
  uint64_t *rb = aligned_alloc(8, RBUF);
  if (!c || !rb) {
    free(c);
    free(rb);
    close(fd);
    return -ENOMEM;
  }
  c->fd = fd;
  c->pid = pid;
  c->uid = uid;
  c->gid = gid;
  c->rbuf = rb;
  atomic_init(&c->refs, 1);
  pthread_mutex_init(&c->out_lock, NULL);
  c->reading = true;
  struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
  atomic_fetch_add(&srv->nconns, 1);
  if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
    int e = errno;
    release_conn(srv, c);
    return -e;
  }
  c->next = srv->conns;
  srv->conns = c;
  if (!srv->o.quiet)
    fprintf(stderr, "sluiced: client pid %d uid %u connected\n", (int)pid, (unsigned)uid);
  return 0;
}

/* ---- operations -------------------------------------------------------- */

static void op_hello(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  const struct sl_cs_hello *h = r->u.hello;
  if (h->min_version > SL_CS_VERSION_MAX || h->max_version < SL_CS_VERSION_MIN) {
    reply_error(srv, c, SL_CS_HELLO, r->hdr.id, -EPROTONOSUPPORT,
                "no protocol version in common (this daemon speaks 1..1)");
    pthread_mutex_lock(&c->out_lock);
    flush_locked(c);
    pthread_mutex_unlock(&c->out_lock);
    conn_close(srv, c, "no common protocol version");
    return;
  }
  c->version = SL_MIN(h->max_version, SL_CS_VERSION_MAX);
  struct sl_cs_hello_reply rep = {
    .version = c->version, .block_size = srv->store.block_size,
    .section_size = SL_CS_SECTION_SIZE, .max_batch = SL_CS_MAX_BATCH,
    .capacity_blocks = srv->store.nblocks, .max_msg = SL_CS_MAX_MSG};
  reply(srv, c, SL_CS_HELLO, r->hdr.id, &rep, sizeof rep);
}

static void op_register_layer(struct sd_server *srv, struct conn *c,
                              const struct sl_cs_request *r, int fd)
{
  int slot = -1;
  for (int i = 0; i < SD_MAX_LAYER_HANDLES && slot < 0; i++)
    if (!c->layers[i])
      slot = i;
  if (slot < 0) {
    close(fd);
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EMFILE, "too many layers on this connection");
    return;
  }
  int err = 0;
  bool priv = r->u.reg_layer->flags & SL_CS_LAYER_PRIVATE;
  struct sd_layer *l = sd_layer_register(&srv->store, fd, priv, c->pid, &err);
  close(fd);
  if (!l) {
    if (!srv->o.quiet)
      fprintf(stderr, "sluiced: client pid %d: refused a layer: %s\n", (int)c->pid,
              sl_last_error());
    reply_error(srv, c, r->hdr.op, r->hdr.id, err, sl_last_error());
    return;
  }
  atomic_store(&c->layers[slot], l);
  struct sl_cs_register_layer_reply rep = {.layer = (uint32_t)slot + 1,
                                           .flags = priv ? SL_CS_LAYER_PRIVATE : 0,
                                           .size = l->size};
  reply(srv, c, r->hdr.op, r->hdr.id, &rep, sizeof rep);
}

static void op_register_handle(struct sd_server *srv, struct conn *c,
                               const struct sl_cs_request *r, int fd)
{
  int slot = -1;
  for (int i = 0; i < SD_MAX_MEM_HANDLES && slot < 0; i++)
    if (!c->handles[i])
      slot = i;
  if (slot < 0) {
    close(fd);
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EMFILE,
                "too many memory handles on this connection");
    return;
  }
  struct sd_handle *h;
  const struct sl_cs_register_handle *q = r->u.reg_handle;
  int err = sd_handle_create(fd, q->offset, q->length, q->rights, &h);
  if (err < 0) {
    close(fd);
    if (!srv->o.quiet)
      fprintf(stderr, "sluiced: client pid %d: refused a memory handle: %s\n", (int)c->pid,
              sl_last_error());
    reply_error(srv, c, r->hdr.op, r->hdr.id, err, sl_last_error());
    return;
  }
  atomic_store(&c->handles[slot], h);
  struct sl_cs_register_handle_reply rep = {.handle = (uint32_t)slot + 1};
  reply(srv, c, r->hdr.op, r->hdr.id, &rep, sizeof rep);
}

static struct sd_layer *layer_ref(struct conn *c, uint32_t handle)
{
  return handle >= 1 && handle <= SD_MAX_LAYER_HANDLES ? c->layers[handle - 1] : NULL;
}
static struct sd_handle *handle_ref(struct conn *c, uint32_t handle)
{
  return handle >= 1 && handle <= SD_MAX_MEM_HANDLES ? c->handles[handle - 1] : NULL;
}

static void op_unregister(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  uint32_t n = r->u.unreg->handle;
  bool layer = r->hdr.op == SL_CS_UNREGISTER_LAYER;
  void *p = layer ? (void *)layer_ref(c, n) : (void *)handle_ref(c, n);
  if (!p) {
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EBADF,
                layer ? "no such layer on this connection"
                      : "no such memory handle on this connection");
    return;
  }
  if (layer)
    atomic_store(&c->layers[n - 1], NULL);
  else
    atomic_store(&c->handles[n - 1], NULL);
  if (atomic_load(&c->jobs) == 0) {
    if (layer)
      sd_layer_unregister(&srv->store, p);
    else
      sd_handle_destroy(&srv->maps, p);
  } else {
    /* a worker may be using it: release it with the connection */
    void ***arr = layer ? (void ***)&c->dead_layers : (void ***)&c->dead_handles;
    size_t *cnt = layer ? &c->n_dead_layers : &c->n_dead_handles;
    void **q = realloc(*arr, (*cnt + 1) * sizeof *q);
    if (q) {
      q[(*cnt)++] = p;
      *arr = q;
    }
  }
  reply(srv, c, r->hdr.op, r->hdr.id, NULL, 0);
}

/* Copy piece P through the cache, advancing P past what is done; WITH_FILL
 * false: hits only (1 done, 0 stopped at a block not cached).  0/1 or
 * -errno. */
static int serve_piece(struct sd_server *srv, struct piece *p, bool with_fill, bool *hit)
{
  *hit = true;
  while (p->len > 0) {
    uint32_t n = sd_handle_piece(p->h, p->hoff, p->len);
    struct sd_map *m;
    int err;
    uint8_t *dst = sd_handle_get(&srv->maps, p->h, p->hoff, n, SL_CS_RIGHT_WRITE, &m, &err);
    if (!dst)
      return err;
    int r;
    if (with_fill) {
      bool h;
      r = sd_store_read(&srv->store, p->l, p->file_off, n, dst, &h);
      *hit &= h;
    } else {
      r = sd_store_read_cached(&srv->store, p->l, p->file_off, n, dst);
    }
    sd_handle_put(m);
    if (r < 0 || (!with_fill && r == 0))
      return r;
    atomic_fetch_add_explicit(&p->l->c.bytes_served, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&srv->store.c.bytes_served, n, memory_order_relaxed);
    p->hoff += n;
    p->file_off += n;
    p->len -= n;
  }
  return 1;
}

static void send_read_reply(struct sd_server *srv, struct conn *c, uint64_t id, uint32_t count,
                            const struct sl_cs_read_result *res)
{
  size_t blen = sizeof(struct sl_cs_read_reply) + count * sizeof *res;
  uint64_t buf[(sizeof(struct sl_cs_hdr) + sizeof(struct sl_cs_read_reply) +
                SL_CS_MAX_BATCH * sizeof(struct sl_cs_read_result)) / 8];
  struct sl_cs_hdr h = {.magic = SL_CS_MAGIC, .version = c->version,
                        .op = SL_CS_READ | SL_CS_REPLY,
                        .length = (uint32_t)(sizeof h + blen), .id = id};
  struct sl_cs_read_reply rr = {.count = count};
  char *p = (char *)buf;
  memcpy(p, &h, sizeof h);
  memcpy(p + sizeof h, &rr, sizeof rr);
  memcpy(p + sizeof h + sizeof rr, res, count * sizeof *res);
  send_msg(srv, c, buf, h.length);
}

static void queue_job(struct sd_server *srv, struct job *j)
{
  pthread_mutex_lock(&srv->qlock);
  if (srv->qtail)
    srv->qtail->next = j;
  else
    srv->qhead = j;
  srv->qtail = j;
  pthread_cond_signal(&srv->qcond);
  pthread_mutex_unlock(&srv->qlock);
}

static void op_read(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  uint32_t n = r->read->count;
  struct sl_cs_read_result res[SL_CS_MAX_BATCH];
  struct piece pend[SL_CS_MAX_BATCH];
  uint32_t npend = 0;
  struct sd_layer *verified = NULL;
  for (uint32_t i = 0; i < n; i++) {
    const struct sl_cs_read_entry *e = &r->entries[i];
    res[i] = (struct sl_cs_read_result){0, 0};
    struct sd_layer *l = layer_ref(c, e->layer);
    struct sd_handle *h = handle_ref(c, e->handle);
    if (!l || !h) {
      res[i].status = -EBADF; /* a number this connection was not given */
      continue;
    }
    if (!(h->rights & SL_CS_RIGHT_WRITE)) {
      res[i].status = -EACCES;
      continue;
    }
    if (e->handle_offset > h->len || e->length > h->len - e->handle_offset ||
        (e->file_offset >= l->size && l->size > 0)) {
      res[i].status = -EINVAL;
      continue;
    }
    if (l != verified) {
      int v = sd_layer_verify(l, &srv->store);
      if (v < 0) {
        res[i].status = v;
        continue;
      }
      verified = l;
    }
    struct piece p = {l, h, e->file_offset, e->handle_offset, e->length, i};
    bool hit;
    int s = serve_piece(srv, &p, false, &hit);
    if (s < 0)
      res[i].status = s;
    else if (s == 1)
      res[i].flags = SL_CS_RESULT_HIT;
    else
      pend[npend++] = p;
  }
  if (npend == 0) {
    send_read_reply(srv, c, r->hdr.id, n, res);
    return;
  }
  struct job *j = calloc(1, sizeof *j);
  if (j) {
    j->res = malloc(n * sizeof *res);
    j->pieces = malloc(npend * sizeof *pend);
  }
  if (!j || !j->res || !j->pieces) {
    for (uint32_t i = 0; i < npend; i++)
      res[pend[i].entry].status = -ENOMEM;
    send_read_reply(srv, c, r->hdr.id, n, res);
    if (j) {
      free(j->res);
      free(j->pieces);
      free(j);
    }
    return;
  }
  memcpy(j->res, res, n * sizeof *res);
  memcpy(j->pieces, pend, npend * sizeof *pend);
  j->c = c;
  j->id = r->hdr.id;
  j->count = n;
  j->npieces = npend;
  atomic_fetch_add(&c->refs, 1);
  atomic_fetch_add(&c->jobs, 1);
  queue_job(srv, j);
}

static void run_job(struct sd_server *srv, struct job *j)
{
  for (uint32_t i = 0; i < j->npieces; i++) {
    bool hit;
    int s = serve_piece(srv, &j->pieces[i], true, &hit);
    j->res[j->pieces[i].entry].status = s < 0 ? s : 0;
    j->res[j->pieces[i].entry].flags = s >= 0 && hit ? SL_CS_RESULT_HIT : 0;
  }
  struct conn *c = j->c;
  send_read_reply(srv, c, j->id, j->count, j->res);
  atomic_fetch_sub(&c->jobs, 1);
  pthread_mutex_lock(&c->out_lock);
  rearm_locked(srv, c); /* reading may resume below the job limit */
  pthread_mutex_unlock(&c->out_lock);
  conn_unref(srv, c);
  free(j->res);
  free(j->pieces);
  free(j);
}

static void *worker_main(void *opaque)
{
  struct sd_server *srv = opaque;
  for (;;) {
    pthread_mutex_lock(&srv->qlock);
    while (!srv->qhead && !srv->stopping)
      pthread_cond_wait(&srv->qcond, &srv->qlock);
    struct job *j = srv->qhead;
    if (j) {
      srv->qhead = j->next;
      if (!srv->qhead)
        srv->qtail = NULL;
    }
    pthread_mutex_unlock(&srv->qlock);
    if (!j)
      return NULL;
    run_job(srv, j);
  }
}

static void op_invalidate(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  struct sd_layer *l = layer_ref(c, r->u.invalidate->layer);
  if (!l) {
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EBADF, "no such layer on this connection");
    return;
  }
  sd_store_invalidate(&srv->store, l, r->u.invalidate->offset, r->u.invalidate->length);
  reply(srv, c, r->hdr.op, r->hdr.id, NULL, 0);
}

static void op_drop(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  struct sd_layer *l = NULL;
  if ((r->u.drop->flags & SL_CS_DROP_ALL) && c->uid != 0) {
    /* Every client's blocks, private ones included: the host's to decide. */
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EPERM, "dropping every layer needs root");
    return;
  }
  if (!(r->u.drop->flags & SL_CS_DROP_ALL)) {
    l = layer_ref(c, r->u.drop->layer);
    if (!l) {
      reply_error(srv, c, r->hdr.op, r->hdr.id, -EBADF, "no such layer on this connection");
      return;
    }
  }
  if (!srv->o.quiet)
    fprintf(stderr, "sluiced: client pid %d dropped %s\n", (int)c->pid,
            l ? l->path : "every cached block");
  sd_store_invalidate(&srv->store, l, 0, UINT64_MAX);
  reply(srv, c, r->hdr.op, r->hdr.id, NULL, 0);
}

static void copy_counters(struct sl_cs_counters *d, const struct sd_counters *s)
{
  d->hits = atomic_load(&s->hits);
  d->misses = atomic_load(&s->misses);
  d->fills = atomic_load(&s->fills);
  d->bytes_served = atomic_load(&s->bytes_served);
  d->backend_bytes = atomic_load(&s->backend_bytes);
  int64_t res = atomic_load(&s->resident);
  d->resident_blocks = res > 0 ? (uint64_t)res : 0;
}

static bool conn_owns(struct conn *c, struct sd_layer *l)
{
  for (int i = 0; i < SD_MAX_LAYER_HANDLES; i++)
    if (c->layers[i] == l)
      return true;
  return false;
}

static void op_stats(struct sd_server *srv, struct conn *c, const struct sl_cs_request *r)
{
  const size_t room = (SL_CS_MAX_MSG - sizeof(struct sl_cs_hdr) -
                       sizeof(struct sl_cs_stats_reply)) / sizeof(struct sl_cs_layer_stats);
  size_t maxl = r->u.stats->max_layers ? SL_MIN(r->u.stats->max_layers, room) : room;
  size_t blen = sizeof(struct sl_cs_stats_reply) + maxl * sizeof(struct sl_cs_layer_stats);
  char *body = calloc(1, blen);
  if (!body) {
    reply_error(srv, c, r->hdr.op, r->hdr.id, -ENOMEM, "out of memory");
    return;
  }
  struct sl_cs_stats_reply *rep = (void *)body;
  struct sl_cs_layer_stats *ls = (void *)(body + sizeof *rep);
  copy_counters(&rep->total, &srv->store.c);
  struct sd_store_info info;
  sd_store_info(&srv->store, &info);
  rep->ghost_entries = info.ghost;
  rep->metadata_bytes = info.metadata_bytes;
  rep->mapped_sections = atomic_load(&srv->maps.mapped);
  rep->clients = atomic_load(&srv->nconns);
  rep->capacity_blocks = srv->store.nblocks;
  rep->memory_bytes = srv->store.nblocks * srv->store.block_size;
  rep->block_size = srv->store.block_size;
  rep->next = UINT32_MAX;
  uint32_t count = 0;
  pthread_mutex_lock(&srv->store.layers_lock);
  uint32_t end = srv->store.next_index;
  for (uint32_t i = SL_MAX(r->u.stats->first, 1u); i < end; i++) {
    struct sd_layer *l = sd_layer_at(&srv->store, i);
    if (!l)
      continue;
    bool dead = atomic_load(&l->dead);
    if (!dead || atomic_load(&l->refs) > 0 || atomic_load(&l->c.resident) > 0)
      rep->layers++;
    else
      continue;
    if (l->private_ && !conn_owns(c, l))
      continue;
    if (count == maxl) {
      if (rep->next == UINT32_MAX)
        rep->next = i;
      continue;
    }
    struct sl_cs_layer_stats *x = &ls[count++];
    copy_counters(&x->c, &l->c);
    x->dev = l->dev;
    x->ino = l->ino;
    x->size = l->size;
    x->clients = atomic_load(&l->refs);
    x->index = l->index;
    x->flags = (dead ? SL_CS_LSTAT_DEAD : 0) | (l->blockdev ? SL_CS_LSTAT_BLOCKDEV : 0) |
               (l->direct ? SL_CS_LSTAT_DIRECT : 0) | (l->lease ? SL_CS_LSTAT_LEASE : 0) |
               (l->private_ ? SL_CS_LSTAT_PRIVATE : 0);
    memcpy(x->path, l->path, sizeof x->path);
    x->path[sizeof x->path - 1] = 0;
  }
  pthread_mutex_unlock(&srv->store.layers_lock);
  rep->count = count;
  reply(srv, c, r->hdr.op, r->hdr.id, body,
        sizeof *rep + count * sizeof(struct sl_cs_layer_stats));
  free(body);
}

/* ---- input ------------------------------------------------------------- */

/* Handle every complete message in C's buffer.  Returns false once C is
 * closed. */
static bool process_input(struct sd_server *srv, struct conn *c)
{
  size_t off = 0;
  bool ok = true;
  while (ok && !c->closed) {
    long fl = sl_cs_frame((char *)c->rbuf + off, c->rlen - off);
    if (fl < 0) {
      conn_fail(srv, c, 0, sl_last_error());
      return false;
    }
    if (fl == 0)
      break;
    /* parse in place when aligned, else from an aligned copy */
    uint64_t tmp[SL_CS_MAX_MSG / 8];
    const void *msg = (char *)c->rbuf + off;
    if (off % 8) {
      memcpy(tmp, msg, (size_t)fl);
      msg = tmp;
    }
    struct sl_cs_request r;
    if (sl_cs_parse_request(msg, (size_t)fl, c->version, &r) < 0) {
      struct sl_cs_hdr h;
      memcpy(&h, msg, sizeof h);
      conn_fail(srv, c, h.id, sl_last_error());
      return false;
    }
    int fd = -1;
    if (sl_cs_request_fds(r.hdr.op)) {
      if (c->nfdq == 0) {
        conn_fail(srv, c, r.hdr.id, "a REGISTER message arrived without its descriptor");
        return false;
      }
      fd = c->fdq[0];
      memmove(c->fdq, c->fdq + 1, (size_t)(c->nfdq - 1) * sizeof *c->fdq);
      c->nfdq--;
    }
    switch (r.hdr.op) {
    case SL_CS_HELLO: op_hello(srv, c, &r); break;
    case SL_CS_REGISTER_LAYER: op_register_layer(srv, c, &r, fd); break;
    case SL_CS_REGISTER_HANDLE: op_register_handle(srv, c, &r, fd); break;
    case SL_CS_UNREGISTER_LAYER:
    case SL_CS_UNREGISTER_HANDLE: op_unregister(srv, c, &r); break;
    case SL_CS_READ: op_read(srv, c, &r); break;
    case SL_CS_INVALIDATE: op_invalidate(srv, c, &r); break;
    case SL_CS_STATS: op_stats(srv, c, &r); break;
    case SL_CS_DROP: op_drop(srv, c, &r); break;
    }
    off += (size_t)fl;
  }
  if (c->closed)
    return false;
  memmove(c->rbuf, (char *)c->rbuf + off, c->rlen - off);
  c->rlen -= off;
  return true;
}

static void conn_readable(struct sd_server *srv, struct conn *c)
{
  int fds[SD_MAX_FDQ];
  size_t nfds = 0;
  long n = sl_ipc_recv_fds(c->fd, (char *)c->rbuf + c->rlen, RBUF - c->rlen, fds,
                           SD_MAX_FDQ, &nfds);
  if (n == -EAGAIN || n == -EINTR)
    return;
  if (n < 0) {
    conn_close(srv, c, n == -EMSGSIZE ? "sent too many descriptors" : "connection error");
    return;
  }
  if (n == 0) {
    for (size_t i = 0; i < nfds; i++)
      close(fds[i]);
    conn_close(srv, c, NULL);
    return;
  }
  for (size_t i = 0; i < nfds; i++) {
    if (c->nfdq == SD_MAX_FDQ) {
      for (size_t k = i; k < nfds; k++)
        close(fds[k]);
      conn_fail(srv, c, 0, "descriptors sent without REGISTER messages for them");
      return;
    }
    c->fdq[c->nfdq++] = fds[i];
  }
  c->rlen += (size_t)n;
  atomic_fetch_add(&c->refs, 1); /* C may close (and lose its last ref) inside */
  process_input(srv, c);
  conn_unref(srv, c);
}

static void handle_signals(struct sd_server *srv)
{
  struct signalfd_siginfo si;
  while (read(srv->sigfd, &si, sizeof si) == sizeof si) {
    if ((int)si.ssi_signo == sd_lease_signal()) {
      struct sd_layer *l = sd_layer_by_fd(&srv->store, si.ssi_fd);
      if (l)
        sd_layer_kill(&srv->store, l, "someone opened it for writing (lease broken)");
    }
    /* SIGIO: the real-time queue overflowed; the sweep finds the layer */
    sd_layer_sweep(&srv->store);
  }
}

static void *loop_main(void *opaque)
{
  struct sd_server *srv = opaque;
  struct epoll_event ev[64];
  uint64_t poll_until = 0, last_sweep = sl_now_ns();
  for (;;) {
    uint64_t now = sl_now_ns();
    int timeout = now < poll_until ? 0 : 1000;
    int n = epoll_wait(srv->epfd, ev, 64, timeout);
    if (n < 0 && errno != EINTR)
      break;
    bool served = false;
    for (int i = 0; i < n; i++) {
      void *p = ev[i].data.ptr;
      if (p == &srv->stopfd)
        return NULL;
      if (p == &srv->lfd) {
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
          add_conn(srv, fd, true);
        continue;
      }
      if (p == &srv->sigfd) {
        handle_signals(srv);
        continue;
      }
      if (p == &srv->adoptfd) {
        uint64_t v;
        if (read(srv->adoptfd, &v, sizeof v) < 0) {
          /* EAGAIN: another wake-up took them */
        }
        pthread_mutex_lock(&srv->adopt_lock);
        for (size_t k = 0; k < srv->n_adopt; k++) {
          add_conn(srv, srv->adopt[k], false);
          /* counted as a connection by sd_server_adopt already */
          pthread_mutex_lock(&srv->idle_lock);
          atomic_fetch_sub(&srv->nconns, 1);
          pthread_cond_broadcast(&srv->idle_cond);
          pthread_mutex_unlock(&srv->idle_lock);
        }
        srv->n_adopt = 0;
        pthread_mutex_unlock(&srv->adopt_lock);
        continue;
      }
      struct conn *c = p;
      if (ev[i].events & EPOLLOUT) {
        pthread_mutex_lock(&c->out_lock);
        flush_locked(c);
        rearm_locked(srv, c);
        bool drop = c->drop;
        pthread_mutex_unlock(&c->out_lock);
        if (drop) {
          conn_close(srv, c, "does not read its replies: disconnected");
          continue;
        }
      }
      if (ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) {
        conn_readable(srv, c);
        served = true;
      }
    }
    /* a connection whose reply queue overflowed while we served others */
    if (atomic_exchange(&srv->some_drop, false))
      for (struct conn *c = srv->conns, *next; c; c = next) {
      next = c->next;
      pthread_mutex_lock(&c->out_lock);
      bool drop = c->drop;
      pthread_mutex_unlock(&c->out_lock);
      if (drop)
        conn_close(srv, c, "does not read its replies: disconnected");
    }
    now = sl_now_ns();
    if (served && srv->o.poll_us)
      poll_until = now + srv->o.poll_us * 1000ull;
    if (now - last_sweep > 1000000000ull) {
      sd_layer_sweep(&srv->store);
      last_sweep = now;
    }
  }
  return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

int sd_server_create(const struct sd_options *o, struct sd_server **out)
{
  struct sd_server *srv = calloc(1, sizeof *srv);
  if (!srv)
    return sl_error(ENOMEM, "out of memory");
  srv->o = *o;
  srv->lfd = srv->epfd = srv->sigfd = srv->stopfd = srv->adoptfd = -1;
  pthread_mutex_init(&srv->adopt_lock, NULL);
  int r = sd_store_init(&srv->store, o->memory, o->block_size);
  if (r < 0) {
    free(srv);
    return r;
  }
  r = sd_maps_init(&srv->maps, o->max_sections);
  if (r < 0) {
    sd_store_fini(&srv->store);
    free(srv);
    return r;
  }
  pthread_mutex_init(&srv->qlock, NULL);
  pthread_cond_init(&srv->qcond, NULL);
  pthread_mutex_init(&srv->idle_lock, NULL);
  pthread_cond_init(&srv->idle_cond, NULL);
  srv->epfd = epoll_create1(EPOLL_CLOEXEC);
  srv->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  srv->adoptfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sd_lease_signal());
  sigaddset(&set, SIGIO);
  srv->sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
  if (srv->epfd < 0 || srv->stopfd < 0 || srv->sigfd < 0 || srv->adoptfd < 0) {
    r = sl_error(errno, "cannot set up the event loop: %s", strerror(errno));
    sd_server_stop(srv, false);
    return r;
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->stopfd};
  epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->stopfd, &ev);
  ev.data.ptr = &srv->sigfd;
  epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->sigfd, &ev);
  ev.data.ptr = &srv->adoptfd;
  epoll_ctl(srv->epfd, EPOLL_CTL_ADD, srv->adoptfd, &ev);
  *out = srv;
  return 0;
}

int sd_server_start(struct sd_server *srv, int lfd)
{
  if (lfd >= 0) {
    srv->lfd = lfd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &srv->lfd};
    if (epoll_ctl(srv->epfd, EPOLL_CTL_ADD, lfd, &ev) < 0)
      return sl_error(errno, "cannot watch the listening socket: %s", strerror(errno));
  }
  srv->nworkers = SL_MAX(srv->o.workers, 1u);
  srv->workers = calloc(srv->nworkers, sizeof *srv->workers);
  if (!srv->workers)
    return sl_error(ENOMEM, "out of memory");
  for (uint32_t i = 0; i < srv->nworkers; i++)
    if (pthread_create(&srv->workers[i], NULL, worker_main, srv) != 0) {
      srv->nworkers = i;
      return sl_error(EAGAIN, "cannot start worker threads");
    }
  if (pthread_create(&srv->loop, NULL, loop_main, srv) != 0)
    return sl_error(EAGAIN, "cannot start the event loop thread");
  srv->loop_started = true;
  return 0;
}

int sd_server_adopt(struct sd_server *srv, int fd)
{
  pthread_mutex_lock(&srv->adopt_lock);
  int *p = realloc(srv->adopt, (srv->n_adopt + 1) * sizeof *p);
  if (!p) {
    pthread_mutex_unlock(&srv->adopt_lock);
    close(fd);
    return sl_error(ENOMEM, "out of memory");
  }
  srv->adopt = p;
  srv->adopt[srv->n_adopt++] = fd;
  atomic_fetch_add(&srv->nconns, 1); /* counted from now: wait_idle waits for it */
  pthread_mutex_unlock(&srv->adopt_lock);
  uint64_t one = 1;
  if (write(srv->adoptfd, &one, sizeof one) < 0)
    return sl_error(errno, "cannot wake the event loop: %s", strerror(errno));
  return 0;
}

void sd_server_wait_idle(struct sd_server *srv)
{
  pthread_mutex_lock(&srv->idle_lock);
  while (atomic_load(&srv->nconns) > 0)
    pthread_cond_wait(&srv->idle_cond, &srv->idle_lock);
  pthread_mutex_unlock(&srv->idle_lock);
}

struct sd_store *sd_server_store(struct sd_server *srv)
{
  return &srv->store;
}

int sd_server_stop(struct sd_server *srv, bool check)
{
  if (!srv)
    return 0;
  if (srv->loop_started) {
    uint64_t one = 1;
    if (write(srv->stopfd, &one, sizeof one) < 0) {
      /* cannot happen with a fresh eventfd; the join below would hang */
    }
    pthread_join(srv->loop, NULL);
  }
  while (srv->conns)
    conn_close(srv, srv->conns, NULL);
  pthread_mutex_lock(&srv->qlock);
  srv->stopping = true;
  pthread_cond_broadcast(&srv->qcond);
  pthread_mutex_unlock(&srv->qlock);
  for (uint32_t i = 0; i < srv->nworkers; i++)
    pthread_join(srv->workers[i], NULL);
  free(srv->workers);
  int ret = 0;
  char msg[256];
  if (check && sd_store_check(&srv->store, msg, sizeof msg) < 0) {
    fprintf(stderr, "sluiced: cache invariant violated: %s\n", msg);
    ret = -1;
  } else if (check) {
    fprintf(stderr, "sluiced: cache invariants hold (%" PRId64 " blocks resident)\n",
            (int64_t)atomic_load(&srv->store.c.resident));
  }
  if (srv->epfd >= 0)
    close(srv->epfd);
  if (srv->stopfd >= 0)
    close(srv->stopfd);
  if (srv->sigfd >= 0)
    close(srv->sigfd);
  if (srv->adoptfd >= 0)
    close(srv->adoptfd);
  for (size_t i = 0; i < srv->n_adopt; i++)
    close(srv->adopt[i]);
  free(srv->adopt);
  sd_maps_fini(&srv->maps);
  sd_store_fini(&srv->store);
  free(srv);
  return ret;
}
