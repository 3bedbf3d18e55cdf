/* sluice convert: copy an image, a chain or a disk (through its filter
 * stack) into a new raw or qcow2 image.
 *
 * The output is sparse: extents the source reports as unallocated or zero
 * are skipped, and data chunks are scanned for all-zero runs at the
 * output's granularity (4 KiB for raw, the cluster size for qcow2), which
 * are not written either.  A fresh output reads zeros there already. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "disk/descriptor.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

#define CHUNK (2u << 20)

static const char usage_text[] =
  "Usage: sluice convert [-p] [-U] [-f FMT] [-O raw|qcow2] [-o OPTIONS] [--at FILTER] SRC DST\n"
  "\n"
  "Copy SRC (an image, a chain read as one disk, or a disk descriptor whose\n"
  "filters apply) into the new image DST.  Zero and unallocated ranges are\n"
  "not written, so DST is sparse.  If DST is an existing disk descriptor,\n"
  "SRC is written through its filter stack instead (DST must be at least\n"
  "as large as SRC; zero ranges are written as zeros).\n"
  "\n"
  "  -p            show progress\n"
  "  -U            open SRC even if another process writes it (force-share)\n"
  "  -f FMT        SRC format (probed by default)\n"
  "  -O FMT        DST format: raw (default) or qcow2\n"
  "  -o OPTIONS    qcow2 options for DST: cluster_size=N, extended_l2=on|off,\n"
  "                compression_type=zlib|zstd\n"
  "  --at FILTER   read SRC below FILTER (bypassing it and the filters above)\n";

struct convert {
  struct sl_handle *src;
  struct sl_image *dst;         /* a new image, or */
  struct sl_handle *dst_disk;   /* the top of a descriptor's stack */
  uint64_t size;
  size_t granule;
  char *buf;
  struct progress prog;
};

static bool is_zero(const char *p, size_t len)
{
  /* Compare the buffer with itself shifted: zero iff first byte is zero and
   * every byte equals its neighbour. */
  return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static int out_write(struct convert *cv, const void *buf, size_t len,
                     uint64_t off)
{
  if (cv->dst_disk)
    return sl_disk_pwrite(cv->dst_disk, buf, len, off, 0);
  return sl_image_pwrite(cv->dst, buf, len, off, 0);
}

/* Make [OFF, OFF+LEN) read as zeros: nothing to do in a new image. */
static int out_zero(struct convert *cv, uint64_t off, uint64_t len)
{
  if (!cv->dst_disk || len == 0)
    return 0;
  if (sl_disk_can_zero(cv->dst_disk))
    return sl_disk_write_zeroes(cv->dst_disk, off, len, 0);
  memset(cv->buf, 0, CHUNK);
  for (uint64_t done = 0; done < len;) {
    size_t n = (size_t)SL_MIN(len - done, CHUNK);
    int r = sl_disk_pwrite(cv->dst_disk, cv->buf, n, off + done, 0);
    if (r < 0)
      return r;
    done += n;
  }
  return 0;
}

/* Write the non-zero granules of BUF (LEN bytes at OFF) to the output. */
static int write_nonzero(struct convert *cv, uint64_t off, size_t len)
{
  size_t pos = 0;
  while (pos < len) {
    size_t g = SL_MIN(cv->granule - (size_t)((off + pos) % cv->granule), len - pos);
    if (is_zero(cv->buf + pos, g)) {
      pos += g;
      continue;
    }
    size_t start = pos;
    pos += g;
    while (pos < len) {
      size_t g2 = SL_MIN(cv->granule, len - pos);
      if (is_zero(cv->buf + pos, g2))
        break;
      pos += g2;
    }
    int r = out_write(cv, cv->buf + start, pos - start, off + start);
    if (r < 0)
      return r;
  }
  return 0;
}

static int copy(struct convert *cv)
{
  uint64_t off = 0;
  while (off < cv->size) {
    struct sl_extent ext;
    uint64_t want = SL_MIN(cv->size - off, (uint64_t)1 << 30);
    int r = sl_disk_block_status(cv->src, off, want, &ext);
    if (r < 0)
      return r;
    uint64_t end = off + ext.length;
    if (ext.type != SL_EXTENT_DATA && (r = out_zero(cv, off, ext.length)) < 0)
      return r;
    if (ext.type == SL_EXTENT_DATA) {
      while (off < end) {
        size_t n = (size_t)SL_MIN(end - off, CHUNK);
        r = sl_disk_pread(cv->src, cv->buf, n, off, 0);
        if (r < 0)
          return r;
        /* A disk destination does not read as zeros: write it whole. */
        r = cv->dst_disk ? out_write(cv, cv->buf, n, off)
                         : write_nonzero(cv, off, n);
        if (r < 0)
          return r;
        off += n;
        progress_update(&cv->prog, off);
      }
    }
    off = end;
    progress_update(&cv->prog, off);
  }
  return cv->dst_disk ? sl_disk_flush(cv->dst_disk) : sl_image_flush(cv->dst);
}

static int dst_option(void *opaque, const char *k, const char *v)
{
  struct sl_image_create_opts *o = opaque;
  if (strcmp(k, "cluster_size") == 0 && v) {
    uint64_t cs;
    if (sl_parse_size("cluster_size", v, &cs) < 0 || cs < 512 || cs > (2u << 20) ||
        !SL_IS_POWER_OF_2(cs))
      return cli_fail("convert", "cluster_size '%s' must be a power of two "
                      "between 512 and 2M", v);
    o->cluster_size = (uint32_t)cs;
  } else if (strcmp(k, "extended_l2") == 0) {
    int b = parse_bool(v);
    if (b < 0)
      return cli_fail("convert", "extended_l2: '%s' is not on or off", v);
    o->extended_l2 = b;
  } else if (strcmp(k, "compression_type") == 0 && v &&
             (strcmp(v, "zlib") == 0 || strcmp(v, "zstd") == 0)) {
    o->compression_type = v;
  } else {
    return cli_fail("convert", "unknown or invalid option '%s%s%s'", k,
                    v ? "=" : "", v ? v : "");
  }
  return 0;
}

int cmd_convert(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"at", required_argument, NULL, 'A'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
  };
  struct sl_disk_open_opts so = {.read_only = true};
  struct sl_image_create_opts co = {.format = SL_FORMAT_RAW};
  const char *at = NULL;
  char *optlist = NULL;
  bool progress = false, format_given = false;
  int c;

  while ((c = getopt_long(argc, argv, "pf:O:o:Uh", longopts, NULL)) != -1) {
    switch (c) {
    case 'p': progress = true; break;
    case 'U': so.force_share = true; break;
    case 'f':
      if (sl_format_parse(optarg, &so.format) < 0)
        return cli_fail("convert", "%s", sl_last_error());
      break;
    case 'O':
      if (sl_format_parse(optarg, &co.format) < 0)
        return cli_fail("convert", "%s", sl_last_error());
      format_given = true;
      break;
    case 'o': optlist = optarg; break;
    case 'A': at = optarg; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (argc - optind != 2) {
    fputs(usage_text, stderr);
    return cli_fail("convert", "need SRC and DST");
  }
  const char *src_path = argv[optind], *dst_path = argv[optind + 1];
  bool dst_is_disk = sl_is_descriptor(dst_path);
  if (dst_is_disk && (format_given || optlist))
    return cli_fail("convert", "%s is a disk descriptor: its image exists "
                    "already, so -O and -o do not apply", dst_path);
  if (optlist) {
    if (co.format != SL_FORMAT_QCOW2)
      return cli_fail("convert", "-o options apply only to -O qcow2");
    if (kv_each(optlist, dst_option, &co))
      return 1;
  }

  struct sl_disk *disk;
  if (sl_disk_open(src_path, &so, &disk) < 0)
    return cli_fail("convert", "%s", sl_last_error());
  struct convert cv = {.src = at ? sl_disk_at(disk, at) : sl_disk_top(disk)};
  if (!cv.src) {
    sl_disk_close(disk);
    return cli_fail("convert", "%s: --at %s: %s", src_path, at, sl_last_error());
  }
  cv.size = sl_disk_size(cv.src);
  co.size = cv.size;
  int ret = 1;
  struct sl_disk *dst_disk = NULL;
  /* Before anything is created, truncated or opened for writing: DST (or
   * the image of a DST descriptor) must not be any layer of SRC. */
  if (sl_image_refuse_layer(sl_disk_image(disk), dst_path, "DST") < 0) {
    cli_fail("convert", "%s", sl_last_error());
    goto out_disk;
  }
  if (dst_is_disk) {
    struct sl_descriptor *dd = NULL;
    int r = sl_descriptor_load(dst_path, &dd);
    char *dimg = r == 0 ? sl_descriptor_image_path(dd) : NULL;
    if (r == 0 && !dimg)
      r = sl_error(ENOMEM, "out of memory");
    if (r == 0)
      r = sl_image_refuse_layer(sl_disk_image(disk), dimg, "the image of DST");
    free(dimg);
    if (dd)
      sl_descriptor_free(dd);
    if (r < 0) {
      cli_fail("convert", "%s", sl_last_error());
      goto out_disk;
    }
  }
  if (dst_is_disk) {
    struct sl_disk_open_opts dopts = {0};
    if (sl_disk_open(dst_path, &dopts, &dst_disk) < 0) {
      cli_fail("convert", "%s", sl_last_error());
      goto out_disk;
    }
    cv.dst_disk = sl_disk_top(dst_disk);
    if (sl_disk_size(cv.dst_disk) < cv.size) {
      cli_fail("convert", "%s (%" PRIu64 " bytes) is smaller than %s (%"
               PRIu64 " bytes)", dst_path, sl_disk_size(cv.dst_disk),
               src_path, cv.size);
      goto out_dst;
    }
    cv.granule = 4096;
  } else {
    if (sl_image_create(dst_path, &co) < 0) {
      cli_fail("convert", "%s", sl_last_error());
      goto out_disk;
    }
    struct sl_image_open_opts oo = {.format = co.format};
    if (sl_image_open(dst_path, &oo, &cv.dst) < 0) {
      cli_fail("convert", "%s", sl_last_error());
      goto out_disk;
    }
    struct sl_image_info info;
    sl_image_get_info(cv.dst, &info);
    cv.granule = co.format == SL_FORMAT_QCOW2 && info.cluster_size ? info.cluster_size : 4096;
  }
  cv.buf = malloc(CHUNK);
  if (!cv.buf) {
    cli_fail("convert", "out of memory");
    goto out_dst;
  }
  progress_init(&cv.prog, progress, cv.size);
  if (copy(&cv) < 0)
    cli_fail("convert", "%s -> %s: %s", src_path, dst_path, sl_last_error());
  else
    ret = 0;
  progress_finish(&cv.prog);
  free(cv.buf);
out_dst:
  if ((dst_disk ? sl_disk_close(dst_disk) : sl_image_close(cv.dst)) < 0 &&
      ret == 0)
    ret = cli_fail("convert", "%s: %s", dst_path, sl_last_error());
out_disk:
  sl_disk_close(disk);
  return ret;
}
