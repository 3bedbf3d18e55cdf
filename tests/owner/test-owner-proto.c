/* Unit tests of the ownership control protocol's parser and encoder
 * (lib/owner/proto.c) and the owner record's (lib/owner/record.c): each
 * documented rule of docs/ownership.md is a case here -- a whole message
 * parses, every prefix asks for more, a wrong magic fails at its first
 * byte, another version is named, oversized lengths and malformed
 * payloads fail; a record round-trips, and each way a record can be
 * wrong gives its own message. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <sluice/error.h>
#include "owner/proto.h"
#include "owner/record.h"

static unsigned char buf[SL_OWNP_HEADER + SL_OWNP_MAX_PAYLOAD + 64];
static struct sl_ownp_msg m;

static size_t raw(uint16_t version, uint16_t type, uint32_t len,
                  const void *payload, size_t n)
{
  memcpy(buf, "SLOC", 4);
  buf[4] = (unsigned char)version; buf[5] = (unsigned char)(version >> 8);
  buf[6] = (unsigned char)type; buf[7] = (unsigned char)(type >> 8);
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (unsigned char)(len >> (8 * i));
  memcpy(buf + 12, payload, n);
  return 12 + n;
}

static void test_release_roundtrip(void **state)
{
  (void)state;
  size_t n = sl_ownp_encode(buf, SL_OWNP_RELEASE, 30000, 0, "sluice serve --take-over");
  assert_int_equal(n, 12 + 8 + 24);
  assert_int_equal(sl_ownp_parse(buf, n, &m), (long)n);
  assert_int_equal(m.type, SL_OWNP_RELEASE);
  assert_int_equal(m.timeout_ms, 30000);
  assert_string_equal(m.text, "sluice serve --take-over");
  /* Every prefix asks for more. */
  for (size_t k = 0; k < n; k++)
    assert_int_equal(sl_ownp_parse(buf, k, &m), 0);
}

static void test_replies(void **state)
{
  (void)state;
  size_t n = sl_ownp_encode(buf, SL_OWNP_RELEASED, 0, 123456789ull, "done");
  assert_int_equal(sl_ownp_parse(buf, n, &m), (long)n);
  assert_int_equal(m.drain_ns, 123456789ull);
  assert_string_equal(m.text, "done");
  n = sl_ownp_encode(buf, SL_OWNP_ERROR, EPERM, 0, "no\x1b[2J");
  assert_int_equal(sl_ownp_parse(buf, n, &m), (long)n);
  assert_int_equal(m.code, EPERM);
  assert_string_equal(m.text, "no [2J"); /* control characters blanked */
  n = sl_ownp_encode(buf, SL_OWNP_INFO, 0, 0, "sluice-owner 1\npid 4\n");
  assert_int_equal(sl_ownp_parse(buf, n, &m), (long)n);
  assert_string_equal(m.text, "sluice-owner 1\npid 4\n");
}

static void test_bad_magic_early(void **state)
{
  (void)state;
  assert_int_equal(sl_ownp_parse("G", 1, &m), -EBADMSG);
  assert_int_equal(sl_ownp_parse("SLOX", 4, &m), -EBADMSG);
  assert_int_equal(sl_ownp_parse("SL", 2, &m), 0);
}

static void test_version_and_lengths(void **state)
{
  (void)state;
  size_t n = raw(2, SL_OWNP_QUERY, 0, NULL, 0);
  assert_int_equal(sl_ownp_parse(buf, n, &m), -EPROTONOSUPPORT);
  assert_int_equal(m.version, 2);
  assert_non_null(strstr(sl_last_error(), "version 1"));
  n = raw(1, SL_OWNP_RELEASE, SL_OWNP_MAX_PAYLOAD + 1, NULL, 0);
  assert_int_equal(sl_ownp_parse(buf, n, &m), -EBADMSG);
  n = raw(1, SL_OWNP_QUERY, 1, "x", 1);
  assert_int_equal(sl_ownp_parse(buf, n, &m), -EBADMSG);
  n = raw(1, 99, 0, NULL, 0);
  assert_int_equal(sl_ownp_parse(buf, n, &m), -EBADMSG);
  assert_non_null(strstr(sl_last_error(), "type 99"));
}

static void test_release_payloads(void **state)
{
  (void)state;
  unsigned char p[16] = {0};
  assert_int_equal(sl_ownp_parse(buf, raw(1, SL_OWNP_RELEASE, 4, p, 4), &m), -EBADMSG);
  p[4] = 1; /* flags */
  assert_int_equal(sl_ownp_parse(buf, raw(1, SL_OWNP_RELEASE, 8, p, 8), &m), -EBADMSG);
  p[4] = 0;
  p[0] = p[1] = p[2] = p[3] = 0xff; /* timeout beyond an hour */
  assert_int_equal(sl_ownp_parse(buf, raw(1, SL_OWNP_RELEASE, 8, p, 8), &m), -EBADMSG);
  memset(p, 0, 8);
  p[8] = '\n';
  assert_int_equal(sl_ownp_parse(buf, raw(1, SL_OWNP_RELEASE, 9, p, 9), &m), -EBADMSG);
  unsigned char e[4] = {0}; /* ERROR code 0 */
  assert_int_equal(sl_ownp_parse(buf, raw(1, SL_OWNP_ERROR, 4, e, 4), &m), -EBADMSG);
}

static const char good_record[] =
  "sluice-owner 1\nbackend local\npid 42\npid-start 99\nboot-id abc\nhost h\n"
  "uid 0\nstarted 1700000000\nsocket /run/sluice/owner-1-2.sock\nrelease no\n"
  "future-key whatever\ncommand sluice serve --no-release\nimage /a b/c.qcow2\n";

static void test_record_roundtrip(void **state)
{
  (void)state;
  struct sl_owner_record r, r2;
  assert_int_equal(sl_owner_record_parse(good_record, strlen(good_record), &r), 0);
  assert_int_equal(r.pid, 42);
  assert_int_equal(r.pid_start, 99);
  assert_false(r.release);
  assert_string_equal(r.image, "/a b/c.qcow2");
  char text[SL_OWNER_RECORD_MAX];
  int n = sl_owner_record_format(&r, text, sizeof text);
  assert_true(n > 0);
  assert_int_equal(sl_owner_record_parse(text, (size_t)n, &r2), 0);
  assert_memory_equal(&r, &r2, sizeof r);
}

static void expect_bad(const char *text, int err, const char *words)
{
  struct sl_owner_record r;
  assert_int_equal(sl_owner_record_parse(text, strlen(text), &r), -err);
  if (!strstr(sl_last_error(), words))
    fail_msg("'%s' does not say '%s'", sl_last_error(), words);
}

static void test_record_errors(void **state)
{
  (void)state;
  expect_bad("", EBADMSG, "empty");
  expect_bad("sluice-owner 1", EBADMSG, "newline");
  expect_bad("hello\n", EBADMSG, "not a sluice owner record");
  expect_bad("sluice-owner 7\n", EPROTONOSUPPORT, "version 7 is not supported");
  expect_bad("sluice-owner 1\npid 0\n", EBADMSG, "line 2: bad pid");
  expect_bad("sluice-owner 1\npid 99999999999\n", EBADMSG, "bad pid");
  expect_bad("sluice-owner 1\npid 4\npid 5\n", EBADMSG, "pid given twice");
  expect_bad("sluice-owner 1\nsocket relative.sock\n", EBADMSG, "bad socket");
  expect_bad("sluice-owner 1\nrelease maybe\n", EBADMSG, "bad release");
  expect_bad("sluice-owner 1\nhost a\tb\n", EBADMSG, "control character");
  expect_bad("sluice-owner 1\nnovalue\n", EBADMSG, "KEY VALUE");
  expect_bad("sluice-owner 1\npid 4\n", EBADMSG, "has no backend");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_release_roundtrip),
    cmocka_unit_test(test_replies),
    cmocka_unit_test(test_bad_magic_early),
    cmocka_unit_test(test_version_and_lengths),
    cmocka_unit_test(test_release_payloads),
    cmocka_unit_test(test_record_roundtrip),
    cmocka_unit_test(test_record_errors),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
