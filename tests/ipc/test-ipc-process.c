/* Unit tests of lib/ipc/process.c: the pidfile lock refuses a second holder
 * while the first lives and names its pid, replaces a stale pidfile, and is
 * removed only if it is still ours; the systemd notification reaches a
 * NOTIFY_SOCKET exactly as sd_notify(3) defines it (READY=1, STOPPING=1);
 * socket activation counts the passed descriptors only when LISTEN_PID is
 * ours, and clears the variables for children.  (Daemonizing forks and is
 * tested through `sluice serve --daemon` in test-ipc-serve-lifecycle.) */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include "ipc/process.h"
#include "ipc/socket.h"

static char dir[64];

static int setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/test-ipc-process.XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static void slurp(const char *path, char *buf, size_t len)
{
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  size_t n = fread(buf, 1, len - 1, f);
  buf[n] = '\0';
  fclose(f);
}

static void test_pidfile(void **state)
{
  (void)state;
  char p[PATH_MAX], buf[64], want[64];
  snprintf(p, sizeof p, "%s/serve.pid", dir);
  snprintf(want, sizeof want, "%d\n", (int)getpid());

  /* A stale pidfile (no lock) is replaced. */
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("999999999\nrubbish\n", f);
  fclose(f);
  assert_int_equal(sl_proc_pidfile_create(p), 0);
  slurp(p, buf, sizeof buf);
  assert_string_equal(buf, want);

  /* A second server is refused while we hold it, and told who holds it. */
  assert_int_equal(sl_proc_pidfile_create(p), -EBUSY);
  char who[32];
  snprintf(who, sizeof who, "running process %d", (int)getpid());
  assert_non_null(strstr(sl_last_error(), who));
  slurp(p, buf, sizeof buf);
  assert_string_equal(buf, want);

  sl_proc_pidfile_remove();
  struct stat st;
  assert_int_equal(stat(p, &st), -1);
  assert_int_equal(errno, ENOENT);

  /* Ours no longer: a successor's pidfile at the same path survives. */
  assert_int_equal(sl_proc_pidfile_create(p), 0);
  assert_int_equal(unlink(p), 0);
  f = fopen(p, "w");
  assert_non_null(f);
  fputs("42\n", f);
  fclose(f);
  sl_proc_pidfile_remove();
  slurp(p, buf, sizeof buf);
  assert_string_equal(buf, "42\n");
  unlink(p);
}

static void test_notify(void **state)
{
  (void)state;
  char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/notify", dir);
  int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  assert_true(s >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, p);
  assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof sa), 0);

  unsetenv("NOTIFY_SOCKET");
  assert_int_equal(sl_proc_notify_ready(NULL), 0); /* outside systemd */

  setenv("NOTIFY_SOCKET", p, 1);
  assert_int_equal(sl_proc_notify_ready(NULL), 1);
  char buf[256];
  ssize_t n = recv(s, buf, sizeof buf - 1, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "READY=1");

  assert_int_equal(sl_proc_notify_ready("serving disk.qcow2"), 1);
  n = recv(s, buf, sizeof buf - 1, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "READY=1\nSTATUS=serving disk.qcow2");

  assert_int_equal(sl_proc_notify_stopping(), 1);
  n = recv(s, buf, sizeof buf - 1, 0);
  assert_true(n > 0);
  buf[n] = '\0';
  assert_string_equal(buf, "STOPPING=1");
  unsetenv("NOTIFY_SOCKET");
  close(s);
}

static void test_listen_fds(void **state)
{
  (void)state;
  char p[PATH_MAX], pid[32];
  snprintf(p, sizeof p, "%s/act.sock", dir);
  struct sl_ipc_listener l;
  assert_int_equal(sl_ipc_listen_unix(p, &l), 0);
  int saved = dup(SL_PROC_LISTEN_FDS_START);
  assert_int_equal(dup2(l.fd, SL_PROC_LISTEN_FDS_START), SL_PROC_LISTEN_FDS_START);

  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDS");
  assert_int_equal(sl_proc_listen_fds(), 0);

  /* Meant for another process: not ours to take. */
  setenv("LISTEN_PID", "1", 1);
  setenv("LISTEN_FDS", "1", 1);
  assert_int_equal(sl_proc_listen_fds(), 0);

  snprintf(pid, sizeof pid, "%d", (int)getpid());
  setenv("LISTEN_PID", pid, 1);
  setenv("LISTEN_FDS", "1", 1);
  assert_int_equal(sl_proc_listen_fds(), 1);
  assert_null(getenv("LISTEN_PID"));
  assert_null(getenv("LISTEN_FDS"));
  /* The passed descriptor is usable as a listener. */
  char spec[16];
  snprintf(spec, sizeof spec, "fd:%d", SL_PROC_LISTEN_FDS_START);
  struct sl_ipc_listener act;
  assert_int_equal(sl_ipc_listen(spec, &act), 0);
  int c = sl_ipc_connect_unix(p);
  assert_true(c >= 0);
  int a = accept(act.fd, NULL, NULL);
  assert_true(a >= 0);
  close(a);
  close(c);

  if (saved >= 0) {
    dup2(saved, SL_PROC_LISTEN_FDS_START);
    close(saved);
  } else {
    close(SL_PROC_LISTEN_FDS_START);
  }
  sl_ipc_listener_close(&l);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_pidfile),
    cmocka_unit_test(test_notify),
    cmocka_unit_test(test_listen_fds),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
