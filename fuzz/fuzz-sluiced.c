/* libFuzzer target: the sluiced request parser.  The input is what a
 * client writes on its stream socket.  It is cut into messages exactly as
 * the daemon's connection reader cuts it (sl_cs_frame on the bytes
 * received so far, the message copied to an aligned buffer) and every
 * message goes through sl_cs_parse_request with the connection's
 * negotiated version (none until a valid HELLO).  As in the daemon, the
 * first error ends the "connection".  Each accepted request's fields are
 * then read as the daemon reads them, so that the sanitizers see any
 * access the validation should have prevented.  The reply checker, which
 * clients run on what the daemon sends, gets the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cachesvc/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t sink;

static void touch(const struct sl_cs_request *r)
{
  if (r->hdr.op == SL_CS_READ) {
    for (uint32_t i = 0; i < r->read->count; i++)
      sink += r->entries[i].file_offset + r->entries[i].handle_offset + r->entries[i].length +
              r->entries[i].layer + r->entries[i].handle;
  } else if (r->hdr.op == SL_CS_REGISTER_HANDLE) {
    sink += r->u.reg_handle->offset + r->u.reg_handle->length;
  } else if (r->hdr.op == SL_CS_INVALIDATE) {
    sink += r->u.invalidate->offset + r->u.invalidate->length;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static uint64_t msg[SL_CS_MAX_MSG / 8];
  uint16_t version = 0;
  size_t off = 0;
  while (off < size) {
    long n = sl_cs_frame(data + off, size - off);
    if (n <= 0)
      break; /* malformed (the daemon closes) or incomplete (it waits) */
    memcpy(msg, data + off, (size_t)n);
    struct sl_cs_request r;
    if (sl_cs_parse_request(msg, (size_t)n, version, &r) < 0)
      break;
    touch(&r);
    if (r.hdr.op == SL_CS_HELLO) {
      if (r.u.hello->min_version > SL_CS_VERSION_MAX ||
          r.u.hello->max_version < SL_CS_VERSION_MIN)
        break;
      version = r.u.hello->max_version < SL_CS_VERSION_MAX ? r.u.hello->max_version
                                                           : SL_CS_VERSION_MAX;
    }
    for (uint16_t op = SL_CS_HELLO; op <= SL_CS_OP_MAX; op++)
      sink += (uint64_t)sl_cs_check_reply(msg, (size_t)n, op, r.read ? r.read->count : 1);
    off += (size_t)n;
  }
  return 0;
}
