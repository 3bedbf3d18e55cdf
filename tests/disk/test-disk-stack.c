/* The filter stack through the library (issue 4, acceptance 1 and 2).
 *
 * Three trace filters log "TAG > OP" on the way down and "TAG < OP" on the
 * way up, so the log of one request shows the order it passed the stack.
 * The middle one is trace-partial, which implements only write and
 * write-zeroes: every other operation must go straight past it.
 *
 * Filter-level access: a handle from sl_disk_at(disk, NAME) enters below
 * NAME; NAME and everything above must see nothing of its I/O (trace logs,
 * and the counters of two stats filters around crypt).
 *
 * Also: events reach the filters in the documented order, the core's range,
 * read-only and flag checks stop a request before any filter sees it, an
 * error injected by fault travels up through the filters above it, block
 * status keeps the owning chain layer, and the order rules refuse a bad
 * stack with a message naming the filters. */
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "stack-test.h"

#define MiB (1024u * 1024u)

static const char *const modules[] = {
  "trace", "trace-partial", "stats", "crypt", "fault", "throttle", NULL,
};

static const char *trace_log;

/* The log of everything since the last call, compared to EXPECT. */
#define assert_log(expect)                                                  \
  do {                                                                      \
    char *got_ = take_log(trace_log);                                       \
    if (strcmp(got_, (expect)) != 0)                                        \
      fail_msg("trace log:\n%s\nexpected:\n%s", got_, (expect));            \
    free(got_);                                                             \
  } while (0)

static void drop_log(void)
{
  free(take_log(trace_log));
}

/* A: trace, B: trace-partial, C: trace, over IMAGE. */
static struct sl_disk *open_abc(const char *image, bool read_only)
{
  char a[600], b[600], c[600];
  snprintf(a, sizeof a, "trace name=a tag=A log=%s", trace_log);
  snprintf(b, sizeof b, "trace-partial name=b tag=B log=%s", trace_log);
  snprintf(c, sizeof c, "trace name=c tag=C log=%s", trace_log);
  const char *desc = write_descriptor("abc.disk", image, a, b, c, NULL);
  struct sl_disk *d = open_disk(desc, read_only);
  assert_non_null(d);
  return d;
}

/* "A > op\nB > op\n..." for the tags given top first: down then up. */
static char *nested(const char *op, const char *tags)
{
  static char out[1024];
  size_t n = strlen(tags), k = 0;
  out[0] = '\0';
  for (size_t i = 0; i < n; i++)
    k += (size_t)snprintf(out + k, sizeof out - k, "%c > %s\n", tags[i], op);
  for (size_t i = n; i-- > 0;)
    k += (size_t)snprintf(out + k, sizeof out - k, "%c < %s\n", tags[i], op);
  return out;
}

static void test_layering_every_operation(void **state)
{
  (void)state;
  make_raw("layer.raw", 4 * MiB);
  struct sl_disk *d = open_abc("layer.raw", false);
  /* Opened bottom up; trace-partial has no open. */
  assert_log("C = open\nA = open\n");
  struct sl_handle *top = sl_disk_top(d);

  char buf[8192], back[8192];
  memset(buf, 0x5a, sizeof buf);
  assert_int_equal(sl_disk_pwrite(top, buf, sizeof buf, 65536, 0), 0);
  assert_log(nested("write", "ABC"));
  assert_int_equal(sl_disk_pread(top, back, sizeof back, 65536, 0), 0);
  assert_log(nested("read", "AC"));
  assert_memory_equal(buf, back, sizeof buf);
  assert_int_equal(sl_disk_flush(top), 0);
  assert_log(nested("flush", "AC"));
  assert_int_equal(sl_disk_write_zeroes(top, 65536, 4096, 0), 0);
  assert_log(nested("zero", "ABC"));
  assert_int_equal(sl_disk_discard(top, 69632, 4096), 0);
  assert_log(nested("discard", "AC"));
  struct sl_extent ext;
  assert_int_equal(sl_disk_block_status(top, 0, 4 * MiB, &ext), 0);
  assert_log(nested("block_status", "AC"));

  /* The operations did reach the image. */
  assert_int_equal(sl_disk_pread(top, back, sizeof back, 65536, 0), 0);
  drop_log();
  char zero[8192] = {0};
  assert_memory_equal(back, zero, 8192);   /* zeroed, then discarded */

  /* Events: release top down (what a filter flushes reaches those below),
   * resume and snapshot bottom up. */
  assert_int_equal(sl_disk_drain(d), 0);
  assert_log("A = release\nC = release\n");
  sl_disk_resume(d);
  assert_log("C = resume\nA = resume\n");
  assert_int_equal(sl_disk_snapshot_event(d), 0);
  assert_log("C = snapshot\nA = snapshot\n");
  assert_int_equal(sl_disk_close(d), 0);
  assert_log("A = release\nC = release\n");

  /* The write went to the file itself, at its offset. */
  memset(buf, 0x6b, sizeof buf);
  d = open_abc("layer.raw", false);
  assert_int_equal(sl_disk_pwrite(sl_disk_top(d), buf, 4096, 3 * MiB, 0), 0);
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
  int fd = open(tpath("layer.raw"), O_RDONLY);
  assert_true(fd >= 0);
  assert_int_equal(pread(fd, back, 4096, 3 * MiB), 4096);
  close(fd);
  assert_memory_equal(buf, back, 4096);
}

static void test_block_status_keeps_depth(void **state)
{
  (void)state;
  /* base.raw with data in its first 64K, under a qcow2 overlay. */
  make_raw("base.raw", 2 * MiB);
  int fd = open(tpath("base.raw"), O_WRONLY);
  char data[65536];
  memset(data, 0x11, sizeof data);
  assert_int_equal(pwrite(fd, data, sizeof data, 0), (ssize_t)sizeof data);
  close(fd);
  struct sl_image_create_opts co = {
    .format = SL_FORMAT_QCOW2, .backing_file = "base.raw",
    .backing_format = SL_FORMAT_RAW,
  };
  assert_int_equal(sl_image_create(tpath("over.qcow2"), &co), 0);
  struct sl_disk *d = open_abc("over.qcow2", false);
  struct sl_handle *top = sl_disk_top(d);
  assert_int_equal(sl_disk_pwrite(top, data, 4096, MiB, 0), 0);

  /* What the stack reports is what the image reports, layer included. */
  static const uint64_t offs[] = {0, 65536, MiB, MiB + 4096};
  for (size_t i = 0; i < 4; i++) {
    struct sl_extent via_stack, direct;
    assert_int_equal(sl_disk_block_status(top, offs[i], 2 * MiB - offs[i],
                                          &via_stack), 0);
    assert_int_equal(sl_image_block_status(sl_disk_image(d), offs[i],
                                           2 * MiB - offs[i], &direct), 0);
    assert_int_equal(via_stack.offset, direct.offset);
    assert_int_equal(via_stack.length, direct.length);
    assert_int_equal(via_stack.type, direct.type);
    assert_int_equal(via_stack.depth, direct.depth);
  }
  struct sl_extent e;
  assert_int_equal(sl_disk_block_status(top, 0, 4096, &e), 0);
  assert_int_equal(e.depth, 1);              /* the backing file owns it */
  assert_int_equal(sl_disk_block_status(top, MiB, 4096, &e), 0);
  assert_int_equal(e.depth, 0);              /* the overlay owns it */
  assert_int_equal(e.type, SL_EXTENT_DATA);
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
}

static void test_filter_level_access_bypasses_above(void **state)
{
  (void)state;
  make_raw("at.raw", 4 * MiB);
  struct sl_disk *d = open_abc("at.raw", false);
  drop_log();
  char buf[4096], back[4096];
  memset(buf, 0x33, sizeof buf);

  struct sl_handle *below_a = sl_disk_at(d, "a");
  struct sl_handle *below_b = sl_disk_at(d, "b");
  struct sl_handle *below_c = sl_disk_at(d, "c");
  assert_non_null(below_a);
  assert_non_null(below_b);
  assert_non_null(below_c);
  assert_int_equal(sl_disk_size(below_c), 4 * MiB);

  assert_int_equal(sl_disk_pwrite(below_a, buf, 4096, 0, 0), 0);
  assert_log(nested("write", "BC"));
  assert_int_equal(sl_disk_pread(below_a, back, 4096, 0, 0), 0);
  assert_log(nested("read", "C"));
  assert_int_equal(sl_disk_pwrite(below_b, buf, 4096, 4096, 0), 0);
  assert_log(nested("write", "C"));
  assert_int_equal(sl_disk_flush(below_b), 0);
  assert_log(nested("flush", "C"));
  /* Below the bottom filter: straight to the image, nobody sees it. */
  memset(buf, 0x44, sizeof buf);
  assert_int_equal(sl_disk_pwrite(below_c, buf, 4096, 8192, 0), 0);
  assert_int_equal(sl_disk_write_zeroes(below_c, 12288, 4096, 0), 0);
  assert_int_equal(sl_disk_discard(below_c, 16384, 4096), 0);
  assert_int_equal(sl_disk_flush(below_c), 0);
  struct sl_extent e;
  assert_int_equal(sl_disk_block_status(below_c, 0, 4096, &e), 0);
  assert_log("");
  /* ...and the top sees what was written below it. */
  assert_int_equal(sl_disk_pread(sl_disk_top(d), back, 4096, 8192, 0), 0);
  assert_memory_equal(buf, back, 4096);
  assert_log(nested("read", "AC"));

  sl_error_clear();
  assert_null(sl_disk_at(d, "nope"));
  assert_non_null(strstr(sl_last_error(), "nope"));
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
}

/* "  OP ops N bytes M errors E" from a stats file. */
static uint64_t stat_of(const char *file, const char *op, const char *what)
{
  char *s = slurp(file, NULL);
  char key[64];
  snprintf(key, sizeof key, "  %s ops ", op);
  char *p = strstr(s, key);
  if (!p)
    fail_msg("no '%s' in %s:\n%s", op, file, s);
  uint64_t ops, bytes, errors;
  if (sscanf(p + strlen(key), "%" SCNu64 " bytes %" SCNu64 " errors %" SCNu64,
             &ops, &bytes, &errors) != 3)
    fail_msg("bad stats line in %s", file);
  free(s);
  return strcmp(what, "ops") == 0 ? ops : strcmp(what, "bytes") == 0 ? bytes
                                                                     : errors;
}

/* Lines of LOG that are exactly LINE. */
static int count_lines(const char *log, const char *line)
{
  int n = 0;
  size_t len = strlen(line);
  for (const char *p = log; (p = strstr(p, line)); p += len)
    if ((p == log || p[-1] == '\n') && p[len] == '\n')
      n++;
  return n;
}

static void test_access_below_crypt_counts(void **state)
{
  (void)state;
  make_raw("c.raw", 4 * MiB);
  char low[600];
  snprintf(low, sizeof low, "trace name=low tag=L log=%s", trace_log);
  /* stats (observe) must be on top; trace may sit anywhere. */
  const char *desc = write_descriptor("c.disk", "c.raw",
      "stats name=top file=top.stats print=no",
      "throttle iops=100000",
      "crypt key=c.key", low, NULL);
  struct sl_disk *d = open_disk(desc, false);
  assert_non_null(d);
  drop_log();
  struct sl_handle *top = sl_disk_top(d);
  struct sl_handle *plain = sl_disk_at(d, "throttle");  /* above crypt */
  struct sl_handle *cipher = sl_disk_at(d, "crypt");
  assert_non_null(plain);
  assert_non_null(cipher);

  char text[4096], back[4096];
  for (size_t i = 0; i < sizeof text; i++)
    text[i] = (char)('a' + i % 26);
  for (int i = 0; i < 8; i++)
    assert_int_equal(sl_disk_pwrite(top, text, 4096, (uint64_t)i * 4096, 0), 0);
  /* A backup below the throttle still reads plaintext... */
  for (int i = 0; i < 3; i++) {
    assert_int_equal(sl_disk_pread(plain, back, 4096, (uint64_t)i * 4096, 0), 0);
    assert_memory_equal(text, back, 4096);
  }
  /* ...and below crypt, ciphertext. */
  assert_int_equal(sl_disk_pread(cipher, back, 4096, 0, 0), 0);
  assert_memory_not_equal(text, back, 4096);
  assert_int_equal(sl_disk_pread(cipher, back, 4096, 4096, 0), 0);
  assert_int_equal(sl_disk_close(d), 0);

  const char *ts = tpath("top.stats");
  assert_int_equal(stat_of(ts, "write", "ops"), 8);
  assert_int_equal(stat_of(ts, "write", "bytes"), 8 * 4096);
  assert_int_equal(stat_of(ts, "read", "ops"), 0);   /* bypassed */
  char *log = take_log(trace_log);
  assert_int_equal(count_lines(log, "L > write"), 8);
  assert_int_equal(count_lines(log, "L > read"), 3 + 2);
  free(log);
}

static void test_core_checks_before_any_filter(void **state)
{
  (void)state;
  make_raw("chk.raw", MiB);
  struct sl_disk *d = open_abc("chk.raw", false);
  drop_log();
  struct sl_handle *top = sl_disk_top(d);
  char buf[4096] = {0};
  assert_int_equal(sl_disk_pread(top, buf, 4096, MiB - 512, 0), -EINVAL);
  assert_int_equal(sl_disk_pwrite(top, buf, 4096, UINT64_MAX - 100, 0), -EINVAL);
  assert_int_equal(sl_disk_discard(top, MiB, 1), -EINVAL);
  assert_int_equal(sl_disk_write_zeroes(top, 0, 4096, 0x80), -EINVAL);
  assert_int_equal(sl_disk_pread(top, buf, 512, 0, SL_FUA), -EINVAL);
  struct sl_extent e;
  assert_int_equal(sl_disk_block_status(top, MiB, 512, &e), -EINVAL);
  assert_log("");
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();

  d = open_abc("chk.raw", true);
  drop_log();
  top = sl_disk_top(d);
  assert_true(sl_disk_read_only(top));
  assert_true(sl_disk_read_only(sl_disk_at(d, "c")));
  assert_int_equal(sl_disk_pwrite(top, buf, 512, 0, 0), -EROFS);
  assert_int_equal(sl_disk_write_zeroes(sl_disk_at(d, "a"), 0, 512, 0), -EROFS);
  assert_int_equal(sl_disk_pread(top, buf, 512, 0, 0), 0);
  assert_log(nested("read", "AC"));
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
}

static void test_fault_error_travels_up(void **state)
{
  (void)state;
  make_raw("f.raw", MiB);
  char a[600], c[600];
  snprintf(a, sizeof a, "trace name=a tag=A log=%s", trace_log);
  snprintf(c, sizeof c, "trace name=c tag=C log=%s", trace_log);
  const char *desc = write_descriptor("f.disk", "f.raw", a,
      "fault op=write+flush start=64K end=128K error=ENOSPC", c, NULL);
  struct sl_disk *d = open_disk(desc, false);
  assert_non_null(d);
  drop_log();
  struct sl_handle *top = sl_disk_top(d);
  char buf[4096];
  memset(buf, 0x77, sizeof buf);

  sl_error_clear();
  assert_int_equal(sl_disk_pwrite(top, buf, 4096, 64 * 1024, 0), -ENOSPC);
  assert_non_null(strstr(sl_last_error(), "injected"));
  assert_log(nested("write", "A"));        /* C never saw it */
  /* Overlapping the range from below counts too. */
  assert_int_equal(sl_disk_pwrite(top, buf, 8192, 60 * 1024, 0), -ENOSPC);
  assert_log(nested("write", "A"));
  assert_int_equal(sl_disk_flush(top), -ENOSPC);
  assert_log(nested("flush", "A"));
  /* Outside the range, and other operations, still work. */
  assert_int_equal(sl_disk_pwrite(top, buf, 4096, 128 * 1024, 0), 0);
  assert_log(nested("write", "AC"));
  assert_int_equal(sl_disk_pread(top, buf, 4096, 64 * 1024, 0), 0);
  assert_log(nested("read", "AC"));
  char zero[4096] = {0};
  assert_memory_equal(buf, zero, 4096);   /* the failed write left nothing */
  /* Below the fault the disk is whole. */
  assert_int_equal(sl_disk_flush(sl_disk_at(d, "fault")), 0);
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
}

static void test_extra_filters_sit_on_top(void **state)
{
  (void)state;
  make_raw("x.raw", MiB);
  char c[600], x[600];
  snprintf(c, sizeof c, "trace name=c tag=C log=%s", trace_log);
  snprintf(x, sizeof x, "trace:name=x,tag=X,log=%s", trace_log);
  const char *desc = write_descriptor("x.disk", "x.raw", c, NULL);
  const char *extra[] = {x};
  struct sl_disk_open_opts o = {.extra_filters = extra, .n_extra_filters = 1};
  struct sl_disk *d;
  assert_int_equal(sl_disk_open(desc, &o, &d), 0);
  drop_log();
  assert_int_equal(sl_disk_filter_count(d), 2);
  assert_string_equal(sl_disk_filter_name(d, 0), "x");
  char buf[512];
  assert_int_equal(sl_disk_pread(sl_disk_top(d), buf, 512, 0, 0), 0);
  assert_log(nested("read", "XC"));
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();

  /* An extra filter may not take a name already in the stack. */
  snprintf(x, sizeof x, "trace:name=c,log=%s", trace_log);
  assert_true(sl_disk_open(desc, &o, &d) < 0);
  assert_non_null(strstr(sl_last_error(), "'c'"));
}

static void test_order_rules(void **state)
{
  (void)state;
  make_raw("o.raw", MiB);
  struct sl_disk *d = NULL;
  /* Encryption above throttle: refused, naming both. */
  const char *desc = write_descriptor("o1.disk", "o.raw",
      "crypt key=c.key", "throttle iops=10", NULL);
  assert_true(sl_disk_open(desc, NULL, &d) < 0);
  assert_non_null(strstr(sl_last_error(), "crypt"));
  assert_non_null(strstr(sl_last_error(), "throttle"));
  /* Two throttles: a stack takes at most one. */
  desc = write_descriptor("o2.disk", "o.raw", "throttle iops=10",
                          "throttle name=t2 iops=20", NULL);
  assert_true(sl_disk_open(desc, NULL, &d) < 0);
  assert_non_null(strstr(sl_last_error(), "t2"));
  /* An unknown parameter names the filter and the key. */
  desc = write_descriptor("o3.disk", "o.raw", "throttle iops=10 color=red", NULL);
  assert_true(sl_disk_open(desc, NULL, &d) < 0);
  assert_non_null(strstr(sl_last_error(), "throttle"));
  assert_non_null(strstr(sl_last_error(), "color"));
  /* Observe filters below a throttle are out of order. */
  desc = write_descriptor("o5.disk", "o.raw", "throttle iops=10",
                          "stats print=no", NULL);
  assert_true(sl_disk_open(desc, NULL, &d) < 0);
  assert_non_null(strstr(sl_last_error(), "stats"));
  /* Two stats (the observe class allows several) and any-class filters
   * anywhere are fine. */
  char t[600], t2[600];
  snprintf(t, sizeof t, "trace log=%s", trace_log);
  snprintf(t2, sizeof t2, "trace name=t2 log=%s", trace_log);
  desc = write_descriptor("o4.disk", "o.raw", "stats name=s1 print=no",
                          "stats name=s2 print=no", t, "throttle iops=1000",
                          t2, NULL);
  d = open_disk(desc, false);
  assert_non_null(d);
  assert_int_equal(sl_disk_close(d), 0);
  drop_log();
}

static int setup(void **state)
{
  (void)state;
  stack_test_setup("test-disk-stack", modules);
  static char log[512];
  snprintf(log, sizeof log, "%s", tpath("trace.log"));
  trace_log = log;
  write_test_key("c.key", 7, 1);
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  stack_test_teardown();
  return 0;
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_layering_every_operation),
    cmocka_unit_test(test_block_status_keeps_depth),
    cmocka_unit_test(test_filter_level_access_bypasses_above),
    cmocka_unit_test(test_access_below_crypt_counts),
    cmocka_unit_test(test_core_checks_before_any_filter),
    cmocka_unit_test(test_fault_error_travels_up),
    cmocka_unit_test(test_extra_filters_sit_on_top),
    cmocka_unit_test(test_order_rules),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
