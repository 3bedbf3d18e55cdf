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
 * twophase's own and no sleep.  A batch with a miss becomes a job: the
 * pieces the loop could not serve are shared out among as many workers as
 * there are pieces (at most half of them, so that other clients' misses
 * still find a worker while one message's fills run), which fill the missing blocks
 * (single-flight, store.c) and copy, and the last to finish replies -- so a
 * client that sends the reads of many guest requests in one message has
 * its misses filled in parallel, as if it had sent one message each.
 * Replies may therefore overtake each other (the protocol says so).  After serving, the loop polls its sockets for --poll-us before
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
 * job ends.
 *
 * What the loop thread never does: wait for a file a client chose.  A
 * layer may live on a FUSE file system whose server the client controls,
 * where open, fstat, a lease, even close wait for that server.  So layer
 * registration runs on a thread of its own per request (bounded per
 * connection, per user and in all), a batch on a layer that must be
 * fstat-checked goes to a worker, the periodic sweep runs on the
 * housekeeping thread without layers_lock held while it looks, and every
 * descriptor a client passed is closed by the housekeeping thread
 * (sd_store_close_later).  Memory handles are memfds, checked on the spot.
 *
 * Limits, so that one client cannot use up what all share (documented in
 * sluiced(8) and docs/sluiced-protocol.md): layers and memory handles per
 * connection, registrations in progress, connections per user and in all,
 * and the descriptors layers and handles hold per user.  A request over a
 * limit fails with EMFILE or EAGAIN; a connection over the limits is
 * refused at accept with a logged reason.  accept() itself keeps a spare
 * descriptor: when the process is out of them, the spare is given up to
 * accept and at once close the waiting connection, so that the listening
 * socket does not stay readable and spin the loop.
 *
 * Handle numbers carry a generation: the low SD_ID_SLOT_BITS bits are the
 * slot + 1, the bits above count how often the slot was reused, so a
 * number kept after UNREGISTER names nothing, even once the slot holds a
 * new layer or handle. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/protocol.h"
#include "common/util.h"
#include "ipc/socket.h"

#define SD_MAX_LAYER_HANDLES 256     /* layers per connection */
#define SD_MAX_MEM_HANDLES 32        /* memory handles per connection */
#define SD_ID_SLOT_BITS 12
#define SD_ID_GEN_MASK ((1u << (32 - SD_ID_SLOT_BITS)) - 1)
#define SD_MAX_REG_CONN 2            /* layer registrations in progress: per connection */
#define SD_MAX_REG_USER 4            /* ... per user */
#define SD_MAX_REG_ALL 32            /* ... in all */
#define SD_FD_RESERVE 64             /* descriptors never lent to clients */
#define SD_MAX_FDQ 4
#define SD_POLL_PROBE 256            /* served requests between tries at polling */
#define SD_POLL_PREEMPTED_NS 200000  /* a gap in the poll loop this long: preempted */
#define SD_STR_(x) #x
#define SD_STR(x) SD_STR_(x)
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
  _Atomic(struct sd_layer *) layers[SD_MAX_LAYER_HANDLES];   /* by slot */
  _Atomic(struct sd_handle *) handles[SD_MAX_MEM_HANDLES];   /* by slot */
  uint32_t lgen[SD_MAX_LAYER_HANDLES], hgen[SD_MAX_MEM_HANDLES]; /* loop thread */
  _Atomic int regs;               /* layer registrations in progress */
  _Atomic uint64_t nfd;           /* descriptors its layers and handles hold */
  struct user *user;              /* its uid's account */
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
  bool corked;                    /* the loop is answering a batch: queue, do
                                   * not send yet (under out_lock) */
  struct conn *next;              /* the server's list, loop thread only */
};

struct piece {
  struct sd_layer *l;
  struct sd_handle *h;
  uint64_t file_off, hoff;
  uint32_t len;
  uint32_t entry;
  bool verify;                    /* the worker fstat-checks the layer first */
};

/* A batch with misses is a job; its pieces are taken by up to ntasks
 * workers at once (one queued task each, at most half the workers), so
 * that the misses of one message are filled in parallel as those of as
 * many messages would be, without starving other clients.
 * Whichever task finishes last replies. */
struct task {
  struct job *j;
  struct task *next;              /* in the server's queue */
};

struct job {
  struct conn *c;
  uint64_t id;
  uint32_t count;
  struct sl_cs_read_result *res;  /* count */
  struct piece *pieces;           /* entries not served by the loop */
  uint32_t npieces;
  _Atomic uint32_t next_piece;    /* the next piece a task takes */
  _Atomic uint32_t tasks_left;    /* tasks not finished */
  uint32_t ntasks;
  struct task *tasks;
};

/* What one uid holds: connections, registrations in progress, descriptors
 * of layers and handles.  Under users_lock. */
struct user {
  uid_t uid;
  uint32_t conns, regs;
  uint64_t fds;
  struct user *next;
};

struct sd_server {
  struct sd_options o;
  pthread_mutex_t users_lock;
  struct user *users;
  uint32_t regs;                  /* registrations in progress, under users_lock */
  uint64_t fds;                   /* descriptors clients hold, under users_lock */
  uint64_t fd_budget;             /* RLIMIT_NOFILE less the reserve */
  pthread_cond_t regs_cond;       /* regs reached 0 (stop waits) */
  int spare_fd;                   /* given up to accept when out of descriptors */
  uint64_t listen_muted_until;    /* loop thread: ns; 0 = listening */
  uint64_t last_refusal_log;
  pthread_t hk;                   /* housekeeping: sweep, closes */
  bool hk_started, hk_stop, hk_kick;
  pthread_mutex_t hk_lock;
  pthread_cond_t hk_cond;
  struct sd_store store;
  struct sd_maps maps;
  int lfd, epfd, sigfd, stopfd;
  pthread_t loop;
  bool loop_started;
  pthread_t *workers;
  uint32_t nworkers;
  pthread_mutex_t qlock;
  pthread_cond_t qcond;
  struct task *qhead, *qtail;
  bool stopping;
  struct conn *conns;
  _Atomic uint64_t nconns;
  _Atomic bool some_drop;         /* a connection's reply queue overflowed */
  _Atomic uint64_t poll_hits, poll_misses; /* poll windows that paid, did not */
  pthread_mutex_t idle_lock;
  pthread_cond_t idle_cond;
  int adoptfd;                    /* eventfd: sockets handed over by sd_server_adopt */
  pthread_mutex_t adopt_lock;
  int *adopt;
  size_t n_adopt;
};

static void conn_unref(struct sd_server *srv, struct conn *c);

#define SD_MAX_CONNS_USER 64         /* connections per user (root: no limit) */
#define SD_LAYER_FDS 2               /* what a layer may hold: its fd and an O_DIRECT one */

/* ---- accounting -------------------------------------------------------- */

/* Under users_lock: UID's account, created on first use (only uids the
 * allow lists let in ever get one). */
static struct user *user_get_locked(struct sd_server *srv, uid_t uid)
{
  for (struct user *u = srv->users; u; u = u->next)
    if (u->uid == uid)
      return u;
  struct user *u = calloc(1, sizeof *u);
  if (!u)
    return NULL;
  u->uid = uid;
  u->next = srv->users;
  srv->users = u;
  return u;
}

/* Take N descriptors for C's layers or handles: within the daemon's budget,
 * and a non-root user within a quarter of it.  0 or -EMFILE (message set). */
static int fds_take(struct sd_server *srv, struct conn *c, uint64_t n)
{
  int r = 0;
  pthread_mutex_lock(&srv->users_lock);
  if (srv->fds + n > srv->fd_budget)
    r = sl_error(EMFILE, "the daemon has no descriptors left for layers and handles "
                 "(%" PRIu64 " in use)", srv->fds);
  else if (c->uid != 0 && c->user && c->user->fds + n > srv->fd_budget / 4)
    r = sl_error(EMFILE, "uid %u holds %" PRIu64 " descriptors in layers and handles, "
                 "a quarter of what the daemon has: unregister some", (unsigned)c->uid,
                 c->user->fds);
  if (r == 0) {
    srv->fds += n;
    if (c->user)
      c->user->fds += n;
    atomic_fetch_add(&c->nfd, n);
  }
  pthread_mutex_unlock(&srv->users_lock);
  return r;
}

static void fds_give(struct sd_server *srv, struct conn *c, uint64_t n)
{
  pthread_mutex_lock(&srv->users_lock);
  srv->fds -= n;
  if (c->user)
    c->user->fds -= n;
  atomic_fetch_sub(&c->nfd, n);
  pthread_mutex_unlock(&srv->users_lock);
}

/* Handle numbers: slot + 1 in the low bits, the slot's generation above. */
static uint32_t make_id(uint32_t slot, uint32_t gen)
{
  return gen << SD_ID_SLOT_BITS | (slot + 1);
}
/* The slot ID names when its generation is still GEN[slot], or -1. */
static int id_slot(uint32_t id, const uint32_t *gen, uint32_t nslots)
{
  uint32_t slot = (id & ((1u << SD_ID_SLOT_BITS) - 1)) - 1;
  if (slot >= nslots || gen[slot] != id >> SD_ID_SLOT_BITS)
    return -1;
  return (int)slot;
}

/* ---- output ------------------------------------------------------------ */

/* Under out_lock: the epoll interest C should have now. */
static void rearm_locked(struct sd_server *srv, struct conn *c)
{
  if (c->corked)
    return; /* uncork() decides, once the batch's replies are out */
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
      if (!c->corked)
        flush_locked(c);
    }
  }
out:
  rearm_locked(srv, c);
  pthread_mutex_unlock(&c->out_lock);
}

/* Replies to what one read brought in leave together: while the loop
 * answers the requests of one recv, replies are only queued (cork), and
 * one send takes them all (uncork).  A client whose requests came in a
 * burst is woken once for their replies, not once each, and the daemon
 * makes one system call instead of many.  A worker's reply that comes
 * meanwhile joins the batch. */
static void cork(struct conn *c)
{
  pthread_mutex_lock(&c->out_lock);
  c->corked = true;
  pthread_mutex_unlock(&c->out_lock);
}

static void uncork(struct sd_server *srv, struct conn *c)
{
  pthread_mutex_lock(&c->out_lock);
  c->corked = false;
  if (c->outlen && !c->drop)
    flush_locked(c);
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
    if (c->layers[i]) /* no registration runs: it holds a reference */
      sd_layer_unregister(&srv->store, c->layers[i]);
  for (size_t i = 0; i < c->n_dead_layers; i++)
    sd_layer_unregister(&srv->store, c->dead_layers[i]);
  for (int i = 0; i < SD_MAX_MEM_HANDLES; i++)
    if (c->handles[i])
      sd_handle_destroy(&srv->maps, c->handles[i]);
  for (size_t i = 0; i < c->n_dead_handles; i++)
    sd_handle_destroy(&srv->maps, c->dead_handles[i]);
  for (int i = 0; i < c->nfdq; i++)
    sd_store_close_later(&srv->store, c->fdq[i]);
  close(c->fd);
  pthread_mutex_lock(&srv->users_lock);
  srv->fds -= atomic_load(&c->nfd);
  if (c->user) {
    c->user->fds -= atomic_load(&c->nfd);
    c->user->conns--;
  }
  pthread_mutex_unlock(&srv->users_lock);
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
  /* Read no more, but let the client see the end only when the socket is
   * closed (release_conn), after the last job and the unmapping of its
   * memory handles: a client that lent us its buffers takes that end as
   * the sign that we no longer write into them. */
  shutdown(c->fd, SHUT_RD);
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
  pthread_mutex_lock(&srv->users_lock);
  struct user *u = user_get_locked(srv, uid);
  const char *over = !u ? "out of memory"
      : atomic_load(&srv->nconns) >= SL_MAX(srv->fd_budget / 8, 16) ? "too many connections"
      : uid != 0 && u->conns >= SD_MAX_CONNS_USER ? "too many connections of this user"
      : NULL;
  if (!over)
    u->conns++;
  pthread_mutex_unlock(&srv->users_lock);
  if (over) {
    fprintf(stderr, "sluiced: refused client pid %d uid %u: %s\n", (int)pid, (unsigned)uid,
            over);
    close(fd);
    return -EMFILE;
  }
  int fl = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  struct conn *c = calloc(1, sizeof *c);
  uint64_t *rb = aligned_alloc(8, RBUF);
  if (!c || !rb) {
    free(c);
    free(rb);
    close(fd);
    pthread_mutex_lock(&srv->users_lock);
    u->conns--;
    pthread_mutex_unlock(&srv->users_lock);
    return -ENOMEM;
  }
  c->user = u;
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
                "no protocol version in common (this daemon speaks 1.." SD_STR(SL_CS_VERSION_MAX) ")");
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

/* A slot whose layer is being registered (on a registration thread). */
static struct sd_layer reserved_layer;

struct regjob {
  struct sd_server *srv;
  struct conn *c;
  uint64_t id;
  int fd;
  bool priv;
  uint32_t slot;
  struct sl_cs_register_rbd *rbd; /* REGISTER_RBD: a copy of the request */
};

static void reg_done(struct sd_server *srv, struct conn *c)
{
  pthread_mutex_lock(&srv->users_lock);
  srv->regs--;
  if (c->user)
    c->user->regs--;
  if (srv->regs == 0)
    pthread_cond_broadcast(&srv->regs_cond);
  pthread_mutex_unlock(&srv->users_lock);
  atomic_fetch_sub(&c->regs, 1);
}

/* A registration thread: everything that touches the client's file. */
static void *reg_main(void *opaque)
{
  struct regjob *j = opaque;
  struct sd_server *srv = j->srv;
  struct conn *c = j->c;
  int err = 0;
  uint16_t op = j->rbd ? SL_CS_REGISTER_RBD : SL_CS_REGISTER_LAYER;
  struct sd_layer *l;
  if (j->rbd) {
    l = sd_layer_register_rbd(&srv->store, j->rbd, &err);
    explicit_bzero(j->rbd->key, sizeof j->rbd->key);
    free(j->rbd);
  } else {
    l = sd_layer_register(&srv->store, j->fd, j->priv, c->pid, &err);
    close(j->fd); /* may wait for a FUSE server: this thread's to wait */
  }
  /* No longer in progress before the reply goes out: a client that waits
   * for each reply must never find its next registration refused. */
  uint32_t id = make_id(j->slot, c->lgen[j->slot]); /* fixed while reserved */
  atomic_store(&c->layers[j->slot], l);
  if (!l)
    fds_give(srv, c, SD_LAYER_FDS);
  reg_done(srv, c);
  if (!l) {
    if (!srv->o.quiet)
      fprintf(stderr, "sluiced: client pid %d: refused a layer: %s\n", (int)c->pid,
              sl_last_error());
    reply_error(srv, c, op, j->id, err, sl_last_error());
  } else {
    struct sl_cs_register_layer_reply rep = {
      .layer = id,
      .flags = j->priv ? SL_CS_LAYER_PRIVATE : 0, .size = l->size};
    reply(srv, c, op, j->id, &rep, sizeof rep);
  }
  conn_unref(srv, c);
  free(j);
  return NULL;
}

static void op_register_layer(struct sd_server *srv, struct conn *c,
                              const struct sl_cs_request *r, int fd)
{
  int slot = -1;
  for (int i = 0; i < SD_MAX_LAYER_HANDLES && slot < 0; i++)
    if (!c->layers[i])
      slot = i;
  if (slot < 0) {
    sd_store_close_later(&srv->store, fd);
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EMFILE,
                "too many layers on this connection (" SD_STR(SD_MAX_LAYER_HANDLES) ")");
    return;
  }
  const char *busy = NULL;
  pthread_mutex_lock(&srv->users_lock);
  if (atomic_load(&c->regs) >= SD_MAX_REG_CONN)
    busy = "layer registrations in progress on this connection";
  else if (srv->regs >= SD_MAX_REG_ALL)
    busy = "layer registrations in progress in the daemon";
  else if (c->uid != 0 && c->user && c->user->regs >= SD_MAX_REG_USER)
    busy = "layer registrations in progress for this user";
  if (!busy) {
    srv->regs++;
    if (c->user)
      c->user->regs++;
    atomic_fetch_add(&c->regs, 1);
  }
  pthread_mutex_unlock(&srv->users_lock);
  if (busy) {
    char msg[128];
    snprintf(msg, sizeof msg, "too many %s: wait for their replies", busy);
    sd_store_close_later(&srv->store, fd);
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EAGAIN, msg);
    return;
  }
  int e = fds_take(srv, c, SD_LAYER_FDS);
  struct regjob *j = e < 0 ? NULL : calloc(1, sizeof *j);
  struct sl_cs_register_rbd *rbd = NULL;
  if (j && r->hdr.op == SL_CS_REGISTER_RBD && !(rbd = malloc(sizeof *rbd))) {
    free(j);
    j = NULL;
  }
  pthread_t t;
  pthread_attr_t attr;
  if (j) {
    if (rbd) {
      memcpy(rbd, r->u.reg_rbd, sizeof *rbd);
      *j = (struct regjob){srv, c, r->hdr.id, -1, false, (uint32_t)slot, rbd};
    } else {
      *j = (struct regjob){srv, c, r->hdr.id, fd,
                           (r->u.reg_layer->flags & SL_CS_LAYER_PRIVATE) != 0, (uint32_t)slot,
                           NULL};
    }
    atomic_store(&c->layers[slot], &reserved_layer);
    atomic_fetch_add(&c->refs, 1);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10);
    e = pthread_create(&t, &attr, reg_main, j) == 0 ? 0 : -EAGAIN;
    pthread_attr_destroy(&attr);
    if (e == 0)
      return;
    atomic_store(&c->layers[slot], NULL);
    atomic_fetch_sub(&c->refs, 1); /* the loop holds one more: never the last */
    fds_give(srv, c, SD_LAYER_FDS);
    if (rbd)
      explicit_bzero(rbd, sizeof *rbd);
    free(rbd);
    free(j);
    sl_error(EAGAIN, "cannot start a registration thread");
  } else if (e == 0) {
    fds_give(srv, c, SD_LAYER_FDS);
    e = sl_error(ENOMEM, "out of memory");
  }
  reg_done(srv, c);
  sd_store_close_later(&srv->store, fd);
  reply_error(srv, c, r->hdr.op, r->hdr.id, e, sl_last_error());
}

static void op_register_handle(struct sd_server *srv, struct conn *c,
                               const struct sl_cs_request *r, int fd)
{
  int slot = -1;
  for (int i = 0; i < SD_MAX_MEM_HANDLES && slot < 0; i++)
    if (!c->handles[i])
      slot = i;
  if (slot < 0) {
    sd_store_close_later(&srv->store, fd);
    reply_error(srv, c, r->hdr.op, r->hdr.id, -EMFILE,
                "too many memory handles on this connection (" SD_STR(SD_MAX_MEM_HANDLES) ")");
    return;
  }
  struct sd_handle *h;
  const struct sl_cs_register_handle *q = r->u.reg_handle;
  int err = fds_take(srv, c, 1);
  if (err == 0) {
    /* A memfd: nothing here can wait for another process.  Anything else
     * is refused by its first check (F_GET_SEALS) before any other call. */
    err = sd_handle_create(fd, q->offset, q->length, q->rights, &h);
    if (err < 0)
      fds_give(srv, c, 1);
  }
  if (err < 0) {
    sd_store_close_later(&srv->store, fd);
    if (!srv->o.quiet)
      fprintf(stderr, "sluiced: client pid %d: refused a memory handle: %s\n", (int)c->pid,
              sl_last_error());
    reply_error(srv, c, r->hdr.op, r->hdr.id, err, sl_last_error());
    return;
  }
  atomic_store(&c->handles[slot], h);
  struct sl_cs_register_handle_reply rep = {.handle = make_id((uint32_t)slot, c->hgen[slot])};
  reply(srv, c, r->hdr.op, r->hdr.id, &rep, sizeof rep);
}

/* Loop thread: what C's number ID names (NULL: nothing, or a registration
 * still in progress). */
static struct sd_layer *layer_ref(struct conn *c, uint32_t id)
{
  int slot = id_slot(id, c->lgen, SD_MAX_LAYER_HANDLES);
  struct sd_layer *l = slot < 0 ? NULL : atomic_load(&c->layers[slot]);
  return l == &reserved_layer ? NULL : l;
}
static struct sd_handle *handle_ref(struct conn *c, uint32_t id)
{
  int slot = id_slot(id, c->hgen, SD_MAX_MEM_HANDLES);
  return slot < 0 ? NULL : atomic_load(&c->handles[slot]);
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
  /* the slot's next occupant gets a new number */
  uint32_t slot = (n & ((1u << SD_ID_SLOT_BITS) - 1)) - 1;
  if (layer) {
    atomic_store(&c->layers[slot], NULL);
    c->lgen[slot] = (c->lgen[slot] + 1) & SD_ID_GEN_MASK;
  } else {
    atomic_store(&c->handles[slot], NULL);
    c->hgen[slot] = (c->hgen[slot] + 1) & SD_ID_GEN_MASK;
  }
  if (atomic_load(&c->jobs) == 0) {
    if (layer)
      sd_layer_unregister(&srv->store, p);
    else
      sd_handle_destroy(&srv->maps, p);
    fds_give(srv, c, layer ? SD_LAYER_FDS : 1);
  } else {
    /* a worker may be using it: release it with the connection (its
     * descriptors stay counted until then) */
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
  for (uint32_t i = 0; i < j->ntasks; i++) {
    struct task *t = &j->tasks[i];
    t->j = j;
    t->next = NULL;
    if (srv->qtail)
      srv->qtail->next = t;
    else
      srv->qhead = t;
    srv->qtail = t;
  }
  if (j->ntasks > 1)
    pthread_cond_broadcast(&srv->qcond);
  else
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
    struct piece p = {l, h, e->file_offset, e->handle_offset, e->length, i, false};
    if (sd_layer_needs_stat(l)) {
      /* fstat may wait for a FUSE server: a worker checks and serves it */
      p.verify = true;
      pend[npend++] = p;
      continue;
    }
    if (l != verified) {
      int v = sd_layer_verify(l, &srv->store); /* no system call: dead or not */
      if (v < 0) {
        res[i].status = v;
        continue;
      }
      verified = l;
    }
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
    /* At most half the workers: the others stay for other clients'
     * misses (a task takes pieces until none is left, so a job with every
     * worker would hold them all until its last fill). */
    j->ntasks = SL_MAX(SL_MIN(npend, srv->nworkers / 2), 1u);
    j->tasks = malloc(j->ntasks * sizeof *j->tasks);
  }
  if (!j || !j->res || !j->pieces || !j->tasks) {
    for (uint32_t i = 0; i < npend; i++)
      res[pend[i].entry].status = -ENOMEM;
    send_read_reply(srv, c, r->hdr.id, n, res);
    if (j) {
      free(j->res);
      free(j->pieces);
      free(j->tasks);
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
  atomic_init(&j->next_piece, 0);
  atomic_init(&j->tasks_left, j->ntasks);
  atomic_fetch_add(&c->refs, 1);
  atomic_fetch_add(&c->jobs, 1);
  queue_job(srv, j);
}

/* One of a job's tasks: take its pieces until none is left; the last
 * task to finish replies and frees the job. */
static void run_task(struct sd_server *srv, struct task *t)
{
  struct job *j = t->j;
  struct sd_layer *verified = NULL;
  for (;;) {
    uint32_t i = atomic_fetch_add(&j->next_piece, 1);
    if (i >= j->npieces)
      break;
    bool hit;
    struct piece *p = &j->pieces[i];
    if (p->verify && p->l != verified) {
      int v = sd_layer_verify(p->l, &srv->store);
      if (v < 0) {
        j->res[p->entry].status = v;
        continue;
      }
      verified = p->l;
    }
    int s = serve_piece(srv, p, true, &hit);
    j->res[j->pieces[i].entry].status = s < 0 ? s : 0;
    j->res[j->pieces[i].entry].flags = s >= 0 && hit ? SL_CS_RESULT_HIT : 0;
  }
  if (atomic_fetch_sub(&j->tasks_left, 1) != 1)
    return; /* another task still fills: it replies */
  struct conn *c = j->c;
  send_read_reply(srv, c, j->id, j->count, j->res);
  atomic_fetch_sub(&c->jobs, 1);
  pthread_mutex_lock(&c->out_lock);
  rearm_locked(srv, c); /* reading may resume below the job limit */
  pthread_mutex_unlock(&c->out_lock);
  conn_unref(srv, c);
  free(j->res);
  free(j->pieces);
  free(j->tasks);
  free(j);
}

static void *worker_main(void *opaque)
{
  struct sd_server *srv = opaque;
  for (;;) {
    pthread_mutex_lock(&srv->qlock);
    while (!srv->qhead && !srv->stopping)
      pthread_cond_wait(&srv->qcond, &srv->qlock);
    struct task *t = srv->qhead;
    if (t) {
      srv->qhead = t->next;
      if (!srv->qhead)
        srv->qtail = NULL;
    }
    pthread_mutex_unlock(&srv->qlock);
    if (!t)
      return NULL;
    run_task(srv, t);
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
    /* Which files other users' guests run from is theirs to know: a
     * client sees the names of its own layers (root: of all). */
    bool mine = c->uid == 0 || conn_owns(c, l);
    x->dev = mine ? l->dev : 0;
    x->ino = mine ? l->ino : 0;
    x->size = l->size;
    x->clients = atomic_load(&l->refs);
    x->index = l->index;
    x->flags = (dead ? SL_CS_LSTAT_DEAD : 0) | (l->blockdev ? SL_CS_LSTAT_BLOCKDEV : 0) |
               (l->direct ? SL_CS_LSTAT_DIRECT : 0) | (l->lease_held ? SL_CS_LSTAT_LEASE : 0) |
               (l->private_ ? SL_CS_LSTAT_PRIVATE : 0) | (mine ? 0 : SL_CS_LSTAT_OTHER) |
               (l->rbd_id ? SL_CS_LSTAT_RBD : 0);
    if (mine)
      memcpy(x->path, l->path, sizeof x->path);
    else
      snprintf(x->path, sizeof x->path, "(layer %u of another client)", l->index);
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
      if (c->rbuf) /* always set here; the check quiets GCC's -Wnonnull under ASan */
        explicit_bzero((char *)c->rbuf + off, (size_t)fl); /* may hold a Ceph key */
      if (msg == tmp)
        explicit_bzero(tmp, (size_t)fl);
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
    case SL_CS_REGISTER_LAYER:
    case SL_CS_REGISTER_RBD: op_register_layer(srv, c, &r, fd); break;
    case SL_CS_REGISTER_HANDLE: op_register_handle(srv, c, &r, fd); break;
    case SL_CS_UNREGISTER_LAYER:
    case SL_CS_UNREGISTER_HANDLE: op_unregister(srv, c, &r); break;
    case SL_CS_READ: op_read(srv, c, &r); break;
    case SL_CS_INVALIDATE: op_invalidate(srv, c, &r); break;
    case SL_CS_STATS: op_stats(srv, c, &r); break;
    case SL_CS_DROP: op_drop(srv, c, &r); break;
    }
    if (r.hdr.op == SL_CS_REGISTER_RBD) {
      /* the Ceph key: the registration took its copy */
      explicit_bzero((char *)c->rbuf + off, (size_t)fl);
      if (msg == tmp)
        explicit_bzero(tmp, (size_t)fl);
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
  /* Take as many descriptors as lib/ipc can: those beyond SD_MAX_FDQ are
   * closed by the housekeeping thread, not here (a FUSE file's close
   * waits for its server). */
  int fds[SL_IPC_MAX_FDS];
  size_t nfds = 0;
  long n = sl_ipc_recv_fds(c->fd, (char *)c->rbuf + c->rlen, RBUF - c->rlen, fds,
                           SL_IPC_MAX_FDS, &nfds);
  if (n == -EAGAIN || n == -EINTR)
    return;
  if (n < 0) {
    conn_close(srv, c, n == -EMSGSIZE ? "sent too many descriptors" : "connection error");
    return;
  }
  if (n == 0) {
    for (size_t i = 0; i < nfds; i++)
      sd_store_close_later(&srv->store, fds[i]);
    conn_close(srv, c, NULL);
    return;
  }
  for (size_t i = 0; i < nfds; i++) {
    if (c->nfdq == SD_MAX_FDQ) {
      for (size_t k = i; k < nfds; k++)
        sd_store_close_later(&srv->store, fds[k]);
      conn_fail(srv, c, 0, "descriptors sent without REGISTER messages for them");
      return;
    }
    c->fdq[c->nfdq++] = fds[i];
  }
  c->rlen += (size_t)n;
  atomic_fetch_add(&c->refs, 1); /* C may close (and lose its last ref) inside */
  cork(c);
  process_input(srv, c);
  uncork(srv, c); /* closed or not: what was queued goes (conn_fail flushed already) */
  conn_unref(srv, c);
}

/* ---- housekeeping ------------------------------------------------------ */

/* The sweep and the deferred closes: whatever may wait for a client's file
 * system, off the event loop.  Runs when kicked and every second. */
static void hk_kick(struct sd_server *srv)
{
  pthread_mutex_lock(&srv->hk_lock);
  srv->hk_kick = true;
  pthread_cond_signal(&srv->hk_cond);
  pthread_mutex_unlock(&srv->hk_lock);
}

static void *hk_main(void *opaque)
{
  struct sd_server *srv = opaque;
  pthread_mutex_lock(&srv->hk_lock);
  while (!srv->hk_stop) {
    if (!srv->hk_kick) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      ts.tv_sec += 1;
      pthread_cond_timedwait(&srv->hk_cond, &srv->hk_lock, &ts);
    }
    srv->hk_kick = false;
    pthread_mutex_unlock(&srv->hk_lock);
    sd_layer_sweep(&srv->store);
    sd_store_reap(&srv->store);
    pthread_mutex_lock(&srv->hk_lock);
  }
  pthread_mutex_unlock(&srv->hk_lock);
  return NULL;
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
    hk_kick(srv);
  }
}

/* Loop thread: a connection is waiting on the listening socket. */
static void accept_one(struct sd_server *srv)
{
  int fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
  if (fd >= 0) {
    add_conn(srv, fd, true);
    return;
  }
  if (errno != EMFILE && errno != ENFILE && errno != ENOBUFS && errno != ENOMEM)
    return; /* EAGAIN, ECONNABORTED...: nothing waits any more */
  /* Out of descriptors: the connection stays queued and the socket
   * readable, so the loop would spin.  Give up the spare to take it and
   * close it at once (the client sees the daemon hang up), take the spare
   * back; without a spare, stop listening for a moment. */
  uint64_t now = sl_now_ns();
  bool log = now - srv->last_refusal_log > 1000000000ull;
  if (log) {
    srv->last_refusal_log = now;
    fprintf(stderr, "sluiced: refusing connections: out of descriptors (%s)\n",
            strerror(errno));
  }
  if (srv->spare_fd >= 0) {
    close(srv->spare_fd);
    fd = accept4(srv->lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
      close(fd);
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  }
  if (srv->spare_fd < 0 || fd < 0) {
    struct epoll_event ev = {.events = 0, .data.ptr = &srv->lfd};
    epoll_ctl(srv->epfd, EPOLL_CTL_MOD, srv->lfd, &ev);
    srv->listen_muted_until = now + 100000000ull;
  }
}

static void *loop_main(void *opaque)
{
  struct sd_server *srv = opaque;
  struct epoll_event ev[64];
  uint64_t poll_until = 0, last_sweep = sl_now_ns();
  /* Adaptive polling: the window after a served request (at most
   * --poll-us) doubles when the next request came within it and halves
   * when it did not, or when the loop thread was kept off the CPU while it
   * polled (a busy host: then the spin only takes the CPU from the clients
   * that would send the next request).  At zero it stays off, and every
   * SD_POLL_PROBE served requests a quarter window tries again. */
  const uint64_t max_win = srv->o.poll_us * 1000ull;
  uint64_t win = max_win, last_iter = 0;
  unsigned since_probe = 0;
  bool in_window = false;
  for (;;) {
    uint64_t now = sl_now_ns();
    bool polling = now < poll_until;
    if (in_window && (!polling || now - last_iter > SD_POLL_PREEMPTED_NS)) {
      /* the window ran out empty, or we were preempted in it */
      win = win / 2 >= 1000 ? win / 2 : 0;
      in_window = polling = false;
      poll_until = 0;
      atomic_fetch_add_explicit(&srv->poll_misses, 1, memory_order_relaxed);
    }
    last_iter = now;
    int timeout = polling ? 0 : srv->listen_muted_until ? 100 : 1000;
    if (srv->listen_muted_until && now >= srv->listen_muted_until) {
      srv->listen_muted_until = 0;
      if (srv->spare_fd < 0)
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
      struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &srv->lfd};
      epoll_ctl(srv->epfd, EPOLL_CTL_MOD, srv->lfd, &lev);
    }
    int n = epoll_wait(srv->epfd, ev, 64, timeout);
    if (n < 0 && errno != EINTR)
      break;
    bool served = false;
    for (int i = 0; i < n; i++) {
      void *p = ev[i].data.ptr;
      if (p == &srv->stopfd)
        return NULL;
      if (p == &srv->lfd) {
        accept_one(srv);
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
    if (served && in_window) {
      win = SL_MIN(2 * win, max_win); /* the window paid */
      atomic_fetch_add_explicit(&srv->poll_hits, 1, memory_order_relaxed);
    }
    if (served && max_win) {
      if (win == 0 && ++since_probe >= SD_POLL_PROBE) {
        win = max_win / 4;
        since_probe = 0;
      }
      in_window = win > 0;
      poll_until = in_window ? now + win : 0;
      last_iter = now;
    }
    if (now - last_sweep > 1000000000ull) {
      hk_kick(srv); /* the sweep, on the housekeeping thread */
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
  pthread_mutex_init(&srv->users_lock, NULL);
  pthread_cond_init(&srv->regs_cond, NULL);
  pthread_mutex_init(&srv->hk_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&srv->hk_cond, &ca);
  pthread_condattr_destroy(&ca);
  /* Descriptors: as many as the hard limit allows; clients' layers and
   * handles may hold all but a reserve for the daemon's own needs. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
    if (rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
      getrlimit(RLIMIT_NOFILE, &rl);
    }
    uint64_t lim = rl.rlim_cur == RLIM_INFINITY ? 1u << 20 : (uint64_t)rl.rlim_cur;
    srv->fd_budget = lim > 2 * SD_FD_RESERVE ? lim - SD_FD_RESERVE : lim / 2;
  } else {
    srv->fd_budget = 1024 - SD_FD_RESERVE;
  }
  if (o->fd_budget && o->fd_budget < srv->fd_budget)
    srv->fd_budget = o->fd_budget;
  srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
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
  if (pthread_create(&srv->hk, NULL, hk_main, srv) != 0)
    return sl_error(EAGAIN, "cannot start the housekeeping thread");
  srv->hk_started = true;
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
  /* Registration threads hold their connections (and the store): wait for
   * them, but not forever -- one may be stuck on a FUSE server that never
   * answers.  Then the process exits with them, and nothing is freed. */
  pthread_mutex_lock(&srv->users_lock);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until);
  until.tv_sec += 5;
  while (srv->regs > 0 &&
         pthread_cond_timedwait(&srv->regs_cond, &srv->users_lock, &until) != ETIMEDOUT)
    ;
  uint32_t stuck = srv->regs;
  pthread_mutex_unlock(&srv->users_lock);
  if (stuck) {
    fprintf(stderr, "sluiced: %u layer registrations still wait for their files: "
            "exiting without them\n", stuck);
    return check ? -1 : 0;
  }
  pthread_mutex_lock(&srv->qlock);
  srv->stopping = true;
  pthread_cond_broadcast(&srv->qcond);
  pthread_mutex_unlock(&srv->qlock);
  for (uint32_t i = 0; i < srv->nworkers; i++)
    pthread_join(srv->workers[i], NULL);
  free(srv->workers);
  if (srv->hk_started) {
    pthread_mutex_lock(&srv->hk_lock);
    srv->hk_stop = true;
    pthread_cond_signal(&srv->hk_cond);
    pthread_mutex_unlock(&srv->hk_lock);
    pthread_join(srv->hk, NULL);
  }
  sd_store_reap(&srv->store);
  if (srv->o.poll_us)
    fprintf(stderr, "sluiced: poll windows: %" PRIu64 " paid, %" PRIu64 " ran out (of %u us "
            "at most, adaptive)\n", (uint64_t)atomic_load(&srv->poll_hits),
            (uint64_t)atomic_load(&srv->poll_misses), srv->o.poll_us);
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
  if (srv->spare_fd >= 0)
    close(srv->spare_fd);
  while (srv->users) {
    struct user *u = srv->users;
    srv->users = u->next;
    free(u);
  }
  sd_maps_fini(&srv->maps);
  sd_store_fini(&srv->store);
  free(srv);
  return ret;
}
