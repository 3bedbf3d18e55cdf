/* qcow2 compressed clusters: zlib (raw deflate, 4 KiB window) or zstd, as
 * the header's compression_type says.  The stored size is rounded up to
 * 512-byte sectors, so trailing bytes after the stream are ignored; the
 * output must fill exactly one cluster. */
#include <errno.h>
#include <string.h>
#include <zlib.h>
#include <zstd.h>

#include <sluice/error.h>
#include "image/qcow2.h"

static int inflate_zlib(uint8_t *dst, size_t dst_len, const uint8_t *src,
                        size_t src_len)
{
  z_stream z;
  memset(&z, 0, sizeof z);
  if (inflateInit2(&z, -12) != Z_OK)
    return -ENOMEM;
  z.next_in = (Bytef *)src;
  z.avail_in = (uInt)src_len;
  z.next_out = dst;
  z.avail_out = (uInt)dst_len;
  int ret = inflate(&z, Z_FINISH);
  bool ok = (ret == Z_STREAM_END || ret == Z_BUF_ERROR) && z.avail_out == 0;
  inflateEnd(&z);
  return ok ? 0 : -EIO;
}

static int decompress_zstd(uint8_t *dst, size_t dst_len, const uint8_t *src,
                           size_t src_len)
{
  ZSTD_DCtx *dctx = ZSTD_createDCtx();
  if (!dctx)
    return -ENOMEM;
  ZSTD_inBuffer in = {src, src_len, 0};
  ZSTD_outBuffer out = {dst, dst_len, 0};
  int r = 0;
  while (out.pos < out.size) {
    size_t last = in.pos;
    size_t ret = ZSTD_decompressStream(dctx, &out, &in);
    if (ZSTD_isError(ret)) {
      r = -EIO;
      break;
    }
    if (ret == 0 && out.pos < out.size) {
      /* Frame ended early: another frame may follow. */
      if (in.pos >= in.size) {
        r = -EIO;
        break;
      }
      continue;
    }
    if (in.pos == last && in.pos >= in.size) {
      r = -EIO;
      break;
    }
  }
  ZSTD_freeDCtx(dctx);
  return r;
}

int qcow2_decompress(struct qcow2_state *s, uint8_t *dst, size_t dst_len,
                     const uint8_t *src, size_t src_len)
{
  int r = s->compression_type == QCOW2_COMPRESSION_ZSTD
              ? decompress_zstd(dst, dst_len, src, src_len)
              : inflate_zlib(dst, dst_len, src, src_len);
  if (r == -ENOMEM)
    return sl_error(ENOMEM, "%s: out of memory", s->img->filename);
  if (r < 0)
    return sl_error(EIO, "%s: compressed cluster does not decompress (%s)",
                    s->img->filename,
                    s->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd"
                                                                  : "zlib");
  return 0;
}
