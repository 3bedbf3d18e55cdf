/* The NBD handshake: the fixed-newstyle greeting and option haggling
 * (NetworkBlockDevice/nbd, doc/proto.md), up to the moment the client
 * chooses the export.  What was agreed (structured replies, meta contexts,
 * the flags sent) goes to the transmission phase in struct nbd_session.
 *
 * Everything the client sends is untrusted: an option is read only when
 * its length is within MAX_OPTION (longer ones are drained and refused
 * with NBD_REP_ERR_TOO_BIG), every field inside an option is checked
 * against the option's length before it is used, a client gets at most
 * MAX_OPTIONS options before it is dropped, and unknown client flags or a
 * wrong magic end the connection, as the protocol says.
 */
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <sluice/error.h>
#include "common/util.h"
#include "export/nbd-handshake.h"
#include "export/nbd-proto.h"
#include "ipc/socket.h"

#define MAX_OPTION (64u << 10)        /* largest option payload we read */
#define MAX_OPTIONS 256               /* options before we give up on a client */

/* The connection as the handshake sees it. */
struct hs {
  int fd;
  struct sl_handle *h;
  const struct sl_nbd_options *opts;
  struct nbd_session *s;
};

/* Option payloads are byte streams: read fields without alignment. */
static uint32_t get_be32(const char *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return be32toh(v);
}

static uint16_t get_be16(const char *p)
{
  uint16_t v;
  memcpy(&v, p, 2);
  return be16toh(v);
}

static int send_opt_reply(struct hs *c, uint32_t opt, uint32_t type,
                          const void *data, uint32_t len)
{
  struct nbd_opt_reply r = {
    .magic = htobe64(NBD_REP_MAGIC), .option = htobe32(opt),
    .type = htobe32(type), .length = htobe32(len),
  };
  struct iovec iov[2] = {{&r, sizeof r}, {(void *)data, len}};
  return sl_ipc_send_iov(c->fd, iov, len ? 2 : 1);
}

static int send_opt_error(struct hs *c, uint32_t opt, uint32_t err, const char *msg)
{
  return send_opt_reply(c, opt, err, msg, (uint32_t)strlen(msg));
}

static bool name_matches(const struct hs *c, const char *name)
{
  const char *ours = c->opts->export_name ? c->opts->export_name : "";
  return name[0] == '\0' || strcmp(name, ours) == 0;
}

static uint16_t transmission_flags(const struct hs *c)
{
  struct sl_handle *h = c->h;
  uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;
  if (c->opts->read_only || sl_disk_read_only(h)) {
    f |= NBD_FLAG_READ_ONLY;
  } else {
    if (sl_disk_can_fua(h))
      f |= NBD_FLAG_SEND_FUA;
    if (sl_disk_can_trim(h))
      f |= NBD_FLAG_SEND_TRIM;
    if (sl_disk_can_zero(h))
      f |= NBD_FLAG_SEND_WRITE_ZEROES;
  }
  if (c->s->structured)
    f |= NBD_FLAG_SEND_DF;
  if (sl_disk_can_multi_conn(h))
    f |= NBD_FLAG_CAN_MULTI_CONN;
  return f;
}

/* Both INFO/GO and the META_CONTEXT options start with a 32-bit length and
 * an export name.  FIXED is the size of what must follow the name.  Returns
 * 1 with NAME filled, 0 after sending an error reply, -1 on a dead socket. */
static int read_export_name(struct hs *c, uint32_t opt, const char *p, uint32_t len,
                            uint32_t fixed, char name[static 4097], uint32_t *namelen)
{
  int r;
  if (len < 4 + fixed)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "option too short");
  else if ((*namelen = get_be32(p)) > len - 4 - fixed)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "name length too large");
  else if (*namelen > 4096)
    r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "name too long");
  else {
    memcpy(name, p + 4, *namelen);
    name[*namelen] = '\0';
    return 1;
  }
  return r < 0 ? -1 : 0;
}

/* INFO and GO: name, then a list of requested info types. */
static int opt_info_go(struct hs *c, uint32_t opt, const char *p, uint32_t len,
                       bool *go)
{
  char name[4097];
  uint32_t namelen;
  int ok = read_export_name(c, opt, p, len, 2, name, &namelen);
  if (ok <= 0)
    return ok;
  uint16_t nreq = get_be16(p + 4 + namelen);
  if (6 + namelen + 2u * nreq != len)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "bad info request list");
  if (!name_matches(c, name))
    return send_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");

  bool want_block_size = false, want_name = false, want_desc = false;
  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t = get_be16(p + 6 + namelen + 2 * i);
    want_block_size |= t == NBD_INFO_BLOCK_SIZE;
    want_name |= t == NBD_INFO_NAME;
    want_desc |= t == NBD_INFO_DESCRIPTION;
  }
  c->s->size = sl_disk_size(c->h);
  c->s->tflags = transmission_flags(c);
  struct __attribute__((packed)) { uint16_t type; uint64_t size; uint16_t flags; } ex = {
    htobe16(NBD_INFO_EXPORT), htobe64(c->s->size), htobe16(c->s->tflags)};
  if (send_opt_reply(c, opt, NBD_REP_INFO, &ex, sizeof ex) < 0)
    return -1;
  if (want_block_size) {
    struct __attribute__((packed)) { uint16_t type; uint32_t min, pref, max; } bs = {
      htobe16(NBD_INFO_BLOCK_SIZE), htobe32(1), htobe32(4096), htobe32(NBD_MAX_REQUEST)};
    if (send_opt_reply(c, opt, NBD_REP_INFO, &bs, sizeof bs) < 0)
      return -1;
  }
  if (want_name) {
    char buf[2 + 4096];
    uint16_t t = htobe16(NBD_INFO_NAME);
    memcpy(buf, &t, 2);
    memcpy(buf + 2, name, namelen);
    if (send_opt_reply(c, opt, NBD_REP_INFO, buf, 2 + namelen) < 0)
      return -1;
  }
  if (want_desc && c->opts->description) {
    char buf[2 + 4096];
    size_t dl = SL_MIN(strlen(c->opts->description), 4096);
    uint16_t t = htobe16(NBD_INFO_DESCRIPTION);
    memcpy(buf, &t, 2);
    memcpy(buf + 2, c->opts->description, dl);
    if (send_opt_reply(c, opt, NBD_REP_INFO, buf, (uint32_t)(2 + dl)) < 0)
      return -1;
  }
  if (send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0) < 0)
    return -1;
  *go = opt == NBD_OPT_GO;
  return 0;
}

static int opt_list(struct hs *c, uint32_t len)
{
  if (len != 0)
    return send_opt_error(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID, "LIST takes no data");
  const char *name = c->opts->export_name ? c->opts->export_name : "";
  uint32_t nl = (uint32_t)strlen(name);
  char buf[4 + 4096];
  uint32_t be = htobe32(nl);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, name, SL_MIN(nl, 4096u));
  if (send_opt_reply(c, NBD_OPT_LIST, NBD_REP_SERVER, buf, 4 + SL_MIN(nl, 4096u)) < 0)
    return -1;
  return send_opt_reply(c, NBD_OPT_LIST, NBD_REP_ACK, NULL, 0);
}

static int send_context(struct hs *c, uint32_t opt, uint32_t id, const char *name)
{
  char buf[64];
  uint32_t be = htobe32(id);
  size_t nl = strlen(name);
  memcpy(buf, &be, 4);
  memcpy(buf + 4, name, nl);
  return send_opt_reply(c, opt, NBD_REP_META_CONTEXT, buf, (uint32_t)(4 + nl));
}

/* Which of our contexts does QUERY select?  LIST accepts namespace
 * wildcards ("base:", "qemu:"); SET needs exact names. */
static void match_query(const char *q, bool list, bool *alloc, bool *depth)
{
  if (strcmp(q, "base:allocation") == 0 || (list && strcmp(q, "base:") == 0))
    *alloc = true;
  if (strcmp(q, "qemu:allocation-depth") == 0 || (list && strcmp(q, "qemu:") == 0))
    *depth = true;
}

static int opt_meta_context(struct hs *c, uint32_t opt, const char *p, uint32_t len)
{
  bool list = opt == NBD_OPT_LIST_META_CONTEXT;
  if (!list && !c->s->structured)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID,
                          "SET_META_CONTEXT needs structured replies first");
  char name[4097];
  uint32_t namelen;
  int ok = read_export_name(c, opt, p, len, 4, name, &namelen);
  if (ok <= 0)
    return ok;
  uint32_t nq = get_be32(p + 4 + namelen);
  uint32_t pos = 8 + namelen;
  bool alloc = false, depth = false;
  for (uint32_t i = 0; i < nq; i++) {
    if (len - pos < 4)
      return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "truncated query list");
    uint32_t ql = get_be32(p + pos);
    pos += 4;
    if (ql > len - pos)
      return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "query too long");
    char q[256];
    if (ql < sizeof q) {
      memcpy(q, p + pos, ql);
      q[ql] = '\0';
      match_query(q, list, &alloc, &depth);
    }
    pos += ql;
  }
  if (pos != len)
    return send_opt_error(c, opt, NBD_REP_ERR_INVALID, "trailing data in option");
  if (!name_matches(c, name))
    return send_opt_error(c, opt, NBD_REP_ERR_UNKNOWN, "no such export");
  if (list && nq == 0)
    alloc = depth = true;
  if (!list) {
    c->s->ctx_allocation = alloc;
    c->s->ctx_depth = depth;
  }
  if (alloc && send_context(c, opt, NBD_CTX_ALLOCATION, "base:allocation") < 0)
    return -1;
  if (depth && send_context(c, opt, NBD_CTX_DEPTH, "qemu:allocation-depth") < 0)
    return -1;
  return send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
}

/* Returns 1 when the client chose an export (transmission follows),
 * 0 when it went away cleanly, -1 on a broken or hostile client. */
static int haggle(struct hs *c)
{
  struct __attribute__((packed)) { uint64_t magic, opt_magic; uint16_t flags; } hello = {
    htobe64(NBD_MAGIC), htobe64(NBD_OPT_MAGIC),
    htobe16(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES)};
  if (sl_ipc_send_all(c->fd, &hello, sizeof hello) < 0)
    return -1;
  uint32_t cflags;
  if (sl_ipc_recv_full(c->fd, &cflags, 4) < 0)
    return -1;
  cflags = be32toh(cflags);
  if (cflags & ~(uint32_t)(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))
    return -1; /* unknown client flags: the spec says disconnect */
  bool no_zeroes = cflags & NBD_FLAG_C_NO_ZEROES;

  for (int n = 0; n < MAX_OPTIONS; n++) {
    struct nbd_option o;
    if (sl_ipc_recv_full(c->fd, &o, sizeof o) < 0)
      return -1;
    if (be64toh(o.magic) != NBD_OPT_MAGIC)
      return -1;
    uint32_t opt = be32toh(o.option), len = be32toh(o.length);
    if (len > MAX_OPTION) {
      if (sl_ipc_recv_discard(c->fd, len) < 0)
        return -1;
      if (send_opt_error(c, opt, NBD_REP_ERR_TOO_BIG, "option too large") < 0)
        return -1;
      continue;
    }
    CLEANUP_FREE char *data = malloc(len + 1);
    if (!data || sl_ipc_recv_full(c->fd, data, len) < 0)
      return -1;
    data[len] = '\0';
    int r = 0;
    bool go = false;
    switch (opt) {
    case NBD_OPT_EXPORT_NAME: {
      if (!name_matches(c, data))
        return -1; /* no error reply exists for EXPORT_NAME */
      c->s->size = sl_disk_size(c->h);
      c->s->tflags = transmission_flags(c);
      struct __attribute__((packed)) { uint64_t size; uint16_t flags; char zero[124]; } rep = {
        htobe64(c->s->size), htobe16(c->s->tflags), {0}};
      if (sl_ipc_send_all(c->fd, &rep, no_zeroes ? 10 : sizeof rep) < 0)
        return -1;
      return 1;
    }
    case NBD_OPT_ABORT:
      send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      return 0;
    case NBD_OPT_LIST:
      r = opt_list(c, len);
      break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
      r = opt_info_go(c, opt, data, len, &go);
      break;
    case NBD_OPT_STRUCTURED_REPLY:
      if (len != 0) {
        r = send_opt_error(c, opt, NBD_REP_ERR_INVALID, "option takes no data");
      } else {
        c->s->structured = true;
        r = send_opt_reply(c, opt, NBD_REP_ACK, NULL, 0);
      }
      break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
      r = opt_meta_context(c, opt, data, len);
      break;
    default:
      r = send_opt_error(c, opt, NBD_REP_ERR_UNSUP, "option not supported");
    }
    if (r < 0)
      return -1;
    if (go)
      return 1;
  }
  return -1;
}

int nbd_handshake(int fd, struct sl_handle *h, const struct sl_nbd_options *opts,
                  struct nbd_session *s)
{
  memset(s, 0, sizeof *s);
  struct hs c = {.fd = fd, .h = h, .opts = opts, .s = s};
  return haggle(&c);
}
