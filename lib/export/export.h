/* Exports: how a sluice disk reaches its consumers outside the process.
 *
 *  - NBD (nbd-server.c): the fixed-newstyle NBD protocol on UNIX and TCP
 *    sockets, for QEMU, libnbd tools, fio and the kernel's nbd client.
 *  - FUSE (fuse.c): the disk as a regular file, so that a loop device over
 *    it is a real block device for the kernel.
 *
 * Both run every request through a handle of the disk's filter stack
 * (sl_disk_top or sl_disk_at) and never bypass the core's checks. */
#ifndef SLUICE_EXPORT_H
#define SLUICE_EXPORT_H

#include <stdbool.h>
#include <stddef.h>

#include <sluice/disk.h>

/* ---- the export driver table: all that `sluice serve` knows of exports --
 *
 * As QEMU's block export drivers: each export is one entry, and a new
 * export (vhost-user-blk) is a new entry and a new file, not a change to the
 * command.  An entry is named after its `sluice serve --NAME ARG` option.
 * Lifecycle, per process: create (binds what must be bound while errors
 * still reach the terminal, before --daemon forks; no threads) -> start
 * (threads, mounts) -> stop (finish in-flight requests, release all). */

/* Options every export gets; each driver uses what applies to it. */
struct sl_export_config {
  bool read_only;
  const char *export_name;   /* NBD: "" by default */
  const char *description;   /* NBD: optional */
  unsigned workers;          /* NBD: request threads per connection */
  unsigned poll_us;          /* NBD: polling window at queue depth 1 */
};

struct sl_export_driver {
  const char *name;          /* option and label: "nbd", "fuse" */
  const char *args_help;     /* what ARG looks like, for the usage text */
  const char *verb;          /* "serving DISK <verb> ARG": "on", "as" */
  size_t max_args;           /* --NAME options per process */
  bool takes_sockets;        /* accepts "fd:N": socket-activated listeners */
  /* Why this sluice cannot offer it (built without a library), or NULL. */
  const char *unavailable;
  int (*create)(struct sl_handle *h, const struct sl_export_config *cfg,
                const char *const *args, size_t n_args, void **state);
  int (*start)(void *state);
  /* Ownership is being handed over (optional): from now on fail new
   * requests (EIO) and wait for those in flight; stop follows.  Exports
   * whose stop already answers what was taken and refuses the rest (NBD)
   * need none. */
  void (*quiesce)(void *state);
  void (*stop)(void *state);  /* NULL-safe; frees STATE */
};

/* The exports of this build, in the order `serve` starts them; NULL ends. */
extern const struct sl_export_driver *const sl_export_drivers[];

/* ---- NBD (nbd-server.c) ---------------------------------------------- */

struct sl_nbd_server;

struct sl_nbd_options {
  bool read_only;
  const char *export_name;   /* "" by default; clients may ask for any name */
  const char *description;   /* optional, sent with NBD_INFO_DESCRIPTION */
  unsigned workers;          /* request threads per connection (default 4) */
  unsigned poll_us;          /* most the reader polls an idle connection before
                              * sleeping (0: never; `sluice serve` uses 64) */
};

/* Bind the listeners ("unix:PATH", "tcp:HOST:PORT" or an inherited "fd:N",
 * see lib/ipc/socket.h); no thread runs yet, so the caller may still fork
 * (--daemon). */
int sl_nbd_server_create(struct sl_handle *h, const struct sl_nbd_options *opts,
                         const char *const *listen, size_t n_listen,
                         struct sl_nbd_server **out);
/* Start accepting clients in background threads. */
int sl_nbd_server_start(struct sl_nbd_server *srv);
/* Stop accepting, let in-flight requests finish, disconnect every client,
 * join all threads and free the server.  The disk is not touched. */
void sl_nbd_server_stop(struct sl_nbd_server *srv);

/* Serve one already-connected client on FD until it disconnects (used by
 * the fuzz target and by the accept loop).  Closes FD. */
int sl_nbd_serve_fd(struct sl_handle *h, const struct sl_nbd_options *opts, int fd);

/* ---- FUSE (fuse.c, when built with libfuse3) ------------------------- */

struct sl_fuse_export;
/* Present the disk as the regular file FILE (created if absent). */
int sl_fuse_export_start(struct sl_handle *h, const char *file, bool read_only,
                         struct sl_fuse_export **out);
void sl_fuse_export_stop(struct sl_fuse_export *fx);
/* The disk is being released: requests that arrive from now on get EIO;
 * returns once those already in flight have finished (and so were
 * answered with their real result). */
void sl_fuse_export_quiesce(struct sl_fuse_export *fx);

#endif
