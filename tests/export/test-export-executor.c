/* Unit tests of lib/export/request-executor.c, the protocol-free request
 * executor the NBD server drives.  What could go wrong, checked by which
 * thread ran what and by what arrived, not by what the functions return:
 *  - a request that comes alone runs in the caller's thread (no hand-off at
 *    queue depth 1), and dispatch says it came alone;
 *  - requests that are slow and have others behind them go to the workers
 *    and run in parallel;
 *  - a timed class whose requests complete fast runs in the caller even
 *    with others behind it; one that turned slow goes to the workers;
 *  - at most max_queued requests wait: the reader blocks beyond, and is
 *    released as workers take them (no request lost or run twice);
 *  - stop waits for every queued and running request;
 *  - the stream reader delivers exactly the bytes sent, across recv
 *    boundaries, and a large payload arrives whole straight into its
 *    destination; end of stream is an error, never a short read. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "export/request-executor.h"

struct item {
  struct sl_exec_item exec;
  int cls;                 /* what service_class answers */
  unsigned sleep_us;       /* how long running it takes */
  pthread_t ran_on;
  atomic_int *runs;        /* incremented once per run */
  atomic_int *running, *max_running;
};

static int item_class(const struct sl_exec_item *it)
{
  return ((const struct item *)it)->cls;
}

static void item_run(void *ctx, struct sl_exec_item *it)
{
  (void)ctx;
  struct item *i = (struct item *)it;
  i->ran_on = pthread_self();
  if (i->running) {
    int now = atomic_fetch_add(i->running, 1) + 1;
    int m = atomic_load(i->max_running);
    while (now > m && !atomic_compare_exchange_weak(i->max_running, &m, now))
      ;
  }
  if (i->sleep_us)
    usleep(i->sleep_us);
  if (i->running)
    atomic_fetch_sub(i->running, 1);
  atomic_fetch_add(i->runs, 1);
}

static const struct sl_executor_ops ops = {item_run, item_class};

static void alone_runs_in_caller(void **state)
{
  (void)state;
  struct sl_executor ex;
  atomic_int runs = 0;
  assert_int_equal(sl_executor_start(&ex, &ops, NULL, 4, 8), 0);
  struct item i = {.cls = -1, .runs = &runs};
  assert_true(sl_executor_dispatch(&ex, &i.exec, 4096, false));
  assert_int_equal(atomic_load(&runs), 1);
  assert_true(pthread_equal(i.ran_on, pthread_self()));
  /* With more waiting behind it, it is not alone: a worker runs it. */
  struct item j = {.cls = -1, .runs = &runs};
  assert_false(sl_executor_dispatch(&ex, &j.exec, 4096, true));
  sl_executor_stop(&ex);
  assert_int_equal(atomic_load(&runs), 2);
  assert_false(pthread_equal(j.ran_on, pthread_self()));
}

static void slow_requests_run_in_parallel(void **state)
{
  (void)state;
  struct sl_executor ex;
  atomic_int runs = 0, running = 0, max_running = 0;
  enum { N = 8 };
  struct item it[N];
  assert_int_equal(sl_executor_start(&ex, &ops, NULL, 4, 64), 0);
  for (int k = 0; k < N; k++) {
    it[k] = (struct item){.cls = -1, .sleep_us = 50000, .runs = &runs,
                          .running = &running, .max_running = &max_running};
    sl_executor_dispatch(&ex, &it[k].exec, 4096, true);
  }
  sl_executor_stop(&ex); /* waits for all of them */
  assert_int_equal(atomic_load(&runs), N);
  assert_true(atomic_load(&max_running) >= 2);
  assert_true(atomic_load(&max_running) <= 4);
  for (int k = 0; k < N; k++)
    assert_false(pthread_equal(it[k].ran_on, pthread_self()));
}

static void fast_class_runs_inline_until_slow(void **state)
{
  (void)state;
  struct sl_executor ex;
  atomic_int runs = 0;
  assert_int_equal(sl_executor_start(&ex, &ops, NULL, 2, 64), 0);
  /* Fast requests of class 0: inline even with others waiting. */
  struct item fast = {.cls = 0, .runs = &runs};
  sl_executor_dispatch(&ex, &fast.exec, 4096, true);
  assert_true(pthread_equal(fast.ran_on, pthread_self()));
  /* Too large to run inline whatever its class's speed. */
  struct item big = {.cls = 0, .runs = &runs};
  sl_executor_dispatch(&ex, &big.exec, 1u << 20, true);
  /* A slow one (run alone, so in the caller) raises class 0's estimate... */
  struct item slow = {.cls = 0, .sleep_us = 30000, .runs = &runs};
  sl_executor_stop(&ex);
  assert_false(pthread_equal(big.ran_on, pthread_self()));
  assert_int_equal(sl_executor_start(&ex, &ops, NULL, 2, 64), 0);
  assert_true(sl_executor_dispatch(&ex, &slow.exec, 4096, false));
  /* ...so the next class-0 request with others behind it goes to a worker. */
  struct item after = {.cls = 0, .runs = &runs};
  sl_executor_dispatch(&ex, &after.exec, 4096, true);
  sl_executor_stop(&ex);
  assert_false(pthread_equal(after.ran_on, pthread_self()));
  assert_int_equal(atomic_load(&runs), 4);
}

struct flood {
  struct sl_executor *ex;
  struct item *items;
  int n;
};

static void *flood_main(void *opaque)
{
  struct flood *f = opaque;
  for (int k = 0; k < f->n; k++)
    sl_executor_dispatch(f->ex, &f->items[k].exec, 4096, true);
  return NULL;
}

static void queue_is_bounded(void **state)
{
  (void)state;
  struct sl_executor ex;
  atomic_int runs = 0, running = 0, max_running = 0;
  enum { N = 40 };
  struct item *it = calloc(N, sizeof *it);
  assert_non_null(it);
  for (int k = 0; k < N; k++)
    it[k] = (struct item){.cls = -1, .sleep_us = 5000, .runs = &runs,
                          .running = &running, .max_running = &max_running};
  assert_int_equal(sl_executor_start(&ex, &ops, NULL, 1, 4), 0);
  struct flood f = {&ex, it, N};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, flood_main, &f), 0);
  /* One worker at 5 ms a request: the reader cannot be far ahead. */
  for (int k = 0; k < 20; k++) {
    usleep(2000);
    pthread_mutex_lock(&ex.qlock);
    unsigned q = ex.queued;
    pthread_mutex_unlock(&ex.qlock);
    assert_true(q <= 4);
  }
  pthread_join(t, NULL);
  sl_executor_stop(&ex);
  assert_int_equal(atomic_load(&runs), N);
  assert_int_equal(atomic_load(&max_running), 1);
  free(it);
}

struct sender {
  int fd;
  const char *buf;
  size_t len;
};

static void *send_slowly(void *opaque)
{
  struct sender *s = opaque;
  size_t off = 0, step = 7;
  while (off < s->len) {
    size_t n = s->len - off < step ? s->len - off : step;
    assert_int_equal(send(s->fd, s->buf + off, n, MSG_NOSIGNAL), (ssize_t)n);
    off += n;
    step = step * 3 + 1;     /* odd sizes across recv boundaries */
    if (off < 4096)
      usleep(1000);
  }
  shutdown(s->fd, SHUT_WR);
  return NULL;
}

static void stream_reader_delivers_exact_bytes(void **state)
{
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  size_t len = 3u << 20;
  char *src = malloc(len), *dst = malloc(len);
  assert_non_null(src);
  assert_non_null(dst);
  for (size_t k = 0; k < len; k++)
    src[k] = (char)(k * 131 + (k >> 11));
  struct sender s = {sv[1], src, len};
  pthread_t t;
  assert_int_equal(pthread_create(&t, NULL, send_slowly, &s), 0);
  struct sl_stream_reader r;
  assert_int_equal(sl_stream_reader_init(&r, sv[0], 4096, 64), 0);
  /* Headers of 28 bytes, peeked and consumed... */
  size_t got = 0;
  for (int k = 0; k < 50; k++) {
    assert_int_equal(sl_stream_fill(&r, 28), 0);
    assert_memory_equal(sl_stream_peek(&r), src + got, 28);
    sl_stream_consume(&r, 28);
    got += 28;
  }
  /* ...a dropped payload, a small one copied, then a large one whole. */
  assert_int_equal(sl_stream_payload(&r, NULL, 1000), 0);
  got += 1000;
  assert_int_equal(sl_stream_payload(&r, dst, 3000), 0);
  assert_memory_equal(dst, src + got, 3000);
  got += 3000;
  assert_int_equal(sl_stream_payload(&r, dst, len - got), 0);
  assert_memory_equal(dst, src + got, len - got);
  /* End of stream: an error, not a short read. */
  assert_int_equal(sl_stream_fill(&r, 1), -1);
  pthread_join(t, NULL);
  sl_stream_reader_destroy(&r);
  close(sv[0]);
  close(sv[1]);
  free(src);
  free(dst);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(alone_runs_in_caller),
    cmocka_unit_test(slow_requests_run_in_parallel),
    cmocka_unit_test(fast_class_runs_inline_until_slow),
    cmocka_unit_test(queue_is_bounded),
    cmocka_unit_test(stream_reader_delivers_exact_bytes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
