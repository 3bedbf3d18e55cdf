/* The owner record (version 1): the small text file beside an image that
 * says which process owns the image for writing and where to ask it for the
 * image.  docs/ownership.md describes the file; this is its C definition,
 * and record.c its one parser and formatter (fuzzed by fuzz/fuzz-owner.c:
 * the record is read by whoever wants the disk, and anyone able to write
 * the image's directory can write it).
 *
 * Why a text file of "key value" lines: operators read it (cat
 * IMAGE.owner) and `sluice owner` prints it; a version on the first line
 * lets a later sluice add keys (unknown keys are ignored within version 1)
 * or change meanings (a new version, refused with a message by this one). */
#ifndef SLUICE_OWNER_RECORD_H
#define SLUICE_OWNER_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define SL_OWNER_RECORD_VERSION 1
#define SL_OWNER_RECORD_MAX 8192      /* bytes of a record file */
#define SL_OWNER_SUFFIX ".owner"      /* IMAGE.owner */

struct sl_owner_record {
  unsigned version;
  char backend[16];          /* "local" */
  pid_t pid;
  unsigned long long pid_start; /* /proc/PID/stat starttime: pid reuse */
  char boot_id[40];          /* /proc/sys/kernel/random/boot_id */
  char host[256];
  uid_t uid;
  long long started;         /* seconds since the epoch */
  char socket[108];          /* the control socket (sockaddr_un limit) */
  bool release;              /* false: serve --no-release */
  char command[128];         /* what owns it: "sluice serve" */
  char image[4096];          /* the image, absolute */
};

/* Parse LEN bytes of TEXT.  0, or -EBADMSG / -EPROTONOSUPPORT with a
 * message naming the line and the problem. */
int sl_owner_record_parse(const char *text, size_t len, struct sl_owner_record *r);

/* Format R into BUF (SL_OWNER_RECORD_MAX bytes); returns the length, or
 * -ENAMETOOLONG if it does not fit. */
int sl_owner_record_format(const struct sl_owner_record *r, char *buf, size_t len);

#endif
