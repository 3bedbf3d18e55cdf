/* Synchronous calls to sluiced (call.h): connect, HELLO, and one request at
 * a time over lib/ipc's socket helpers.  Replies are read whole: the header
 * first (its length bounded by sl_cs_frame), then the rest. */
#include "cachesvc/call.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice/error.h>
#include "ipc/socket.h"

int sl_cs_send_raw(struct sl_cs_conn *c, const void *msg, size_t len, int fd)
{
  return sl_ipc_send_fds(c->fd, msg, len, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

static int recv_all(int fd, void *buf, size_t len)
{
  size_t got = 0;
  while (got < len) {
    ssize_t n = recv(fd, (char *)buf + got, len - got, 0);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return sl_error(errno, "sluiced: receiving a reply: %s", strerror(errno));
    if (n == 0)
      return sl_error(ECONNRESET, "sluiced closed the connection");
    got += (size_t)n;
  }
  return 0;
}

int sl_cs_recv_msg(struct sl_cs_conn *c)
{
  const size_t hdr = sizeof(struct sl_cs_hdr);
  int r = recv_all(c->fd, c->buf, hdr);
  if (r < 0)
    return r;
  struct sl_cs_hdr h;
  memcpy(&h, c->buf, hdr);
  long fl = sl_cs_frame(&h, hdr);
  if (fl < 0)
    return (int)fl;
  if (h.length > hdr && (r = recv_all(c->fd, (char *)c->buf + hdr, h.length - hdr)) < 0)
    return r;
  c->len = h.length;
  return 0;
}

int sl_cs_call(struct sl_cs_conn *c, uint16_t op, const void *body, size_t blen, int fd,
               uint32_t count)
{
  uint64_t id = c->next_id++;
  long n = sl_cs_encode(c->buf, SL_CS_MAX_MSG, c->version ? c->version : SL_CS_VERSION_MIN,
                        op, 0, id, body, blen);
  if (n < 0)
    return (int)n;
  int r = sl_cs_send_raw(c, c->buf, (size_t)n, fd);
  if (r < 0)
    return r;
  if ((r = sl_cs_recv_msg(c)) < 0)
    return r;
  if ((r = sl_cs_check_reply(c->buf, c->len, op, count)) < 0)
    return r;
  struct sl_cs_hdr h;
  memcpy(&h, c->buf, sizeof h);
  if (h.op == (SL_CS_ERROR | SL_CS_REPLY))
    return sl_error(EPROTO, "sluiced ended the connection: %s", sl_cs_error_text(c->buf, c->len));
  if (h.id != id)
    return sl_error(EPROTO, "sluiced answered request %llu, asked %llu",
                    (unsigned long long)h.id, (unsigned long long)id);
  if (h.status < 0)
    return sl_error(-h.status, "sluiced: %s: %s", sl_cs_op_name(op),
                    sl_cs_error_text(c->buf, c->len));
  return 0;
}

int sl_cs_connect(const char *path, struct sl_cs_conn *c)
{
  memset(c, 0, sizeof *c);
  c->fd = -1;
  c->next_id = 1;
  c->buf = aligned_alloc(8, SL_CS_MAX_MSG);
  if (!c->buf)
    return sl_error(ENOMEM, "out of memory");
  if (!path)
    path = SL_CS_DEFAULT_SOCKET;
  int fd = sl_ipc_connect_unix(path);
  if (fd < 0) {
    sl_cs_close(c);
    return fd;
  }
  c->fd = fd;
  int t = sl_cs_check_daemon(fd, path);
  if (t < 0) {
    sl_cs_close(c);
    return t;
  }
  struct sl_cs_hello h = {.min_version = SL_CS_VERSION_MIN, .max_version = SL_CS_VERSION_MAX};
  int r = sl_cs_call(c, SL_CS_HELLO, &h, sizeof h, -1, 0);
  if (r < 0) {
    sl_error_prefix(-r, "%s", path);
    sl_cs_close(c);
    return r;
  }
  memcpy(&c->hello, sl_cs_reply_body(c), sizeof c->hello);
  c->version = c->hello.version;
  return 0;
}

void sl_cs_close(struct sl_cs_conn *c)
{
  if (c->fd >= 0)
    close(c->fd);
  free(c->buf);
  c->buf = NULL;
  c->fd = -1;
}
