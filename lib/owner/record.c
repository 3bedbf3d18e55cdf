/* The owner record's parser and formatter (record.h, docs/ownership.md).
 *
 * The parser is strict about what it uses -- every required key once, each
 * number whole and in range, no control characters, bounded lengths --
 * because a requester acts on what it reads (it connects to the socket the
 * record names, and judges the owner alive or dead by its pid).  Keys it
 * does not know are skipped, so that a later sluice can add some without a
 * new version. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "owner/record.h"

static int parse_num(const char *v, unsigned long long max, unsigned long long *out)
{
  if (!*v || *v < '0' || *v > '9')
    return -1;
  unsigned long long x = 0;
  for (const char *p = v; *p; p++) {
    if (*p < '0' || *p > '9')
      return -1;
    if (x > (max - (unsigned)(*p - '0')) / 10)
      return -1;
    x = x * 10 + (unsigned)(*p - '0');
  }
  *out = x;
  return 0;
}

static int copy_value(char *dst, size_t size, const char *v)
{
  size_t n = strlen(v);
  if (n == 0 || n >= size)
    return -1;
  memcpy(dst, v, n + 1);
  return 0;
}

enum { K_BACKEND, K_PID, K_PID_START, K_BOOT_ID, K_HOST, K_UID, K_STARTED,
       K_SOCKET, K_RELEASE, K_COMMAND, K_IMAGE, K_N };
static const char *const key_names[K_N] = {
  "backend", "pid", "pid-start", "boot-id", "host", "uid", "started",
  "socket", "release", "command", "image",
};
/* Every key but command and image must be present. */
static const unsigned required = ((1u << K_N) - 1) & ~(1u << K_COMMAND) & ~(1u << K_IMAGE);

int sl_owner_record_parse(const char *text, size_t len, struct sl_owner_record *r)
{
  memset(r, 0, sizeof *r);
  if (len > SL_OWNER_RECORD_MAX)
    return sl_error(EBADMSG, "owner record of %zu bytes (at most %d)", len,
                    SL_OWNER_RECORD_MAX);
  if (len == 0 || text[len - 1] != '\n')
    return sl_error(EBADMSG, "owner record is empty or does not end with a newline");
  char line[SL_OWNER_RECORD_MAX + 1];
  unsigned seen = 0;
  size_t pos = 0;
  for (int lineno = 1; pos < len; lineno++) {
    const char *nl = memchr(text + pos, '\n', len - pos);
    size_t n = (size_t)(nl - (text + pos));
    memcpy(line, text + pos, n);
    line[n] = '\0';
    pos += n + 1;
    for (size_t i = 0; i < n; i++)
      if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
        return sl_error(EBADMSG, "owner record line %d: control character 0x%02x",
                        lineno, (unsigned char)line[i]);
    if (lineno == 1) {
      unsigned long long v;
      if (strncmp(line, "sluice-owner ", 13) != 0 ||
          parse_num(line + 13, 1000000, &v) < 0)
        return sl_error(EBADMSG, "not a sluice owner record (first line is not "
                        "\"sluice-owner VERSION\")");
      if (v != SL_OWNER_RECORD_VERSION)
        return sl_error(EPROTONOSUPPORT, "owner record version %llu is not "
                        "supported (this sluice reads version %d)", v,
                        SL_OWNER_RECORD_VERSION);
      r->version = (unsigned)v;
      continue;
    }
    char *sp = strchr(line, ' ');
    if (!sp || sp == line)
      return sl_error(EBADMSG, "owner record line %d: expected \"KEY VALUE\"", lineno);
    *sp = '\0';
    const char *key = line, *val = sp + 1;
    int k = 0;
    while (k < K_N && strcmp(key, key_names[k]) != 0)
      k++;
    if (k == K_N)
      continue; /* a key of a later sluice */
    if (seen & (1u << k))
      return sl_error(EBADMSG, "owner record line %d: %s given twice", lineno, key);
    seen |= 1u << k;
    unsigned long long v = 0;
    int bad = 0;
    switch (k) {
    case K_BACKEND: bad = copy_value(r->backend, sizeof r->backend, val); break;
    case K_PID:
      bad = parse_num(val, 0x3fffffff, &v) < 0 || v == 0;
      r->pid = (pid_t)v;
      break;
    case K_PID_START: bad = parse_num(val, UINT64_MAX, &r->pid_start); break;
    case K_BOOT_ID: bad = copy_value(r->boot_id, sizeof r->boot_id, val); break;
    case K_HOST: bad = copy_value(r->host, sizeof r->host, val); break;
    case K_UID:
      bad = parse_num(val, 0xfffffffe, &v) < 0;
      r->uid = (uid_t)v;
      break;
    case K_STARTED:
      bad = parse_num(val, INT64_MAX, &v) < 0;
      r->started = (long long)v;
      break;
    case K_SOCKET:
      bad = copy_value(r->socket, sizeof r->socket, val) < 0 || val[0] != '/';
      break;
    case K_RELEASE:
      bad = strcmp(val, "yes") != 0 && strcmp(val, "no") != 0;
      r->release = strcmp(val, "yes") == 0;
      break;
    case K_COMMAND: bad = copy_value(r->command, sizeof r->command, val); break;
    case K_IMAGE: bad = copy_value(r->image, sizeof r->image, val); break;
    }
    if (bad)
      return sl_error(EBADMSG, "owner record line %d: bad %s \"%.64s\"", lineno,
                      key, val);
  }
  if (!r->version)
    return sl_error(EBADMSG, "owner record has no version line");
  if ((seen & required) != required) {
    for (int k = 0; k < K_N; k++)
      if ((required & (1u << k)) && !(seen & (1u << k)))
        return sl_error(EBADMSG, "owner record has no %s", key_names[k]);
  }
  return 0;
}

int sl_owner_record_format(const struct sl_owner_record *r, char *buf, size_t len)
{
  int n = snprintf(buf, len,
                   "sluice-owner %d\n"
                   "backend %s\n"
                   "pid %d\n"
                   "pid-start %llu\n"
                   "boot-id %s\n"
                   "host %s\n"
                   "uid %u\n"
                   "started %lld\n"
                   "socket %s\n"
                   "release %s\n"
                   "%s%s%s"
                   "%s%s%s",
                   SL_OWNER_RECORD_VERSION, r->backend, (int)r->pid,
                   r->pid_start, r->boot_id, r->host, (unsigned)r->uid,
                   r->started, r->socket, r->release ? "yes" : "no",
                   r->command[0] ? "command " : "", r->command,
                   r->command[0] ? "\n" : "",
                   r->image[0] ? "image " : "", r->image,
                   r->image[0] ? "\n" : "");
  if (n < 0 || (size_t)n >= len)
    return sl_error(ENAMETOOLONG, "owner record does not fit in %zu bytes", len);
  return n;
}
