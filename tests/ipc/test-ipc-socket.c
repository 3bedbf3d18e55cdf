/* Unit tests of lib/ipc/socket.c.  What could go wrong and is checked by
 * what the kernel reports, not by what the functions say:
 *  - a listener refuses a path where a live server accepts (and that
 *    server keeps its socket: a client still connects), replaces a stale
 *    socket, and refuses a path that is not a socket (left untouched);
 *  - closing a listener whose path was replaced by a successor leaves the
 *    successor's socket in place;
 *  - descriptors passed with SCM_RIGHTS arrive usable and close-on-exec;
 *    a peer sending more than the receiver accepts has all of them closed
 *    (the receiving process's descriptor table does not grow);
 *  - SO_PEERCRED names this process;
 *  - "fd:N" adopts only a listening socket. */
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
#include <unistd.h>
#include <cmocka.h>

#include <sluice/error.h>
#include "ipc/socket.h"

static char dir[64];

static int setup(void **state)
{
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/test-ipc-socket.XXXXXX");
  return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  char cmd[PATH_MAX + 16];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

static const char *path_of(const char *name)
{
  static char p[PATH_MAX];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return p;
}

static int count_open_fds(void)
{
  int n = 0;
  for (int fd = 0; fd < 1024; fd++)
    if (fcntl(fd, F_GETFD) >= 0)
      n++;
  return n;
}

static void test_live_socket_is_refused(void **state)
{
  (void)state;
  const char *p = path_of("live.sock");
  struct sl_ipc_listener a, b;
  assert_int_equal(sl_ipc_listen_unix(p, &a), 0);
  assert_int_equal(sl_ipc_listen_unix(p, &b), -EADDRINUSE);
  assert_non_null(strstr(sl_last_error(), "live.sock"));
  assert_non_null(strstr(sl_last_error(), "another process is listening"));
  /* The first listener still owns a working socket. */
  int c = sl_ipc_connect_unix(p);
  assert_true(c >= 0);
  int s = accept(a.fd, NULL, NULL);
  assert_true(s >= 0);
  close(s);
  close(c);
  sl_ipc_listener_close(&b); /* holds nothing: must not unlink a's path */
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  sl_ipc_listener_close(&a);
  assert_int_equal(stat(p, &st), -1);
  assert_int_equal(errno, ENOENT);
}

static void test_stale_socket_is_replaced(void **state)
{
  (void)state;
  const char *p = path_of("stale.sock");
  struct sl_ipc_listener a;
  assert_int_equal(sl_ipc_listen_unix(p, &a), 0);
  /* A crashed server: the socket file stays, nobody accepts. */
  close(a.fd);
  a.fd = -1;
  assert_int_equal(sl_ipc_connect_unix(p), -ECONNREFUSED);
  struct sl_ipc_listener b;
  assert_int_equal(sl_ipc_listen_unix(p, &b), 0);
  int c = sl_ipc_connect_unix(p);
  assert_true(c >= 0);
  close(c);
  /* The dead listener's close must not remove its successor's socket. */
  sl_ipc_listener_close(&a);
  c = sl_ipc_connect_unix(p);
  assert_true(c >= 0);
  close(c);
  sl_ipc_listener_close(&b);
}

static void test_non_socket_is_refused(void **state)
{
  (void)state;
  const char *p = path_of("file");
  FILE *f = fopen(p, "w");
  assert_non_null(f);
  fputs("precious", f);
  fclose(f);
  struct sl_ipc_listener l;
  assert_int_equal(sl_ipc_listen_unix(p, &l), -EEXIST);
  assert_non_null(strstr(sl_last_error(), "not a socket"));
  struct stat st;
  assert_int_equal(stat(p, &st), 0);
  assert_true(S_ISREG(st.st_mode));
  assert_int_equal(st.st_size, 8);
  sl_ipc_listener_close(&l);
  unlink(p);
}

static void test_bad_specs(void **state)
{
  (void)state;
  struct sl_ipc_listener l;
  assert_int_equal(sl_ipc_listen("http:x", &l), -EINVAL);
  assert_non_null(strstr(sl_last_error(), "http:x"));
  char longp[200];
  memset(longp, 'a', sizeof longp - 1);
  longp[sizeof longp - 1] = '\0';
  assert_int_equal(sl_ipc_listen_unix(longp, &l), -ENAMETOOLONG);
  /* fd:N must be a listening stream socket. */
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  char spec[32];
  snprintf(spec, sizeof spec, "fd:%d", sv[0]);
  assert_int_equal(sl_ipc_listen(spec, &l), -EINVAL);
  assert_non_null(strstr(sl_last_error(), "not a listening"));
  int fd = open("/dev/null", O_RDONLY);
  snprintf(spec, sizeof spec, "fd:%d", fd);
  assert_int_equal(sl_ipc_listen(spec, &l), -ENOTSOCK);
  close(fd);
  close(sv[0]);
  close(sv[1]);
  assert_int_equal(sl_ipc_connect_unix(path_of("absent.sock")), -ENOENT);
}

static void test_adopt_listening_socket(void **state)
{
  (void)state;
  struct sl_ipc_listener a, b;
  assert_int_equal(sl_ipc_listen_unix(path_of("adopt.sock"), &a), 0);
  int fd = dup(a.fd);
  char spec[32];
  snprintf(spec, sizeof spec, "fd:%d", fd);
  assert_int_equal(sl_ipc_listen(spec, &b), 0);
  assert_int_equal(b.fd, fd);
  assert_null(b.path);
  assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  sl_ipc_listener_close(&b);
  sl_ipc_listener_close(&a);
}

static void test_fd_passing(void **state)
{
  (void)state;
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  int p[2];
  assert_int_equal(pipe(p), 0);
  int fds[2] = {p[0], p[1]};
  assert_int_equal(sl_ipc_send_fds(sv[0], "hello", 5, fds, 2), 0);
  char buf[16];
  int got[4];
  size_t n = 99;
  assert_int_equal(sl_ipc_recv_fds(sv[1], buf, sizeof buf, got, 4, &n), 5);
  assert_memory_equal(buf, "hello", 5);
  assert_int_equal(n, 2);
  assert_true(fcntl(got[0], F_GETFD) & FD_CLOEXEC);
  assert_true(fcntl(got[1], F_GETFD) & FD_CLOEXEC);
  /* They are the same pipe: write through the received write end, read
   * through the original read end. */
  assert_int_equal(write(got[1], "x", 1), 1);
  char x = 0;
  assert_int_equal(read(p[0], &x, 1), 1);
  assert_int_equal(x, 'x');
  close(got[0]);
  close(got[1]);

  /* A plain message: no descriptors. */
  assert_int_equal(sl_ipc_send_fds(sv[0], "z", 1, NULL, 0), 0);
  assert_int_equal(sl_ipc_recv_fds(sv[1], buf, sizeof buf, got, 4, &n), 1);
  assert_int_equal(n, 0);

  /* Bounds on the sending side. */
  int many[SL_IPC_MAX_FDS + 1];
  for (size_t i = 0; i < SL_IPC_MAX_FDS + 1; i++)
    many[i] = p[0];
  assert_int_equal(sl_ipc_send_fds(sv[0], "m", 1, many, SL_IPC_MAX_FDS + 1), -EINVAL);
  assert_int_equal(sl_ipc_send_fds(sv[0], "", 0, many, 1), -EINVAL);

  /* More than the receiver accepts: all closed, an error, no leak. */
  int before = count_open_fds();
  assert_int_equal(sl_ipc_send_fds(sv[0], "3", 1, many, 3), 0);
  n = 99;
  assert_int_equal(sl_ipc_recv_fds(sv[1], buf, sizeof buf, got, 2, &n), -EMSGSIZE);
  assert_int_equal(n, 0);
  assert_non_null(strstr(sl_last_error(), "more descriptors"));
  assert_int_equal(count_open_fds(), before);

  /* End of stream. */
  close(sv[0]);
  assert_int_equal(sl_ipc_recv_fds(sv[1], buf, sizeof buf, got, 2, &n), 0);
  close(sv[1]);
  close(p[0]);
  close(p[1]);
}

static void test_peer_cred(void **state)
{
  (void)state;
  const char *p = path_of("cred.sock");
  struct sl_ipc_listener l;
  assert_int_equal(sl_ipc_listen_unix(p, &l), 0);
  int c = sl_ipc_connect_unix(p);
  assert_true(c >= 0);
  int s = accept(l.fd, NULL, NULL);
  assert_true(s >= 0);
  pid_t pid = 0;
  uid_t uid = 12345;
  gid_t gid = 12345;
  assert_int_equal(sl_ipc_peer_cred(s, &pid, &uid, &gid), 0);
  assert_int_equal(pid, getpid());
  assert_int_equal(uid, geteuid());
  assert_int_equal(gid, getegid());
  close(s);
  close(c);
  sl_ipc_listener_close(&l);
  int fd = open("/dev/null", O_RDONLY);
  assert_int_equal(sl_ipc_peer_cred(fd, &pid, NULL, NULL), -ENOTSOCK);
  close(fd);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_live_socket_is_refused),
    cmocka_unit_test(test_stale_socket_is_replaced),
    cmocka_unit_test(test_non_socket_is_refused),
    cmocka_unit_test(test_bad_specs),
    cmocka_unit_test(test_adopt_listening_socket),
    cmocka_unit_test(test_fd_passing),
    cmocka_unit_test(test_peer_cred),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
