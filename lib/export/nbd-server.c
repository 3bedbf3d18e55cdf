/* The NBD server: the fixed-newstyle NBD protocol (NetworkBlockDevice/nbd,
 * doc/proto.md) over UNIX and TCP sockets.
 *
 * Per connection, one reader thread parses requests and a small pool of
 * workers executes them against the disk handle, so requests within a
 * connection run in parallel.  What makes it fast on few cores is doing
 * fewer syscalls and thread wake-ups per request, not more threads:
 *  - the reader takes everything the socket holds in one recv (an input
 *    buffer), so at queue depth 32 one syscall brings in many requests;
 *  - a request with nothing queued behind it and nothing executing runs in
 *    the reader itself (queue depth 1 costs no hand-off), and so do small
 *    reads and writes while the backend serves them faster than a hand-off
 *    costs (see cheaper_inline); others go to the workers, which are woken
 *    only when no awake worker will get to them;
 *  - at queue depth 1 the reader polls the socket briefly before sleeping
 *    (see recv_polled);
 *  - replies are combined: whichever thread finishes a request while no
 *    one is sending becomes the sender and writes every queued reply,
 *    many per sendmsg; nobody waits on a reply lock.
 *
 * Buffers (DESIGN.md, "Buffers"): every read and write payload lives in a
 * buffer from the connection's memfd-backed arena (buffer-arena.h), sealed
 * and bounded, allocated only by the reader (so waiting for space cannot
 * deadlock) and freed when the data is on disk or on the wire.  Nothing is
 * malloc'ed per payload, and the arena is what the cache daemon will map
 * to move data with no extra copy.
 *
 * Everything the client sends is untrusted: lengths are bounded before
 * allocation, offsets are checked by the disk core, anything malformed in
 * the handshake gets the protocol's error reply or a disconnect, and a
 * broken connection only ever ends that connection.
 */
#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "ipc/buffer-arena.h"
#include "ipc/socket.h"
#include "export/export.h"
#include "export/nbd-proto.h"

#define MAX_REQUEST (32u << 20)       /* largest read or write we accept */
#define MAX_OPTION (64u << 10)        /* largest option payload we read */
#define MAX_OPTIONS 256               /* options before we give up on a client */
#define MAX_EXTENTS 1024              /* descriptors per block-status reply */
#define MAX_QUEUED 64                 /* requests waiting for a worker */
#define DEFAULT_WORKERS 4
#define MAX_LISTENERS 8
#define INBUF_SIZE (256u << 10)       /* the reader's input buffer */
#define ARENA_SIZE (2 * MAX_REQUEST)  /* payload memory per connection */
#define SEND_BATCH 64                 /* replies per sendmsg, at most */

enum { CTX_ALLOCATION = 1, CTX_DEPTH = 2 };

struct request {
  struct request *next;             /* in the work queue, then the out-queue */
  uint16_t flags, type;
  uint64_t cookie, offset;
  uint32_t length;
  void *data;                       /* payload, from the connection's arena */
  /* The reply, ready to send by whichever thread gets to it. */
  union {
    struct nbd_simple_reply simple;
    struct nbd_structured_reply structured;
  } hdr;
  uint64_t be_offset;               /* of an OFFSET_DATA chunk */
  struct nbd_error_payload err;
  char *errmsg;
  struct iovec iov[3];
  int iovcnt;
};

struct conn {
  struct sl_nbd_server *srv;        /* NULL for sl_nbd_serve_fd callers */
  struct conn *next;
  struct sl_handle *h;
  const struct sl_nbd_options *opts;
  int fd;
  uint64_t size;
  uint16_t tflags;
  bool structured;
  bool ctx_allocation, ctx_depth;   /* negotiated meta contexts */
  struct sl_arena *arena;           /* every payload buffer comes from here */
  /* The reader's input buffer: bytes [in_pos, in_end) are unparsed. */
  char *in;
  size_t in_pos, in_end;
  /* Replies waiting for the sender (see reply_submit). */
  pthread_mutex_t out_lock;
  pthread_cond_t out_cond;
  struct request *out_head, *out_tail;
  bool sending;
  unsigned send_waiters;
  /* The work queue between the reader and the workers. */
  pthread_mutex_t qlock;
  pthread_cond_t work_cond, space_cond;
  struct request *qhead, *qtail;
  unsigned queued, idle, wakes_pending;
  bool reader_waiting;
  bool closing;
  pthread_t workers[16];
  unsigned nworkers;
  atomic_uint busy;                 /* requests queued or executing */
  atomic_bool broken;               /* a write failed: stop */
  uint64_t poll_ns, poll_max_ns;    /* the reader's polling window, now and at most */
  int max_pollers;                  /* half the CPUs, at least one (poll_slot_take) */
  bool depth_one;                   /* the last request came alone: poll for the next */
  unsigned parsed_since_recv;       /* requests parsed from the last recv's bytes */
  _Atomic uint32_t service_ns[2];   /* recent service time of reads, plain writes */
};

struct listener {
  struct sl_ipc_listener ipc;       /* lib/ipc: unlinks only its own socket */
  pthread_t thread;
};

struct sl_nbd_server {
  struct sl_handle *h;
  struct sl_nbd_options opts;
  struct listener listeners[MAX_LISTENERS];
  size_t n_listeners;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct conn *conns;
  unsigned n_conns;
  bool stopping;
};

/* ---- socket helpers ---------------------------------------------------- */

static int recv_full(int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_WAITALL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static int discard_bytes(int fd, uint64_t len)
{
  char buf[4096];
  while (len > 0) {
    size_t n = (size_t)SL_MIN(len, sizeof buf);
    if (recv_full(fd, buf, n) < 0)
      return -1;
    len -= n;
  }
  return 0;
}

static int send_iov(int fd, struct iovec *iov, int iovcnt)
{
  while (iovcnt > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return send_iov(fd, &iov, 1);
}

/* ---- handshake --------------------------------------------------------- */

/* Option payloads are byte streams: read fields without alignment. */
static uint32_t get_be32(const char *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return be32toh(v);
}

static uint16_t get_be16(const char *p)
{
  uint16_t v;
  memcpy(&v, p, 2);
  return be16toh(v);
}

static int send_opt_reply(struct conn *c, uint32_t opt, uint32_t type,
                          const void *data, uint32_t len)
{
  struct nbd_opt_reply r = {
    .magic = htobe64(NBD_REP_MAGIC), .option = htobe32(opt),
    .type = htobe32(type), .length = htobe32(len),
  };
  struct iovec iov[2] = {{&r, sizeof r}, {(void *)data, len}};
  return send_iov(c->fd, iov, len ? 2 : 1);
}

static int send_opt_error(struct conn *c, uint32_t opt, uint32_t err, const char *msg)
{
  return send_opt_reply(c, opt, err, msg, (uint32_t)strlen(msg));
}

static bool name_matches(const struct conn *c, const char *name)
{
  const char *ours = c->opts->export_name ? c->opts->export_name : "";
  return name[0] == '\0' || strcmp(name, ours) == 0;
}

static uint16_t transmission_flags(const struct conn *c)
{
  struct sl_handle *h = c->h;
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
  if (c->opts->read_only || sl_disk_read_only(h)) {
    f |= NBD_FLAG_READ_ONLY;
  } else {
    if (sl_disk_can_fua(h))
      f |= NBD_FLAG_SEND_FUA;
    if (sl_disk_can_trim(h))
      f |= NBD_FLAG_SEND_TRIM;
    if (sl_disk_can_zero(h))
      f |= NBD_FLAG_SEND_WRITE_ZEROES;
  }
  if (c->structured)
    f |= NBD_FLAG_SEND_DF;
  if (sl_disk_can_multi_conn(h))
    f |= NBD_FLAG_CAN_MULTI_CONN;
  return f;
}

/* Both INFO/GO and the META_CONTEXT options start with a 32-bit length and
 * an export name.  FIXED is the size of what must follow the name.  Returns
 * 1 with NAME filled, 0 after sending an error reply, -1 on a dead socket. */
static int read_export_name(struct conn *c, uint32_t opt, const char *p, uint32_t len,
                            uint32_t fixed, char name[static 4097], uint32_t *namelen)
{
  int r;
  if (len < 4 + fixed)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "option too short");
  else if ((*namelen = get_be32(p)) > len - 4 - fixed)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "name length too large");
  else if (*namelen > 4096)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "name too long");
  else {
    memcpy(name, p + 4, *namelen);
    name[*namelen] = '\0';
    return 1;
  }
  return r < 0 ? -1 : 0;
}

/* INFO and GO: name, then a list of requested info types. */
static int opt_info_go(struct conn *c, uint32_t opt, const char *p, uint32_t len,
                       bool *go)
{
  char name[4097];
  uint32_t namelen;
  int ok = read_export_name(c, opt, p, len, 2, name, &namelen);
  if (ok <= 0)
    return ok;
  uint16_t nreq = get_be16(p + 4 + namelen);
  if (6 + namelen + 2u * nreq != len)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "bad info request list");
  if (!name_matches(c, name))
    return send_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");

  bool want_block_size = false, want_name = false, want_desc = false;
  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t = get_be16(p + 6 + namelen + 2 * i);
    want_block_size |= t == NBD_INFO_BLOCK_SIZE;
    want_name |= t == NBD_INFO_NAME;
    want_desc |= t == NBD_INFO_DESCRIPTION;
  }
  c->size = sl_disk_size(c->h);
  c->tflags = transmission_flags(c);
  struct __attribute__((packed)) { uint16_t type; uint64_t size; uint16_t flags; } ex = {
    htobe16(NBD_INFO_EXPORT), htobe64(c->size), htobe16(c->tflags)};
  if (send_opt_reply(c, opt, NBD_REP_INFO, &ex, sizeof ex) < 0)
    return -1;
  if (want_block_size) {
    struct __attribute__((packed)) { uint16_t type; uint32_t min, pref, max; } bs = {
      htobe16(NBD_INFO_BLOCK_SIZE), htobe32(1), htobe32(4096), htobe32(MAX_REQUEST)};
    if (send_opt_reply(c, opt, NBD_REP_INFO, &bs, sizeof bs) < 0)
      return -1;
  }
  if (want_name) {
    char buf[2 + 4096];
    uint16_t t = htobe16(NBD_INFO_NAME);
    memcpy(buf, &t, 2);
    memcpy(buf + 2, name, namelen);
    if (send_opt_reply(c, opt, NBD_REP_INFO, buf, 2 + namelen) < 0)
      return -1;
  }
  if (want_desc && c->opts->description) {
    char buf[2 + 4096];
    size_t dl = SL_MIN(strlen(c->opts->description), 4096);
    uint16_t t = htobe16(NBD_INFO_DESCRIPTION);
    memcpy(buf, &t, 2);
    memcpy(buf + 2, c->opts->description, dl);
    if (send_opt_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + dl)) < 0)
      return -1;
  }
  if (send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  *go = opt == NBD_OPT_GO;
  return 0;
}

static int opt_list(struct conn *c, uint32_t len)
{
  if (len != 0)
    return send_opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
  const char *name = c->opts->export_name ? c->opts->export_name : "";
  uint32_t nl = (uint32_t)strlen(name);
  char buf[4 + 4096];
  uint32_t be = htobe32(nl);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, name, SL_MIN(nl, 4096u));
  if (send_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + SL_MIN(nl, 4096u)) < 0)
    return -1;
  return send_opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int send_context(struct conn *c, uint32_t opt, uint32_t id, const char *name)
{
  char buf[64];
  uint32_t be = htobe32(id);
  size_t nl = strlen(name);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, name, nl);
  return send_opt_reply(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + nl));
}

/* Which of our contexts does QUERY select?  LIST accepts namespace
 * wildcards ("base:", "qemu:"); SET needs exact names. */
static void match_query(const char *q, bool list, bool *alloc, bool *depth)
{
  if (strcmp(q, "base:allocation") == 0 || (list && strcmp(q, "base:") == 0))
    *alloc = true;
  if (strcmp(q, "qemu:allocation-depth") == 0 || (list && strcmp(q, "qemu:") == 0))
    *depth = true;
}

static int opt_meta_context(struct conn *c, uint32_t opt, const char *p, uint32_t len)
{
  bool list = opt == NBD_OPT_LIST_META_CONTEXT;
  if (!list && !c->structured)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                          "SET_META_CONTEXT needs structured replies first");
  char name[4097];
  uint32_t namelen;
  int ok = read_export_name(c, opt, p, len, 4, name, &namelen);
  if (ok <= 0)
    return ok;
  uint32_t nq = get_be32(p + 4 + namelen);
  uint32_t pos = 8 + namelen;
  bool alloc = false, depth = false;
  for (uint32_t i = 0; i < nq; i++) {
    if (len - pos < 4)
      return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "truncated query list");
    uint32_t ql = get_be32(p + pos);
    pos += 4;
    if (ql > len - pos)
      return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "query too long");
    char q[256];
    if (ql < sizeof q) {
      memcpy(q, p + pos, ql);
      q[ql] = '\0';
      match_query(q, list, &alloc, &depth);
    }
    pos += ql;
  }
  if (pos != len)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "trailing data in option");
  if (!name_matches(c, name))
    return send_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
  if (list && nq == 0)
    alloc = depth = true;
  if (!list) {
    c->ctx_allocation = alloc;
    c->ctx_depth = depth;
  }
  if (alloc && send_context(c, opt, CTX_ALLOCATION, "base:allocation") < 0)
    return -1;
  if (depth && send_context(c, opt, CTX_DEPTH, "qemu:allocation-depth") < 0)
    return -1;
  return send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Returns 1 when the client chose an export (transmission follows),
 * 0 when it went away cleanly, -1 on a broken or hostile client. */
static int handshake(struct conn *c)
{
  struct __attribute__((packed)) { uint64_t magic, opt_magic; uint16_t flags; } hello = {
    htobe64(NBD_MAGIC), htobe64(NBD_OPT_MAGIC),
    htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)};
  if (send_all(c->fd, &hello, sizeof hello) < 0)
    return -1;
  uint32_t cflags;
  if (recv_full(c->fd, &cflags, 4) < 0)
    return -1;
  cflags = be32toh(cflags);
  if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
    return -1; /* unknown client flags: the spec says disconnect */
  bool no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  for (int n = 0; n < MAX_OPTIONS; n++) {
    struct nbd_option o;
    if (recv_full(c->fd, &o, sizeof o) < 0)
      return -1;
    if (be64toh(o.magic) != NBD_OPT_MAGIC)
      return -1;
    uint32_t opt = be32toh(o.option), len = be32toh(o.length);
    if (len > MAX_OPTION) {
      if (discard_bytes(c->fd, len) < 0)
        return -1;
      if (send_opt_error(c, opt, NBD_REP_ERR_TOO_BIG, "option too large") < 0)
        return -1;
      continue;
    }
    CLEANUP_FREE char *data = malloc(len + 1);
    if (!data || recv_full(c->fd, data, len) < 0)
      return -1;
    data[len] = '\0';
    int r = 0;
    bool go = false;
    switch (opt) {
    case NBD_OPT_EXPORT_NAME: {
      if (!name_matches(c, data))
        return -1; /* no error reply exists for EXPORT_NAME */
      c->size = sl_disk_size(c->h);
      c->tflags = transmission_flags(c);
      struct __attribute__((packed)) { uint64_t size; uint16_t flags; char zero[124]; } rep = {
        htobe64(c->size), htobe16(c->tflags), {0}};
      if (send_all(c->fd, &rep, no_zeroes ? 10 : sizeof rep) < 0)
        return -1;
      return 1;
    }
    case NBD_OPT_ABORT:
      send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      return 0;
    case NBD_OPT_LIST:
      r = opt_list(c, len);
      break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      r = opt_info_go(c, opt, data, len, &go);
      break;
    case NBD_OPT_STRUCTURED_REPLY:
      if (len != 0) {
        r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "option takes no data");
      } else {
        c->structured = true;
        r = send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      }
      break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      r = opt_meta_context(c, opt, data, len);
      break;
    default:
      r = send_opt_error(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
    }
    if (r < 0)
      return -1;
    if (go)
      return 1;
  }
  return -1;
}

/* ---- transmission ------------------------------------------------------ */

static uint32_t nbd_errno(int err)
{
  switch (err) {
  case EPERM: case EROFS: return NBD_EPERM;
  case ENOMEM: return NBD_ENOMEM;
  case EINVAL: return NBD_EINVAL;
  case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
  case EOVERFLOW: return NBD_EOVERFLOW;
  case ENOTSUP: return NBD_ENOTSUP;
  case ESHUTDOWN: return NBD_ESHUTDOWN;
  default: return NBD_EIO;
  }
}

static void mark_broken(struct conn *c)
{
  atomic_store(&c->broken, true);
  shutdown(c->fd, SHUT_RDWR);
}

static void request_free(struct conn *c, struct request *rq)
{
  sl_arena_free(c->arena, rq->data);
  free(rq->errmsg);
  free(rq);
}

/* ---- replies: combined sends --------------------------------------------
 * A reply lives in its request (header bytes, error message, payload
 * buffer) until it is on the wire, so any thread can send it.  The thread
 * that finishes a request appends the reply to the connection's out-queue;
 * if no thread is sending, it becomes the sender and writes everything
 * queued -- many replies per sendmsg -- until the queue is empty.  So a
 * worker never blocks behind another's send, and under load one syscall
 * carries many replies. */

/* Send the requests of LIST (linked through ->next), then free them. */
static void send_list(struct conn *c, struct request *list)
{
  while (list) {
    struct iovec iov[SEND_BATCH * 3];
    int n = 0;
    struct request *end = list;
    for (; end && n + end->iovcnt <= (int)SL_ARRAY_SIZE(iov); end = end->next) {
      memcpy(iov + n, end->iov, (size_t)end->iovcnt * sizeof iov[0]);
      n += end->iovcnt;
    }
    if (!atomic_load(&c->broken) && send_iov(c->fd, iov, n) < 0)
      mark_broken(c);
    while (list != end) {
      struct request *next = list->next;
      request_free(c, list);
      list = next;
    }
  }
}

/* Called with out_lock held by the thread that set c->sending. */
static void drain_out_queue(struct conn *c)
{
  while (c->out_head) {
    struct request *list = c->out_head;
    c->out_head = c->out_tail = NULL;
    pthread_mutex_unlock(&c->out_lock);
    send_list(c, list);
    pthread_mutex_lock(&c->out_lock);
  }
  c->sending = false;
  if (c->send_waiters)
    pthread_cond_broadcast(&c->out_cond);
}

/* Send RQ's reply (rq->iov) and free RQ, now or by the current sender. */
static void reply_submit(struct conn *c, struct request *rq)
{
  rq->next = NULL;
  pthread_mutex_lock(&c->out_lock);
  if (c->out_tail)
    c->out_tail->next = rq;
  else
    c->out_head = rq;
  c->out_tail = rq;
  if (!c->sending) {
    c->sending = true;
    drain_out_queue(c);
  }
  pthread_mutex_unlock(&c->out_lock);
}

/* Send IOV before returning (a reply chunk whose bytes are on the caller's
 * stack): wait to be the sender, then also send what queued meanwhile. */
static void reply_send_now(struct conn *c, struct iovec *iov, int n)
{
  pthread_mutex_lock(&c->out_lock);
  while (c->sending) {
    c->send_waiters++;
    pthread_cond_wait(&c->out_cond, &c->out_lock);
    c->send_waiters--;
  }
  c->sending = true;
  pthread_mutex_unlock(&c->out_lock);
  if (!atomic_load(&c->broken) && send_iov(c->fd, iov, n) < 0)
    mark_broken(c);
  pthread_mutex_lock(&c->out_lock);
  drain_out_queue(c);
  pthread_mutex_unlock(&c->out_lock);
}

static void set_structured_hdr(struct request *rq, uint16_t flags, uint16_t type,
                               uint32_t len)
{
  rq->hdr.structured = (struct nbd_structured_reply){
    htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(flags), htobe16(type),
    htobe64(rq->cookie), htobe32(len)};
  rq->iov[0] = (struct iovec){&rq->hdr.structured, sizeof rq->hdr.structured};
  rq->iovcnt = 1;
}

/* A simple reply; DATA (of LEN bytes) follows only on success. */
static void reply_simple(struct conn *c, struct request *rq, uint32_t err,
                         void *data, uint32_t len)
{
  rq->hdr.simple = (struct nbd_simple_reply){
    htobe32(NBD_SIMPLE_REPLY_MAGIC), htobe32(err), htobe64(rq->cookie)};
  rq->iov[0] = (struct iovec){&rq->hdr.simple, sizeof rq->hdr.simple};
  rq->iovcnt = 1;
  if (err == 0 && len)
    rq->iov[rq->iovcnt++] = (struct iovec){data, len};
  reply_submit(c, rq);
}

/* ERR (an errno) as the reply, with sl_last_error() as the message when
 * replies are structured.  The message is copied: it is thread-local and
 * another thread may send it. */
static void reply_error(struct conn *c, struct request *rq, int err)
{
  uint32_t code = nbd_errno(err);
  if (!c->structured) {
    reply_simple(c, rq, code, NULL, 0);
    return;
  }
  const char *msg = sl_last_error();
  size_t ml = SL_MIN(strlen(msg), 1024u);
  rq->errmsg = malloc(ml + 1);
  if (!rq->errmsg)
    ml = 0;
  else
    memcpy(rq->errmsg, msg, ml);
  rq->err = (struct nbd_error_payload){htobe32(code), htobe16((uint16_t)ml)};
  set_structured_hdr(rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                     (uint32_t)(sizeof rq->err + ml));
  rq->iov[rq->iovcnt++] = (struct iovec){&rq->err, sizeof rq->err};
  if (ml)
    rq->iov[rq->iovcnt++] = (struct iovec){rq->errmsg, ml};
  reply_submit(c, rq);
}

static void reply_done(struct conn *c, struct request *rq)
{
  if (!c->structured) {
    reply_simple(c, rq, 0, NULL, 0);
    return;
  }
  set_structured_hdr(rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
  reply_submit(c, rq);
}

/* rq->data is the arena buffer the reader allocated for it. */
static void do_read(struct conn *c, struct request *rq)
{
  int r = sl_disk_pread(c->h, rq->data, rq->length, rq->offset, 0);
  if (r < 0) {
    reply_error(c, rq, -r);
  } else if (!c->structured) {
    reply_simple(c, rq, 0, rq->data, rq->length);
  } else {
    set_structured_hdr(rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                       8 + rq->length);
    rq->be_offset = htobe64(rq->offset);
    rq->iov[rq->iovcnt++] = (struct iovec){&rq->be_offset, 8};
    rq->iov[rq->iovcnt++] = (struct iovec){rq->data, rq->length};
    reply_submit(c, rq);
  }
}

/* One BLOCK_STATUS chunk for context ID: merged runs of equal status. */
static int block_status_chunk(struct conn *c, struct request *rq, uint32_t id, bool last)
{
  struct nbd_extent ext[MAX_EXTENTS];
  unsigned n = 0, max = (rq->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS;
  uint64_t off = rq->offset, end = rq->offset + rq->length;
  while (off < end && n < max + 1) {
    struct sl_extent e;
    int r = sl_disk_block_status(c->h, off, end - off, &e);
    if (r < 0)
      return r;
    uint32_t st;
    if (id == CTX_ALLOCATION)
      st = e.type == SL_EXTENT_DATA ? 0 : NBD_STATE_HOLE | NBD_STATE_ZERO;
    else
      st = e.depth < 0 ? 0 : (uint32_t)e.depth + 1;
    uint64_t len = SL_MIN(e.length, end - off);
    if (n > 0 && be32toh(ext[n - 1].flags) == st) {
      ext[n - 1].length = htobe32(be32toh(ext[n - 1].length) + (uint32_t)len);
    } else {
      if (n == max)
        break;
      ext[n].length = htobe32((uint32_t)len);
      ext[n].flags = htobe32(st);
      n++;
    }
    off += len;
  }
  uint32_t be_id = htobe32(id);
  struct nbd_structured_reply h = {
    htobe32(NBD_STRUCTURED_REPLY_MAGIC), htobe16(last ? NBD_REPLY_FLAG_DONE : 0),
    htobe16(NBD_REPLY_TYPE_BLOCK_STATUS), htobe64(rq->cookie),
    htobe32(4 + n * (uint32_t)sizeof ext[0])};
  struct iovec iov[3] = {{&h, sizeof h}, {&be_id, 4}, {ext, n * sizeof ext[0]}};
  reply_send_now(c, iov, 3);
  return 0;
}

static void do_block_status(struct conn *c, struct request *rq)
{
  if (!c->structured || !(c->ctx_allocation || c->ctx_depth)) {
    sl_error(EINVAL, "block status needs a negotiated meta context");
    reply_error(c, rq, EINVAL);
    return;
  }
  /* Validate the range before the first chunk, so an error is the only reply. */
  struct sl_extent probe;
  int r = sl_disk_block_status(c->h, rq->offset, rq->length ? 1 : 0, &probe);
  if (r == 0 && rq->length == 0)
    r = sl_error(EINVAL, "block status of zero length");
  if (r == 0 && c->ctx_allocation)
    r = block_status_chunk(c, rq, CTX_ALLOCATION, !c->ctx_depth);
  if (r == 0 && c->ctx_depth)
    r = block_status_chunk(c, rq, CTX_DEPTH, true);
  if (r < 0)
    reply_error(c, rq, -r);
  else
    request_free(c, rq);
}

/* ---- running requests in the reader ----------------------------------------
 * Handing a request to a worker costs a queue lock and often a futex wake
 * and a context switch: several microseconds of CPU, more than a read or a
 * buffered write that the page cache serves (on two cores, the hand-offs
 * alone held 4K random writes at depth 32 to 0.7-0.8x of nbdkit's, whose
 * threads run what they read).  So the reader runs a read or a plain
 * (non-FUA) write itself while such requests have recently completed in
 * less than INLINE_MAX_NS, and hands them to the workers while they are
 * slower (a cold disk, O_DIRECT, a qcow2 allocation reading its backing
 * file), where running them one at a time would serialise the I/O.  The
 * service times are measured wherever the requests ran, so the choice
 * follows the backend both ways: a slower request moves its kind's
 * estimate half way to its own time, faster ones bring it down as an
 * average over the last eight or so, so a run of slow requests moves to
 * the workers after one or two of them.  Requests over INLINE_MAX_LEN
 * always go to a worker: their copying alone is worth doing in parallel. */

#define INLINE_MAX_NS 20000u
#define INLINE_MAX_LEN (64u << 10) /* larger transfers always go to a worker */

/* 0: read, 1: write without FUA, -1: anything else (never timed). */
static int service_class(const struct request *rq)
{
  if (rq->type == NBD_CMD_READ)
    return 0;
  if (rq->type == NBD_CMD_WRITE && !(rq->flags & NBD_CMD_FLAG_FUA))
    return 1;
  return -1;
}

static bool cheaper_inline(struct conn *c, const struct request *rq)
{
  int cls = service_class(rq);
  return cls >= 0 && rq->length <= INLINE_MAX_LEN &&
         atomic_load_explicit(&c->service_ns[cls], memory_order_relaxed) < INLINE_MAX_NS;
}

static void execute_request(struct conn *c, struct request *rq);

/* Run RQ against the disk and reply; takes RQ.  Reads and plain writes
 * are timed for cheaper_inline(). */
static void execute(struct conn *c, struct request *rq)
{
  int cls = service_class(rq);
  if (cls < 0) {
    execute_request(c, rq);
    return;
  }
  uint64_t t0 = sl_now_ns();
  execute_request(c, rq); /* frees RQ */
  uint64_t dt = SL_MIN(sl_now_ns() - t0, (uint64_t)UINT32_MAX);
  uint32_t old = atomic_load_explicit(&c->service_ns[cls], memory_order_relaxed);
  uint32_t now = dt > old ? old / 2 + (uint32_t)(dt / 2)      /* rise fast */
                          : old - old / 8 + (uint32_t)(dt / 8); /* fall slowly */
  /* A lost update when two threads finish together only skips a sample. */
  atomic_store_explicit(&c->service_ns[cls], now, memory_order_relaxed);
}

static void execute_request(struct conn *c, struct request *rq)
{
  int r = 0;
  switch (rq->type) {
  case NBD_CMD_READ:
    do_read(c, rq);
    return;
  case NBD_CMD_BLOCK_STATUS:
    do_block_status(c, rq);
    return;
  case NBD_CMD_WRITE:
    r = sl_disk_pwrite(c->h, rq->data, rq->length, rq->offset,
                       (rq->flags & NBD_CMD_FLAG_FUA) ? SL_FUA : 0);
    /* The payload is no longer needed: return it before the reply waits
     * in the out-queue. */
    sl_arena_free(c->arena, rq->data);
    rq->data = NULL;
    break;
  case NBD_CMD_FLUSH:
    r = sl_disk_flush(c->h);
    break;
  case NBD_CMD_TRIM:
    r = sl_disk_discard(c->h, rq->offset, rq->length);
    if (r == 0 && (rq->flags & NBD_CMD_FLAG_FUA))
      r = sl_disk_flush(c->h);
    break;
  case NBD_CMD_WRITE_ZEROES:
    r = sl_disk_write_zeroes(c->h, rq->offset, rq->length,
                             (rq->flags & NBD_CMD_FLAG_NO_HOLE) ? SL_NO_HOLE : 0);
    if (r == 0 && (rq->flags & NBD_CMD_FLAG_FUA))
      r = sl_disk_flush(c->h);
    break;
  default:
    r = sl_error(EINVAL, "unknown command %u", rq->type);
  }
  if (r < 0)
    reply_error(c, rq, -r);
  else
    reply_done(c, rq);
}

/* ---- the worker pool ------------------------------------------------------
 * The reader queues a request only when another one is already waiting
 * behind it (in its input buffer) or executing, and the request is not a
 * cheap one (cheaper_inline); a lone request runs in the reader itself,
 * sparing two thread hand-offs at queue depth 1.  A worker
 * is woken only when no worker already woken will get to the request, and
 * workers take requests until the queue is empty before sleeping again, so
 * a busy queue costs no wake-up per request. */

static void *worker_main(void *opaque)
{
  struct conn *c = opaque;
  pthread_mutex_lock(&c->qlock);
  for (;;) {
    while (!c->qhead && !c->closing) {
      c->idle++;
      pthread_cond_wait(&c->work_cond, &c->qlock);
      c->idle--;
      if (c->wakes_pending > 0)
        c->wakes_pending--;
    }
    struct request *rq = c->qhead;
    if (!rq)
      break;
    c->qhead = rq->next;
    if (!c->qhead)
      c->qtail = NULL;
    c->queued--;
    if (c->reader_waiting)
      pthread_cond_signal(&c->space_cond);
    pthread_mutex_unlock(&c->qlock);
    execute(c, rq);
    atomic_fetch_sub(&c->busy, 1);
    pthread_mutex_lock(&c->qlock);
  }
  pthread_mutex_unlock(&c->qlock);
  return NULL;
}

static void enqueue(struct conn *c, struct request *rq)
{
  atomic_fetch_add(&c->busy, 1);
  rq->next = NULL;
  pthread_mutex_lock(&c->qlock);
  while (c->queued >= MAX_QUEUED) {
    c->reader_waiting = true;
    pthread_cond_wait(&c->space_cond, &c->qlock);
  }
  c->reader_waiting = false;
  if (c->qtail)
    c->qtail->next = rq;
  else
    c->qhead = rq;
  c->qtail = rq;
  c->queued++;
  if (c->idle > c->wakes_pending && c->queued > c->wakes_pending) {
    c->wakes_pending++;
    pthread_cond_signal(&c->work_cond);
  }
  pthread_mutex_unlock(&c->qlock);
}

/* ---- the reader ------------------------------------------------------------
 * The reader takes whatever the socket holds in one recv into its input
 * buffer, so under load one syscall brings in many requests; a payload
 * larger than what is buffered is received straight into its arena buffer
 * (MSG_WAITALL), so large writes are not copied twice. */

/* ---- adaptive polling ------------------------------------------------------
 * A client at queue depth 1 sends its next request a few microseconds
 * after our reply reaches it.  Sleeping in recv in between costs more than
 * the request itself: the wake-up, and on a VM the halted vCPU's exit and
 * re-entry.  So when the client is at queue depth 1 (the last request
 * arrived alone -- the only one in its recv, nothing else in flight -- and
 * ran in the reader), the reader first polls the socket without sleeping.
 * Deeper queues are left alone: there a polling reader would take the core
 * the workers and the client need, and one wake-up serves a whole batch
 * anyway.  The window adapts as QEMU's event-loop polling does: it grows
 * while requests keep arriving soon after the window closed, and halves,
 * down to nothing, each time the client stays quiet for longer than the
 * maximum -- an idle connection costs at most a few windows, then no CPU.
 * However many depth-1 clients there are, at most half the CPUs poll at
 * a time (poll_slot_take). */

#define POLL_MIN_NS 4000u

/* At most half the CPUs (at least one) poll at once, whatever the number
 * of depth-1 connections: the others sleep in recv as before, so polling
 * never takes every core from the clients and the workers. */
static atomic_int pollers;

static bool poll_slot_take(const struct conn *c)
{
  if (atomic_fetch_add_explicit(&pollers, 1, memory_order_relaxed) < c->max_pollers)
    return true;
  atomic_fetch_sub_explicit(&pollers, 1, memory_order_relaxed);
  return false;
}

static void poll_slot_give(void)
{
  atomic_fetch_sub_explicit(&pollers, 1, memory_order_relaxed);
}

static ssize_t recv_polled(struct conn *c, void *buf, size_t len)
{
  if (c->poll_max_ns == 0 || !c->depth_one)
    return recv(c->fd, buf, len, 0);
  uint64_t t0 = sl_now_ns();
  if (c->poll_ns && poll_slot_take(c)) {
    while (sl_now_ns() - t0 < c->poll_ns) {
      ssize_t r = recv(c->fd, buf, len, MSG_DONTWAIT);
      if (r >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        poll_slot_give();
        return r;
      }
    }
    poll_slot_give();
  }
  ssize_t r = recv(c->fd, buf, len, 0);
  if (r < 0)
    return r; /* EINTR and errors say nothing about the client's pace */
  uint64_t waited = sl_now_ns() - t0;
  if (waited > c->poll_max_ns)
    c->poll_ns /= 2;                   /* quiet client: poll less */
  else if (c->poll_ns < c->poll_max_ns) /* arrived just too late: poll more */
    c->poll_ns = SL_MIN(SL_MAX(2 * c->poll_ns, (uint64_t)POLL_MIN_NS), c->poll_max_ns);
  if (c->poll_ns < POLL_MIN_NS / 2)
    c->poll_ns = 0;
  return r;
}

/* Make N (<= INBUF_SIZE) bytes available at c->in + c->in_pos. */
static int in_fill(struct conn *c, size_t n)
{
  if (c->in_end - c->in_pos >= n)
    return 0;
  if (c->in_pos + n > INBUF_SIZE) {
    memmove(c->in, c->in + c->in_pos, c->in_end - c->in_pos);
    c->in_end -= c->in_pos;
    c->in_pos = 0;
  }
  while (c->in_end - c->in_pos < n) {
    ssize_t r = recv_polled(c, c->in + c->in_end, INBUF_SIZE - c->in_end);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      return -1;
    c->in_end += (size_t)r;
    c->parsed_since_recv = 0;
  }
  return 0;
}

static void in_consume(struct conn *c, size_t n)
{
  c->in_pos += n;
  if (c->in_pos == c->in_end)
    c->in_pos = c->in_end = 0;
}

static bool in_pending(const struct conn *c)
{
  return c->in_end > c->in_pos;
}

/* Move LEN payload bytes to DST, or drop them if DST is NULL. */
static int in_payload(struct conn *c, char *dst, size_t len)
{
  while (len > 0) {
    size_t have = c->in_end - c->in_pos;
    if (have == 0 && dst && len >= INBUF_SIZE / 2)
      return recv_full(c->fd, dst, len);
    if (have == 0 && in_fill(c, SL_MIN(len, (size_t)INBUF_SIZE / 2)) < 0)
      return -1;
    size_t n = SL_MIN(len, c->in_end - c->in_pos);
    if (dst) {
      memcpy(dst, c->in + c->in_pos, n);
      dst += n;
    }
    in_consume(c, n);
    len -= n;
  }
  return 0;
}

/* Flags each command may carry. */
static uint16_t allowed_flags(uint16_t type)
{
  switch (type) {
  case NBD_CMD_READ: return NBD_CMD_FLAG_DF;
  case NBD_CMD_WRITE: case NBD_CMD_TRIM: return NBD_CMD_FLAG_FUA;
  case NBD_CMD_WRITE_ZEROES: return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
  case NBD_CMD_BLOCK_STATUS: return NBD_CMD_FLAG_REQ_ONE;
  default: return 0;
  }
}

/* 0 if RQ may run, else -errno with a message. */
static int validate(const struct conn *c, const struct request *rq)
{
  if (rq->flags & ~allowed_flags(rq->type))
    return sl_error(EINVAL, "flags 0x%x not valid for command %u", rq->flags, rq->type);
  if (rq->type == NBD_CMD_READ && rq->length > MAX_REQUEST)
    return sl_error(EOVERFLOW, "read of %u bytes is larger than %u", rq->length, MAX_REQUEST);
  if (rq->type != NBD_CMD_FLUSH && rq->offset + rq->length > c->size)
    return sl_error(EINVAL, "request beyond the end of the export");
  if ((c->tflags & NBD_FLAG_READ_ONLY) &&
      (rq->type == NBD_CMD_WRITE || rq->type == NBD_CMD_TRIM ||
       rq->type == NBD_CMD_WRITE_ZEROES))
    return sl_error(EPERM, "export is read-only");
  return 0;
}

/* Read one request and its payload into *OUT.  1: a request; 0: a request
 * refused with an error reply already queued; -1: stop (DISC, EOF, garbage). */
static int read_request(struct conn *c, struct request **out)
{
  struct nbd_request_hdr hdr;
  if (atomic_load(&c->broken) || in_fill(c, sizeof hdr) < 0)
    return -1;
  memcpy(&hdr, c->in + c->in_pos, sizeof hdr);
  in_consume(c, sizeof hdr);
  c->parsed_since_recv++;
  if (be32toh(hdr.magic) != NBD_REQUEST_MAGIC)
    return -1; /* out of sync: nothing sane to reply to */
  uint16_t type = be16toh(hdr.type);
  uint32_t length = be32toh(hdr.length);
  if (type == NBD_CMD_DISC)
    return -1;
  if (type == NBD_CMD_WRITE && length > MAX_REQUEST)
    return -1; /* we cannot sensibly swallow it: disconnect */
  struct request *rq = calloc(1, sizeof *rq);
  if (!rq)
    return -1;
  rq->flags = be16toh(hdr.flags);
  rq->type = type;
  rq->cookie = be64toh(hdr.cookie);
  rq->offset = be64toh(hdr.offset);
  rq->length = length;
  int err = validate(c, rq);
  /* The reader is the only thread that allocates payload buffers, so
   * waiting for arena space cannot deadlock: every queued request already
   * holds its buffer and will free it. */
  if (err == 0 && (type == NBD_CMD_READ || type == NBD_CMD_WRITE) &&
      !(rq->data = sl_arena_alloc(c->arena, length))) {
    free(rq);
    return -1;
  }
  if (type == NBD_CMD_WRITE && in_payload(c, rq->data, length) < 0) {
    request_free(c, rq);
    return -1;
  }
  if (err < 0) {
    reply_error(c, rq, -err);
    return 0;
  }
  *out = rq;
  return 1;
}

/* Read requests until DISC, EOF or garbage.  Returns when the reader is
 * done; the workers are drained by the caller. */
static void transmission(struct conn *c)
{
  for (;;) {
    struct request *rq = NULL;
    int r = read_request(c, &rq);
    if (r < 0)
      return;
    if (r == 0)
      continue;
    bool alone = atomic_load(&c->busy) == 0 && !in_pending(c);
    c->depth_one = alone && c->parsed_since_recv == 1;
    if (alone || cheaper_inline(c, rq))
      execute(c, rq);
    else
      enqueue(c, rq);
  }
}

static void conn_close_workers(struct conn *c)
{
  pthread_mutex_lock(&c->qlock);
  c->closing = true;
  pthread_cond_broadcast(&c->work_cond);
  pthread_mutex_unlock(&c->qlock);
  for (unsigned i = 0; i < c->nworkers; i++)
    pthread_join(c->workers[i], NULL);
}

static int serve_conn(struct conn *c)
{
  int r = handshake(c);
  if (r <= 0)
    return r;
  c->in = malloc(INBUF_SIZE);
  if (!c->in || sl_arena_create("sluice-nbd", ARENA_SIZE, &c->arena) < 0)
    return -1;
  unsigned n = c->opts->workers ? c->opts->workers : DEFAULT_WORKERS;
  n = SL_MIN(n, (unsigned)SL_ARRAY_SIZE(c->workers));
  for (c->nworkers = 0; c->nworkers < n; c->nworkers++)
    if (pthread_create(&c->workers[c->nworkers], NULL, worker_main, c) != 0)
      break;
  if (c->nworkers == 0)
    return -1;
  transmission(c);
  conn_close_workers(c); /* in-flight requests finish and reply first */
  return 0;
}

static void conn_init(struct conn *c, struct sl_handle *h,
                      const struct sl_nbd_options *opts, int fd)
{
  memset(c, 0, sizeof *c);
  c->h = h;
  c->opts = opts;
  c->fd = fd;
  c->poll_max_ns = c->poll_ns = (uint64_t)opts->poll_us * 1000u;
  c->max_pollers = SL_MAX(1, (int)sysconf(_SC_NPROCESSORS_ONLN) / 2);
  pthread_mutex_init(&c->out_lock, NULL);
  pthread_cond_init(&c->out_cond, NULL);
  pthread_mutex_init(&c->qlock, NULL);
  pthread_cond_init(&c->work_cond, NULL);
  pthread_cond_init(&c->space_cond, NULL);
}

static void conn_destroy(struct conn *c)
{
  close(c->fd);
  sl_arena_destroy(c->arena);
  free(c->in);
  pthread_mutex_destroy(&c->out_lock);
  pthread_cond_destroy(&c->out_cond);
  pthread_mutex_destroy(&c->qlock);
  pthread_cond_destroy(&c->work_cond);
  pthread_cond_destroy(&c->space_cond);
}

int sl_nbd_serve_fd(struct sl_handle *h, const struct sl_nbd_options *opts, int fd)
{
  struct conn c;
  conn_init(&c, h, opts, fd);
  int r = serve_conn(&c);
  conn_destroy(&c);
  return r < 0 ? -1 : 0;
}

/* ---- listeners --------------------------------------------------------- */

static void *conn_main(void *opaque)
{
  struct conn *c = opaque;
  struct sl_nbd_server *srv = c->srv;
  serve_conn(c);
  pthread_mutex_lock(&srv->lock);
  for (struct conn **p = &srv->conns; *p; p = &(*p)->next)
    if (*p == c) {
      *p = c->next;
      break;
    }
  srv->n_conns--;
  pthread_cond_broadcast(&srv->cond);
  pthread_mutex_unlock(&srv->lock);
  conn_destroy(c);
  free(c);
  return NULL;
}

/* Replies are sent whole, so latency matters more than packet count
 * (TCP_NODELAY; fails harmlessly on UNIX sockets), and a large send buffer
 * lets a 1 MiB read reply leave in one sendmsg instead of several rounds
 * of blocking and waking (the kernel caps it at net.core.wmem_max). */
static void tune_socket(int fd)
{
  int one = 1, sndbuf = 4 << 20;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
}

struct accept_arg {
  struct sl_nbd_server *srv;
  struct listener *l;
};

static void *accept_loop(void *opaque)
{
  struct accept_arg *a = opaque;
  struct sl_nbd_server *srv = a->srv;
  struct listener *l = a->l;
  free(a);
  for (;;) {
    int fd = accept4(l->ipc.fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        if (errno == EMFILE || errno == ENFILE)
          usleep(100000);
        pthread_mutex_lock(&srv->lock);
        bool stop = srv->stopping;
        pthread_mutex_unlock(&srv->lock);
        if (stop)
          return NULL;
        continue;
      }
      return NULL; /* the listener was shut down */
    }
    tune_socket(fd);
    struct conn *c = malloc(sizeof *c);
    if (!c) {
      close(fd);
      continue;
    }
    conn_init(c, srv->h, &srv->opts, fd);
    c->srv = srv;
    pthread_mutex_lock(&srv->lock);
    if (srv->stopping) {
      pthread_mutex_unlock(&srv->lock);
      conn_destroy(c);
      free(c);
      return NULL;
    }
    c->next = srv->conns;
    srv->conns = c;
    srv->n_conns++;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, conn_main, c) != 0) {
      srv->conns = c->next;
      srv->n_conns--;
      conn_destroy(c);
      free(c);
    }
    pthread_attr_destroy(&attr);
    pthread_mutex_unlock(&srv->lock);
  }
}

int sl_nbd_server_create(struct sl_handle *h, const struct sl_nbd_options *opts,
                         const char *const *listen, size_t n_listen,
                         struct sl_nbd_server **out)
{
  if (n_listen == 0 || n_listen > MAX_LISTENERS)
    return sl_error(EINVAL, "between 1 and %d NBD listeners are supported", MAX_LISTENERS);
  struct sl_nbd_server *srv = calloc(1, sizeof *srv);
  if (!srv)
    return sl_error(ENOMEM, "out of memory");
  srv->h = h;
  srv->opts = *opts;
  pthread_mutex_init(&srv->lock, NULL);
  pthread_cond_init(&srv->cond, NULL);
  for (size_t i = 0; i < n_listen; i++) {
    int r = sl_ipc_listen(listen[i], &srv->listeners[i].ipc);
    if (r < 0) {
      srv->n_listeners = i;
      sl_nbd_server_stop(srv);
      return r;
    }
  }
  srv->n_listeners = n_listen;
  *out = srv;
  return 0;
}

int sl_nbd_server_start(struct sl_nbd_server *srv)
{
  for (size_t i = 0; i < srv->n_listeners; i++) {
    struct accept_arg *a = malloc(sizeof *a);
    if (!a)
      return sl_error(ENOMEM, "out of memory");
    a->srv = srv;
    a->l = &srv->listeners[i];
    if (pthread_create(&srv->listeners[i].thread, NULL, accept_loop, a) != 0) {
      free(a);
      return sl_error(EAGAIN, "cannot start the NBD listener thread");
    }
  }
  return 0;
}

void sl_nbd_server_stop(struct sl_nbd_server *srv)
{
  if (!srv)
    return;
  pthread_mutex_lock(&srv->lock);
  srv->stopping = true;
  pthread_mutex_unlock(&srv->lock);
  for (size_t i = 0; i < srv->n_listeners; i++) {
    struct listener *l = &srv->listeners[i];
    shutdown(l->ipc.fd, SHUT_RDWR);
    if (l->thread)
      pthread_join(l->thread, NULL);
    sl_ipc_listener_close(&l->ipc);
  }
  /* Stop reading from every client; requests already read still run and
   * reply, then the connection threads end. */
  pthread_mutex_lock(&srv->lock);
  for (struct conn *c = srv->conns; c; c = c->next)
    shutdown(c->fd, SHUT_RD);
  while (srv->n_conns > 0)
    pthread_cond_wait(&srv->cond, &srv->lock);
  pthread_mutex_unlock(&srv->lock);
  pthread_mutex_destroy(&srv->lock);
  pthread_cond_destroy(&srv->cond);
  free(srv);
}
