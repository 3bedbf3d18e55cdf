/* The request executor: how a server turns a byte stream of requests into
 * parallel work on a disk, cheaply on few cores.  NBD uses it today; any
 * other request/reply server over a socket (vhost-user-blk next) can.
 *
 * Two pieces, both free of any protocol:
 *
 *  - sl_stream_reader: the reader's input buffer over a socket.  One recv
 *    takes whatever the socket holds, so under load one syscall brings in
 *    many requests; a large payload goes straight into its destination.
 *    When the client runs at queue depth 1 the reader polls the socket
 *    briefly before sleeping, with a window that adapts to the client.
 *
 *  - sl_executor: runs parsed requests.  A request with nothing behind it
 *    and nothing executing runs in the reader itself (no hand-off at depth
 *    1), and so do cheap ones while the backend serves them faster than a
 *    hand-off costs; the rest go to a small pool of workers, woken only
 *    when no awake worker will get to them.
 *
 * The server owns its request type and embeds a struct sl_exec_item in it;
 * the executor calls back to run one (the callback also replies and frees
 * it). */
#ifndef SLUICE_EXPORT_REQUEST_EXECUTOR_H
#define SLUICE_EXPORT_REQUEST_EXECUTOR_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- the reader's input buffer and polling ---------------------------- */

struct sl_stream_reader {
  int fd;
  char *buf;                     /* bytes [pos, end) are unparsed */
  size_t size, pos, end;
  unsigned parsed_since_recv;    /* requests the server parsed from the last recv */
  /* Polling (see request-executor.c): the window now and at most. */
  uint64_t poll_ns, poll_max_ns;
  int max_pollers;
  bool depth_one;                /* the last request came alone: poll for the next */
};

/* SIZE bytes of input buffer; poll up to POLL_US microseconds (0: never).
 * Returns 0 or -ENOMEM. */
int sl_stream_reader_init(struct sl_stream_reader *r, int fd, size_t size,
                          unsigned poll_us);
void sl_stream_reader_destroy(struct sl_stream_reader *r);
/* Make N (<= size) bytes available at sl_stream_peek(); -1 on EOF or error. */
int sl_stream_fill(struct sl_stream_reader *r, size_t n);
static inline const char *sl_stream_peek(const struct sl_stream_reader *r)
{
  return r->buf + r->pos;
}
void sl_stream_consume(struct sl_stream_reader *r, size_t n);
static inline bool sl_stream_pending(const struct sl_stream_reader *r)
{
  return r->end > r->pos;
}
/* Move LEN payload bytes to DST, or drop them if DST is NULL. */
int sl_stream_payload(struct sl_stream_reader *r, char *dst, size_t len);

/* ---- the executor ----------------------------------------------------- */

struct sl_exec_item {
  struct sl_exec_item *next;     /* the executor's, while queued */
};

struct sl_executor_ops {
  /* Run ITEM and reply; ITEM is the callee's from then on. */
  void (*run)(void *ctx, struct sl_exec_item *item);
  /* 0 .. SL_EXEC_CLASSES - 1: a kind of request whose service time decides whether it may
   * run in the reader (say reads, and writes without FUA); -1: never
   * timed, runs in the reader only when alone. */
  int (*service_class)(const struct sl_exec_item *item);
  /* Optional: how many requests ITEM carries (a batch of reads run as one
   * item); its service time counts per request.  NULL: one. */
  unsigned (*weight)(const struct sl_exec_item *item);
  /* Bit i: class i's service time starts unknown (too slow to run in the
   * reader) until one of its items has been timed; else it starts at 0. */
  unsigned cold_classes;
};
#define SL_EXEC_CLASSES 3
#define SL_EXEC_UNKNOWN_NS UINT32_MAX

#define SL_EXECUTOR_MAX_WORKERS 16

struct sl_executor {
  const struct sl_executor_ops *ops;
  void *ctx;
  unsigned max_queued;
  pthread_mutex_t qlock;
  pthread_cond_t work_cond, space_cond;
  struct sl_exec_item *qhead, *qtail;
  unsigned queued, idle, wakes_pending;
  bool reader_waiting;
  bool closing;
  pthread_t workers[SL_EXECUTOR_MAX_WORKERS];
  unsigned nworkers;
  atomic_uint busy;                   /* requests queued or executing */
  _Atomic uint32_t service_ns[SL_EXEC_CLASSES]; /* recent service time per request, per class */
};

/* Start NWORKERS (at most SL_EXECUTOR_MAX_WORKERS) workers; at most
 * MAX_QUEUED requests wait for one (the reader blocks beyond).  Returns 0
 * or -1 when no worker could be started. */
int sl_executor_start(struct sl_executor *ex, const struct sl_executor_ops *ops,
                      void *ctx, unsigned nworkers, unsigned max_queued);
/* Run ITEM (LEN payload bytes, of all its requests) in this thread or
 * hand it to a worker.
 * MORE_WAITING: the reader already holds further requests.  Returns true
 * if the request came alone (nothing executing, nothing behind it). */
bool sl_executor_dispatch(struct sl_executor *ex, struct sl_exec_item *item,
                          size_t len, bool more_waiting);
/* Let queued and running requests finish, then join the workers. */
void sl_executor_stop(struct sl_executor *ex);

#endif
