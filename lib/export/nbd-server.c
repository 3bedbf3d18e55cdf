/* The NBD server: the transmission phase of the fixed-newstyle NBD
 * protocol (NetworkBlockDevice/nbd, doc/proto.md) and its listeners on
 * UNIX and TCP sockets.  The handshake before it is nbd-handshake.c; how
 * requests are read and run in parallel is the request executor
 * (request-executor.c), which this file drives with NBD's requests.
 *
 * Per connection, one reader thread parses requests and the executor runs
 * them, in the reader or in a small pool of workers, so requests within a
 * connection run in parallel.  What makes it fast on few cores is doing
 * fewer syscalls and thread wake-ups per request, not more threads: the
 * reader takes everything the socket holds in one recv, a lone or cheap
 * request runs in the reader itself, the reader polls briefly at queue
 * depth 1 (all in request-executor.c), and replies are combined: whichever
 * thread finishes a request while no one is sending becomes the sender and
 * writes every queued reply, many per sendmsg; nobody waits on a reply
 * lock.  When the disk takes batched reads (the cache filter, which asks
 * sluiced for all of a batch in one round trip), the small reads one recv
 * brought in go down the stack together and their replies leave together
 * (transmission()).
 *
 * Buffers (DESIGN.md, "Buffers"): every read and write payload lives in a
 * buffer from the connection's memfd-backed arena (buffer-arena.h), sealed
 * and bounded, allocated only by the reader (so waiting for space cannot
 * deadlock) and freed when the data is on disk or on the wire.  Nothing is
 * malloc'ed per payload, and the arena is what the cache daemon will map
 * to move data with no extra copy.
 *
 * Everything the client sends is untrusted: lengths are bounded before
 * allocation, offsets are checked by the disk core, and a broken
 * connection only ever ends that connection.
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
#include <sluice/filter.h>
#include "common/util.h"
#include "ipc/buffer-arena.h"
#include "ipc/socket.h"
#include "export/export.h"
#include "export/nbd-handshake.h"
#include "export/nbd-proto.h"
#include "export/request-executor.h"

#define MAX_EXTENTS 1024              /* descriptors per block-status reply */
#define MAX_QUEUED 64                 /* requests waiting for a worker */
#define DEFAULT_WORKERS 4
#define MAX_LISTENERS 8
#define INBUF_SIZE (256u << 10)       /* the reader's input buffer */
#define ARENA_SIZE (2 * NBD_MAX_REQUEST) /* payload memory per connection */
#define SEND_BATCH 64                 /* replies per sendmsg, at most */
#define READ_BATCH_MAX 32             /* reads gathered into one batch */
#define READ_BATCH_LEN (64u << 10)    /* reads larger than this go alone */
#define BATCH_FAST_NS 30000u          /* per read: a batch this fast always pays */
#define BATCH_PROBE 16                /* batches not paying: every 16th chance still */

struct request {
  struct sl_exec_item exec;         /* while it waits for a worker */
  struct request *next;             /* in the out-queue */
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
  /* A batch of reads (see transmission) is its first request, the others
   * linked through MORE; BATCH_N counts them all, on the first. */
  struct request *more;
  unsigned batch_n;
};

struct conn {
  struct sl_nbd_server *srv;        /* NULL for sl_nbd_serve_fd callers */
  struct conn *next;
  struct sl_handle *h;
  const struct sl_nbd_options *opts;
  int fd;
  struct nbd_session s;             /* what the handshake agreed */
  struct sl_arena *arena;           /* every payload buffer comes from here */
  struct sl_stream_reader in;       /* the reader's input buffer and polling */
  struct sl_executor ex;            /* inline execution and the workers */
  bool batching;                    /* the disk takes reads in batches */
  _Atomic uint32_t batch_ns[2];     /* the last two batches' time per read */
  atomic_uint batch_seq;
  unsigned batch_skipped;           /* reader only: chances not taken */
  /* Replies waiting for the sender (see reply_submit). */
  pthread_mutex_t out_lock;
  pthread_cond_t out_cond;
  struct request *out_head, *out_tail;
  bool sending;
  unsigned send_waiters;
  atomic_bool broken;               /* a write failed: stop */
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
    if (!atomic_load(&c->broken) && sl_ipc_send_iov(c->fd, iov, n) < 0)
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

/* Send the replies of HEAD..TAIL (linked through ->next) and free them,
 * now or by the current sender: the replies of a batch leave in one
 * sendmsg. */
static void reply_submit_list(struct conn *c, struct request *head, struct request *tail)
{
  if (!head)
    return;
  tail->next = NULL;
  pthread_mutex_lock(&c->out_lock);
  if (c->out_tail)
    c->out_tail->next = head;
  else
    c->out_head = head;
  c->out_tail = tail;
  if (!c->sending) {
    c->sending = true;
    drain_out_queue(c);
  }
  pthread_mutex_unlock(&c->out_lock);
}

/* Send RQ's reply (rq->iov) and free RQ. */
static void reply_submit(struct conn *c, struct request *rq)
{
  reply_submit_list(c, rq, rq);
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
  if (!atomic_load(&c->broken) && sl_ipc_send_iov(c->fd, iov, n) < 0)
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
  if (!c->s.structured) {
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
  if (!c->s.structured) {
    reply_simple(c, rq, 0, NULL, 0);
    return;
  }
  set_structured_hdr(rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
  reply_submit(c, rq);
}

/* The reply to a read that succeeded: header and data, in rq->iov. */
static void read_reply_prepare(struct conn *c, struct request *rq)
{
  if (!c->s.structured) {
    rq->hdr.simple = (struct nbd_simple_reply){
      htobe32(NBD_SIMPLE_REPLY_MAGIC), 0, htobe64(rq->cookie)};
    rq->iov[0] = (struct iovec){&rq->hdr.simple, sizeof rq->hdr.simple};
    rq->iovcnt = 1;
  } else {
    set_structured_hdr(rq, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_OFFSET_DATA,
                       8 + rq->length);
    rq->be_offset = htobe64(rq->offset);
    rq->iov[rq->iovcnt++] = (struct iovec){&rq->be_offset, 8};
  }
  if (rq->length)
    rq->iov[rq->iovcnt++] = (struct iovec){rq->data, rq->length};
}

/* rq->data is the arena buffer the reader allocated for it. */
static void do_read(struct conn *c, struct request *rq)
{
  int r = sl_disk_pread(c->h, rq->data, rq->length, rq->offset, 0);
  if (r < 0) {
    reply_error(c, rq, -r);
  } else {
    read_reply_prepare(c, rq);
    reply_submit(c, rq);
  }
}

/* The reads of a batch (RQ and those linked through rq->more) in one call
 * down the stack, and their replies in one go.  A read that failed is
 * tried again alone, so that its error reply carries its own message (a
 * batch keeps only the last), as an unbatched read's does. */
static void do_read_batch(struct conn *c, struct request *rq)
{
  struct sl_read_vec v[READ_BATCH_MAX];
  struct request *r[READ_BATCH_MAX];
  unsigned n = 0;
  for (struct request *x = rq; x && n < READ_BATCH_MAX; x = x->more, n++) {
    r[n] = x;
    v[n] = (struct sl_read_vec){.buf = x->data, .len = x->length, .off = x->offset};
  }
  uint64_t t0 = sl_now_ns();
  sl_disk_pread_batch(c->h, v, n, 0);
  uint64_t per = SL_MIN((sl_now_ns() - t0) / n, (uint64_t)UINT32_MAX);
  atomic_store_explicit(&c->batch_ns[atomic_fetch_add(&c->batch_seq, 1) % 2],
                        (uint32_t)per, memory_order_relaxed);
  struct request *head = NULL, *tail = NULL;
  for (unsigned i = 0; i < n; i++) {
    r[i]->more = NULL;
    if (v[i].status < 0) {
      do_read(c, r[i]);
      continue;
    }
    read_reply_prepare(c, r[i]);
    if (tail)
      tail->next = r[i];
    else
      head = r[i];
    tail = r[i];
  }
  reply_submit_list(c, head, tail);
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
    if (id == NBD_CTX_ALLOCATION)
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
  if (!c->s.structured || !(c->s.ctx_allocation || c->s.ctx_depth)) {
    sl_error(EINVAL, "block status needs a negotiated meta context");
    reply_error(c, rq, EINVAL);
    return;
  }
  /* Validate the range before the first chunk, so an error is the only reply. */
  struct sl_extent probe;
  int r = sl_disk_block_status(c->h, rq->offset, rq->length ? 1 : 0, &probe);
  if (r == 0 && rq->length == 0)
    r = sl_error(EINVAL, "block status of zero length");
  if (r == 0 && c->s.ctx_allocation)
    r = block_status_chunk(c, rq, NBD_CTX_ALLOCATION, !c->s.ctx_depth);
  if (r == 0 && c->s.ctx_depth)
    r = block_status_chunk(c, rq, NBD_CTX_DEPTH, true);
  if (r < 0)
    reply_error(c, rq, -r);
  else
    request_free(c, rq);
}

/* ---- running requests (the executor's callbacks) ------------------------ */

/* Reads and writes without FUA are timed: they run in the reader while
 * the backend serves them fast (request-executor.c).  Batches of reads
 * have a class of their own, timed per read: a batch of hits from sluiced
 * costs a round trip for all of its reads, which the reader can afford
 * where it could not afford one per read. */
static int service_class(const struct sl_exec_item *item)
{
  const struct request *rq = (const struct request *)item;
  if (rq->type == NBD_CMD_READ && rq->batch_n)
    return 2;
  if (rq->type == NBD_CMD_READ)
    return 0;
  if (rq->type == NBD_CMD_WRITE && !(rq->flags & NBD_CMD_FLAG_FUA))
    return 1;
  return -1;
}

static unsigned weight(const struct sl_exec_item *item)
{
  const struct request *rq = (const struct request *)item;
  return rq->batch_n ? rq->batch_n : 1;
}

/* Run the request against the disk and reply; takes it. */
static void run_request(void *ctx, struct sl_exec_item *item)
{
  struct conn *c = ctx;
  struct request *rq = (struct request *)item;
  int r = 0;
  switch (rq->type) {
  case NBD_CMD_READ:
    if (rq->batch_n)
      do_read_batch(c, rq);
    else
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


static const struct sl_executor_ops executor_ops = {
  .run = run_request,
  .service_class = service_class,
  .weight = weight,
  .cold_classes = 1u << 2, /* batches: to a worker until one was timed */
};

/* ---- the reader ----------------------------------------------------------- */

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
  if (rq->type == NBD_CMD_READ && rq->length > NBD_MAX_REQUEST)
    return sl_error(EOVERFLOW, "read of %u bytes is larger than %u", rq->length, NBD_MAX_REQUEST);
  if (rq->type != NBD_CMD_FLUSH && rq->offset + rq->length > c->s.size)
    return sl_error(EINVAL, "request beyond the end of the export");
  if ((c->s.tflags & NBD_FLAG_READ_ONLY) &&
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
  if (atomic_load(&c->broken) || sl_stream_fill(&c->in, sizeof hdr) < 0)
    return -1;
  memcpy(&hdr, sl_stream_peek(&c->in), sizeof hdr);
  sl_stream_consume(&c->in, sizeof hdr);
  c->in.parsed_since_recv++;
  if (be32toh(hdr.magic) != NBD_REQUEST_MAGIC)
    return -1; /* out of sync: nothing sane to reply to */
  uint16_t type = be16toh(hdr.type);
  uint32_t length = be32toh(hdr.length);
  if (type == NBD_CMD_DISC)
    return -1;
  if (type == NBD_CMD_WRITE && length > NBD_MAX_REQUEST)
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
  if (type == NBD_CMD_WRITE && sl_stream_payload(&c->in, rq->data, length) < 0) {
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

static bool batchable(const struct conn *c, uint16_t type, uint32_t length)
{
  return c->batching && type == NBD_CMD_READ && length <= READ_BATCH_LEN;
}

/* Whether to gather a batch now.  What the filter that takes a batch
 * does not serve itself runs below it one read after another (the cache
 * filter reads the writable top layer and whatever the daemon did not
 * serve from next): on slow storage, or with the daemon gone, a batch of
 * 8 reads then costs 8 reads' time where 8 single reads on the workers
 * overlap.  Where the filter serves the batch (sluiced: hits for the
 * price of one round trip, misses filled in parallel), a batch costs
 * little more than one read.  So the time per read of recent batches
 * (the better of the last two: one preempted batch does not count) is
 * held against that of single reads (the executor's estimate): batches
 * are made while they take less than half of it per read, or less than
 * BATCH_FAST_NS, and otherwise only every BATCH_PROBE-th time, to see
 * when they pay again (a cache warmed up, a daemon back). */
static bool batch_pays(struct conn *c)
{
  uint32_t a = atomic_load_explicit(&c->batch_ns[0], memory_order_relaxed);
  uint32_t b = atomic_load_explicit(&c->batch_ns[1], memory_order_relaxed);
  uint32_t single = atomic_load_explicit(&c->ex.service_ns[0], memory_order_relaxed);
  if (SL_MIN(a, b) <= SL_MAX(BATCH_FAST_NS, single / 2))
    return true;
  return ++c->batch_skipped % BATCH_PROBE == 0;
}

/* Whether the input buffer already holds the whole header of a read that
 * may join a batch (never waits for the socket). */
static bool next_batchable(const struct conn *c)
{
  struct nbd_request_hdr hdr;
  if (c->in.end - c->in.pos < sizeof hdr)
    return false;
  memcpy(&hdr, sl_stream_peek(&c->in), sizeof hdr);
  return be32toh(hdr.magic) == NBD_REQUEST_MAGIC &&
         batchable(c, be16toh(hdr.type), be32toh(hdr.length));
}

/* Read requests until DISC, EOF or garbage.  Returns when the reader is
 * done; the workers are drained by the caller.
 *
 * Batches: when the disk takes reads in batches (the cache filter: one
 * message to sluiced for all of them), the small reads that one recv
 * brought in one after another go down the stack as one batch, run as one
 * item by the executor -- one hand-off to a worker, if any, one round
 * trip to the daemon and one send of the replies for all of them, where
 * each read alone would pay all three.  A batch is only ever made of what
 * is already in the input buffer: gathering never waits for a client. */
static void transmission(struct conn *c)
{
  for (;;) {
    struct request *rq = NULL;
    int r = read_request(c, &rq);
    if (r < 0)
      return;
    if (r == 0)
      continue;
    bool stop = false;
    size_t len = rq->length;        /* the item's bytes: all of a batch's */
    if (batchable(c, rq->type, rq->length) && batch_pays(c)) {
      struct request *tail = rq;
      rq->batch_n = 1;
      while (rq->batch_n < READ_BATCH_MAX && next_batchable(c)) {
        struct request *more = NULL;
        int r2 = read_request(c, &more);
        if (r2 < 0) {
          stop = true; /* run what was gathered, then end */
          break;
        }
        if (r2 == 0)
          continue;    /* refused, its error reply queued */
        tail->more = more;
        tail = more;
        len += more->length;
        rq->batch_n++;
      }
    }
    bool alone = sl_executor_dispatch(&c->ex, &rq->exec, len,
                                      sl_stream_pending(&c->in));
    if (stop)
      return;
    /* A client whose requests come one at a time: poll for the next. */
    c->in.depth_one = alone && c->in.parsed_since_recv == 1;
  }
}

static int serve_conn(struct conn *c)
{
  int r = nbd_handshake(c->fd, c->h, c->opts, &c->s);
  if (r <= 0)
    return r;
  if (sl_stream_reader_init(&c->in, c->fd, INBUF_SIZE, c->opts->poll_us) < 0 ||
      sl_arena_create("sluice-nbd", ARENA_SIZE, &c->arena) < 0)
    return -1;
  /* SLUICE_NBD_BATCH=0: never (for before/after measurements); =1: on any
   * disk, where the core splits the batch (for tests and the fuzzer). */
  const char *b = getenv("SLUICE_NBD_BATCH");
  c->batching = b && strcmp(b, "1") == 0 ? true
              : sl_disk_can_pread_batch(c->h) && !(b && strcmp(b, "0") == 0);
  /* Unknown until measured: single reads first, then a probe. */
  atomic_init(&c->batch_ns[0], UINT32_MAX);
  atomic_init(&c->batch_ns[1], UINT32_MAX);
  unsigned n = c->opts->workers ? c->opts->workers : DEFAULT_WORKERS;
  if (sl_executor_start(&c->ex, &executor_ops, c, n, MAX_QUEUED) < 0)
    return -1;
  transmission(c);
  sl_executor_stop(&c->ex); /* in-flight requests finish and reply first */
  return 0;
}

static void conn_init(struct conn *c, struct sl_handle *h,
                      const struct sl_nbd_options *opts, int fd)
{
  memset(c, 0, sizeof *c);
  c->h = h;
  c->opts = opts;
  c->fd = fd;
  pthread_mutex_init(&c->out_lock, NULL);
  pthread_cond_init(&c->out_cond, NULL);
}

static void conn_destroy(struct conn *c)
{
  sl_executor_stop(&c->ex); /* if it started and serve_conn did not stop it */
  close(c->fd);
  sl_arena_destroy(c->arena);
  sl_stream_reader_destroy(&c->in);
  pthread_mutex_destroy(&c->out_lock);
  pthread_cond_destroy(&c->out_cond);
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
