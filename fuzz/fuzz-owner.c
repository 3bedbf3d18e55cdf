/* libFuzzer target: the two things a process that wants a disk hands to
 * the disk's owner or reads from it -- the ownership control protocol
 * (lib/owner/proto.c: every byte a requester sends reaches the owner only
 * through sl_ownp_parse) and the owner record (lib/owner/record.c: anyone
 * able to write the image's directory can write IMAGE.owner).  The first
 * input byte picks the parser; the rest is the input.  What parses is
 * encoded again and must parse to the same thing (the encoder and parser
 * are each other's inverse), and every parse of a message prefix must
 * ask for more bytes or fail, never read past the length. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "owner/proto.h"
#include "owner/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fuzz_proto(const uint8_t *data, size_t size)
{
  static struct sl_ownp_msg m, m2;
  /* A copy of exactly SIZE bytes, so ASan sees any read past the end. */
  uint8_t *buf = malloc(size ? size : 1);
  if (!buf)
    abort();
  memcpy(buf, data, size);
  size_t off = 0;
  while (off < size) {
    long r = sl_ownp_parse(buf + off, size - off, &m);
    if (r <= 0)
      break;
    if ((size_t)r > size - off)
      abort();
    /* Round trip: encode what parsed and parse it again. */
    static uint8_t enc[SL_OWNP_HEADER + SL_OWNP_MAX_PAYLOAD];
    uint32_t num = m.type == SL_OWNP_RELEASE ? m.timeout_ms : m.code;
    size_t n = sl_ownp_encode(enc, m.type, num, m.drain_ns, m.text);
    if (sl_ownp_parse(enc, n, &m2) != (long)n || m2.type != m.type ||
        strcmp(m2.text, m.text) != 0 || m2.timeout_ms != m.timeout_ms ||
        m2.code != m.code || m2.drain_ns != m.drain_ns)
      abort();
    /* Every strict prefix is incomplete or invalid, never a message. */
    for (size_t k = 0; k < n; k += 1 + n / 7)
      if (sl_ownp_parse(enc, k, &m2) > 0)
        abort();
    off += (size_t)r;
  }
  free(buf);
}

static void fuzz_record(const uint8_t *data, size_t size)
{
  static struct sl_owner_record r, r2;
  static char text[SL_OWNER_RECORD_MAX];
  char *buf = malloc(size ? size : 1);
  if (!buf)
    abort();
  memcpy(buf, data, size);
  if (sl_owner_record_parse(buf, size, &r) == 0) {
    int n = sl_owner_record_format(&r, text, sizeof text);
    if (n < 0 || sl_owner_record_parse(text, (size_t)n, &r2) != 0 ||
        memcmp(&r, &r2, sizeof r) != 0)
      abort();
  }
  free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  if (data[0] & 1)
    fuzz_record(data + 1, size - 1);
  else
    fuzz_proto(data + 1, size - 1);
  return 0;
}
