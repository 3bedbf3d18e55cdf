/* Compressed or plain trace input as one buffered stream.
 *
 * Traces come as .zst (the ARC traces), .gz (LIRS, SYSTOR), .bz2 (Tencent)
 * or raw, and often from a pipe, so the format is decided by the first
 * bytes, not the name, and nothing seeks.  Decompressed bytes go into one
 * growing window: peek() tops it up, consume() advances, and the consumed
 * prefix is shifted out when more room is needed, so memory is bounded by
 * the longest record or line, never the file.
 */
#include "sim/input.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bzlib.h>
#include <lzma.h>
#include <zlib.h>
#include <zstd.h>

#include "sluice/error.h"

#define RAW_CHUNK (256 * 1024)
#define MAX_LINE (1024 * 1024)

enum codec { CODEC_NONE, CODEC_GZIP, CODEC_XZ, CODEC_ZSTD, CODEC_BZIP2 };

struct sl_input {
  int fd;
  bool own_fd;
  char *name;
  enum codec codec;
  bool raw_eof, out_eof;
  /* compressed bytes read from the file */
  uint8_t *raw;
  size_t raw_pos, raw_len;
  /* decompressed window */
  uint8_t *buf;
  size_t pos, len, cap;
  z_stream gz;
  lzma_stream xz;
  ZSTD_DCtx *zstd;
  bz_stream bz;
  bool codec_live;
  bool mid_stream;  /* inside a compressed stream: EOF now means truncation */
};

const char *sl_input_name(const struct sl_input *in) { return in->name; }

const char *sl_input_compression(const struct sl_input *in)
{
  static const char *names[] = { "none", "gzip", "xz", "zstd", "bzip2" };
  return names[in->codec];
}

static int read_raw(struct sl_input *in)
{
  if (in->raw_pos < in->raw_len || in->raw_eof)
    return 0;
  for (;;) {
    ssize_t r = read(in->fd, in->raw, RAW_CHUNK);
    if (r < 0 && errno == EINTR)
      continue;
    if (r < 0)
      return sl_error(errno, "%s: read: %s", in->name, strerror(errno));
    in->raw_pos = 0;
    in->raw_len = (size_t)r;
    if (r == 0)
      in->raw_eof = true;
    return 0;
  }
}

static int codec_start(struct sl_input *in)
{
  switch (in->codec) {
  case CODEC_NONE:
    return 0;
  case CODEC_GZIP:
    /* 15 + 32: zlib or gzip header, detected automatically. */
    if (inflateInit2(&in->gz, 15 + 32) != Z_OK)
      return sl_error(ENOMEM, "%s: cannot start gzip decoder", in->name);
    break;
  case CODEC_XZ:
    in->xz = (lzma_stream)LZMA_STREAM_INIT;
    if (lzma_stream_decoder(&in->xz, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
      return sl_error(ENOMEM, "%s: cannot start xz decoder", in->name);
    break;
  case CODEC_ZSTD:
    in->zstd = ZSTD_createDCtx();
    if (!in->zstd)
      return sl_error(ENOMEM, "%s: cannot start zstd decoder", in->name);
    break;
  case CODEC_BZIP2:
    memset(&in->bz, 0, sizeof in->bz);
    if (BZ2_bzDecompressInit(&in->bz, 0, 0) != BZ_OK)
      return sl_error(ENOMEM, "%s: cannot start bzip2 decoder", in->name);
    break;
  }
  in->codec_live = true;
  in->mid_stream = in->codec != CODEC_NONE;
  return 0;
}

static void codec_end(struct sl_input *in)
{
  if (!in->codec_live)
    return;
  switch (in->codec) {
  case CODEC_NONE: break;
  case CODEC_GZIP: inflateEnd(&in->gz); break;
  case CODEC_XZ: lzma_end(&in->xz); break;
  case CODEC_ZSTD: ZSTD_freeDCtx(in->zstd); break;
  case CODEC_BZIP2: BZ2_bzDecompressEnd(&in->bz); break;
  }
  in->codec_live = false;
}

static enum codec sniff(const uint8_t *p, size_t n)
{
  if (n >= 2 && p[0] == 0x1f && p[1] == 0x8b)
    return CODEC_GZIP;
  if (n >= 6 && memcmp(p, "\xfd" "7zXZ\0", 6) == 0)
    return CODEC_XZ;
  if (n >= 4 && memcmp(p, "\x28\xb5\x2f\xfd", 4) == 0)
    return CODEC_ZSTD;
  if (n >= 4 && p[0] == 'B' && p[1] == 'Z' && p[2] == 'h' && p[3] >= '1' &&
      p[3] <= '9')
    return CODEC_BZIP2;
  return CODEC_NONE;
}

int sl_input_open(const char *path, struct sl_input **out)
{
  struct sl_input *in = calloc(1, sizeof *in);
  if (!in)
    return sl_error(ENOMEM, "out of memory");
  in->fd = -1;
  bool is_stdin = strcmp(path, "-") == 0;
  in->name = strdup(is_stdin ? "<stdin>" : path);
  in->raw = malloc(RAW_CHUNK);
  in->cap = RAW_CHUNK * 4;
  in->buf = malloc(in->cap);
  if (!in->name || !in->raw || !in->buf) {
    sl_input_close(in);
    return sl_error(ENOMEM, "out of memory");
  }
  if (is_stdin) {
    in->fd = 0;
  } else {
    in->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (in->fd < 0) {
      int e = errno;
      sl_input_close(in);
      return sl_error(e, "%s: %s", path, strerror(e));
    }
    in->own_fd = true;
  }
  /* Fill the first chunk fully enough to see a magic number (a pipe may
   * deliver a few bytes at a time). */
  int r = read_raw(in);
  while (r == 0 && !in->raw_eof && in->raw_len < 6) {
    ssize_t m = read(in->fd, in->raw + in->raw_len, RAW_CHUNK - in->raw_len);
    if (m < 0 && errno == EINTR)
      continue;
    if (m < 0) {
      r = sl_error(errno, "%s: read: %s", in->name, strerror(errno));
      break;
    }
    if (m == 0)
      in->raw_eof = true;
    in->raw_len += (size_t)m;
  }
  if (r == 0 && in->raw_len > 0)
    in->raw_eof = false; /* there is data; EOF is seen again on the next read */
  if (r == 0) {
    in->codec = sniff(in->raw, in->raw_len);
    r = codec_start(in);
  }
  if (r < 0) {
    sl_input_close(in);
    return r;
  }
  *out = in;
  return 0;
}

void sl_input_close(struct sl_input *in)
{
  if (!in)
    return;
  codec_end(in);
  if (in->own_fd && in->fd >= 0)
    close(in->fd);
  free(in->name);
  free(in->raw);
  free(in->buf);
  free(in);
}

/* Run the decoder once over what raw input there is.  Returns 0 and the
 * bytes USED from SRC and MADE into DST, or -errno. */
static int decode(struct sl_input *in, const uint8_t *src, size_t avail,
                  uint8_t *dst, size_t room, size_t *used, size_t *made)
{
  switch (in->codec) {
  case CODEC_NONE:
    *used = *made = avail < room ? avail : room;
    memcpy(dst, src, *made);
    return 0;
  case CODEC_GZIP: {
    if (!in->mid_stream) {
      /* Another member follows (gzip allows concatenation). */
      if (inflateReset(&in->gz) != Z_OK)
        return sl_error(EINVAL, "%s: gzip reset failed", in->name);
      in->mid_stream = true;
    }
    in->gz.next_in = (Bytef *)src;
    in->gz.avail_in = (uInt)avail;
    in->gz.next_out = dst;
    in->gz.avail_out = (uInt)room;
    int z = inflate(&in->gz, Z_NO_FLUSH);
    *used = avail - in->gz.avail_in;
    *made = room - in->gz.avail_out;
    if (z == Z_STREAM_END)
      in->mid_stream = false;
    else if (z != Z_OK && z != Z_BUF_ERROR)
      return sl_error(EINVAL, "%s: corrupt gzip data: %s", in->name,
                      in->gz.msg ? in->gz.msg : "inflate failed");
    return 0;
  }
  case CODEC_XZ: {
    in->xz.next_in = src;
    in->xz.avail_in = avail;
    in->xz.next_out = dst;
    in->xz.avail_out = room;
    lzma_ret z = lzma_code(&in->xz, in->raw_eof ? LZMA_FINISH : LZMA_RUN);
    *used = avail - in->xz.avail_in;
    *made = room - in->xz.avail_out;
    if (z == LZMA_STREAM_END) {
      in->mid_stream = false;
      in->out_eof = true;
    } else if (z != LZMA_OK && z != LZMA_BUF_ERROR) {
      return sl_error(EINVAL, "%s: corrupt xz data (lzma error %d)", in->name,
                      (int)z);
    }
    return 0;
  }
  case CODEC_ZSTD: {
    ZSTD_inBuffer ib = { src, avail, 0 };
    ZSTD_outBuffer ob = { dst, room, 0 };
    size_t z = ZSTD_decompressStream(in->zstd, &ob, &ib);
    if (ZSTD_isError(z))
      return sl_error(EINVAL, "%s: corrupt zstd data: %s", in->name,
                      ZSTD_getErrorName(z));
    *used = ib.pos;
    *made = ob.pos;
    /* 0 means a frame is complete; another may follow. */
    in->mid_stream = z != 0;
    return 0;
  }
  case CODEC_BZIP2: {
    if (!in->mid_stream) {
      BZ2_bzDecompressEnd(&in->bz);
      memset(&in->bz, 0, sizeof in->bz);
      if (BZ2_bzDecompressInit(&in->bz, 0, 0) != BZ_OK)
        return sl_error(ENOMEM, "%s: cannot restart bzip2", in->name);
      in->mid_stream = true;
    }
    in->bz.next_in = (char *)src;
    in->bz.avail_in = (unsigned)avail;
    in->bz.next_out = (char *)dst;
    in->bz.avail_out = (unsigned)room;
    int z = BZ2_bzDecompress(&in->bz);
    *used = avail - in->bz.avail_in;
    *made = room - in->bz.avail_out;
    if (z == BZ_STREAM_END)
      in->mid_stream = false;
    else if (z != BZ_OK)
      return sl_error(EINVAL, "%s: corrupt bzip2 data (bzip2 error %d)",
                      in->name, z);
    return 0;
  }
  }
  return 0;
}

/* Append decompressed bytes to the window; sets out_eof at the end. */
static int fill(struct sl_input *in)
{
  if (in->pos > 0 && (in->len == in->cap || in->pos > in->cap / 2)) {
    memmove(in->buf, in->buf + in->pos, in->len - in->pos);
    in->len -= in->pos;
    in->pos = 0;
  }
  if (in->len == in->cap) {
    uint8_t *nb = realloc(in->buf, in->cap * 2);
    if (!nb)
      return sl_error(ENOMEM, "out of memory");
    in->buf = nb;
    in->cap *= 2;
  }
  size_t before = in->len;
  while (in->len == before && !in->out_eof) {
    int r = read_raw(in);
    if (r < 0)
      return r;
    size_t avail = in->raw_len - in->raw_pos;
    if (in->raw_eof && avail == 0 && !in->mid_stream) {
      in->out_eof = true;
      break;
    }
    size_t used = 0, made = 0;
    r = decode(in, in->raw + in->raw_pos, avail, in->buf + in->len,
               in->cap - in->len, &used, &made);
    if (r < 0)
      return r;
    /* At the end of the file a decoder may still flush what it holds;
     * if it has nothing and wants more, the file was cut short. */
    if (in->raw_eof && avail == 0 && made == 0 && !in->out_eof) {
      in->out_eof = true;
      if (in->mid_stream)
        return sl_error(EINVAL, "%s: truncated %s data", in->name,
                        sl_input_compression(in));
    }
    in->raw_pos += used;
    in->len += made;
  }
  return 0;
}

int64_t sl_input_peek(struct sl_input *in, size_t want, const uint8_t **data)
{
  while (in->len - in->pos < want && !in->out_eof) {
    int r = fill(in);
    if (r < 0)
      return r;
  }
  *data = in->buf + in->pos;
  return (int64_t)(in->len - in->pos);
}

void sl_input_consume(struct sl_input *in, size_t n) { in->pos += n; }

int64_t sl_input_line(struct sl_input *in, char **line)
{
  size_t scanned = 0;
  for (;;) {
    uint8_t *start = in->buf + in->pos;
    size_t avail = in->len - in->pos;
    uint8_t *nl = memchr(start + scanned, '\n', avail - scanned);
    if (nl || (in->out_eof && avail > 0)) {
      size_t n = nl ? (size_t)(nl - start) : avail;
      if (!nl) {
        /* last line without a newline: make room for the NUL */
        if (in->len == in->cap) {
          int r = fill(in); /* grows or shifts */
          if (r < 0)
            return r;
          start = in->buf + in->pos;
        }
      }
      in->pos += nl ? n + 1 : n;
      if (n > 0 && start[n - 1] == '\r')
        n--;
      start[n] = '\0';
      *line = (char *)start;
      return (int64_t)n;
    }
    if (in->out_eof)
      return -1;
    if (avail > MAX_LINE)
      return sl_error(EINVAL, "%s: a line is longer than %d bytes", in->name,
                      MAX_LINE);
    scanned = avail;
    int r = fill(in);
    if (r < 0)
      return r;
  }
}
