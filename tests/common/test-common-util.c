/* Unit tests for lib/common: size parsing, error messages, and full reads
 * (sl_pread_full / sl_pread_count: whole, short at end of file, past it). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include "common/util.h"

static void test_parse_size_suffixes(void **state)
{
  (void)state;
  uint64_t v;
  assert_int_equal(sl_parse_size("size", "512", &v), 0);
  assert_int_equal(v, 512);
  assert_int_equal(sl_parse_size("size", "64K", &v), 0);
  assert_int_equal(v, 65536);
  assert_int_equal(sl_parse_size("size", "1M", &v), 0);
  assert_int_equal(v, 1 << 20);
  assert_int_equal(sl_parse_size("size", "1.5G", &v), 0);
  assert_int_equal(v, 3ull << 29);
  assert_int_equal(sl_parse_size("size", "2GiB", &v), 0);
  assert_int_equal(v, 2ull << 30);
  assert_int_equal(sl_parse_size("size", "4kb", &v), 0);
  assert_int_equal(v, 4096);
}

static void test_parse_size_errors(void **state)
{
  (void)state;
  uint64_t v;
  assert_int_equal(sl_parse_size("cluster size", "12Q", &v), -EINVAL);
  assert_non_null(strstr(sl_last_error(), "cluster size"));
  assert_non_null(strstr(sl_last_error(), "12Q"));
  assert_int_equal(sl_parse_size("size", "", &v), -EINVAL);
  assert_int_equal(sl_parse_size("size", "-1", &v), -EINVAL);
  assert_int_equal(sl_parse_size("size", "0.3", &v), -EINVAL);
  assert_int_equal(sl_parse_size("size", "99999999E", &v), -ERANGE);
  assert_int_equal(sl_parse_size("size", "1Kx", &v), -EINVAL);
}

static void test_parse_uint_range(void **state)
{
  (void)state;
  uint64_t v;
  assert_int_equal(sl_parse_uint("depth", "32", 1, 64, &v), 0);
  assert_int_equal(v, 32);
  assert_int_equal(sl_parse_uint("depth", "0", 1, 64, &v), -ERANGE);
  assert_int_equal(sl_parse_uint("depth", "abc", 1, 64, &v), -EINVAL);
}

static void test_error_prefix(void **state)
{
  (void)state;
  assert_int_equal(sl_error(ENOENT, "base.qcow2: missing"), -ENOENT);
  assert_int_equal(sl_error_prefix(ENOENT, "top.qcow2"), -ENOENT);
  assert_string_equal(sl_last_error(), "top.qcow2: base.qcow2: missing");
  assert_int_equal(sl_last_errno(), ENOENT);
}

static void test_human_size(void **state)
{
  (void)state;
  char buf[32];
  assert_string_equal(sl_human_size(100, buf, sizeof buf), "100 B");
  assert_string_equal(sl_human_size(65536, buf, sizeof buf), "64 KiB");
  assert_string_equal(sl_human_size(3ull << 29, buf, sizeof buf), "1.5 GiB");
}

/* A 10000-byte file: a read inside it is whole, one across its end gets
 * what is there and zeros after, one past it all zeros; a descriptor that
 * cannot pread is an error, not zeros. */
static void test_pread_full_and_count(void **state)
{
  (void)state;
  char path[] = "/tmp/test-common-util.XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  unlink(path);
  static char data[10000], buf[4096], want[4096];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (char)(i * 7 + 1);
  assert_int_equal(write(fd, data, sizeof data), (ssize_t)sizeof data);

  memset(buf, 0x55, sizeof buf);
  assert_int_equal(sl_pread_full(fd, buf, 4096, 4096), 0);
  assert_memory_equal(buf, data + 4096, 4096);

  memset(buf, 0x55, sizeof buf);
  memset(want, 0, sizeof want);
  memcpy(want, data + 8192, 10000 - 8192);
  assert_int_equal(sl_pread_full(fd, buf, 4096, 8192), 0);
  assert_memory_equal(buf, want, 4096);
  memset(buf, 0x55, sizeof buf);
  assert_int_equal(sl_pread_count(fd, -1, buf, 4096, 8192), 10000 - 8192);
  assert_memory_equal(buf, want, 4096);

  memset(buf, 0x55, sizeof buf);
  memset(want, 0, sizeof want);
  assert_int_equal(sl_pread_full(fd, buf, 4096, 20000), 0);
  assert_memory_equal(buf, want, 4096);
  assert_int_equal(sl_pread_count(fd, -1, buf, 4096, 20000), 0);
  close(fd);

  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(sl_pread_full(p[0], buf, 16, 0), -ESPIPE);
  assert_int_equal(sl_pread_count(p[0], -1, buf, 16, 0), -ESPIPE);
  close(p[0]);
  close(p[1]);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse_size_suffixes),
    cmocka_unit_test(test_parse_size_errors),
    cmocka_unit_test(test_parse_uint_range),
    cmocka_unit_test(test_error_prefix),
    cmocka_unit_test(test_human_size),
    cmocka_unit_test(test_pread_full_and_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
