/* The sluiced client: one connection to the host cache daemon per socket
 * path per process, shared by every disk, kept alive in the background.
 *
 * Why it is built this way (DESIGN.md, "The host cache daemon", "Failure
 * isolation"):
 *
 *  - The daemon is an accelerator, never a dependency.  Nothing here fails
 *    a guest request: a read that cannot be served in time (no connection,
 *    a refused layer, a full bounce area, a dead or slow daemon) comes back
 *    with a negative status per entry and the cache filter reads the image.
 *    A maintainer thread connects, says HELLO, registers the memory handle
 *    and every layer, and after a loss reconnects with exponential backoff
 *    (50 ms doubling to 2 s), so a restarted daemon is found again.
 *
 *  - Threads start on first use, not at open: `sluice serve --daemon`
 *    forks after the disk is open, and threads do not survive a fork.
 *
 *  - Replies come in any order (a hit overtakes a fill), so each request
 *    takes a slot whose number is in its id, and whoever reads a reply
 *    hands it to its slot's waiter.  Who reads (leader/follower): a
 *    requesting thread that finds nobody reading the socket reads it
 *    itself, until its own reply is in, handing others theirs on the way;
 *    when it leaves, it wakes one other waiter to read on.  At queue
 *    depth 1 a request then costs one sleep and one wake-up of the thread
 *    that asked, not also those of a receiver thread in between (on these
 *    machines a wake-up, not the work, is what a hop costs: DESIGN.md).
 *    A receiver thread per connection remains for what no requester
 *    waits for: it sleeps in poll() for the daemon's end of the
 *    connection alone (data does not wake it), and reads only the
 *    replies of abandoned requests when no requester is left to, and the
 *    rest of a dead connection that still has buffers lent.
 *
 *  - Deadline: a read waits for the daemon the caller's deadline, or four
 *    times the daemon's recent reply time if that is longer (a busy host
 *    slows the image as much).  After a timeout the daemon is suspect: one
 *    request at a time probes it, the others go to the image at once,
 *    until a reply comes in time.
 *
 *  - Where the daemon writes: a request waits for its reply only until its
 *    deadline, after which the caller reads the image and hands its buffer
 *    back to the export, which may reuse it at once.  A daemon that answers
 *    late would then write into memory that holds something else.  So the
 *    daemon never writes into caller memory: it fills slices of the
 *    client's own bounce arena (a sealed memfd registered once per
 *    connection with the WRITE right only), and a slice whose request was
 *    abandoned is freed only when its reply, or the end of the connection,
 *    proves the daemon is done with it.  The price is one memcpy per hit,
 *    far below the cost of the hop (DESIGN.md: 50-70 us per round trip,
 *    against about 1 us to copy 64 KiB).  The arena's pages are written
 *    once when it is made: the daemon refuses pages a client never
 *    allocated, which it would otherwise pay for.
 *
 *  - Zero copy: when the caller's buffer lies in a buffer arena
 *    (lib/ipc/buffer-arena.h: the NBD export's request buffers do), the
 *    arena's memfd is registered as a memory handle of its own (once per
 *    connection; its first ZC_SPAN bytes, faulted in first as the daemon
 *    asks) and the
 *    daemon writes the bytes straight into the request's buffer: the
 *    export sends them with no copy in between.  The late-reply hazard
 *    above is met by lending instead: the buffer is held (sl_arena_hold)
 *    until the reply for it arrives, so an export that frees it after a
 *    timeout does not get it back before the daemon is done with it.  A
 *    connection that dies with buffers lent stops sending (SHUT_WR) and
 *    keeps them until the daemon closes its end, which it does only once
 *    its workers are done and the handles unmapped.  At most a quarter of
 *    an arena is lent at a time; beyond that, and for any buffer outside
 *    an arena, the bounce serves.  SLUICE_CACHE_ZEROCOPY=0 turns it off
 *    (for before/after measurements).
 *
 *  - Whom we trust: the daemon writes the bytes guests read, so before
 *    anything is sent the peer's credentials (SO_PEERCRED) must be root's
 *    or those of the socket file's owner; anyone else who managed to
 *    listen there is refused.
 *
 *  - Never stuck on the socket: sends time out (SO_SNDTIMEO) and a send
 *    that times out ends the connection (a partial message cannot be
 *    taken back).  An INVALIDATE (after a write to a private layer) waits
 *    at most four times the daemon's recent reply time, at least 100 ms;
 *    when the daemon is suspect or does not answer in time, the client
 *    ends the connection instead of waiting, which forgets the private
 *    namespace whole, as correct as an answer and never slower.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/client.h"
#include "cachesvc/protocol.h"
#include "common/util.h"
#include "ipc/buffer-arena.h"
#include "ipc/socket.h"

#define MAX_SLOTS 256u                 /* requests in flight per connection */
#define MAX_CLIENT_BATCH 256u          /* entries per READ from this client */
#define BOUNCE_SIZE (16u << 20)        /* the memory handle's arena: MAX_SLOTS
                                        * requests of 64 KiB */
#define SEND_TIMEOUT_MS 500            /* a send the daemon does not take */
#define INVALIDATE_MIN_NS 100000000ull
#define SETUP_TIMEOUT_NS 2000000000ull /* HELLO and registrations */
#define RBD_SETUP_TIMEOUT_NS 25000000000ull /* the daemon connects to Ceph */
#define BACKOFF_MIN_NS 50000000ull
#define BACKOFF_MAX_NS 2000000000ull
#define MAX_DEADLINE_NS 30000000000ull
#define RXBUF (2 * SL_CS_MAX_MSG)      /* replies read, not yet delivered */
#define RX_PASS_NS 100000000ull        /* the receiver's reads re-check its task */

enum slot_state { SLOT_FREE, SLOT_WAITING, SLOT_DONE, SLOT_ABANDONED };

#define ZC_MAX 8                       /* arenas registered per connection */
/* How much of an arena is lent: its start, where a buddy allocator that
 * reuses the last freed block first keeps the buffers of a steady load.
 * Its pages must be faulted in (the daemon's rule), so this is also what
 * zero copy costs in memory per export connection (the NBD arena is 64
 * MiB).  Buffers beyond it go through the bounce. */
#define ZC_SPAN (16u << 20)

/* A caller's buffer lent to the daemon for one request. */
struct hold {
  struct sl_arena *a;
  const void *p;
};

struct zc_arena {
  struct sl_arena *a;                  /* a reference of ours */
  uint32_t handle;                     /* 0: refused */
  size_t span;                         /* the handle covers [0, span) */
};

struct slot {
  uint64_t id;
  uint16_t op;
  uint32_t count;
  enum slot_state state;
  int status;                          /* header status, or -ECONNRESET */
  void *bounce;                        /* freed by whoever finishes last */
  struct hold *holds;                  /* released by whoever finishes last, */
  unsigned nholds;                     /* once the daemon is known done */
  uint8_t body[SL_CS_MAX_ERRMSG];   /* a reply's body, or an error's text */
  struct sl_cs_read_result results[MAX_CLIENT_BATCH];
  pthread_cond_t cond;
};

struct conn {
  atomic_int refs;
  int fd;
  uint64_t gen;
  uint16_t version;
  uint32_t block_size;
  uint32_t max_batch;
  struct sl_arena *bounce;
  uint32_t bounce_handle;
  struct zc_arena zc[ZC_MAX];          /* under lock */
  unsigned nzc;
  unsigned nheld;                      /* slots with holds, under lock */
  struct conn *next_lingering;         /* c->lingering: its receiver runs */
  pthread_mutex_t send_lock;
  pthread_mutex_t lock;                /* slots, dead, reading */
  bool dead;
  /* The reader role: held by one thread at a time (under lock), which
   * alone touches rbuf and rhave, the bytes read but not yet delivered. */
  bool reading;
  uint8_t *rbuf;
  size_t rhave;
  int wakefd;                          /* eventfd: the receiver has work */
  uint64_t seq;
  struct slot slots[MAX_SLOTS];
  pthread_t rx;
  bool rx_started;
  struct sl_csc *client;
};

struct sl_csc_layer {
  struct sl_csc_layer *next;
  int fd;                              /* -1 for an RBD snapshot */
  bool priv;
  struct sl_cs_register_rbd *rbd;      /* REGISTER_RBD's body, or NULL */
  /* The registration: connection generation << 33 | refused << 32 |
   * handle (generation 0: none yet).  One atomic word, so the request path
   * reads it without a lock while the maintainer registers. */
  _Atomic uint64_t reg;
};
#define REG(gen, refused, handle) \
  ((uint64_t)(gen) << 33 | (uint64_t)(refused) << 32 | (uint64_t)(handle))
#define REG_GEN(r) ((r) >> 33)
#define REG_REFUSED(r) (((r) >> 32) & 1)
#define REG_HANDLE(r) ((uint32_t)(r))

struct sl_csc {
  struct sl_csc *next;                 /* in the process-wide list */
  char *path;
  int refs;                            /* under clients_lock */
  pthread_mutex_t lock;                /* conn, gen, lifecycle, rx_live */
  pthread_cond_t cond;
  /* Serialises registrations and guards the layer list: held while
   * talking to the daemon, so never on the request path. */
  pthread_mutex_t reg_lock;
  int rx_live;                         /* receiver threads not yet gone */
  struct conn *lingering;              /* their connections */
  struct conn *conn;                   /* current connection, or NULL */
  uint64_t gen;
  bool started, stopping, tried;
  pthread_t maint;
  /* After a timeout the daemon is suspect: one request at a time (the
   * probe) is asked of it, all others go to the image, until an answer
   * comes in time.  A hung daemon then delays one request per deadline. */
  atomic_bool suspect, probing;
  /* How long the daemon has been taking to answer (moving average, ns). */
  _Atomic uint64_t reply_ns;
  struct sl_csc_layer *layers;
  atomic_uint_fast64_t reads, served, hits, fallbacks, timeouts, connects;
  atomic_uint_fast64_t zero_copy;      /* entries sent straight to the caller's buffer */
};

static pthread_mutex_t clients_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl_csc *clients;

static void abs_deadline(uint64_t at_ns, struct timespec *ts)
{
  ts->tv_sec = (time_t)(at_ns / 1000000000u);
  ts->tv_nsec = (long)(at_ns % 1000000000u);
}

static void cond_init_mono(pthread_cond_t *cv)
{
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

/* ---- connections ----------------------------------------------------------- */

/* The daemon is done with S's lent buffers: give them back.  Under k->lock
 * (or when K is no longer shared). */
static void release_holds(struct conn *k, struct slot *s)
{
  if (!s->holds)
    return;
  for (unsigned i = 0; i < s->nholds; i++)
    sl_arena_release(s->holds[i].a, s->holds[i].p);
  free(s->holds);
  s->holds = NULL;
  s->nholds = 0;
  k->nheld--;
}

static void conn_put(struct conn *k)
{
  if (!k || atomic_fetch_sub(&k->refs, 1) != 1)
    return;
  for (unsigned i = 0; i < MAX_SLOTS; i++)
    release_holds(k, &k->slots[i]);
  for (unsigned i = 0; i < k->nzc; i++)
    sl_arena_unref(k->zc[i].a);
  if (k->fd >= 0)
    close(k->fd);
  if (k->wakefd >= 0)
    close(k->wakefd);
  free(k->rbuf);
  for (unsigned i = 0; i < MAX_SLOTS; i++)
    pthread_cond_destroy(&k->slots[i].cond);
  if (k->bounce)
    sl_arena_destroy(k->bounce);
  pthread_mutex_destroy(&k->lock);
  pthread_mutex_destroy(&k->send_lock);
  free(k);
}

/* Wake K's receiver thread: something needs reading that no requester
 * will read. */
static void rx_kick(struct conn *k)
{
  uint64_t one = 1;
  if (k->wakefd >= 0 && write(k->wakefd, &one, sizeof one) < 0) {
    /* EAGAIN: the counter is full, so the receiver is woken anyway */
  }
}

/* Under k->lock, when nobody holds the reader role: give it to a thread
 * waiting for its reply, or, with nobody waiting, wake the receiver thread
 * if replies to abandoned requests or the end of a dead connection with
 * buffers lent are still to be read (unless the receiver is the caller,
 * FROM_RX).  Returns the condition to signal once k->lock is released
 * (signalled under the lock, the waiter would wake only to wait for the
 * lock), or NULL.  A waiter that is signalled but has not slept yet loses
 * nothing: it looks at the role before it sleeps. */
static pthread_cond_t *handoff_locked(struct conn *k, unsigned from, bool from_rx)
{
  if (k->reading)
    return NULL;
  bool orphans = k->dead && k->nheld;
  for (unsigned n = 0; n < MAX_SLOTS; n++) {
    struct slot *s = &k->slots[(from + n) % MAX_SLOTS];
    if (s->state == SLOT_WAITING)
      return &s->cond;
    orphans |= s->state == SLOT_ABANDONED;
  }
  if (orphans && !from_rx)
    rx_kick(k);
  return NULL;
}

/* Release k->lock, then wake CV's waiter if any. */
static void unlock_and_signal(struct conn *k, pthread_cond_t *cv)
{
  pthread_mutex_unlock(&k->lock);
  if (cv)
    pthread_cond_signal(cv);
}

/* Mark K dead (once): wake every waiter, free what abandoned requests held,
 * stop further sends.  Called with k->lock held. */
static void conn_kill_locked(struct conn *k)
{
  if (k->dead)
    return;
  k->dead = true;
  /* With buffers lent, keep reading: the daemon's closing its end is what
   * says that it no longer writes into them (rx_main). */
  shutdown(k->fd, k->nheld ? SHUT_WR : SHUT_RDWR);
  if (k->nheld)
    rx_kick(k);
  for (unsigned i = 0; i < MAX_SLOTS; i++) {
    struct slot *s = &k->slots[i];
    if (s->state == SLOT_WAITING) {
      s->state = SLOT_DONE;
      s->status = -ECONNRESET;
      pthread_cond_signal(&s->cond);
    } else if (s->state == SLOT_ABANDONED) {
      /* the bounce arena is this connection's: nobody allocates from it
       * again, so its slices may go; lent buffers may not */
      if (s->bounce)
        sl_arena_free(k->bounce, s->bounce);
      s->bounce = NULL;
      if (!s->holds)
        s->state = SLOT_FREE;
    }
  }
}

/* The connection is over: forget it as the client's current one and let
 * the maintainer reconnect. */
static void conn_lost(struct conn *k)
{
  pthread_mutex_lock(&k->lock);
  conn_kill_locked(k);
  pthread_mutex_unlock(&k->lock);
  struct sl_csc *c = k->client;
  struct conn *drop = NULL;
  pthread_mutex_lock(&c->lock);
  if (c->conn == k) {
    c->conn = NULL;
    drop = k;
    pthread_cond_broadcast(&c->cond);
  }
  pthread_mutex_unlock(&c->lock);
  conn_put(drop);
}

static int read_replies(struct conn *k, uint64_t deadline, bool discard);

/* One whole message, with PASS_FD (if >= 0) travelling with its first
 * byte, as the protocol asks. */
static int send_all(struct conn *k, const void *msg, size_t len, int pass_fd)
{
  return sl_ipc_send_fds(k->fd, msg, len, &pass_fd, pass_fd >= 0 ? 1 : 0);
}

/* Send one request and wait for its reply until DEADLINE (absolute,
 * CLOCK_MONOTONIC).  BOUNCE, if any, belongs to the request from now on:
 * it is freed here or, if the wait is abandoned, when the reply comes.
 * Returns the reply's status (0 or -errno from the daemon), -ETIMEDOUT, or
 * -ECONNRESET; on success BODY (BODY_LEN bytes) or RESULTS (COUNT entries)
 * hold the reply. */
static int conn_call(struct conn *k, uint16_t op, const void *req_body,
                     size_t req_len, const struct sl_cs_read_entry *entries,
                     uint32_t count, int pass_fd, void *bounce,
                     struct hold *holds, unsigned nholds,
                     uint64_t deadline, void *body, size_t body_len,
                     struct sl_cs_read_result *results)
{
  pthread_mutex_lock(&k->lock);
  struct slot *s = NULL;
  unsigned idx = 0;
  if (!k->dead) {
    for (unsigned i = 0; i < MAX_SLOTS; i++) {
      idx = (unsigned)((k->seq + i) % MAX_SLOTS);
      if (k->slots[idx].state == SLOT_FREE) {
        s = &k->slots[idx];
        break;
      }
    }
  }
  if (!s) {
    int dead = k->dead;
    pthread_mutex_unlock(&k->lock);
    if (bounce)
      sl_arena_free(k->bounce, bounce);
    for (unsigned i = 0; i < nholds; i++)
      sl_arena_release(holds[i].a, holds[i].p);
    free(holds);
    return dead ? -ECONNRESET : -EBUSY;
  }
  uint64_t id = (++k->seq << 8) | idx;
  s->id = id;
  s->op = op;
  s->count = count;
  s->state = SLOT_WAITING;
  s->status = 0;
  s->bounce = bounce;
  s->holds = nholds ? holds : NULL;
  s->nholds = nholds;
  if (s->holds)
    k->nheld++;
  else
    free(holds);
  pthread_mutex_unlock(&k->lock);

  /* Encode and send.  A full READ batch is 32 KiB; small enough for the
   * stack of any thread we run on. */
  _Alignas(8) uint8_t msg[sizeof(struct sl_cs_hdr) + sizeof(struct sl_cs_read) +
                          MAX_CLIENT_BATCH * sizeof(struct sl_cs_read_entry)];
  long mlen = op == SL_CS_READ
      ? sl_cs_encode_read(msg, sizeof msg, k->version, id, entries, count)
      : sl_cs_encode(msg, sizeof msg, k->version, op, 0, id, req_body, req_len);
  int r = mlen < 0 ? (int)mlen : 0;
  if (r == 0) {
    pthread_mutex_lock(&k->send_lock);
    r = send_all(k, msg, (size_t)mlen, pass_fd);
    pthread_mutex_unlock(&k->send_lock);
  }
  if (op == SL_CS_REGISTER_RBD && mlen > 0)
    explicit_bzero(msg, (size_t)mlen); /* it holds the Ceph key */
  pthread_mutex_lock(&k->lock);
  if (r < 0) {
    /* A partial message would desynchronise the stream: the connection is
     * over either way. */
    conn_kill_locked(k);
  }
  /* Wait for the reply: read the socket ourselves if nobody does (the
   * leader), else sleep until the reader hands us our reply or the role. */
  struct timespec ts;
  abs_deadline(deadline, &ts);
  bool lead = false;
  while (s->state == SLOT_WAITING) {
    if (sl_now_ns() >= deadline) {
      s->state = SLOT_ABANDONED;   /* whoever reads its reply frees it, its
                                    * bounce, its holds */
      if (lead)
        k->reading = false;
      unlock_and_signal(k, handoff_locked(k, idx + 1, false));
      return -ETIMEDOUT;
    }
    if (!lead && !k->reading && !k->dead)
      k->reading = lead = true;
    if (lead) {
      pthread_mutex_unlock(&k->lock);
      int rr = read_replies(k, deadline, false);
      pthread_mutex_lock(&k->lock);
      if (rr < 0) {
        k->reading = lead = false;
        pthread_mutex_unlock(&k->lock);
        conn_lost(k);
        pthread_mutex_lock(&k->lock);
      }
      continue;
    }
    pthread_cond_timedwait(&s->cond, &k->lock, &ts);
  }
  if (lead)
    k->reading = false;
  pthread_cond_t *next = handoff_locked(k, idx + 1, false);
  r = s->status;
  if (r < 0) /* the daemon's words, for the caller's message */
    sl_error(-r, "%s", s->body[0] ? (const char *)s->body : strerror(-r));
  if (r == 0 && body)
    memcpy(body, s->body, SL_MIN(body_len, sizeof s->body));
  if (r == 0 && results)
    memcpy(results, s->results, count * sizeof *results);
  s->bounce = NULL;
  if (s->holds && r == -ECONNRESET && k->dead) {
    /* no reply: the daemon may still write into them (rx_main ends it) */
    s->state = SLOT_ABANDONED;
  } else {
    release_holds(k, s); /* it replied: done with them */
    s->state = SLOT_FREE;
  }
  unlock_and_signal(k, next);
  /* The bounce stays with the caller on success (it copies out of it). */
  if (r < 0 && bounce)
    sl_arena_free(k->bounce, bounce);
  return r;
}

/* One reply, framed: hand it to its slot, under k->lock; *WAKE is the
 * condition to signal once the lock is released (or NULL).  -EPROTO ends
 * the connection. */
static int deliver_locked(struct conn *k, const uint8_t *msg, size_t len,
                          pthread_cond_t **wake)
{
  *wake = NULL;
  struct sl_cs_hdr h;
  memcpy(&h, msg, sizeof h);
  if (h.op == (SL_CS_ERROR | SL_CS_REPLY)) {
    fprintf(stderr, "sluice: sluiced closed the connection: %s\n",
            sl_cs_error_text(msg, len));
    return -EPROTO;
  }
  unsigned idx = (unsigned)(h.id & 0xff);
  struct slot *s = &k->slots[idx % MAX_SLOTS];
  if ((s->state != SLOT_WAITING && s->state != SLOT_ABANDONED) || s->id != h.id) {
    bool dead = k->dead;
    if (dead)
      return 0; /* its caller gave up when the connection ended */
    sl_error(EPROTO, "sluiced: reply to unknown request %llu",
             (unsigned long long)h.id);
    return -EPROTO;
  }
  if (sl_cs_check_reply(msg, len, s->op, s->count) < 0)
    return -EPROTO;
  if (s->state == SLOT_ABANDONED) {
    if (s->bounce && !k->dead)
      sl_arena_free(k->bounce, s->bounce);
    s->bounce = NULL;
    release_holds(k, s);
    s->state = SLOT_FREE;
    return 0;
  }
  s->status = h.status;
  const uint8_t *body = msg + sizeof h;
  if (h.status < 0) {
    snprintf((char *)s->body, sizeof s->body, "%s", sl_cs_error_text(msg, len));
  } else {
    if (s->op == SL_CS_READ)
      memcpy(s->results, body + sizeof(struct sl_cs_read_reply),
             s->count * sizeof(struct sl_cs_read_result));
    else
      memcpy(s->body, body, SL_MIN(len - sizeof h, sizeof s->body));
  }
  s->state = SLOT_DONE;
  *wake = &s->cond;
  return 0;
}

/* With the reader role held: wait for replies until DEADLINE (absolute,
 * CLOCK_MONOTONIC), then read what has come and hand each whole reply to
 * its slot; DISCARD: throw the bytes away instead (a dead connection whose
 * daemon may still write into lent buffers: only its end matters).  0
 * (something was read, or the time ran out), or -1: the daemon closed its
 * end, the socket failed, or a reply broke the protocol. */
static int read_replies(struct conn *k, uint64_t deadline, bool discard)
{
  uint64_t now = sl_now_ns();
  uint64_t left = deadline > now ? deadline - now : 0;
  struct timespec ts = {.tv_sec = (time_t)(left / 1000000000u),
                        .tv_nsec = (long)(left % 1000000000u)};
  struct pollfd p = {.fd = k->fd, .events = POLLIN};
  if (ppoll(&p, 1, &ts, NULL) <= 0)
    return 0; /* time is up, or a signal: the caller looks again */
  for (;;) {
    size_t room = RXBUF - k->rhave;
    ssize_t n = recv(k->fd, k->rbuf + k->rhave, room, MSG_DONTWAIT);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;
    if (n <= 0)
      return -1;
    if (discard)
      continue;
    k->rhave += (size_t)n;
    /* Every reply that came, under one taking of the lock; their waiters
     * are woken after it is released, so that they do not wake only to
     * wait for it while the next reply is handed out. */
    pthread_cond_t *wake[64];
    unsigned nwake = 0;
    int bad = 0;
    size_t pos = 0;
    pthread_mutex_lock(&k->lock);
    for (;;) {
      long fl = sl_cs_frame(k->rbuf + pos, k->rhave - pos);
      if (fl <= 0) {
        bad = fl < 0;
        break;
      }
      if (((uintptr_t)(k->rbuf + pos)) % 8) {
        memmove(k->rbuf, k->rbuf + pos, k->rhave - pos);
        k->rhave -= pos;
        pos = 0;
      }
      if (nwake == sizeof wake / sizeof *wake) {
        pthread_mutex_unlock(&k->lock);
        for (unsigned i = 0; i < nwake; i++)
          pthread_cond_signal(wake[i]);
        nwake = 0;
        pthread_mutex_lock(&k->lock);
      }
      if (deliver_locked(k, k->rbuf + pos, (size_t)fl, &wake[nwake]) < 0) {
        bad = 1;
        break;
      }
      nwake += wake[nwake] != NULL;
      pos += (size_t)fl;
    }
    pthread_mutex_unlock(&k->lock);
    for (unsigned i = 0; i < nwake; i++)
      pthread_cond_signal(wake[i]);
    if (bad)
      return -1;
    memmove(k->rbuf, k->rbuf + pos, k->rhave - pos);
    k->rhave -= pos;
    if ((size_t)n < room)
      return 0; /* all that had come */
  }
}

/* The receiver thread: for what no requester reads (the file's comment).
 * It sleeps in poll() on the daemon's end of the connection and its
 * eventfd only, so replies do not wake it. */
static void *rx_main(void *arg)
{
  struct conn *k = arg;
  for (;;) {
    pthread_mutex_lock(&k->lock);
    bool orphans = k->dead && k->nheld, waiting = false;
    for (unsigned i = 0; i < MAX_SLOTS; i++) {
      waiting |= k->slots[i].state == SLOT_WAITING;
      orphans |= k->slots[i].state == SLOT_ABANDONED;
    }
    bool take = orphans && !waiting && !k->reading;
    bool dead = k->dead;
    if (take)
      k->reading = true;
    pthread_mutex_unlock(&k->lock);
    if (take) {
      int rr = read_replies(k, sl_now_ns() + RX_PASS_NS, dead);
      pthread_mutex_lock(&k->lock);
      k->reading = false;
      pthread_cond_t *next = handoff_locked(k, 0, true);
      bool lent = k->nheld > 0;
      unlock_and_signal(k, next);
      if (rr < 0) {
        /* The connection is over; the next one can start now.  With
         * buffers lent and the daemon's end still open, read on (and
         * throw away) until it closes: only then is it done with them. */
        conn_lost(k);
        if (dead || !lent)
          break;
      }
      continue;
    }
    struct pollfd p[2] = {{.fd = k->fd, .events = POLLRDHUP},
                          {.fd = k->wakefd, .events = POLLIN}};
    if (poll(p, 2, -1) < 0)
      continue;
    if (p[1].revents & POLLIN) {
      uint64_t v;
      if (read(k->wakefd, &v, sizeof v) < 0) {
        /* EAGAIN: already taken */
      }
    }
    if (p[0].revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) {
      /* The daemon closed its end, or we ended the connection without
       * buffers lent (conn_kill_locked, sl_csc_put): nothing more can
       * come that anyone waits for. */
      pthread_mutex_lock(&k->lock);
      bool busy = k->reading;
      pthread_mutex_unlock(&k->lock);
      conn_lost(k);
      if (!busy)
        break;
      /* a requester still reads what came before the end: let it finish
       * (conn_lost woke it) */
      struct timespec pause = {0, 1000000};
      nanosleep(&pause, NULL);
    }
  }
  /* The daemon closed its end (or died, or we tore the connection down in
   * sl_csc_put): it closes only once its workers are done and the
   * connection's handles unmapped, so every buffer lent goes back. */
  pthread_mutex_lock(&k->lock);
  for (unsigned i = 0; i < MAX_SLOTS; i++)
    if (k->slots[i].state == SLOT_ABANDONED) {
      release_holds(k, &k->slots[i]);
      k->slots[i].state = SLOT_FREE;
    }
  pthread_mutex_unlock(&k->lock);
  struct sl_csc *c = k->client;
  pthread_mutex_lock(&c->lock);
  for (struct conn **pp = &c->lingering; *pp; pp = &(*pp)->next_lingering)
    if (*pp == k) {
      *pp = k->next_lingering;
      break;
    }
  pthread_mutex_unlock(&c->lock);
  conn_put(k);
  pthread_mutex_lock(&c->lock);
  c->rx_live--;
  pthread_cond_broadcast(&c->cond);
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

/* Blocking exchange used before the receiver runs (HELLO). */
static int recv_msg(int fd, void *buf, size_t cap, size_t *len)
{
  size_t have = 0;
  for (;;) {
    long fl = sl_cs_frame(buf, have);
    if (fl < 0)
      return (int)fl;
    if (fl > 0) {
      if ((size_t)fl != have)
        return sl_error(EPROTO, "sluiced: unexpected bytes after HELLO reply");
      *len = have;
      return 0;
    }
    if (have == cap)
      return sl_error(EPROTO, "sluiced: HELLO reply too long");
    ssize_t n = recv(fd, (char *)buf + have, cap - have, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return sl_error(n == 0 ? ECONNRESET : errno, "sluiced: connection lost during HELLO");
    have += (size_t)n;
  }
}

static void layer_free(struct sl_csc_layer *l);

static int register_layer(struct conn *k, struct sl_csc_layer *l, uint64_t deadline)
{
  struct sl_cs_register_layer rq = {.flags = l->priv ? SL_CS_LAYER_PRIVATE : 0};
  struct sl_cs_register_layer_reply rp;
  int r;
  if (l->rbd && k->version < 2) {
    atomic_store(&l->reg, REG(k->gen, 1, 0));
    fprintf(stderr, "sluice: sluiced does not cache rbd:%s/%s@%s: it speaks protocol "
            "version %u, RBD layers need 2\n", l->rbd->pool, l->rbd->image, l->rbd->snap,
            k->version);
    return 0;
  }
  if (l->rbd) {
    /* The daemon connects to the cluster for it, which takes longer than
     * a file's registration; and other disks of the host may be
     * registering theirs at the same time (EAGAIN: wait a little). */
    uint64_t end = sl_now_ns() + RBD_SETUP_TIMEOUT_NS;
    for (;;) {
      r = conn_call(k, SL_CS_REGISTER_RBD, l->rbd, sizeof *l->rbd, NULL, 0, -1,
                    NULL, NULL, 0, end, &rp, sizeof rp, NULL);
      if (r != -EAGAIN || sl_now_ns() + 50000000ull > end)
        break;
      struct timespec ts = {.tv_nsec = 20000000 + (long)(random() % 30000000)};
      nanosleep(&ts, NULL);
    }
  } else
    r = conn_call(k, SL_CS_REGISTER_LAYER, &rq, sizeof rq, NULL, 0, l->fd,
                  NULL, NULL, 0, deadline, &rp, sizeof rp, NULL);
  if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EBUSY)
    return r;                        /* try again on the next connection */
  if (r >= 0 && l->rbd && rp.size != l->rbd->size)
    /* not the snapshot this process opened: read it ourselves (the
     * daemon frees the layer with the connection) */
    r = sl_error(ESTALE, "the daemon's snapshot has %" PRIu64 " bytes, ours %" PRIu64,
                 (uint64_t)rp.size, (uint64_t)l->rbd->size);
  atomic_store(&l->reg, REG(k->gen, r < 0, r < 0 ? 0 : rp.layer));
  if (r < 0 && l->rbd) {
    fprintf(stderr, "sluice: sluiced does not cache rbd:%s/%s%s%s@%s: %s\n", l->rbd->pool,
            l->rbd->ns, *l->rbd->ns ? "/" : "", l->rbd->image, l->rbd->snap,
            sl_last_error());
  } else if (r < 0) {
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", l->fd);
    char target[512] = "?";
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n > 0)
      target[n] = 0;
    fprintf(stderr, "sluice: sluiced does not cache %s: %s\n", target,
            strerror(-r));
  }
  return 0;
}

/* Connect, HELLO, register the bounce arena and every known layer.  The
 * connection is published only when all of that worked. */
static struct conn *connect_daemon(struct sl_csc *c)
{
  int fd = sl_ipc_connect_unix(c->path);
  if (fd < 0)
    return NULL;
  if (sl_cs_check_daemon(fd, c->path) < 0) {
    fprintf(stderr, "sluice: %s\n", sl_last_error());
    close(fd);
    return NULL;
  }
  struct timeval tv = {.tv_sec = SETUP_TIMEOUT_NS / 1000000000u};
  struct timeval stv = {.tv_usec = SEND_TIMEOUT_MS * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &stv, sizeof stv);
  struct conn *k = calloc(1, sizeof *k);
  if (!k) {
    close(fd);
    return NULL;
  }
  atomic_init(&k->refs, 1);
  k->fd = fd;
  k->client = c;
  pthread_mutex_init(&k->lock, NULL);
  pthread_mutex_init(&k->send_lock, NULL);
  for (unsigned i = 0; i < MAX_SLOTS; i++)
    cond_init_mono(&k->slots[i].cond);
  k->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  k->rbuf = aligned_alloc(8, RXBUF);
  if (k->wakefd < 0 || !k->rbuf) {
    conn_put(k); /* closes FD */
    return NULL;
  }

  _Alignas(8) uint8_t msg[256];
  struct sl_cs_hello hello = {.min_version = SL_CS_VERSION_MIN,
                              .max_version = SL_CS_VERSION_MAX};
  long mlen = sl_cs_encode(msg, sizeof msg, SL_CS_VERSION_MIN, SL_CS_HELLO, 0, 1,
                           &hello, sizeof hello);
  size_t rlen = 0;
  if (mlen < 0 || send_all(k, msg, (size_t)mlen, -1) < 0 ||
      recv_msg(fd, msg, sizeof msg, &rlen) < 0 ||
      sl_cs_check_reply(msg, rlen, SL_CS_HELLO, 0) < 0)
    goto fail;
  struct sl_cs_hdr h;
  memcpy(&h, msg, sizeof h);
  if (h.status < 0 || h.op != (SL_CS_HELLO | SL_CS_REPLY)) {
    fprintf(stderr, "sluice: sluiced %s refused HELLO: %s\n", c->path,
            sl_cs_error_text(msg, rlen));
    goto fail;
  }
  struct sl_cs_hello_reply hr;
  memcpy(&hr, msg + sizeof h, sizeof hr);
  if (hr.version < SL_CS_VERSION_MIN || hr.version > SL_CS_VERSION_MAX)
    goto fail;
  k->version = hr.version;
  k->block_size = hr.block_size;
  k->max_batch = SL_MIN(hr.max_batch, MAX_CLIENT_BATCH);
  if (k->max_batch == 0)
    goto fail;

  /* Requests no longer block on the socket: the receiver thread waits. */
  struct timeval zero = {0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &zero, sizeof zero);
  atomic_fetch_add(&k->refs, 1);     /* the receiver's */
  pthread_mutex_lock(&c->lock);
  c->rx_live++;
  k->next_lingering = c->lingering;
  c->lingering = k;
  pthread_mutex_unlock(&c->lock);
  if (pthread_create(&k->rx, NULL, rx_main, k) != 0) {
    atomic_fetch_sub(&k->refs, 1);
    pthread_mutex_lock(&c->lock);
    c->rx_live--;
    c->lingering = k->next_lingering;
    pthread_mutex_unlock(&c->lock);
    goto fail;
  }
  pthread_detach(k->rx);
  k->rx_started = true;

  uint64_t deadline = sl_now_ns() + SETUP_TIMEOUT_NS;
  if (sl_arena_create("sluice-cache-client", BOUNCE_SIZE, &k->bounce) < 0 ||
      sl_arena_populate(k->bounce) < 0)
    goto fail;
  struct sl_cs_register_handle rh = {.offset = 0, .length = BOUNCE_SIZE,
                                     .rights = SL_CS_RIGHT_WRITE};
  struct sl_cs_register_handle_reply rhr;
  int r = conn_call(k, SL_CS_REGISTER_HANDLE, &rh, sizeof rh, NULL, 0,
                    sl_arena_fd(k->bounce), NULL, NULL, 0, deadline, &rhr, sizeof rhr, NULL);
  if (r < 0) {
    fprintf(stderr, "sluice: sluiced %s refused the memory handle: %s\n",
            c->path, strerror(-r));
    goto fail;
  }
  k->bounce_handle = rhr.handle;

  pthread_mutex_lock(&c->reg_lock);
  pthread_mutex_lock(&c->lock);
  k->gen = ++c->gen;
  pthread_mutex_unlock(&c->lock);
  for (struct sl_csc_layer *l = c->layers; l; l = l->next)
    if (register_layer(k, l, deadline) < 0)
      break;
  pthread_mutex_unlock(&c->reg_lock);
  return k;

fail:
  if (k->rx_started) {
    pthread_mutex_lock(&k->lock);
    conn_kill_locked(k);
    pthread_mutex_unlock(&k->lock);
  }
  conn_put(k);
  return NULL;
}

static void *maint_main(void *arg)
{
  struct sl_csc *c = arg;
  uint64_t backoff = BACKOFF_MIN_NS, next_try = 0;
  pthread_mutex_lock(&c->lock);
  while (!c->stopping) {
    uint64_t now = sl_now_ns();
    if (!c->conn && now >= next_try) {
      pthread_mutex_unlock(&c->lock);
      struct conn *k = connect_daemon(c);
      pthread_mutex_lock(&c->lock);
      c->tried = true;
      pthread_cond_broadcast(&c->cond);
      if (k && !c->stopping) {
        c->conn = k;
        backoff = BACKOFF_MIN_NS;
        atomic_fetch_add(&c->connects, 1);
      } else {
        if (k) {
          pthread_mutex_unlock(&c->lock);
          conn_lost(k);
          conn_put(k);
          pthread_mutex_lock(&c->lock);
        }
        next_try = sl_now_ns() + backoff;
        backoff = SL_MIN(backoff * 2, BACKOFF_MAX_NS);
      }
      continue;
    }
    if (c->conn) {
      pthread_cond_wait(&c->cond, &c->lock);
    } else {
      struct timespec ts;
      abs_deadline(next_try, &ts);
      pthread_cond_timedwait(&c->cond, &c->lock, &ts);
    }
  }
  pthread_mutex_unlock(&c->lock);
  return NULL;
}

/* Start the maintainer on first use (after any fork of the caller) and
 * give the first connection attempt up to WAIT_NS. */
static void ensure_started(struct sl_csc *c, uint64_t wait_ns)
{
  pthread_mutex_lock(&c->lock);
  if (!c->started) {
    c->started = true;
    if (pthread_create(&c->maint, NULL, maint_main, c) != 0)
      c->started = false;
  }
  if (!c->tried) {
    /* Every request that comes before the first attempt has finished
     * waits for it (within its deadline), not only the first. */
    uint64_t until = sl_now_ns() + wait_ns;
    struct timespec ts;
    abs_deadline(until, &ts);
    while (c->started && !c->tried && sl_now_ns() < until)
      pthread_cond_timedwait(&c->cond, &c->lock, &ts);
  }
  pthread_mutex_unlock(&c->lock);
}

static struct conn *current_conn(struct sl_csc *c)
{
  pthread_mutex_lock(&c->lock);
  struct conn *k = c->conn;
  if (k)
    atomic_fetch_add(&k->refs, 1);
  pthread_mutex_unlock(&c->lock);
  return k;
}

/* ---- zero copy ---------------------------------------------------------------- */

static bool zc_enabled(void)
{
  /* request threads race to read the environment once: same answer */
  static atomic_int on = -1;
  int v = atomic_load_explicit(&on, memory_order_relaxed);
  if (v < 0) {
    const char *e = getenv("SLUICE_CACHE_ZEROCOPY");
    v = !(e && !strcmp(e, "0"));
    atomic_store_explicit(&on, v, memory_order_relaxed);
  }
  return v;
}

/* The memory handle under which K's daemon may write into arena A, or 0:
 * registered on first use (its pages faulted in first, as the daemon
 * requires); a registration refused or not possible right now (another is
 * in progress) leaves the caller on the bounce.  Arenas whose owner has
 * gone make room for new ones. */
static uint32_t zc_handle(struct sl_csc *c, struct conn *k, struct sl_arena *a)
{
  pthread_mutex_lock(&k->lock);
  for (unsigned i = 0; i < k->nzc; i++)
    if (k->zc[i].a == a) {
      uint32_t h = k->zc[i].handle;
      pthread_mutex_unlock(&k->lock);
      return h;
    }
  pthread_mutex_unlock(&k->lock);
  if (pthread_mutex_trylock(&c->reg_lock) != 0)
    return 0;
  uint32_t h = 0;
  pthread_mutex_lock(&k->lock);
  bool known = false;
  for (unsigned i = 0; i < k->nzc; i++)
    known |= k->zc[i].a == a;
  /* forget arenas whose owner destroyed them (the daemon's handle goes
   * with an UNREGISTER; lent buffers keep the arena itself) */
  struct zc_arena gone[ZC_MAX];
  unsigned ngone = 0;
  for (unsigned i = 0; i < k->nzc;) {
    if (sl_arena_orphaned(k->zc[i].a)) {
      gone[ngone++] = k->zc[i];
      k->zc[i] = k->zc[--k->nzc];
    } else {
      i++;
    }
  }
  bool room = k->nzc < ZC_MAX && !known;
  pthread_mutex_unlock(&k->lock);
  for (unsigned i = 0; i < ngone; i++) {
    if (gone[i].handle) {
      struct sl_cs_unregister rq = {.handle = gone[i].handle};
      conn_call(k, SL_CS_UNREGISTER_HANDLE, &rq, sizeof rq, NULL, 0, -1, NULL, NULL, 0,
                sl_now_ns() + SETUP_TIMEOUT_NS / 4, NULL, 0, NULL);
    }
    sl_arena_unref(gone[i].a);
  }
  if (room) {
    size_t span = SL_MIN(sl_arena_size(a), ZC_SPAN);
    struct sl_cs_register_handle rh = {.offset = 0, .length = span,
                                       .rights = SL_CS_RIGHT_WRITE};
    struct sl_cs_register_handle_reply rhr;
    int r = sl_arena_populate_in_use(a, span);
    if (r == 0)
      r = conn_call(k, SL_CS_REGISTER_HANDLE, &rh, sizeof rh, NULL, 0, sl_arena_fd(a), NULL,
                    NULL, 0, sl_now_ns() + SETUP_TIMEOUT_NS, &rhr, sizeof rhr, NULL);
    if (r == -ETIMEDOUT || r == -ECONNRESET || r == -EBUSY) {
      room = false; /* ask again later */
    } else {
      h = r == 0 ? rhr.handle : 0;
      if (r < 0)
        fprintf(stderr, "sluice: sluiced does not write into the export's buffers "
                "(%s): copying through its own\n", strerror(-r));
    }
  }
  if (room) {
    sl_arena_ref(a);
    pthread_mutex_lock(&k->lock);
    k->zc[k->nzc++] = (struct zc_arena){a, h, SL_MIN(sl_arena_size(a), ZC_SPAN)};
    pthread_mutex_unlock(&k->lock);
  }
  pthread_mutex_unlock(&c->reg_lock);
  return h;
}

/* The handle for the caller's buffer [P, P+LEN), or 0 (copy through the
 * bounce); *A and *OFF say where it lies.  The arenas already registered
 * on K are looked at first, without the registry's lock: the common case
 * costs K's lock and a few comparisons. */
static uint32_t zc_lookup(struct sl_csc *c, struct conn *k, const void *p, size_t len,
                          struct sl_arena **a, size_t *off)
{
  pthread_mutex_lock(&k->lock);
  for (unsigned i = 0; i < k->nzc; i++)
    if (sl_arena_contains(k->zc[i].a, p, len, off)) {
      uint32_t h = *off + len <= k->zc[i].span ? k->zc[i].handle : 0;
      *a = k->zc[i].a;
      pthread_mutex_unlock(&k->lock);
      return h;
    }
  pthread_mutex_unlock(&k->lock);
  struct sl_arena *f = sl_arena_find(p, len, off);
  if (!f)
    return 0;
  uint32_t h = zc_handle(c, k, f);
  if (*off + len > SL_MIN(sl_arena_size(f), ZC_SPAN))
    h = 0;
  *a = f;
  sl_arena_unref(f); /* registered (h != 0): K's own reference keeps it */
  return h;
}

/* ---- the public side ------------------------------------------------------ */

int sl_csc_get(const char *socket, struct sl_csc **out)
{
  if (!socket || !*socket)
    socket = SL_CS_DEFAULT_SOCKET;
  struct sockaddr_un sa;
  if (strlen(socket) >= sizeof sa.sun_path)
    return sl_error(ENAMETOOLONG, "sluiced socket %s: path too long for a "
                    "UNIX socket (%zu bytes at most)", socket,
                    sizeof sa.sun_path - 1);
  pthread_mutex_lock(&clients_lock);
  for (struct sl_csc *c = clients; c; c = c->next) {
    if (strcmp(c->path, socket) == 0) {
      c->refs++;
      pthread_mutex_unlock(&clients_lock);
      *out = c;
      return 0;
    }
  }
  struct sl_csc *c = calloc(1, sizeof *c);
  if (!c || !(c->path = strdup(socket))) {
    free(c);
    pthread_mutex_unlock(&clients_lock);
    return sl_error(ENOMEM, "sluiced client: out of memory");
  }
  c->refs = 1;
  pthread_mutex_init(&c->lock, NULL);
  pthread_mutex_init(&c->reg_lock, NULL);
  cond_init_mono(&c->cond);
  c->next = clients;
  clients = c;
  pthread_mutex_unlock(&clients_lock);
  *out = c;
  return 0;
}

void sl_csc_put(struct sl_csc *c)
{
  if (!c)
    return;
  pthread_mutex_lock(&clients_lock);
  bool last = --c->refs == 0;
  if (last) {
    for (struct sl_csc **p = &clients; *p; p = &(*p)->next) {
      if (*p == c) {
        *p = c->next;
        break;
      }
    }
  }
  pthread_mutex_unlock(&clients_lock);
  if (!last)
    return;
  pthread_mutex_lock(&c->lock);
  c->stopping = true;
  pthread_cond_broadcast(&c->cond);
  bool started = c->started;
  pthread_mutex_unlock(&c->lock);
  if (started)
    pthread_join(c->maint, NULL);
  struct conn *k = c->conn;
  c->conn = NULL;
  if (k) {
    pthread_mutex_lock(&k->lock);
    conn_kill_locked(k);
    pthread_mutex_unlock(&k->lock);
    conn_put(k);
  }
  /* Receivers of this and earlier connections still touch C.  Those that
   * wait for a daemon to close its end (buffers lent) are cut short: the
   * disks are closed, their exports' buffers no longer in use. */
  pthread_mutex_lock(&c->lock);
  for (struct conn *x = c->lingering; x; x = x->next_lingering)
    shutdown(x->fd, SHUT_RDWR);
  pthread_mutex_unlock(&c->lock);
  pthread_mutex_lock(&c->lock);
  while (c->rx_live > 0)
    pthread_cond_wait(&c->cond, &c->lock);
  pthread_mutex_unlock(&c->lock);
  uint64_t reads = atomic_load(&c->reads);
  if (reads && getenv("SLUICE_CACHE_DEBUG"))
    fprintf(stderr, "sluice: sluiced client: %" PRIu64 " entries asked, %" PRIu64
            " served, %" PRIu64 " straight into the caller's buffers\n", reads,
            (uint64_t)atomic_load(&c->served), (uint64_t)atomic_load(&c->zero_copy));
  while (c->layers) {
    struct sl_csc_layer *l = c->layers;
    c->layers = l->next;
    layer_free(l);
  }
  pthread_cond_destroy(&c->cond);
  pthread_mutex_destroy(&c->lock);
  pthread_mutex_destroy(&c->reg_lock);
  free(c->path);
  free(c);
}

static void layer_free(struct sl_csc_layer *l)
{
  if (l->fd >= 0)
    close(l->fd);
  if (l->rbd) {
    explicit_bzero(l->rbd, sizeof *l->rbd); /* it holds a key */
    free(l->rbd);
  }
  free(l);
}

/* Known to the client, registered now or by the maintainer later. */
static void layer_insert(struct sl_csc *c, struct sl_csc_layer *l)
{
  pthread_mutex_lock(&c->reg_lock);
  l->next = c->layers;
  c->layers = l;
  struct conn *k = current_conn(c);
  if (k)
    register_layer(k, l, sl_now_ns() + SETUP_TIMEOUT_NS);
  conn_put(k);
  pthread_mutex_unlock(&c->reg_lock);
}

int sl_csc_layer_add_rbd(struct sl_csc *c, const struct sl_cs_register_rbd *req,
                         struct sl_csc_layer **out)
{
  struct sl_csc_layer *l = calloc(1, sizeof *l);
  struct sl_cs_register_rbd *q = l ? malloc(sizeof *q) : NULL;
  if (!q) {
    free(l);
    return sl_error(ENOMEM, "sluiced client: out of memory");
  }
  memcpy(q, req, sizeof *q);
  l->fd = -1;
  l->rbd = q;
  atomic_init(&l->reg, 0);
  layer_insert(c, l);
  *out = l;
  return 0;
}

int sl_csc_layer_add(struct sl_csc *c, int fd, bool private_layer,
                     struct sl_csc_layer **out)
{
  struct sl_csc_layer *l = calloc(1, sizeof *l);
  if (!l) {
    close(fd);
    return sl_error(ENOMEM, "sluiced client: out of memory");
  }
  l->fd = fd;
  l->priv = private_layer;
  atomic_init(&l->reg, 0);
  layer_insert(c, l);
  *out = l;
  return 0;
}

void sl_csc_layer_remove(struct sl_csc *c, struct sl_csc_layer *l)
{
  if (!l)
    return;
  pthread_mutex_lock(&c->reg_lock);
  for (struct sl_csc_layer **p = &c->layers; *p; p = &(*p)->next) {
    if (*p == l) {
      *p = l->next;
      break;
    }
  }
  struct conn *k = current_conn(c);
  uint64_t reg = atomic_load(&l->reg);
  if (k && REG_GEN(reg) == k->gen && !REG_REFUSED(reg)) {
    struct sl_cs_unregister rq = {.handle = REG_HANDLE(reg)};
    conn_call(k, SL_CS_UNREGISTER_LAYER, &rq, sizeof rq, NULL, 0, -1, NULL, NULL, 0,
              sl_now_ns() + SETUP_TIMEOUT_NS / 4, NULL, 0, NULL);
  }
  conn_put(k);
  pthread_mutex_unlock(&c->reg_lock);
  layer_free(l);
}

int sl_csc_read(struct sl_csc *c, struct sl_csc_io *io, unsigned n,
                uint64_t deadline_ns)
{
  for (unsigned i = 0; i < n; i++) {
    io[i].status = -ENOTCONN;
    io[i].hit = false;
  }
  if (n == 0)
    return 0;
  atomic_fetch_add(&c->reads, n);
  uint64_t start = sl_now_ns();
  ensure_started(c, deadline_ns);
  struct conn *k = NULL;
  int served = 0;
  bool probe = false;
  if (atomic_load(&c->suspect)) {
    bool no = false;
    if (!atomic_compare_exchange_strong(&c->probing, &no, true))
      goto out;
    probe = true;
  }
  if (!(k = current_conn(c)))
    goto out;

  struct sl_cs_read_entry e[MAX_CLIENT_BATCH];
  unsigned map[MAX_CLIENT_BATCH];
  size_t total = 0;
  unsigned m = 0;
  for (unsigned i = 0; i < n && m < k->max_batch; i++) {
    struct sl_csc_layer *l = io[i].layer;
    /* Not (yet) registered on this connection: the image serves it. */
    uint64_t reg = atomic_load_explicit(&l->reg, memory_order_acquire);
    bool ok = REG_GEN(reg) == k->gen && !REG_REFUSED(reg);
    uint32_t h = REG_HANDLE(reg);
    if (!ok || io[i].length == 0 || io[i].length > SL_CS_MAX_READ)
      continue;
    e[m] = (struct sl_cs_read_entry){.layer = h, .handle = k->bounce_handle,
                                     .file_offset = io[i].file_offset,
                                     .length = io[i].length};
    map[m++] = i;
    total += io[i].length;
  }
  if (m == 0)
    goto out;
  /* Straight into the caller's buffers where they lie in an arena the
   * daemon may write into; the rest through the bounce. */
  struct hold *holds = NULL;
  unsigned nholds = 0;
  bool direct[MAX_CLIENT_BATCH];
  for (unsigned j = 0; j < m; j++) {
    direct[j] = false;
    if (!zc_enabled())
      continue;
    size_t off;
    struct sl_arena *a;
    uint32_t h = zc_lookup(c, k, io[map[j]].buf, e[j].length, &a, &off);
    if (h && (holds || (holds = malloc(m * sizeof *holds))) &&
        sl_arena_hold(a, io[map[j]].buf, sl_arena_size(a) / 4) == 0) {
      holds[nholds++] = (struct hold){a, io[map[j]].buf};
      e[j].handle = h;
      e[j].handle_offset = off;
      direct[j] = true;
      total -= e[j].length;
    }
  }
  uint8_t *bounce = NULL;
  if (total > 0 && !(bounce = sl_arena_try_alloc(k->bounce, total))) {
    for (unsigned i = 0; i < nholds; i++)
      sl_arena_release(holds[i].a, holds[i].p);
    free(holds);
    goto out;
  }
  size_t base = bounce ? sl_arena_offset(k->bounce, bounce) : 0, pos = 0;
  for (unsigned j = 0; j < m; j++) {
    if (direct[j])
      continue;
    e[j].handle_offset = base + pos;
    pos += e[j].length;
  }
  atomic_fetch_add(&c->zero_copy, nholds);
  /* The deadline is the caller's, or four times what the daemon has been
   * taking lately if that is longer: a host that is merely busy slows the
   * daemon and the image alike, and giving up then only adds an image read
   * to the daemon's; a daemon that stopped answering updates nothing and
   * is abandoned after the deadline. */
  uint64_t typical = atomic_load_explicit(&c->reply_ns, memory_order_relaxed);
  uint64_t wait = SL_MIN(SL_MAX(deadline_ns, 4 * typical), MAX_DEADLINE_NS);
  struct sl_cs_read_result res[MAX_CLIENT_BATCH];
  int r = conn_call(k, SL_CS_READ, NULL, 0, e, m, -1, bounce, holds, nholds,
                    start + wait, NULL, 0, res);
  if (r == -ETIMEDOUT) {
    atomic_fetch_add(&c->timeouts, 1);
    atomic_store(&c->suspect, true);
    goto out;
  }
  if (r < 0)
    goto out;
  atomic_store(&c->suspect, false);
  uint64_t took = sl_now_ns() - start;
  atomic_store_explicit(&c->reply_ns, typical - typical / 8 + took / 8,
                        memory_order_relaxed);
  pos = 0;
  for (unsigned j = 0; j < m; j++) {
    struct sl_csc_io *x = &io[map[j]];
    if (res[j].status == 0) {
      if (!direct[j])
        memcpy(x->buf, bounce + pos, x->length);
      x->status = 0;
      x->hit = (res[j].flags & SL_CS_RESULT_HIT) != 0;
      served++;
      if (x->hit)
        atomic_fetch_add(&c->hits, 1);
    } else {
      x->status = res[j].status;
      if (res[j].status == -ESTALE || res[j].status == -EBADF) {
        /* The layer changed or is unknown: never ask again on this
         * connection. */
        uint64_t reg = atomic_load(&x->layer->reg);
        if (REG_GEN(reg) == k->gen)
          atomic_compare_exchange_strong(&x->layer->reg, &reg,
                                         reg | (uint64_t)1 << 32);
      }
    }
    if (!direct[j])
      pos += e[j].length;
  }
  sl_arena_free(k->bounce, bounce);
out:
  if (probe)
    atomic_store(&c->probing, false);
  conn_put(k);
  atomic_fetch_add(&c->served, (unsigned)served);
  atomic_fetch_add(&c->fallbacks, n - (unsigned)served);
  return served;
}

void sl_csc_invalidate(struct sl_csc *c, struct sl_csc_layer *l,
                       uint64_t off, uint64_t len)
{
  struct conn *k = current_conn(c);
  if (!k)
    return;
  uint64_t reg = atomic_load(&l->reg);
  bool ok = REG_GEN(reg) == k->gen && !REG_REFUSED(reg);
  uint32_t h = REG_HANDLE(reg);
  if (ok && atomic_load(&c->suspect)) {
    /* Do not wait for a daemon that has not been answering: dropping the
     * connection forgets the private namespace as surely. */
    conn_lost(k);
  } else if (ok) {
    struct sl_cs_invalidate rq = {.layer = h, .offset = off, .length = len};
    uint64_t typical = atomic_load_explicit(&c->reply_ns, memory_order_relaxed);
    uint64_t wait = SL_MIN(SL_MAX(4 * typical, INVALIDATE_MIN_NS), SETUP_TIMEOUT_NS);
    int r = conn_call(k, SL_CS_INVALIDATE, &rq, sizeof rq, NULL, 0, -1, NULL, NULL, 0,
                      sl_now_ns() + wait, NULL, 0, NULL);
    if (r < 0) {
      /* Not known to be forgotten: the private namespace dies with the
       * connection, so end it (the maintainer makes a fresh one). */
      conn_lost(k);
    }
  }
  conn_put(k);
}

void sl_csc_get_stats(struct sl_csc *c, struct sl_csc_stats *st)
{
  st->reads = atomic_load(&c->reads);
  st->served = atomic_load(&c->served);
  st->hits = atomic_load(&c->hits);
  st->fallbacks = atomic_load(&c->fallbacks);
  st->timeouts = atomic_load(&c->timeouts);
  st->connects = atomic_load(&c->connects);
  pthread_mutex_lock(&c->lock);
  st->connected = c->conn != NULL;
  pthread_mutex_unlock(&c->lock);
}
