/* Crash-test writer: random writes, discards and flushes on a qcow2 image
 * until killed.  Before each operation it appends an intent line to the
 * journal ("W seq off len pattern" / "D seq off len"), and after each
 * completed flush a line "F seq": every operation journalled before an F
 * line completed before a completed flush, so it must survive a SIGKILL.
 * The journal goes through the page cache, which a SIGKILL does not lose.
 * With OPS, the writer stops after that many operations and closes the
 * image cleanly (a round that is not killed: the persistent bitmaps are
 * then stored and must describe every write exactly).
 *   crash-writer IMAGE JOURNAL SEED [OPS] */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>

static uint64_t rng_state;
static uint64_t rnd(uint64_t n)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state % n;
}

int main(int argc, char **argv)
{
  if (argc != 4 && argc != 5) {
    fprintf(stderr, "usage: crash-writer IMAGE JOURNAL SEED [OPS]\n");
    return 2;
  }
  uint64_t max_ops = argc == 5 ? strtoull(argv[4], NULL, 0) : UINT64_MAX;
  rng_state = strtoull(argv[3], NULL, 0) * 2654435761u + 1;
  struct sl_image *img;
  struct sl_image_open_opts o = {0};
  if (sl_image_open(argv[1], &o, &img) < 0) {
    fprintf(stderr, "crash-writer: %s\n", sl_last_error());
    return 1;
  }
  FILE *j = fopen(argv[2], "a");
  if (!j) {
    perror(argv[2]);
    return 1;
  }
  setvbuf(j, NULL, _IONBF, 0); /* every line reaches the kernel at once */
  uint64_t size = sl_image_size(img);
  static unsigned char buf[100000];
  for (uint64_t seq = 1;; seq++) {
    if (seq > max_ops) {
      if (sl_image_close(img) < 0) {
        fprintf(stderr, "crash-writer: %s\n", sl_last_error());
        return 1;
      }
      return 0;
    }
    uint64_t r = rnd(100), off, len;
    int ret;
    if (r < 70) {
      len = 1 + rnd(sizeof buf);
      off = rnd(size - len);
      int pat = 1 + (int)rnd(255);
      memset(buf, pat, len);
      fprintf(j, "W %" PRIu64 " %" PRIu64 " %" PRIu64 " %d\n", seq, off, len, pat);
      ret = sl_image_pwrite(img, buf, len, off, 0);
    } else if (r < 80) {
      /* Cluster-aligned, so a completed discard reads back as zeros. */
      len = 65536 * (1 + rnd(4));
      off = 65536 * rnd((size - len) / 65536);
      fprintf(j, "D %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", seq, off, len);
      ret = sl_image_discard(img, off, len);
    } else {
      ret = sl_image_flush(img);
      if (ret == 0)
        fprintf(j, "F %" PRIu64 "\n", seq);
    }
    if (ret < 0) {
      fprintf(stderr, "crash-writer: %s\n", sl_last_error());
      return 1;
    }
  }
}
