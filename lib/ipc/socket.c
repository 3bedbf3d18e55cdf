/* lib/ipc sockets (see socket.h for the rules and why they live here).
 *
 * The stale-socket test connects rather than trusting a lock file or a
 * pidfile: a socket is live exactly when something accepts on it, and
 * connect() asks the kernel that question directly.  Two processes racing to
 * replace the same stale socket cannot both win: the loser's bind() fails
 * with EADDRINUSE, which is reported like a live socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "ipc/socket.h"

#define BACKLOG 64

void sl_ipc_listener_init(struct sl_ipc_listener *l)
{
  l->fd = -1;
  l->path = NULL;
  l->dev = 0;
  l->ino = 0;
  l->ctime = (struct timespec){0};
}

static int fill_sockaddr(const char *path, struct sockaddr_un *sa)
{
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (!path[0])
    return sl_error(EINVAL, "unix socket: empty path");
  if (strlen(path) >= sizeof sa->sun_path)
    return sl_error(ENAMETOOLONG, "unix:%s: socket path is too long", path);
  strcpy(sa->sun_path, path);
  return 0;
}

/* 0 if nothing is at PATH or only a stale socket (removed), else -errno. */
static int clear_stale(const char *path, const struct sockaddr_un *sa)
{
  struct stat st;
  if (lstat(path, &st) < 0) {
    if (errno == ENOENT)
      return 0;
    return sl_error(errno, "unix:%s: %s", path, strerror(errno));
  }
  if (!S_ISSOCK(st.st_mode))
    return sl_error(EEXIST, "unix:%s: exists and is not a socket; not replacing it", path);
  int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe < 0)
    return sl_error(errno, "unix:%s: %s", path, strerror(errno));
  int r = connect(probe, (const struct sockaddr *)sa, sizeof *sa);
  int e = errno;
  close(probe);
  if (r == 0)
    return sl_error(EADDRINUSE, "unix:%s: another process is listening on this socket", path);
  if (e != ECONNREFUSED && e != ENOENT)
    return sl_error(e, "unix:%s: cannot tell whether the socket is in use: %s",
                    path, strerror(e));
  if (unlink(path) < 0 && errno != ENOENT)
    return sl_error(errno, "unix:%s: cannot remove the stale socket: %s", path,
                    strerror(errno));
  return 0;
}

int sl_ipc_listen_unix(const char *path, struct sl_ipc_listener *l)
{
  sl_ipc_listener_init(l);
  struct sockaddr_un sa;
  int r = fill_sockaddr(path, &sa);
  if (r < 0)
    return r;
  if ((r = clear_stale(path, &sa)) < 0)
    return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sl_error(errno, "unix:%s: %s", path, strerror(errno));
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    if (e == EADDRINUSE)
      return sl_error(e, "unix:%s: another process bound this socket first", path);
    return sl_error(e, "unix:%s: %s", path, strerror(e));
  }
  struct stat st;
  if (stat(path, &st) < 0 || listen(fd, BACKLOG) < 0) {
    int e = errno;
    close(fd);
    unlink(path);
    return sl_error(e, "unix:%s: %s", path, strerror(e));
  }
  if (!(l->path = strdup(path))) {
    close(fd);
    unlink(path);
    return sl_error(ENOMEM, "out of memory");
  }
  l->fd = fd;
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  l->ctime = st.st_ctim;
  return 0;
}

int sl_ipc_listen_tcp(const char *spec, struct sl_ipc_listener *l)
{
  sl_ipc_listener_init(l);
  CLEANUP_FREE char *copy = strdup(spec);
  if (!copy)
    return sl_error(ENOMEM, "out of memory");
  char *colon = strrchr(copy, ':');
  if (!colon)
    return sl_error(EINVAL, "tcp:%s: expected tcp:HOST:PORT", spec);
  *colon = '\0';
  char *host = copy, *port = colon + 1;
  if (host[0] == '[') { /* [::1]:10809 */
    host++;
    char *rb = strchr(host, ']');
    if (rb)
      *rb = '\0';
  }
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res;
  int g = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
  if (g != 0)
    return sl_error(EINVAL, "tcp:%s: %s", spec, gai_strerror(g));
  int fd = -1, e = 0;
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      e = errno;
      continue;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, BACKLOG) == 0)
      break;
    e = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    return sl_error(e ? e : EADDRNOTAVAIL, "tcp:%s: %s", spec,
                    strerror(e ? e : EADDRNOTAVAIL));
  l->fd = fd;
  return 0;
}

int sl_ipc_listener_adopt(int fd, struct sl_ipc_listener *l)
{
  sl_ipc_listener_init(l);
  int type = 0, acc = 0;
  socklen_t len = sizeof type;
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0)
    return sl_error(errno == ENOTSOCK ? ENOTSOCK : errno,
                    "fd %d: not a socket (%s)", fd, strerror(errno));
  len = sizeof acc;
  if (type != SOCK_STREAM ||
      getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc)
    return sl_error(EINVAL, "fd %d: not a listening stream socket", fd);
  int fl = fcntl(fd, F_GETFD);
  if (fl >= 0)
    fcntl(fd, F_SETFD, fl | FD_CLOEXEC);
  l->fd = fd;
  return 0;
}

int sl_ipc_listen(const char *spec, struct sl_ipc_listener *l)
{
  sl_ipc_listener_init(l);
  if (strncmp(spec, "unix:", 5) == 0)
    return sl_ipc_listen_unix(spec + 5, l);
  if (strncmp(spec, "tcp:", 4) == 0)
    return sl_ipc_listen_tcp(spec + 4, l);
  if (strncmp(spec, "fd:", 3) == 0) {
    uint64_t n;
    if (sl_parse_uint(spec, spec + 3, 0, INT32_MAX, &n) < 0)
      return -EINVAL;
    return sl_ipc_listener_adopt((int)n, l);
  }
  return sl_error(EINVAL, "'%s': expected unix:PATH, tcp:HOST:PORT or fd:N", spec);
}

void sl_ipc_listener_close(struct sl_ipc_listener *l)
{
  /* Compare before closing: while our socket is open it pins its file's
   * inode, so the number cannot have been reused by a successor. */
  if (l->path) {
    struct stat st;
    if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino &&
        st.st_ctim.tv_sec == l->ctime.tv_sec && st.st_ctim.tv_nsec == l->ctime.tv_nsec)
      unlink(l->path);
    free(l->path);
    l->path = NULL;
  }
  if (l->fd >= 0)
    close(l->fd);
  l->fd = -1;
}

int sl_ipc_connect_unix(const char *path)
{
  struct sockaddr_un sa;
  int r = fill_sockaddr(path, &sa);
  if (r < 0)
    return r;
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return sl_error(errno, "unix:%s: %s", path, strerror(errno));
  while (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    if (errno == EINTR)
      continue;
    int e = errno;
    close(fd);
    if (e == ECONNREFUSED)
      return sl_error(e, "unix:%s: nobody is listening (stale socket)", path);
    return sl_error(e, "unix:%s: %s", path, strerror(e));
  }
  return fd;
}

int sl_ipc_send_fds(int sock, const void *data, size_t len,
                    const int *fds, size_t n_fds)
{
  if (len == 0)
    return sl_error(EINVAL, "socket %d: a message carries at least one byte", sock);
  if (n_fds > SL_IPC_MAX_FDS)
    return sl_error(EINVAL, "socket %d: %zu descriptors in one message (at most %d)",
                    sock, n_fds, SL_IPC_MAX_FDS);
  union {
    char buf[CMSG_SPACE(sizeof(int) * SL_IPC_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  const char *p = data;
  bool with_fds = n_fds > 0;
  while (len > 0) {
    struct iovec iov = {.iov_base = (void *)p, .iov_len = len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (with_fds) {
      memset(ctl.buf, 0, sizeof ctl.buf);
      msg.msg_control = ctl.buf;
      msg.msg_controllen = CMSG_SPACE(sizeof(int) * n_fds);
      struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * n_fds);
      memcpy(CMSG_DATA(c), fds, sizeof(int) * n_fds);
    }
    ssize_t n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return sl_error(errno, "socket %d: send: %s", sock, strerror(errno));
    }
    with_fds = false; /* they travelled with the first byte */
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

static void close_cmsg_fds(struct msghdr *msg)
{
  for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < n; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      close(fd);
    }
  }
}

long sl_ipc_recv_fds(int sock, void *buf, size_t len,
                     int *fds, size_t max_fds, size_t *n_fds)
{
  *n_fds = 0;
  /* Room for more than the caller wants, so that a peer sending extra
   * descriptors is noticed (and they are closed) rather than silently cut
   * off by the kernel with MSG_CTRUNC only. */
  union {
    char buf[CMSG_SPACE(sizeof(int) * SL_IPC_MAX_FDS)];
    struct cmsghdr align;
  } ctl;
  struct iovec iov = {.iov_base = buf, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf};
  ssize_t n;
  do
    n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return sl_error(errno, "socket %d: receive: %s", sock, strerror(errno));
  size_t got = 0;
  bool excess = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    if (got + k > max_fds)
      excess = true;
    got += k;
  }
  if (excess) {
    close_cmsg_fds(&msg);
    return sl_error(EMSGSIZE, "socket %d: the peer sent more descriptors than the %zu "
                    "expected; closed them", sock, max_fds);
  }
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
      continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    memcpy(fds + *n_fds, CMSG_DATA(c), k * sizeof(int));
    *n_fds += k;
  }
  return (long)n;
}

int sl_ipc_peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid)
{
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(sock, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
    return sl_error(errno, "socket %d: peer credentials: %s", sock, strerror(errno));
  if (pid)
    *pid = cred.pid;
  if (uid)
    *uid = cred.uid;
  if (gid)
    *gid = cred.gid;
  return 0;
}

/* ---- stream helpers ---------------------------------------------------- */

int sl_ipc_recv_full(int fd, void *buf, size_t len)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_WAITALL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

int sl_ipc_recv_discard(int fd, uint64_t len)
{
  char buf[4096];
  while (len > 0) {
    size_t n = (size_t)SL_MIN(len, sizeof buf);
    if (sl_ipc_recv_full(fd, buf, n) < 0)
      return -1;
    len -= n;
  }
  return 0;
}

int sl_ipc_send_iov(int fd, struct iovec *iov, int iovcnt)
{
  while (iovcnt > 0) {
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)iovcnt};
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return -1;
    while (iovcnt > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (char *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
  return 0;
}

int sl_ipc_send_all(int fd, const void *buf, size_t len)
{
  struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
  return sl_ipc_send_iov(fd, &iov, 1);
}
