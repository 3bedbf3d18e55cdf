/* libFuzzer target: open an arbitrary file as an image (format probed,
 * read-only, without its backing chain) and read it, so every header,
 * table and compressed-cluster parser sees hostile input.  Sizes are
 * bounded so a huge claimed virtual size is sampled, not read in full. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <sluice/sluice.h>

#define READ_ALL_LIMIT (4u << 20)
#define CHUNK 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(struct sl_image *img)
{
  static uint8_t buf[CHUNK];
  uint64_t vsize = sl_image_size(img);
  struct sl_extent ext;
  uint64_t off = 0;
  for (int i = 0; i < 64 && off < vsize; i++) {
    if (sl_image_block_status(img, off, vsize - off, &ext) < 0 || ext.length == 0)
      break;
    off += ext.length;
  }
  if (vsize <= READ_ALL_LIMIT) {
    for (off = 0; off < vsize; off += CHUNK) {
      size_t n = vsize - off < CHUNK ? (size_t)(vsize - off) : CHUNK;
      sl_image_pread(img, buf, n, off);
    }
  } else {
    for (int i = 0; i < 16; i++) {
      off = (vsize / 16) * (uint64_t)i;
      size_t n = vsize - off < CHUNK ? (size_t)(vsize - off) : CHUNK;
      sl_image_pread(img, buf, n, off);
    }
  }
  struct sl_image_info info;
  sl_image_get_info(img, &info);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  int fd = memfd_create("fuzz-image", MFD_CLOEXEC);
  if (fd < 0)
    abort();
  if (size && write(fd, data, size) != (ssize_t)size)
    abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  struct sl_image_open_opts o = {.read_only = true, .no_backing = true,
                                 .metadata_cache_bytes = 256 << 10};
  struct sl_image *img;
  if (sl_image_open(path, &o, &img) == 0) {
    exercise(img);
    sl_image_close(img);
  }
  close(fd);
  return 0;
}
