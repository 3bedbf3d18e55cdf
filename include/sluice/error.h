/* sluice error reporting.
 *
 * Every libsluice function that can fail returns a negative errno value and
 * records a human-readable message in a thread-local slot.  The message names
 * the object and the problem ("disk.qcow2: L1 table offset 0x200 overlaps the
 * header"), so the CLI can print it as is.  Callers that only care about the
 * code ignore the message; the next failing call overwrites it.
 */
#ifndef SLUICE_ERROR_H
#define SLUICE_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Record a message for the calling thread and return -errnum (errnum > 0). */
int sl_error(int errnum, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
int sl_verror(int errnum, const char *fmt, va_list ap);

/* Prefix the current message with "PREFIX: " (for adding context on the way
 * up) and return -errnum unchanged. */
int sl_error_prefix(int errnum, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The calling thread's last message, or strerror of the last code if none. */
const char *sl_last_error(void);
int sl_last_errno(void);
void sl_error_clear(void);

#ifdef __cplusplus
}
#endif
#endif
