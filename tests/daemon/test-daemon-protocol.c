/* Unit tests of the sluiced wire protocol's encoders and validators
 * (lib/cachesvc/protocol.c): what both ends rely on to reject a malformed
 * message before acting on any of it. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "cachesvc/protocol.h"

static uint64_t buf[SL_CS_MAX_MSG / 8 + 8];

static long hello(uint16_t lo, uint16_t hi)
{
  struct sl_cs_hello h = {.min_version = lo, .max_version = hi};
  return sl_cs_encode(buf, sizeof buf, SL_CS_VERSION_MIN, SL_CS_HELLO, 0, 7, &h, sizeof h);
}

static void test_hello_roundtrip(void **state)
{
  long n = hello(1, 3);
  assert_int_equal(n, 32);
  assert_int_equal(sl_cs_frame(buf, (size_t)n), 32);
  assert_int_equal(sl_cs_frame(buf, (size_t)n - 1), 0); /* incomplete: wait */
  assert_int_equal(sl_cs_frame(buf, 10), 0);
  struct sl_cs_request r;
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 0, &r), 0);
  assert_int_equal(r.hdr.op, SL_CS_HELLO);
  assert_int_equal(r.hdr.id, 7);
  assert_int_equal(r.u.hello->max_version, 3);
  /* a second HELLO, and anything but HELLO first, are protocol errors */
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  struct sl_cs_stats s = {0};
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_STATS, 0, 1, &s, sizeof s);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 0, &r), -EPROTO);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), 0);
  /* wrong version after negotiation */
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
  /* min above max */
  n = hello(3, 1);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 0, &r), -EPROTO);
}

static void test_bad_framing(void **state)
{
  long n = hello(1, 1);
  struct sl_cs_hdr *h = (struct sl_cs_hdr *)buf;
  h->magic ^= 1;
  assert_int_equal(sl_cs_frame(buf, (size_t)n), -EPROTO);
  h->magic ^= 1;
  h->length = 23;
  assert_int_equal(sl_cs_frame(buf, (size_t)n), -EPROTO);
  h->length = SL_CS_MAX_MSG + 1;
  assert_int_equal(sl_cs_frame(buf, (size_t)n), -EPROTO);
  h->length = 40; /* longer than the HELLO body: framed, then refused */
  memset((char *)buf + n, 0, 8);
  struct sl_cs_request r;
  assert_int_equal(sl_cs_frame(buf, 40), 40);
  assert_int_equal(sl_cs_parse_request(buf, 40, 0, &r), -EPROTO);
  /* a reply where a request belongs, a status in a request */
  n = hello(1, 1);
  h->op |= SL_CS_REPLY;
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 0, &r), -EPROTO);
  h->op &= (uint16_t)~SL_CS_REPLY;
  h->status = -1;
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 0, &r), -EPROTO);
  /* unknown opcodes */
  n = sl_cs_encode(buf, sizeof buf, 1, 99, 0, 1, NULL, 0);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  n = sl_cs_encode(buf, sizeof buf, 1, 0, 0, 1, NULL, 0);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
}

static void test_read_batch(void **state)
{
  struct sl_cs_read_entry e[3] = {
    {.layer = 1, .handle = 2, .file_offset = 0, .handle_offset = 4096, .length = 4096},
    {.layer = 1, .handle = 2, .file_offset = 65536, .handle_offset = 0, .length = 65536},
    {.layer = 3, .handle = 2, .file_offset = 1, .handle_offset = 1, .length = SL_CS_MAX_READ},
  };
  long n = sl_cs_encode_read(buf, sizeof buf, 1, 42, e, 3);
  assert_int_equal(n, 24 + 8 + 3 * 32);
  struct sl_cs_request r;
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), 0);
  assert_int_equal(r.read->count, 3);
  assert_int_equal(r.entries[1].file_offset, 65536);
  assert_int_equal(r.entries[2].layer, 3);
  /* count and length disagree */
  ((struct sl_cs_read *)((char *)buf + 24))->count = 2;
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  /* zero and oversized entries, overflowing ranges, reserved bits */
  struct sl_cs_read_entry bad[4] = {e[0], e[0], e[0], e[0]};
  bad[0].length = 0;
  bad[1].length = SL_CS_MAX_READ + 1;
  bad[2].file_offset = UINT64_MAX - 10;
  bad[3].reserved = 1;
  for (int i = 0; i < 4; i++) {
    n = sl_cs_encode_read(buf, sizeof buf, 1, 1, &bad[i], 1);
    assert_true(n > 0);
    assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  }
  /* batch bounds: 1024 fit in one message, 0 and 1025 do not encode */
  static struct sl_cs_read_entry many[SL_CS_MAX_BATCH + 1];
  for (unsigned i = 0; i <= SL_CS_MAX_BATCH; i++)
    many[i] = e[0];
  n = sl_cs_encode_read(buf, sizeof buf, 1, 1, many, SL_CS_MAX_BATCH);
  assert_true(n > 0 && n <= (long)SL_CS_MAX_MSG);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), 0);
  assert_int_equal(sl_cs_encode_read(buf, sizeof buf, 1, 1, many, 0), -EMSGSIZE);
  assert_int_equal(sl_cs_encode_read(buf, sizeof buf, 1, 1, many, SL_CS_MAX_BATCH + 1),
                   -EMSGSIZE);
}

static void test_register(void **state)
{
  struct sl_cs_request r;
  struct sl_cs_register_handle h = {.offset = 4096, .length = 1 << 20,
                                    .rights = SL_CS_RIGHT_WRITE};
  long n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_HANDLE, 0, 1, &h, sizeof h);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), 0);
  assert_int_equal(sl_cs_request_fds(SL_CS_REGISTER_HANDLE), 1);
  assert_int_equal(sl_cs_request_fds(SL_CS_READ), 0);
  h.rights = 4;
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_HANDLE, 0, 1, &h, sizeof h);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  h.rights = SL_CS_RIGHT_WRITE;
  h.length = 0;
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_HANDLE, 0, 1, &h, sizeof h);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  h.length = SL_CS_MAX_HANDLE_RANGE + 1;
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_HANDLE, 0, 1, &h, sizeof h);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  struct sl_cs_register_layer l = {.flags = 2};
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_LAYER, 0, 1, &l, sizeof l);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  l.flags = SL_CS_LAYER_PRIVATE;
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_LAYER, 0, 1, &l, sizeof l);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), 0);
}

/* REGISTER_RBD (version 2): text fields terminated and zero-padded; an
 * unknown opcode on a version 1 connection. */
static void test_register_rbd(void **state)
{
  struct sl_cs_register_rbd q;
  memset(&q, 0, sizeof q);
  strcpy(q.pool, "rbd");
  strcpy(q.image, "gold");
  strcpy(q.snap, "boot");
  strcpy(q.user, "admin");
  strcpy(q.key, "AQBz1XRlAAAAABAAdGhpcyBpcyBub3QgYSBrZXk=");
  strcpy(q.mon_host, "v2:127.0.0.1:6789");
  strcpy(q.fsid, "8d15eade-43f4-4981-9ccc-ceed74b5a066");
  strcpy(q.image_id, "10f2a3b4c5d6");
  q.pool_id = 2;
  q.snap_id = 4;
  q.size = 1 << 20;
  struct sl_cs_request r;
  long n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &q, sizeof q);
  assert_int_equal(n, 24 + 1360);
  assert_int_equal(sl_cs_request_fds(SL_CS_REGISTER_RBD), 0);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), 0);
  assert_string_equal(r.u.reg_rbd->snap, "boot");
  assert_string_equal(r.u.reg_rbd->ns, "");
  /* version 1 does not know it */
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_REGISTER_RBD, 0, 5, &q, sizeof q);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 1, &r), -EPROTO);
  /* an empty snapshot parses (the daemon refuses it with a reply) */
  struct sl_cs_register_rbd e = q;
  memset(e.snap, 0, sizeof e.snap);
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &e, sizeof e);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), 0);
  /* empty required fields, no NUL, bytes after the NUL, flags, reserved */
  char *fields[] = {e.pool, e.image, e.user, e.key, e.mon_host, e.fsid, e.image_id};
  size_t sizes[] = {sizeof e.pool, sizeof e.image, sizeof e.user, sizeof e.key,
                    sizeof e.mon_host, sizeof e.fsid, sizeof e.image_id};
  for (int i = 0; i < 7; i++) {
    for (int k = 0; k < 3; k++) {
      e = q; /* FIELDS point into E */
      if (k == 0)
        memset(fields[i], 0, sizes[i]);
      else if (k == 1)
        memset(fields[i], 'x', sizes[i]);
      else
        fields[i][sizes[i] - 1] = 'x';
      n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &e, sizeof e);
      assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
    }
  }
  e = q;
  e.ns[sizeof e.ns - 1] = 'x';
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &e, sizeof e);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
  e = q;
  e.flags = 1;
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &e, sizeof e);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
  e = q;
  e.reserved = 1;
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &e, sizeof e);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
  /* a body one byte short */
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD, 0, 5, &q, sizeof q - 1);
  assert_int_equal(sl_cs_parse_request(buf, (size_t)n, 2, &r), -EPROTO);
  /* its reply is a layer reply */
  struct sl_cs_register_layer_reply rep = {.layer = 1, .size = 4096};
  n = sl_cs_encode(buf, sizeof buf, 2, SL_CS_REGISTER_RBD | SL_CS_REPLY, 0, 5, &rep,
                   sizeof rep);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_REGISTER_RBD, 0), 0);
}

static void test_replies(void **state)
{
  struct sl_cs_read_reply rr = {.count = 2};
  struct {
    struct sl_cs_read_reply h;
    struct sl_cs_read_result r[2];
  } body = {rr, {{0, SL_CS_RESULT_HIT}, {-5, 0}}};
  long n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_READ | SL_CS_REPLY, 0, 9, &body,
                        sizeof body);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_READ, 2), 0);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_READ, 3), -EPROTO);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_HELLO, 2), -EPROTO);
  n = sl_cs_encode_error(buf, sizeof buf, 1, SL_CS_READ | SL_CS_REPLY, -EBADF, 9,
                         "layer handle 5 names nothing");
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_READ, 2), 0);
  assert_string_equal(sl_cs_error_text(buf, (size_t)n), "layer handle 5 names nothing");
  struct sl_cs_stats_reply s = {.count = 1};
  char sb[sizeof s + sizeof(struct sl_cs_layer_stats)] = {0};
  memcpy(sb, &s, sizeof s);
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_STATS | SL_CS_REPLY, 0, 1, sb, sizeof sb);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_STATS, 0), 0);
  n = sl_cs_encode(buf, sizeof buf, 1, SL_CS_STATS | SL_CS_REPLY, 0, 1, sb, sizeof s);
  assert_int_equal(sl_cs_check_reply(buf, (size_t)n, SL_CS_STATS, 0), -EPROTO);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_hello_roundtrip),
    cmocka_unit_test(test_bad_framing),
    cmocka_unit_test(test_read_batch),
    cmocka_unit_test(test_register),
    cmocka_unit_test(test_register_rbd),
    cmocka_unit_test(test_replies),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
