/* The request executor (request-executor.h): the reader's input buffer
 * with adaptive polling, and the choice between running a request in the
 * reader and handing it to a worker.  Nothing here knows a protocol; the
 * NBD server (nbd-server.c) is its first user.
 *
 * Running in the reader.  Handing a request to a worker costs a queue lock
 * and often a futex wake and a context switch: several microseconds of
 * CPU, more than a read or a buffered write that the page cache serves (on
 * two cores, the hand-offs alone held 4K random writes at depth 32 to
 * 0.7-0.8x of nbdkit's, whose threads run what they read).  So the reader
 * runs a request of a timed class itself while such requests have recently
 * completed in less than INLINE_MAX_NS, and hands them to the workers
 * while they are slower (a cold disk, O_DIRECT, a qcow2 allocation reading
 * its backing file), where running them one at a time would serialise the
 * I/O.  The service times are measured wherever the requests ran, so the
 * choice follows the backend both ways: a slower request moves its class's
 * estimate half way to its own time, faster ones bring it down as an
 * average over the last eight or so, so a run of slow requests moves to
 * the workers after one or two of them.  Requests over INLINE_MAX_LEN
 * always go to a worker: their copying alone is worth doing in parallel.
 * An item may carry several requests (the NBD export's batches of reads,
 * ops->weight): its time is recorded per request, and it runs in the
 * reader only if its requests together (weight x that estimate, and their
 * bytes summed) are within the limits -- the reader waits for all of them
 * -- or if it is alone: a batch of everything in flight delays nothing
 * that is there to read.
 * A class may start unknown (ops->cold_classes), i.e. slow, until its
 * first item has been timed on a worker: a batch's first run then cannot
 * stall the reader behind a cold or hung backend.
 *
 * The worker pool.  The reader queues a request only when another one is
 * already waiting behind it or executing, and the request is not a cheap
 * one; a lone request runs in the reader itself, sparing two thread
 * hand-offs at queue depth 1.  A worker is woken only when no worker
 * already woken will get to the request, and workers take requests until
 * the queue is empty before sleeping again, so a busy queue costs no
 * wake-up per request.
 *
 * Adaptive polling.  A client at queue depth 1 sends its next request a
 * few microseconds after our reply reaches it.  Sleeping in recv in
 * between costs more than the request itself: the wake-up, and on a VM the
 * halted vCPU's exit and re-entry.  So when the client is at queue depth 1
 * (the last request arrived alone -- the only one in its recv, nothing else
 * in flight -- and ran in the reader), the reader first polls the socket
 * without sleeping.  Deeper queues are left alone: there a polling reader
 * would take the core the workers and the client need, and one wake-up
 * serves a whole batch anyway.  The window adapts as QEMU's event-loop
 * polling does: it grows while requests keep arriving soon after the
 * window closed, and halves, down to nothing, each time the client stays
 * quiet for longer than the maximum -- an idle connection costs at most a
 * few windows, then no CPU.  However many depth-1 clients there are, at
 * most half the CPUs poll at a time (poll_slot_take).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/util.h"
#include "export/request-executor.h"
#include "ipc/socket.h"

#define INLINE_MAX_NS 20000u
#define INLINE_MAX_LEN (64u << 10) /* larger transfers always go to a worker */
#define POLL_MIN_NS 4000u

/* ---- the reader ---------------------------------------------------------- */

int sl_stream_reader_init(struct sl_stream_reader *r, int fd, size_t size,
                          unsigned poll_us)
{
  memset(r, 0, sizeof *r);
  r->fd = fd;
  r->size = size;
  r->poll_max_ns = r->poll_ns = (uint64_t)poll_us * 1000u;
  r->max_pollers = SL_MAX(1, (int)sysconf(_SC_NPROCESSORS_ONLN) / 2);
  r->buf = malloc(size);
  return r->buf ? 0 : -ENOMEM;
}

void sl_stream_reader_destroy(struct sl_stream_reader *r)
{
  free(r->buf);
  r->buf = NULL;
}

/* At most half the CPUs (at least one) poll at once, whatever the number
 * of depth-1 connections: the others sleep in recv as before, so polling
 * never takes every core from the clients and the workers. */
static atomic_int pollers;

static bool poll_slot_take(const struct sl_stream_reader *r)
{
  if (atomic_fetch_add_explicit(&pollers, 1, memory_order_relaxed) < r->max_pollers)
    return true;
  atomic_fetch_sub_explicit(&pollers, 1, memory_order_relaxed);
  return false;
}

static void poll_slot_give(void)
{
  atomic_fetch_sub_explicit(&pollers, 1, memory_order_relaxed);
}

static ssize_t recv_polled(struct sl_stream_reader *r, void *buf, size_t len)
{
  if (r->poll_max_ns == 0 || !r->depth_one)
    return recv(r->fd, buf, len, 0);
  uint64_t t0 = sl_now_ns();
  if (r->poll_ns && poll_slot_take(r)) {
    while (sl_now_ns() - t0 < r->poll_ns) {
      ssize_t n = recv(r->fd, buf, len, MSG_DONTWAIT);
      if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) {
        poll_slot_give();
        return n;
      }
    }
    poll_slot_give();
  }
  ssize_t n = recv(r->fd, buf, len, 0);
  if (n < 0)
    return n; /* EINTR and errors say nothing about the client's pace */
  uint64_t waited = sl_now_ns() - t0;
  if (waited > r->poll_max_ns)
    r->poll_ns /= 2;                   /* quiet client: poll less */
  else if (r->poll_ns < r->poll_max_ns) /* arrived just too late: poll more */
    r->poll_ns = SL_MIN(SL_MAX(2 * r->poll_ns, (uint64_t)POLL_MIN_NS), r->poll_max_ns);
  if (r->poll_ns < POLL_MIN_NS / 2)
    r->poll_ns = 0;
  return n;
}

int sl_stream_fill(struct sl_stream_reader *r, size_t n)
{
  if (r->end - r->pos >= n)
    return 0;
  if (r->pos + n > r->size) {
    memmove(r->buf, r->buf + r->pos, r->end - r->pos);
    r->end -= r->pos;
    r->pos = 0;
  }
  while (r->end - r->pos < n) {
    ssize_t got = recv_polled(r, r->buf + r->end, r->size - r->end);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      return -1;
    r->end += (size_t)got;
    r->parsed_since_recv = 0;
  }
  return 0;
}

void sl_stream_consume(struct sl_stream_reader *r, size_t n)
{
  r->pos += n;
  if (r->pos == r->end)
    r->pos = r->end = 0;
}

int sl_stream_payload(struct sl_stream_reader *r, char *dst, size_t len)
{
  while (len > 0) {
    size_t have = r->end - r->pos;
    /* Nothing buffered and a large payload: straight into its buffer. */
    if (have == 0 && dst && len >= r->size / 2)
      return sl_ipc_recv_full(r->fd, dst, len);
    if (have == 0 && sl_stream_fill(r, SL_MIN(len, r->size / 2)) < 0)
      return -1;
    size_t n = SL_MIN(len, r->end - r->pos);
    if (dst) {
      memcpy(dst, r->buf + r->pos, n);
      dst += n;
    }
    sl_stream_consume(r, n);
    len -= n;
  }
  return 0;
}

/* ---- the executor --------------------------------------------------------- */

/* Run ITEM and time it if its class is timed. */
static void execute(struct sl_executor *ex, struct sl_exec_item *item)
{
  int cls = ex->ops->service_class(item);
  if (cls < 0) {
    ex->ops->run(ex->ctx, item);
    return;
  }
  unsigned w = ex->ops->weight ? SL_MAX(ex->ops->weight(item), 1u) : 1u;
  uint64_t t0 = sl_now_ns();
  ex->ops->run(ex->ctx, item); /* ITEM is gone */
  uint64_t dt = SL_MIN((sl_now_ns() - t0) / w, (uint64_t)UINT32_MAX);
  uint32_t old = atomic_load_explicit(&ex->service_ns[cls], memory_order_relaxed);
  uint32_t now = old == SL_EXEC_UNKNOWN_NS ? (uint32_t)dt       /* the first */
               : dt > old ? old / 2 + (uint32_t)(dt / 2)      /* rise fast */
                          : old - old / 8 + (uint32_t)(dt / 8); /* fall slowly */
  if (now == SL_EXEC_UNKNOWN_NS)
    now--;
  /* A lost update when two threads finish together only skips a sample. */
  atomic_store_explicit(&ex->service_ns[cls], now, memory_order_relaxed);
}

/* What the reader would wait for is the whole item: its requests' time
 * together (weight x the per-request estimate) and all their bytes. */
static bool cheaper_inline(struct sl_executor *ex, const struct sl_exec_item *item,
                           size_t len, unsigned w)
{
  int cls = ex->ops->service_class(item);
  return cls >= 0 && len <= INLINE_MAX_LEN &&
         (uint64_t)atomic_load_explicit(&ex->service_ns[cls], memory_order_relaxed) * w <
             INLINE_MAX_NS;
}

static void *worker_main(void *opaque)
{
  struct sl_executor *ex = opaque;
  pthread_mutex_lock(&ex->qlock);
  for (;;) {
    while (!ex->qhead && !ex->closing) {
      ex->idle++;
      pthread_cond_wait(&ex->work_cond, &ex->qlock);
      ex->idle--;
      if (ex->wakes_pending > 0)
        ex->wakes_pending--;
    }
    struct sl_exec_item *item = ex->qhead;
    if (!item)
      break;
    ex->qhead = item->next;
    if (!ex->qhead)
      ex->qtail = NULL;
    ex->queued--;
    if (ex->reader_waiting)
      pthread_cond_signal(&ex->space_cond);
    pthread_mutex_unlock(&ex->qlock);
    execute(ex, item);
    atomic_fetch_sub(&ex->busy, 1);
    pthread_mutex_lock(&ex->qlock);
  }
  pthread_mutex_unlock(&ex->qlock);
  return NULL;
}

static void enqueue(struct sl_executor *ex, struct sl_exec_item *item)
{
  atomic_fetch_add(&ex->busy, 1);
  item->next = NULL;
  pthread_mutex_lock(&ex->qlock);
  while (ex->queued >= ex->max_queued) {
    ex->reader_waiting = true;
    pthread_cond_wait(&ex->space_cond, &ex->qlock);
  }
  ex->reader_waiting = false;
  if (ex->qtail)
    ex->qtail->next = item;
  else
    ex->qhead = item;
  ex->qtail = item;
  ex->queued++;
  if (ex->idle > ex->wakes_pending && ex->queued > ex->wakes_pending) {
    ex->wakes_pending++;
    pthread_cond_signal(&ex->work_cond);
  }
  pthread_mutex_unlock(&ex->qlock);
}

int sl_executor_start(struct sl_executor *ex, const struct sl_executor_ops *ops,
                      void *ctx, unsigned nworkers, unsigned max_queued)
{
  memset(ex, 0, sizeof *ex);
  for (unsigned i = 0; i < SL_EXEC_CLASSES; i++)
    atomic_init(&ex->service_ns[i],
                ops->cold_classes & (1u << i) ? SL_EXEC_UNKNOWN_NS : 0);
  ex->ops = ops;
  ex->ctx = ctx;
  ex->max_queued = SL_MAX(max_queued, 1u);
  pthread_mutex_init(&ex->qlock, NULL);
  pthread_cond_init(&ex->work_cond, NULL);
  pthread_cond_init(&ex->space_cond, NULL);
  nworkers = SL_MIN(nworkers, (unsigned)SL_EXECUTOR_MAX_WORKERS);
  for (ex->nworkers = 0; ex->nworkers < nworkers; ex->nworkers++)
    if (pthread_create(&ex->workers[ex->nworkers], NULL, worker_main, ex) != 0)
      break;
  return ex->nworkers > 0 ? 0 : -1;
}

bool sl_executor_dispatch(struct sl_executor *ex, struct sl_exec_item *item,
                          size_t len, bool more_waiting)
{
  /* Alone (nothing executing, nothing behind it in the buffer): running
   * it here delays nothing but what the client sends later, as for a
   * single request -- a batch made of everything in flight.  Otherwise
   * an item of several requests runs here only if they are cheap
   * together. */
  unsigned w = ex->ops->weight ? SL_MAX(ex->ops->weight(item), 1u) : 1u;
  bool alone = atomic_load(&ex->busy) == 0 && !more_waiting;
  if (alone || cheaper_inline(ex, item, len, w))
    execute(ex, item);
  else
    enqueue(ex, item);
  return alone;
}

void sl_executor_stop(struct sl_executor *ex)
{
  if (!ex->ops)
    return; /* never started */
  pthread_mutex_lock(&ex->qlock);
  ex->closing = true;
  pthread_cond_broadcast(&ex->work_cond);
  pthread_mutex_unlock(&ex->qlock);
  for (unsigned i = 0; i < ex->nworkers; i++)
    pthread_join(ex->workers[i], NULL);
  pthread_mutex_destroy(&ex->qlock);
  pthread_cond_destroy(&ex->work_cond);
  pthread_cond_destroy(&ex->space_cond);
  ex->ops = NULL;
}
