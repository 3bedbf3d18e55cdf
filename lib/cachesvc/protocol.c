/* Encoders and validators of the sluiced wire protocol (protocol.h,
 * docs/sluiced-protocol.md), shared by the daemon and every client.
 *
 * The daemon treats each connection as hostile: sl_cs_frame() decides from
 * the header alone whether a message can be valid and how long it is, and
 * sl_cs_parse_request() checks everything the message itself can tell
 * (sizes exact for the opcode, reserved fields zero, flags known, counts and
 * lengths in range) before the daemon looks at any of it.  What remains for
 * the daemon is what only it knows: whether a handle number names one of
 * this connection's registrations, and whether ranges fit them.  The
 * libFuzzer target fuzz/fuzz-sluiced.c feeds arbitrary bytes through these
 * two functions as the daemon does. */
#include "cachesvc/protocol.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>

#include <sluice/error.h>
#include "ipc/socket.h"

_Static_assert(sizeof(struct sl_cs_hdr) == 24, "header size");
_Static_assert(sizeof(struct sl_cs_hello) == 8, "hello size");
_Static_assert(sizeof(struct sl_cs_hello_reply) == 32, "hello reply size");
_Static_assert(sizeof(struct sl_cs_register_layer) == 8, "register layer size");
_Static_assert(sizeof(struct sl_cs_register_layer_reply) == 16, "layer reply size");
_Static_assert(sizeof(struct sl_cs_unregister) == 8, "unregister size");
_Static_assert(sizeof(struct sl_cs_register_rbd) == 1360, "register rbd size");
_Static_assert(sizeof(struct sl_cs_register_handle) == 24, "register handle size");
_Static_assert(sizeof(struct sl_cs_register_handle_reply) == 8, "handle reply size");
_Static_assert(sizeof(struct sl_cs_read) == 8, "read size");
_Static_assert(sizeof(struct sl_cs_read_entry) == 32, "read entry size");
_Static_assert(sizeof(struct sl_cs_read_result) == 8, "read result size");
_Static_assert(sizeof(struct sl_cs_invalidate) == 24, "invalidate size");
_Static_assert(sizeof(struct sl_cs_drop) == 8, "drop size");
_Static_assert(sizeof(struct sl_cs_stats) == 8, "stats size");
_Static_assert(sizeof(struct sl_cs_counters) == 48, "counters size");
_Static_assert(sizeof(struct sl_cs_stats_reply) == 120, "stats reply size");
_Static_assert(sizeof(struct sl_cs_layer_stats) == 248, "layer stats size");
_Static_assert(sizeof(struct sl_cs_hdr) + sizeof(struct sl_cs_read) +
               SL_CS_MAX_BATCH * sizeof(struct sl_cs_read_entry) <= SL_CS_MAX_MSG,
               "a full batch fits in one message");

#define HDR sizeof(struct sl_cs_hdr)

const char *sl_cs_op_name(uint16_t op)
{
  switch (op & ~SL_CS_REPLY) {
  case SL_CS_HELLO: return "HELLO";
  case SL_CS_REGISTER_LAYER: return "REGISTER_LAYER";
  case SL_CS_UNREGISTER_LAYER: return "UNREGISTER_LAYER";
  case SL_CS_REGISTER_HANDLE: return "REGISTER_HANDLE";
  case SL_CS_UNREGISTER_HANDLE: return "UNREGISTER_HANDLE";
  case SL_CS_READ: return "READ";
  case SL_CS_INVALIDATE: return "INVALIDATE";
  case SL_CS_STATS: return "STATS";
  case SL_CS_DROP: return "DROP";
  case SL_CS_REGISTER_RBD: return "REGISTER_RBD";
  case SL_CS_ERROR: return "ERROR";
  default: return "unknown";
  }
}

long sl_cs_frame(const void *buf, size_t len)
{
  struct sl_cs_hdr h;
  if (len < HDR)
    return 0;
  memcpy(&h, buf, HDR);
  if (h.magic != SL_CS_MAGIC)
    return sl_error(EPROTO, "sluiced protocol: bad magic 0x%08x", h.magic);
  if (h.length < HDR || h.length > SL_CS_MAX_MSG)
    return sl_error(EPROTO, "sluiced protocol: %s message length %u outside [%zu, %u]",
                    sl_cs_op_name(h.op), h.length, HDR, SL_CS_MAX_MSG);
  return len >= h.length ? (long)h.length : 0;
}

int sl_cs_request_fds(uint16_t op)
{
  return op == SL_CS_REGISTER_LAYER || op == SL_CS_REGISTER_HANDLE;
}

/* The exact body size of a request with opcode OP other than READ, or 0
 * for an unknown opcode. */
static size_t body_size(uint16_t op)
{
  switch (op) {
  case SL_CS_HELLO: return sizeof(struct sl_cs_hello);
  case SL_CS_REGISTER_LAYER: return sizeof(struct sl_cs_register_layer);
  case SL_CS_UNREGISTER_LAYER:
  case SL_CS_UNREGISTER_HANDLE: return sizeof(struct sl_cs_unregister);
  case SL_CS_REGISTER_HANDLE: return sizeof(struct sl_cs_register_handle);
  case SL_CS_INVALIDATE: return sizeof(struct sl_cs_invalidate);
  case SL_CS_STATS: return sizeof(struct sl_cs_stats);
  case SL_CS_DROP: return sizeof(struct sl_cs_drop);
  case SL_CS_REGISTER_RBD: return sizeof(struct sl_cs_register_rbd);
  default: return 0;
  }
}

/* A text field of SIZE bytes: NUL-terminated inside, zeros after the NUL,
 * and (unless MAY_BE_EMPTY) not empty. */
static bool text_ok(const char *f, size_t size, bool may_be_empty)
{
  const char *nul = memchr(f, 0, size);
  if (!nul || (nul == f && !may_be_empty))
    return false;
  for (const char *p = nul; p < f + size; p++)
    if (*p)
      return false;
  return true;
}

static int bad(const struct sl_cs_hdr *h, const char *what)
{
  return sl_error(EPROTO, "sluiced protocol: %s request %llu: %s", sl_cs_op_name(h->op),
                  (unsigned long long)h->id, what);
}

int sl_cs_parse_request(const void *buf, size_t len, uint16_t version,
                        struct sl_cs_request *req)
{
  memset(req, 0, sizeof *req);
  long fl = sl_cs_frame(buf, len);
  if (fl < 0)
    return (int)fl;
  if ((size_t)fl != len)
    return sl_error(EPROTO, "sluiced protocol: message of %zu bytes framed as %ld", len, fl);
  if ((uintptr_t)buf % 8)
    return sl_error(EINVAL, "sluiced protocol: message buffer not aligned");
  struct sl_cs_hdr *h = &req->hdr;
  memcpy(h, buf, HDR);
  const char *body = (const char *)buf + HDR;
  size_t blen = len - HDR;
  if (h->op & SL_CS_REPLY)
    return bad(h, "a reply where a request was expected");
  if (h->status != 0)
    return bad(h, "non-zero status in a request");
  if (version == 0) {
    if (h->op != SL_CS_HELLO)
      return bad(h, "the first message must be HELLO");
  } else if (h->op == SL_CS_HELLO) {
    return bad(h, "HELLO sent twice");
  } else if (h->version != version) {
    return sl_error(EPROTO, "sluiced protocol: %s request %llu: version %u, negotiated %u",
                    sl_cs_op_name(h->op), (unsigned long long)h->id, h->version, version);
  }

  if (h->op == SL_CS_READ) {
    if (blen < sizeof(struct sl_cs_read))
      return bad(h, "body shorter than the batch header");
    req->read = (const struct sl_cs_read *)body;
    uint32_t n = req->read->count;
    if (n == 0 || n > SL_CS_MAX_BATCH)
      return bad(h, "entry count outside [1, 1024]");
    if (req->read->flags)
      return bad(h, "unknown flags");
    if (blen != sizeof(struct sl_cs_read) + (size_t)n * sizeof(struct sl_cs_read_entry))
      return bad(h, "length does not match the entry count");
    req->entries = (const struct sl_cs_read_entry *)(body + sizeof(struct sl_cs_read));
    for (uint32_t i = 0; i < n; i++) {
      const struct sl_cs_read_entry *e = &req->entries[i];
      if (e->length == 0 || e->length > SL_CS_MAX_READ)
        return bad(h, "entry length outside [1, 2 MiB]");
      if (e->reserved)
        return bad(h, "reserved entry field not zero");
      if (e->file_offset > UINT64_MAX - e->length ||
          e->handle_offset > UINT64_MAX - e->length)
        return bad(h, "entry range overflows");
    }
    return 0;
  }

  size_t want = body_size(h->op);
  if (h->op == SL_CS_REGISTER_RBD && version < 2)
    want = 0; /* unknown to a version 1 connection */
  if (want == 0)
    return sl_error(EPROTO, "sluiced protocol: unknown opcode %u in request %llu", h->op,
                    (unsigned long long)h->id);
  if (blen != want)
    return bad(h, "body size wrong for the opcode");
  switch (h->op) {
  case SL_CS_HELLO:
    req->u.hello = (const void *)body;
    if (req->u.hello->flags)
      return bad(h, "unknown flags");
    if (req->u.hello->min_version > req->u.hello->max_version)
      return bad(h, "min_version above max_version");
    break;
  case SL_CS_REGISTER_LAYER:
    req->u.reg_layer = (const void *)body;
    if (req->u.reg_layer->flags & ~SL_CS_LAYER_FLAGS)
      return bad(h, "unknown flags");
    if (req->u.reg_layer->reserved)
      return bad(h, "reserved field not zero");
    break;
  case SL_CS_UNREGISTER_LAYER:
  case SL_CS_UNREGISTER_HANDLE:
    req->u.unreg = (const void *)body;
    if (req->u.unreg->reserved)
      return bad(h, "reserved field not zero");
    break;
  case SL_CS_REGISTER_HANDLE:
    req->u.reg_handle = (const void *)body;
    if (req->u.reg_handle->reserved)
      return bad(h, "reserved field not zero");
    if (req->u.reg_handle->rights & ~SL_CS_RIGHTS)
      return bad(h, "unknown rights");
    if (req->u.reg_handle->length == 0 ||
        req->u.reg_handle->length > SL_CS_MAX_HANDLE_RANGE)
      return bad(h, "handle length outside [1, 64 GiB]");
    if (req->u.reg_handle->offset > UINT64_MAX - req->u.reg_handle->length)
      return bad(h, "handle range overflows");
    break;
  case SL_CS_INVALIDATE:
    req->u.invalidate = (const void *)body;
    if (req->u.invalidate->reserved)
      return bad(h, "reserved field not zero");
    break;
  case SL_CS_STATS:
    req->u.stats = (const void *)body;
    break;
  case SL_CS_REGISTER_RBD: {
    const struct sl_cs_register_rbd *b = (const void *)body;
    req->u.reg_rbd = b;
    if (b->flags)
      return bad(h, "unknown flags");
    if (b->reserved)
      return bad(h, "reserved field not zero");
    if (!text_ok(b->pool, sizeof b->pool, false))
      return bad(h, "pool: empty, unterminated or not zero-padded");
    if (!text_ok(b->ns, sizeof b->ns, true))
      return bad(h, "namespace: unterminated or not zero-padded");
    if (!text_ok(b->image, sizeof b->image, false))
      return bad(h, "image: empty, unterminated or not zero-padded");
    /* empty: the daemon refuses it (not a snapshot) with a reply */
    if (!text_ok(b->snap, sizeof b->snap, true))
      return bad(h, "snapshot: unterminated or not zero-padded");
    if (!text_ok(b->user, sizeof b->user, false))
      return bad(h, "user: empty, unterminated or not zero-padded");
    if (!text_ok(b->key, sizeof b->key, false))
      return bad(h, "key: empty, unterminated or not zero-padded");
    if (!text_ok(b->mon_host, sizeof b->mon_host, false))
      return bad(h, "mon_host: empty, unterminated or not zero-padded");
    if (!text_ok(b->fsid, sizeof b->fsid, false))
      return bad(h, "fsid: empty, unterminated or not zero-padded");
    if (!text_ok(b->image_id, sizeof b->image_id, false))
      return bad(h, "image_id: empty, unterminated or not zero-padded");
    if (b->pool_id < 0)
      return bad(h, "pool_id: negative");
    break;
  }
  case SL_CS_DROP:
    req->u.drop = (const void *)body;
    if (req->u.drop->flags & ~SL_CS_DROP_ALL)
      return bad(h, "unknown flags");
    break;
  }
  return 0;
}

/* The exact body size of a successful reply to OP (READ: for COUNT
 * entries); STATS replies are checked by their own count. */
static size_t reply_body_size(uint16_t op, uint32_t count)
{
  switch (op) {
  case SL_CS_HELLO: return sizeof(struct sl_cs_hello_reply);
  case SL_CS_REGISTER_LAYER:
  case SL_CS_REGISTER_RBD: return sizeof(struct sl_cs_register_layer_reply);
  case SL_CS_REGISTER_HANDLE: return sizeof(struct sl_cs_register_handle_reply);
  case SL_CS_READ:
    return sizeof(struct sl_cs_read_reply) + (size_t)count * sizeof(struct sl_cs_read_result);
  default: return 0;
  }
}

int sl_cs_check_reply(const void *buf, size_t len, uint16_t op, uint32_t count)
{
  long fl = sl_cs_frame(buf, len);
  if (fl < 0)
    return (int)fl;
  if ((size_t)fl != len)
    return sl_error(EPROTO, "sluiced protocol: reply of %zu bytes framed as %ld", len, fl);
  struct sl_cs_hdr h;
  memcpy(&h, buf, HDR);
  if (h.op == (SL_CS_ERROR | SL_CS_REPLY))
    return 0; /* the daemon is closing: the caller reports the text */
  if (h.op != (op | SL_CS_REPLY))
    return sl_error(EPROTO, "sluiced protocol: reply opcode 0x%x to a %s request", h.op,
                    sl_cs_op_name(op));
  size_t blen = len - HDR;
  if (h.status > 0)
    return sl_error(EPROTO, "sluiced protocol: positive status %d in a reply", h.status);
  if (h.status < 0)
    return blen <= SL_CS_MAX_ERRMSG ? 0
        : sl_error(EPROTO, "sluiced protocol: error text of %zu bytes", blen);
  if (op == SL_CS_STATS) {
    if (blen < sizeof(struct sl_cs_stats_reply))
      return sl_error(EPROTO, "sluiced protocol: short STATS reply");
    struct sl_cs_stats_reply r;
    memcpy(&r, (const char *)buf + HDR, sizeof r);
    if (blen != sizeof r + (size_t)r.count * sizeof(struct sl_cs_layer_stats))
      return sl_error(EPROTO, "sluiced protocol: STATS reply length does not match its count");
    return 0;
  }
  if (blen != reply_body_size(op, count))
    return sl_error(EPROTO, "sluiced protocol: %s reply body of %zu bytes", sl_cs_op_name(op),
                    blen);
  if (op == SL_CS_READ) {
    struct sl_cs_read_reply r;
    memcpy(&r, (const char *)buf + HDR, sizeof r);
    if (r.count != count)
      return sl_error(EPROTO, "sluiced protocol: READ reply for %u entries, asked %u", r.count,
                      count);
  }
  return 0;
}

long sl_cs_encode(void *buf, size_t cap, uint16_t version, uint16_t op, int32_t status,
                  uint64_t id, const void *body, size_t body_len)
{
  if (body_len > SL_CS_MAX_MSG - HDR || HDR + body_len > cap)
    return sl_error(EMSGSIZE, "sluiced protocol: %s message of %zu bytes does not fit",
                    sl_cs_op_name(op), HDR + body_len);
  struct sl_cs_hdr h = {.magic = SL_CS_MAGIC, .version = version, .op = op,
                        .length = (uint32_t)(HDR + body_len), .status = status, .id = id};
  memcpy(buf, &h, HDR);
  if (body_len)
    memcpy((char *)buf + HDR, body, body_len);
  return (long)(HDR + body_len);
}

long sl_cs_encode_read(void *buf, size_t cap, uint16_t version, uint64_t id,
                       const struct sl_cs_read_entry *e, uint32_t count)
{
  size_t body = sizeof(struct sl_cs_read) + (size_t)count * sizeof *e;
  if (count == 0 || count > SL_CS_MAX_BATCH || HDR + body > cap)
    return sl_error(EMSGSIZE, "sluiced protocol: READ of %u entries does not fit", count);
  struct sl_cs_read r = {.count = count};
  long n = sl_cs_encode(buf, cap, version, SL_CS_READ, 0, id, &r, sizeof r);
  if (n < 0)
    return n;
  memcpy((char *)buf + n, e, (size_t)count * sizeof *e);
  struct sl_cs_hdr *h = buf;
  h->length = (uint32_t)(HDR + body);
  return (long)h->length;
}

long sl_cs_encode_error(void *buf, size_t cap, uint16_t version, uint16_t op, int32_t status,
                        uint64_t id, const char *text)
{
  size_t tl = text ? strnlen(text, SL_CS_MAX_ERRMSG - 1) : 0;
  char tmp[SL_CS_MAX_ERRMSG];
  if (tl)
    memcpy(tmp, text, tl);
  tmp[tl] = 0;
  return sl_cs_encode(buf, cap, version, op, status, id, tmp, tl + 1);
}

const char *sl_cs_error_text(const void *buf, size_t len)
{
  if (len <= HDR)
    return "";
  const char *t = (const char *)buf + HDR;
  return memchr(t, 0, len - HDR) ? t : "";
}

int sl_cs_check_daemon(int fd, const char *path)
{
  pid_t pid;
  uid_t uid;
  gid_t gid;
  struct stat st;
  if (sl_ipc_peer_cred(fd, &pid, &uid, &gid) < 0)
    return sl_error(EPERM, "sluiced %s: cannot learn who listens there: %s", path,
                    sl_last_error());
  if (uid == 0)
    return 0;
  if (stat(path, &st) < 0)
    return sl_error(EPERM, "sluiced %s: %s", path, strerror(errno));
  if (uid != st.st_uid)
    return sl_error(EPERM, "sluiced %s: the process listening there (pid %d) runs as uid %u, "
                    "neither root nor the socket's owner (uid %u): not trusted",
                    path, (int)pid, (unsigned)uid, (unsigned)st.st_uid);
  return 0;
}
