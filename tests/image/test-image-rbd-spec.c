/* The rbd: name parser against QEMU 7.2's reading of the same names.
 *
 * Each case is a name and the parts qemu_rbd_parse_filename gives it
 * (pool, namespace, image, snapshot, conf, id, other options), including
 * QEMU's corners: an '@' anywhere after the pool starts the snapshot even
 * past a ':', escapes are removed only after splitting, a '/' in the image
 * part is a namespace.  Then the printer: names it prints parse back. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "image/rbd-spec.h"

struct want {
  const char *name;
  const char *pool, *ns, *image, *snap, *conf, *user;
  const char *opts; /* "k=v;k=v" or NULL */
};

static void check_str(const char *got, const char *want)
{
  if (!want)
    assert_null(got);
  else
    assert_string_equal(got, want);
}

static void test_parse(void **state)
{
  static const struct want cases[] = {
    {"rbd:rbd/img", "rbd", "", "img", NULL, NULL, NULL, NULL},
    {"rbd:rbd/img@s1", "rbd", "", "img", "s1", NULL, NULL, NULL},
    {"rbd:p/img:conf=/tmp/c.conf:id=alice", "p", "", "img", NULL, "/tmp/c.conf",
     "alice", NULL},
    {"rbd:p/ns1/img@s", "p", "ns1", "img", "s", NULL, NULL, NULL},
    {"rbd:p\\/q/im\\@g@s\\:x:id=u", "p/q", "", "im@g", "s:x", NULL, "u", NULL},
    {"rbd:p/img:mon_host=127.0.0.1\\:6789:keyring=/k", "p", "", "img", NULL,
     NULL, NULL, "mon_host=127.0.0.1:6789;keyring=/k"},
    /* QEMU's corner: the '@' wins even after a ':' */
    {"rbd:p/img:id=x@snap", "p", "", "img:id=x", "snap", NULL, NULL, NULL},
    {"rbd:p/a\\/b", "p", "", "a/b", NULL, NULL, NULL, NULL},
    {"rbd:p/img:conf=/a\\=b", "p", "", "img", NULL, "/a=b", NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct want *w = &cases[i];
    struct sl_rbd_spec s;
    assert_int_equal(sl_rbd_spec_parse(w->name, &s), 0);
    check_str(s.pool, w->pool);
    check_str(s.ns, w->ns);
    check_str(s.image, w->image);
    check_str(s.snap, w->snap);
    check_str(s.conf, w->conf);
    check_str(s.user, w->user);
    char got[256] = "";
    for (size_t k = 0; k < s.n_opts; k++) {
      if (k)
        strcat(got, ";");
      strcat(got, s.keys[k]);
      strcat(got, "=");
      strcat(got, s.values[k]);
    }
    assert_string_equal(got, w->opts ? w->opts : "");
    /* Printed back, it means the same. */
    char *again = sl_rbd_spec_format(&s, s.pool, s.ns, s.image, s.snap);
    struct sl_rbd_spec t;
    assert_int_equal(sl_rbd_spec_parse(again, &t), 0);
    assert_string_equal(t.pool, s.pool);
    assert_string_equal(t.ns, s.ns);
    assert_string_equal(t.image, s.image);
    check_str(t.snap, s.snap);
    check_str(t.conf, s.conf);
    check_str(t.user, s.user);
    assert_int_equal(t.n_opts, s.n_opts);
    free(again);
    sl_rbd_spec_clear(&t);
    sl_rbd_spec_clear(&s);
  }
}

static void test_errors(void **state)
{
  static const char *bad[] = {
    "rbd:", "rbd:pool", "rbd:/img", "rbd:pool/", "rbd:pool/img@",
    "rbd:pool/img:novalue", "rbd:pool/img:conf", "file.img", "rbd:p/ns/",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    struct sl_rbd_spec s;
    assert_int_not_equal(sl_rbd_spec_parse(bad[i], &s), 0);
  }
  assert_true(sl_rbd_is_path("rbd:x/y"));
  assert_false(sl_rbd_is_path("./rbd:x/y"));
}

/* Monitor lists the daemon compares (a client's mon_host with its
 * configured clusters'): every form Ceph writes, IPv6 included. */
static void test_mons(void **state)
{
  (void)state;
  static const struct {
    const char *a, *b;
    bool same;
  } cases[] = {
    {"127.0.0.1:6789", "127.0.0.1:6789", true},
    {"127.0.0.1", "127.0.0.1:6789", true},          /* a port on one side only */
    {"127.0.0.1:6789", "127.0.0.1:6790", false},
    {"127.0.0.1:1", "127.0.0.2:1", false},
    {"10.0.0.1:6789,10.0.0.2:6789", "10.0.0.3:6789; 10.0.0.2:6789", true},
    {"[v2:127.0.0.1:3300,v1:127.0.0.1:6789]", "127.0.0.1:6789", true},
    {"[v2:127.0.0.1:3300,v1:127.0.0.1:6789]", "v2:127.0.0.1:3300/0", true},
    {"[v2:192.0.2.1:3300,v1:192.0.2.1:6789]", "127.0.0.1:6789", false},
    {"127.0.0.1:6789/1234", "127.0.0.1:6789", true}, /* a nonce */
    /* IPv6: in brackets with a port, bare without */
    {"[::1]:6789", "[::1]:6789", true},
    {"[::1]:6789", "[::1]:6790", false},
    {"[::1]:6789", "::1", true},
    {"[::1]:6789", "[0:0::1]:6789", true},           /* one address, two spellings */
    {"[::1]:6789", "[::2]:6789", false},
    {"[::1]:6789", "127.0.0.1:6789", false},
    {"[v2:[::1]:3300,v1:[::1]:6789]", "[::1]:6789", true},
    {"[v2:[::1]:3300,v1:[::1]:6789]", "v2:[::1]:3300", true},
    {"[v2:[fd00::1]:3300,v1:[fd00::1]:6789]", "[fd00::2]:6789,[fd00::1]:6789", true},
    {"[v2:[fd00::1]:3300,v1:[fd00::1]:6789]", "[fd00::2]:6789", false},
    {"[::1]:6789", "1:6789", false},                 /* not the last group alone */
    {"mon-a:6789,mon-b:6789", "mon-b", true},        /* names, not resolved */
    {"mon-a:6789", "mon-ab:6789", false},
    {"", "127.0.0.1", false},
    {",;[]", ",;[]", false},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    if (sl_rbd_mons_overlap(cases[i].a, cases[i].b) != cases[i].same ||
        sl_rbd_mons_overlap(cases[i].b, cases[i].a) != cases[i].same)
      fail_msg("'%s' and '%s': expected %s", cases[i].a, cases[i].b,
               cases[i].same ? "a monitor in common" : "none in common");
  }
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),
    cmocka_unit_test(test_errors),
    cmocka_unit_test(test_mons),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
