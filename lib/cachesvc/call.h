/* Synchronous calls to sluiced: one request, then its reply.  For the
 * command line (`sluice cache`), the tests and the benchmarks, which ask one
 * thing at a time.  The cache filter's client (pipelined, batched,
 * reconnecting) is built on protocol.h directly. */
#ifndef SLUICE_CACHESVC_CALL_H
#define SLUICE_CACHESVC_CALL_H

#include <stddef.h>
#include <stdint.h>

#include "cachesvc/protocol.h"

struct sl_cs_conn {
  int fd;
  uint16_t version;
  uint64_t next_id;
  struct sl_cs_hello_reply hello;
  uint64_t *buf;                  /* SL_CS_MAX_MSG bytes: the last reply */
  size_t len;                     /* its length */
};

/* Connect to the daemon at PATH (NULL: SL_CS_DEFAULT_SOCKET) and say
 * HELLO.  0 or -errno with a message naming PATH. */
int sl_cs_connect(const char *path, struct sl_cs_conn *c);
void sl_cs_close(struct sl_cs_conn *c);

/* Send a request with opcode OP and BODY (and descriptor FD if >= 0), and
 * wait for its reply, which stays in c->buf (c->len bytes) and is checked
 * with sl_cs_check_reply (COUNT: READ's entry count).  Returns the reply's
 * status (0 or -errno, with the daemon's text as the message) or -errno if
 * the call itself failed (-EPROTO for an ERROR message or a bad reply). */
int sl_cs_call(struct sl_cs_conn *c, uint16_t op, const void *body, size_t blen, int fd,
               uint32_t count);
/* The body of the last reply. */
static inline const void *sl_cs_reply_body(const struct sl_cs_conn *c)
{
  return (const char *)c->buf + sizeof(struct sl_cs_hdr);
}

/* Send bytes as they are (tests: malformed messages), with FD if >= 0. */
int sl_cs_send_raw(struct sl_cs_conn *c, const void *msg, size_t len, int fd);
/* Receive one whole message into c->buf (no checks beyond framing). */
int sl_cs_recv_msg(struct sl_cs_conn *c);

#endif
