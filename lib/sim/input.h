/* A buffered byte stream over a file or standard input that undoes gzip,
 * xz, zstd or bzip2 compression, recognised by the magic bytes, so every
 * trace reader sees plain bytes whatever the file was stored as.
 */
#ifndef SLUICE_SIM_INPUT_H
#define SLUICE_SIM_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct sl_input;

/* Open PATH ("-" is standard input).  0 or -errno with a message. */
int sl_input_open(const char *path, struct sl_input **out);
void sl_input_close(struct sl_input *in);
/* The name used in messages ("trace.vscsi", "<stdin>"). */
const char *sl_input_name(const struct sl_input *in);
/* "gzip", "xz", "zstd", "bzip2" or "none". */
const char *sl_input_compression(const struct sl_input *in);

/* Make at least WANT bytes available (fewer only at end of stream) and
 * return a pointer to them in *DATA.  Returns the number available (0 at
 * the end) or -errno with a message. */
int64_t sl_input_peek(struct sl_input *in, size_t want, const uint8_t **data);
/* Consume N bytes of what peek returned. */
void sl_input_consume(struct sl_input *in, size_t n);
/* The next line without its "\n" (and "\r"), NUL-terminated, valid until
 * the next call.  Returns its length, -1 at the end, or -errno. */
int64_t sl_input_line(struct sl_input *in, char **line);

#endif
