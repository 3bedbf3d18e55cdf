/* Unit tests of the trace readers: the block-expansion rules of each
 * format, vscsi v1/v2 detection, skipped "*" lines, compressed input, and
 * messages for malformed input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zlib.h>
#include <zstd.h>

#include "sim/trace.h"
#include "sluice/error.h"

static char path[64];

static void write_file(const void *data, size_t len)
{
  strcpy(path, "/tmp/test-sim-readers.XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
}

static void read_ok(const char *format, bool reads_only, struct sl_trace *t)
{
  struct sl_trace_options o = { .reads_only = reads_only };
  int r = sl_trace_read(path, format, &o, t);
  if (r < 0)
    fail_msg("%s", sl_last_error());
  unlink(path);
}

static void expect_blocks(struct sl_trace *t, const uint64_t *want, size_t n)
{
  assert_int_equal(t->len, n);
  for (size_t i = 0; i < n; i++)
    assert_int_equal(t->blocks[i], want[i]);
  sl_trace_free(t);
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v; p[1] = v >> 8; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v); put16(p + 2, v >> 16); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v); put32(p + 4, v >> 32); }

struct req { uint16_t cmd; uint32_t len; uint64_t lbn; };
static const struct req reqs[] = {
  { 0x28, 4096, 0 },    /* block 0 */
  { 0x2a, 1024, 7 },    /* sectors 7..8: blocks 0 and 1 */
  { 0x28, 512, 16 },    /* block 2 */
  { 0x28, 8192, 20 },   /* sectors 20..35: blocks 2, 3, 4 */
};

static void test_vscsi_v1(void **s)
{
  uint8_t buf[4 * 32] = { 0 };
  for (int i = 0; i < 4; i++) {
    uint8_t *p = buf + 32 * i;
    put32(p, i);
    put32(p + 4, reqs[i].len);
    put16(p + 12, reqs[i].cmd);
    put16(p + 14, 0x0100);
    put64(p + 16, reqs[i].lbn);
  }
  struct sl_trace t;
  write_file(buf, sizeof buf);
  read_ok("vscsi", false, &t);
  expect_blocks(&t, (uint64_t[]){ 0, 0, 1, 2, 2, 3, 4 }, 7);
  write_file(buf, sizeof buf);
  read_ok("vscsi", true, &t);
  expect_blocks(&t, (uint64_t[]){ 0, 2, 2, 3, 4 }, 5);
}

static void test_vscsi_v2(void **s)
{
  uint8_t buf[4 * 40] = { 0 };
  for (int i = 0; i < 4; i++) {
    uint8_t *p = buf + 40 * i;
    put16(p, reqs[i].cmd);
    put16(p + 2, 0x0200);
    put32(p + 4, i);
    put32(p + 8, reqs[i].len);
    put64(p + 16, reqs[i].lbn);
  }
  struct sl_trace t;
  write_file(buf, sizeof buf);
  read_ok("vscsi", false, &t);
  expect_blocks(&t, (uint64_t[]){ 0, 0, 1, 2, 2, 3, 4 }, 7);
}

static void test_vscsi_huge_length(void **s)
{
  /* A 4 GiB - 1 byte request at sector 0 touches 2^20 blocks of 4 KiB;
   * the length must not wrap round to a one-block request. */
  uint8_t buf[2 * 32] = { 0 };
  for (int i = 0; i < 2; i++) {
    uint8_t *p = buf + 32 * i;
    put32(p + 4, i == 0 ? 0xffffffffu : 512);
    put16(p + 12, 0x28);
    put16(p + 14, 0x0100);
  }
  struct sl_trace t;
  write_file(buf, sizeof buf);
  read_ok("vscsi", false, &t);
  assert_int_equal(t.len, (1u << 20) + 1);
  assert_int_equal(t.blocks[(1u << 20) - 1], (1u << 20) - 1);
  assert_int_equal(t.blocks[1u << 20], 0);
  sl_trace_free(&t);
}

static void test_vscsi_bad(void **s)
{
  uint8_t buf[64] = { 0 };
  put16(buf + 14, 0x0100);
  put16(buf + 46, 0x0100);
  put32(buf + 4, 512);
  write_file(buf, 50); /* second record cut short */
  struct sl_trace t;
  assert_true(sl_trace_read(path, "vscsi", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "record 1 is truncated (18 of 32"));
  assert_non_null(strstr(sl_last_error(), path));
  unlink(path);
  memset(buf, 'x', sizeof buf);
  write_file(buf, sizeof buf);
  assert_true(sl_trace_read(path, "vscsi", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "not a VSCSI trace"));
  unlink(path);
}

static void test_txt_skips_stars(void **s)
{
  const char *text = "5\n*\n6\r\n\n*\n5\n7";
  struct sl_trace t;
  write_file(text, strlen(text));
  read_ok("txt", false, &t);
  expect_blocks(&t, (uint64_t[]){ 5, 6, 5, 7 }, 4);
  text = "5\n6x\n";
  write_file(text, strlen(text));
  assert_true(sl_trace_read(path, "txt", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "line 2: expected one block number"));
  unlink(path);
}

static void test_lis_expands(void **s)
{
  const char *text = "10 3 0 1\n100 1 0 2\n7 0 0 3\n11 2 0 4\n";
  struct sl_trace t;
  write_file(text, strlen(text));
  read_ok("lis", false, &t);
  expect_blocks(&t, (uint64_t[]){ 10, 11, 12, 100, 11, 12 }, 6);
}

static void test_u32_and_oracle(void **s)
{
  uint8_t buf[12];
  put32(buf, 7);
  put32(buf + 4, 0xfffffffe);
  put32(buf + 8, 7);
  struct sl_trace t;
  write_file(buf, sizeof buf);
  read_ok("u32", false, &t);
  expect_blocks(&t, (uint64_t[]){ 7, 0xfffffffe, 7 }, 3);
  write_file(buf, 10);
  assert_true(sl_trace_read(path, "u32", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "entry 2 is truncated (2 of 4"));
  unlink(path);

  uint8_t rec[48] = { 0 };
  put64(rec + 4, 1ULL << 40);
  put32(rec + 12, 65536); /* a whole request stays one access */
  put64(rec + 24 + 4, 3);
  write_file(rec, sizeof rec);
  read_ok("oracle", false, &t);
  expect_blocks(&t, (uint64_t[]){ 1ULL << 40, 3 }, 2);
}

static void test_msr_tencent_systor(void **s)
{
  const char *msr = "128166385295514663,hm,0,Write,8192,8192,2833\n"
                    "128166385295514878,hm,0,Read,4095,2,2617\n";
  struct sl_trace t;
  write_file(msr, strlen(msr));
  read_ok("msr", false, &t);
  expect_blocks(&t, (uint64_t[]){ 2, 3, 0, 1 }, 4);
  write_file(msr, strlen(msr));
  read_ok("msr", true, &t);
  expect_blocks(&t, (uint64_t[]){ 0, 1 }, 2);

  const char *tencent = "1538323200,8,16,1,5\n1538323199,15,1,0,6\n";
  write_file(tencent, strlen(tencent));
  read_ok("tencent", false, &t);
  expect_blocks(&t, (uint64_t[]){ (5ULL << 40) | 1, (5ULL << 40) | 2,
                                  (6ULL << 40) | 1 }, 3);
  const char *bad = "1538323200,8,16,1,5\n1538323200,8,16\n";
  write_file(bad, strlen(bad));
  assert_true(sl_trace_read(path, "tencent", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "line 2: expected"));
  unlink(path);

  const char *systor = "Timestamp,Response,IOType,LUN,Offset,Size\n"
                       "1.5,0.1,R,0,4096,4096\n1.6,0.1,W,1,0,1\n";
  write_file(systor, strlen(systor));
  read_ok("systor", false, &t);
  expect_blocks(&t, (uint64_t[]){ 1, 1ULL << 48 }, 2);
}

static void test_compressed(void **s)
{
  const char *text = "1\n2\n*\n3\n";
  uint8_t gz[256], zs[256];
  /* gzip via zlib's deflate with a gzip wrapper */
  z_stream z = { 0 };
  assert_int_equal(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8,
                                Z_DEFAULT_STRATEGY), Z_OK);
  z.next_in = (Bytef *)text;
  z.avail_in = strlen(text);
  z.next_out = gz;
  z.avail_out = sizeof gz;
  assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
  size_t gzlen = sizeof gz - z.avail_out;
  deflateEnd(&z);
  struct sl_trace t;
  write_file(gz, gzlen);
  read_ok("txt", false, &t);
  expect_blocks(&t, (uint64_t[]){ 1, 2, 3 }, 3);
  /* two gzip members back to back read as one stream */
  uint8_t two[512];
  memcpy(two, gz, gzlen);
  memcpy(two + gzlen, gz, gzlen);
  write_file(two, 2 * gzlen);
  read_ok("txt", false, &t);
  expect_blocks(&t, (uint64_t[]){ 1, 2, 3, 1, 2, 3 }, 6);

  size_t zlen = ZSTD_compress(zs, sizeof zs, text, strlen(text), 3);
  assert_false(ZSTD_isError(zlen));
  write_file(zs, zlen);
  read_ok("txt", false, &t);
  expect_blocks(&t, (uint64_t[]){ 1, 2, 3 }, 3);
  write_file(zs, zlen - 3);
  assert_true(sl_trace_read(path, "txt", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "truncated zstd data"));
  unlink(path);
}

static void test_unknown_format(void **s)
{
  struct sl_trace t;
  assert_true(sl_trace_read("/dev/null", "nope", NULL, &t) < 0);
  assert_non_null(strstr(sl_last_error(), "valid: vscsi, oracle, lis, txt"));
}

static void test_footprint_next_use(void **s)
{
  uint64_t blocks[] = { 4, 5, 4, 6, 5 };
  struct sl_trace t = { .blocks = blocks, .len = 5 };
  assert_int_equal(sl_trace_footprint(&t), 3);
  uint64_t *nu;
  assert_int_equal(sl_trace_next_use(&t, &nu), 0);
  uint64_t want[] = { 2, 4, UINT64_MAX, UINT64_MAX, UINT64_MAX };
  for (int i = 0; i < 5; i++)
    assert_int_equal(nu[i], want[i]);
  free(nu);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_vscsi_v1),
    cmocka_unit_test(test_vscsi_v2),
    cmocka_unit_test(test_vscsi_huge_length),
    cmocka_unit_test(test_vscsi_bad),
    cmocka_unit_test(test_txt_skips_stars),
    cmocka_unit_test(test_lis_expands),
    cmocka_unit_test(test_u32_and_oracle),
    cmocka_unit_test(test_msr_tencent_systor),
    cmocka_unit_test(test_compressed),
    cmocka_unit_test(test_unknown_format),
    cmocka_unit_test(test_footprint_next_use),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
