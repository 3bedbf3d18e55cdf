/* Thread-local error messages: see include/sluice/error.h. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <sluice/error.h>

#define SL_ERROR_MAX 1024

static _Thread_local char last_msg[SL_ERROR_MAX];
static _Thread_local int last_errnum;

int sl_verror(int errnum, const char *fmt, va_list ap)
{
  if (errnum <= 0)
    errnum = EIO;
  vsnprintf(last_msg, sizeof last_msg, fmt, ap);
  last_errnum = errnum;
  return -errnum;
}

int sl_error(int errnum, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  int r = sl_verror(errnum, fmt, ap);
  va_end(ap);
  return r;
}

int sl_error_prefix(int errnum, const char *fmt, ...)
{
  char prefix[SL_ERROR_MAX], old[SL_ERROR_MAX];
  va_list ap;

  if (errnum <= 0)
    errnum = EIO;
  va_start(ap, fmt);
  vsnprintf(prefix, sizeof prefix, fmt, ap);
  va_end(ap);
  if (last_msg[0])
    snprintf(old, sizeof old, "%s", last_msg);
  else
    snprintf(old, sizeof old, "%s", strerror(errnum));
  char joined[2 * SL_ERROR_MAX + 2];
  snprintf(joined, sizeof joined, "%s: %s", prefix, old);
  size_t n = strnlen(joined, SL_ERROR_MAX - 1);
  memcpy(last_msg, joined, n);
  last_msg[n] = '\0';
  last_errnum = errnum;
  return -errnum;
}

const char *sl_last_error(void)
{
  if (last_msg[0])
    return last_msg;
  return last_errnum ? strerror(last_errnum) : "no error";
}

int sl_last_errno(void)
{
  return last_errnum;
}

void sl_error_clear(void)
{
  last_msg[0] = '\0';
  last_errnum = 0;
}
