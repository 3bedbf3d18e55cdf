/* libFuzzer target: sluiced's handling of what a client sends.  The input
 * is the byte stream a client writes on its socket, and it goes through the
 * daemon twice:
 *
 *  1. the request parser alone, cut into messages exactly as the daemon's
 *     connection reader cuts them (sl_cs_frame on the bytes received so
 *     far, each message copied to an aligned buffer, sl_cs_parse_request
 *     with the negotiated version, none until a valid HELLO), every
 *     accepted request's fields read as the daemon reads them;
 *  2. the real server (daemon/server.c, linked in): one end of a socket
 *     pair is handed to it (sd_server_adopt), and a well-behaved prelude
 *     first says HELLO and registers a small layer file and a sealed memfd
 *     (layer 1, handle 1: a slot's first number is its index + 1; later
 *     occupants of the slot get a generation in the bits above), so that
 *     the fuzzed bytes that follow reach the READ, INVALIDATE, STATS, DROP
 *     and unregistration paths with numbers that name something -- and,
 *     when they are forged or kept after UNREGISTER, numbers that do not.
 *     A feeder thread writes the input while this thread drains the
 *     replies, until the daemon closes the connection.
 *
 * The prelude's own HELLO makes the input's HELLO a protocol error in part
 * 2, so the input is sent as is in part 1 and without its first message
 * when that is a HELLO in part 2.
 *
 * REGISTER_RBD (version 2) is parsed in part 1 (a fuzzed HELLO may
 * negotiate version 2); part 2 speaks version 1, where it is an unknown
 * opcode, because the daemon would connect to whatever monitors the input
 * names -- the network is no place for a fuzzer.  tests/rbd's
 * test-rbd-sluiced sends it hostile registrations against a real cluster. */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cachesvc/protocol.h"
#include "ipc/socket.h"
#include "server.h"
#include "store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t sink;

static void touch(const struct sl_cs_request *r)
{
  if (r->hdr.op == SL_CS_READ) {
    for (uint32_t i = 0; i < r->read->count; i++)
      sink += r->entries[i].file_offset + r->entries[i].handle_offset + r->entries[i].length +
              r->entries[i].layer + r->entries[i].handle;
  } else if (r->hdr.op == SL_CS_REGISTER_HANDLE) {
    sink += r->u.reg_handle->offset + r->u.reg_handle->length;
  } else if (r->hdr.op == SL_CS_INVALIDATE) {
    sink += r->u.invalidate->offset + r->u.invalidate->length;
  } else if (r->hdr.op == SL_CS_REGISTER_RBD) {
    /* what the daemon reads of it: NUL-terminated strings */
    sink += strlen(r->u.reg_rbd->pool) + strlen(r->u.reg_rbd->ns) +
            strlen(r->u.reg_rbd->image) + strlen(r->u.reg_rbd->snap) +
            strlen(r->u.reg_rbd->user) + strlen(r->u.reg_rbd->key) +
            strlen(r->u.reg_rbd->mon_host) + strlen(r->u.reg_rbd->fsid) +
            strlen(r->u.reg_rbd->image_id);
  }
}

/* Part 1.  Returns the length of the input's first message if it is a
 * valid HELLO (part 2 skips it), else 0. */
static size_t parse_only(const uint8_t *data, size_t size)
{
  static uint64_t msg[SL_CS_MAX_MSG / 8];
  uint16_t version = 0;
  size_t off = 0, first_hello = 0;
  while (off < size) {
    long n = sl_cs_frame(data + off, size - off);
    if (n <= 0)
      break; /* malformed (the daemon closes) or incomplete (it waits) */
    memcpy(msg, data + off, (size_t)n);
    struct sl_cs_request r;
    if (sl_cs_parse_request(msg, (size_t)n, version, &r) < 0)
      break;
    touch(&r);
    if (r.hdr.op == SL_CS_HELLO) {
      if (r.u.hello->min_version > SL_CS_VERSION_MAX ||
          r.u.hello->max_version < SL_CS_VERSION_MIN)
        break;
      version = r.u.hello->max_version < SL_CS_VERSION_MAX ? r.u.hello->max_version
                                                           : SL_CS_VERSION_MAX;
      if (off == 0)
        first_hello = (size_t)n;
    }
    for (uint16_t op = SL_CS_HELLO; op <= SL_CS_OP_MAX; op++)
      sink += (uint64_t)sl_cs_check_reply(msg, (size_t)n, op, r.read ? r.read->count : 1);
    off += (size_t)n;
  }
  return first_hello;
}

static struct sd_server *srv;
static int layer_fd = -1, mem_fd = -1;

static void setup(void)
{
  /* the lease-break signal must never kill the fuzzer (nobody writes the
   * layer file, but be safe) */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sd_lease_signal());
  sigaddset(&set, SIGIO);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  struct sd_options o = {.memory = 1 << 20, .block_size = 4096, .workers = 2,
                         .max_sections = 8, .poll_us = 0, .quiet = true};
  if (sd_server_create(&o, &srv) < 0 || sd_server_start(srv, -1) < 0)
    abort();
  char path[] = "/tmp/fuzz-sluiced-layer.XXXXXX";
  int w = mkstemp(path);
  if (w < 0)
    abort();
  static uint8_t b[256 << 10];
  for (size_t i = 0; i < sizeof b; i++)
    b[i] = (uint8_t)(i * 7 + 3);
  if (write(w, b, sizeof b) != (ssize_t)sizeof b)
    abort();
  close(w);
  layer_fd = open(path, O_RDONLY | O_CLOEXEC);
  unlink(path);
  mem_fd = memfd_create("fuzz-sluiced", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (layer_fd < 0 || mem_fd < 0 || ftruncate(mem_fd, 4 << 20) < 0)
    abort();
  /* every page written: the daemon refuses memory the client never
   * allocated (it would be charged for it) */
  for (off_t off = 0; off < (4 << 20); off += (off_t)sizeof b)
    if (pwrite(mem_fd, b, sizeof b, off) != (ssize_t)sizeof b)
      abort();
  if (fcntl(mem_fd, F_ADD_SEALS, F_SEAL_SHRINK) < 0)
    abort();
}

struct feed {
  int fd;
  const uint8_t *data;
  size_t size;
};

static void send_msg(int fd, uint16_t op, const void *body, size_t blen, int pass)
{
  uint64_t buf[16];
  long n = sl_cs_encode(buf, sizeof buf, 1, op, 0, 0, body, blen);
  if (n < 0 || sl_ipc_send_fds(fd, buf, (size_t)n, pass >= 0 ? &pass : NULL, pass >= 0) < 0)
    return; /* the daemon may have closed already: fine */
}

static void *feeder(void *opaque)
{
  struct feed *f = opaque;
  struct sl_cs_hello h = {.min_version = 1, .max_version = 1};
  send_msg(f->fd, SL_CS_HELLO, &h, sizeof h, -1);
  struct sl_cs_register_layer l = {0};
  send_msg(f->fd, SL_CS_REGISTER_LAYER, &l, sizeof l, layer_fd);
  struct sl_cs_register_handle m = {.offset = 4096, .length = (4 << 20) - 4096,
                                    .rights = SL_CS_RIGHT_WRITE};
  send_msg(f->fd, SL_CS_REGISTER_HANDLE, &m, sizeof m, mem_fd);
  size_t off = 0;
  while (off < f->size) {
    ssize_t n = send(f->fd, f->data + off, f->size - off, MSG_NOSIGNAL);
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  shutdown(f->fd, SHUT_WR);
  return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  size_t skip = parse_only(data, size);
  if (!srv)
    setup();
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    abort();
  if (sd_server_adopt(srv, sv[1]) < 0)
    abort();
  struct feed f = {sv[0], data + skip, size - skip};
  pthread_t t;
  if (pthread_create(&t, NULL, feeder, &f) != 0)
    abort();
  char sink_buf[65536];
  while (recv(sv[0], sink_buf, sizeof sink_buf, 0) > 0)
    ;
  pthread_join(t, NULL);
  close(sv[0]);
  sd_server_wait_idle(srv); /* its handles and layers are released */
  return 0;
}
