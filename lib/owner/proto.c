/* The ownership control protocol's encoder and parser (see proto.h and
 * docs/ownership.md).  Both ends of the control socket use these, and the
 * fuzz target fuzz/fuzz-owner.c drives the parser with arbitrary bytes:
 * everything a requester sends reaches the owner only through
 * sl_ownp_parse(), which checks the header, the length and the payload's
 * shape before anything is acted on. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sluice/error.h>
#include "owner/proto.h"

static uint16_t get16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t get32(const unsigned char *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p)
{
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}
static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (unsigned char)(v >> (8 * i));
}
static void put64(unsigned char *p, uint64_t v)
{
  put32(p, (uint32_t)v);
  put32(p + 4, (uint32_t)(v >> 32));
}

const char *sl_ownp_type_name(unsigned type, char *buf, size_t len)
{
  switch (type) {
  case SL_OWNP_QUERY: return "QUERY";
  case SL_OWNP_RELEASE: return "RELEASE";
  case SL_OWNP_ACCEPTED: return "ACCEPTED";
  case SL_OWNP_RELEASED: return "RELEASED";
  case SL_OWNP_ERROR: return "ERROR";
  case SL_OWNP_INFO: return "INFO";
  }
  snprintf(buf, len, "type %u", type);
  return buf;
}

/* Text fields: printable, no control characters except newlines and tabs
 * in INFO (the record is several lines). */
static int take_text(const unsigned char *p, size_t n, size_t max, bool lines,
                     char *out, const char *what)
{
  if (n > max)
    return sl_error(EBADMSG, "%s: %zu bytes of text (at most %zu)", what, n, max);
  for (size_t i = 0; i < n; i++) {
    unsigned char c = p[i];
    if (c == 0x7f || (c < 0x20 && !(lines && (c == '\n' || c == '\t'))))
      return sl_error(EBADMSG, "%s: control character 0x%02x in its text", what, c);
  }
  memcpy(out, p, n);
  out[n] = '\0';
  return 0;
}

long sl_ownp_parse(const void *buf, size_t len, struct sl_ownp_msg *m)
{
  const unsigned char *p = buf;
  /* Refuse a wrong magic as soon as its first bytes are in: a stream of
   * garbage ends at once instead of waiting for 12 bytes. */
  size_t have = len < 4 ? len : 4;
  if (memcmp(p, SL_OWNP_MAGIC, have) != 0)
    return sl_error(EBADMSG, "not an ownership control message (bad magic)");
  if (len < SL_OWNP_HEADER)
    return 0;
  m->version = get16(p + 4);
  m->type = get16(p + 6);
  uint32_t plen = get32(p + 8);
  if (plen > SL_OWNP_MAX_PAYLOAD)
    return sl_error(EBADMSG, "message of %u payload bytes (at most %u)", plen,
                    SL_OWNP_MAX_PAYLOAD);
  if (m->version != SL_OWNP_VERSION)
    return sl_error(EPROTONOSUPPORT, "protocol version %u is not supported "
                    "(this sluice speaks version %u)", m->version, SL_OWNP_VERSION);
  if (len - SL_OWNP_HEADER < plen)
    return 0;
  const unsigned char *q = p + SL_OWNP_HEADER;
  char tn[32];
  const char *name = sl_ownp_type_name(m->type, tn, sizeof tn);
  m->timeout_ms = 0;
  m->code = 0;
  m->drain_ns = 0;
  m->text[0] = '\0';
  int r = 0;
  switch (m->type) {
  case SL_OWNP_QUERY:
  case SL_OWNP_ACCEPTED:
    if (plen != 0)
      return sl_error(EBADMSG, "%s with %u payload bytes (expected none)", name, plen);
    break;
  case SL_OWNP_RELEASE:
    if (plen < 8)
      return sl_error(EBADMSG, "RELEASE with %u payload bytes (at least 8)", plen);
    m->timeout_ms = get32(q);
    if (m->timeout_ms > SL_OWNP_MAX_TIMEOUT_MS)
      return sl_error(EBADMSG, "RELEASE with a timeout of %u ms (at most %u)",
                      m->timeout_ms, SL_OWNP_MAX_TIMEOUT_MS);
    if (get32(q + 4) != 0)
      return sl_error(EBADMSG, "RELEASE with unknown flags 0x%x", get32(q + 4));
    r = take_text(q + 8, plen - 8, SL_OWNP_MAX_TEXT, false, m->text, name);
    break;
  case SL_OWNP_RELEASED:
    if (plen < 8)
      return sl_error(EBADMSG, "RELEASED with %u payload bytes (at least 8)", plen);
    m->drain_ns = get64(q);
    r = take_text(q + 8, plen - 8, SL_OWNP_MAX_TEXT, false, m->text, name);
    break;
  case SL_OWNP_ERROR:
    if (plen < 4)
      return sl_error(EBADMSG, "ERROR with %u payload bytes (at least 4)", plen);
    m->code = get32(q);
    if (m->code == 0 || m->code > 4095)
      return sl_error(EBADMSG, "ERROR with code %u (expected an errno value)", m->code);
    r = take_text(q + 4, plen - 4, SL_OWNP_MAX_TEXT, false, m->text, name);
    break;
  case SL_OWNP_INFO:
    r = take_text(q, plen, SL_OWNP_MAX_PAYLOAD, true, m->text, name);
    break;
  default:
    return sl_error(EBADMSG, "unknown message %s", name);
  }
  return r < 0 ? r : (long)(SL_OWNP_HEADER + plen);
}

size_t sl_ownp_encode(void *out, enum sl_ownp_type type, uint32_t num,
                      uint64_t num64, const char *text)
{
  unsigned char *p = out;
  unsigned char *q = p + SL_OWNP_HEADER;
  size_t n = 0;
  bool lines = false;
  switch (type) {
  case SL_OWNP_RELEASE: put32(q, num); put32(q + 4, 0); n = 8; break;
  case SL_OWNP_RELEASED: put64(q, num64); n = 8; break;
  case SL_OWNP_ERROR: put32(q, num ? num : EIO); n = 4; break;
  case SL_OWNP_INFO: lines = true; break;
  default: text = NULL; break;
  }
  if (text) {
    size_t max = lines ? SL_OWNP_MAX_PAYLOAD : SL_OWNP_MAX_TEXT;
    for (size_t k = 0; text[k] && k < max; k++) {
      unsigned char c = (unsigned char)text[k];
      bool ok = !(c == 0x7f || (c < 0x20 && !(lines && (c == '\n' || c == '\t'))));
      q[n++] = ok ? c : ' ';
    }
  }
  memcpy(p, SL_OWNP_MAGIC, 4);
  put16(p + 4, SL_OWNP_VERSION);
  put16(p + 6, (uint16_t)type);
  put32(p + 8, (uint32_t)n);
  return SL_OWNP_HEADER + n;
}
