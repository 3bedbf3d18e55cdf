/* libFuzzer target: the NBD server's handshake and request parsing.  The
 * input is what a client sends; it is written into one end of a socket
 * pair and the server serves the other end (sl_nbd_serve_fd) over a small
 * raw disk on a memfd, until the input runs out.  What the server replies
 * is drained and thrown away.  Half the inputs (by size) run with the
 * reader gathering reads into batches (SLUICE_NBD_BATCH=1). */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sluice/sluice.h>
#include "export/export.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct sl_disk *disk;

static void open_disk(void)
{
  int fd = memfd_create("fuzz-nbd-disk", 0);
  if (fd < 0 || ftruncate(fd, 1 << 20) < 0)
    abort();
  char path[64];
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  struct sl_disk_open_opts o = {.format = SL_FORMAT_RAW};
  if (sl_disk_open(path, &o, &disk) < 0)
    abort();
}

struct feed {
  int fd;
  const uint8_t *data;
  size_t size;
};

/* Send the input, then close our write side so the server sees EOF. */
static void *feeder(void *opaque)
{
  struct feed *f = opaque;
  size_t off = 0;
  while (off < f->size) {
    ssize_t n = send(f->fd, f->data + off, f->size - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  shutdown(f->fd, SHUT_WR);
  char sink[65536];
  while (recv(f->fd, sink, sizeof sink, 0) > 0)
    ;
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (!disk)
    open_disk();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort();
  struct feed f = {sv[0], data, size};
  pthread_t t;
  if (pthread_create(&t, NULL, feeder, &f) != 0)
    abort();
  /* Odd-sized inputs go through the reader's batching of reads (the core
   * splits the batches over this raw disk), even-sized ones do not. */
  setenv("SLUICE_NBD_BATCH", size % 2 ? "1" : "0", 1);
  struct sl_nbd_options o = {.export_name = "", .workers = 2,
                             .poll_us = 2 /* exercise recv_polled, briefly */};
  sl_nbd_serve_fd(sl_disk_top(disk), &o, sv[1]); /* closes sv[1] */
  pthread_join(t, NULL);
  close(sv[0]);
  return 0;
}
