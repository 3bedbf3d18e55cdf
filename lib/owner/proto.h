/* The ownership control protocol (version 1): what a process that wants a
 * disk says to the process that owns it, over the owner's control socket
 * (a UNIX stream socket named in the owner record).  docs/ownership.md is
 * the prose specification; this header is its one C definition and
 * proto.c holds the encoder and the parser both ends use.
 *
 * Why these shapes:
 *  - Every message is a 12-byte header -- magic "SLOC", version (u16),
 *    type (u16), payload length (u32) -- and at most SL_OWNP_MAX_PAYLOAD
 *    bytes of payload, little-endian.  The length comes first so a
 *    receiver knows how much to wait for and can refuse an oversized
 *    message before reading it; the parser checks a message whole before
 *    the owner acts on it, so a half message is never acted upon.
 *  - The version is in every message.  An owner that gets a version it
 *    does not speak answers ERROR (EPROTONOSUPPORT, naming the versions it
 *    speaks) in its own version and closes; a later version adds types or
 *    trailing payload fields, never changes these.
 *  - Text (the requester's name, error messages) is counted, printable
 *    ASCII/UTF-8 without control characters: it is shown to operators.
 *
 * A conversation: requester -> RELEASE; owner -> ACCEPTED (it has begun:
 * exports quiesced, drain, flush, close, locks dropped), then RELEASED or
 * ERROR.  Or requester -> QUERY; owner -> INFO (its record, as text).
 * Anything that does not parse gets one ERROR and the connection closes. */
#ifndef SLUICE_OWNER_PROTO_H
#define SLUICE_OWNER_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_OWNP_MAGIC "SLOC"
#define SL_OWNP_VERSION 1
#define SL_OWNP_HEADER 12u
#define SL_OWNP_MAX_PAYLOAD 4096u
#define SL_OWNP_MAX_TEXT 512u       /* requester name, error message */
#define SL_OWNP_MAX_TIMEOUT_MS 3600000u

enum sl_ownp_type {
  SL_OWNP_QUERY = 1,        /* empty */
  SL_OWNP_RELEASE = 2,      /* u32 timeout_ms, u32 flags (0), text requester */
  SL_OWNP_ACCEPTED = 16,    /* empty: the owner has begun to release */
  SL_OWNP_RELEASED = 17,    /* u64 drain_ns, text message */
  SL_OWNP_ERROR = 18,       /* u32 errno value (> 0), text message */
  SL_OWNP_INFO = 19,        /* text: the owner record */
};

struct sl_ownp_msg {
  uint16_t version;
  uint16_t type;
  uint32_t timeout_ms;      /* RELEASE */
  uint32_t code;            /* ERROR */
  uint64_t drain_ns;        /* RELEASED */
  /* RELEASE: requester; RELEASED, ERROR: message; INFO: record text.
   * NUL-terminated copy. */
  char text[SL_OWNP_MAX_PAYLOAD + 1];
};

/* Parse one message from the start of BUF (LEN bytes).  Returns its size
 * in bytes when BUF starts with a complete, valid message (filling *M), 0
 * when more bytes are needed (a prefix of something that may still be
 * valid), or a negative errno with a message naming the problem:
 * -EPROTONOSUPPORT for a well-formed header of another version (M->version
 * is set), -EBADMSG for anything else. */
long sl_ownp_parse(const void *buf, size_t len, struct sl_ownp_msg *m);

/* Encode a message of TYPE into OUT (at least SL_OWNP_HEADER +
 * SL_OWNP_MAX_PAYLOAD bytes); TEXT (may be NULL) is truncated to fit and
 * stripped of control characters.  Returns the size. */
size_t sl_ownp_encode(void *out, enum sl_ownp_type type, uint32_t num,
                      uint64_t num64, const char *text);

/* Name of a message type, for messages ("RELEASE", "type 99"). */
const char *sl_ownp_type_name(unsigned type, char *buf, size_t len);

#endif
