/* The export driver table (export.h): one entry per export, adapting each
 * export's own API (nbd-server.c, fuse.c) to the common lifecycle, so that
 * `sluice serve` -- and later the cache daemon's or another server's
 * front end -- starts exports without knowing any of them by name.
 *
 * The entries are thin on purpose: binding, threads and shutdown stay in
 * the export's own file, and this file only says what `serve` must know
 * (option name, how many, whether systemd's sockets fit) and calls through.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "config.h"
#include "export/export.h"

/* ---- NBD ---------------------------------------------------------------- */

static int nbd_create(struct sl_handle *h, const struct sl_export_config *cfg,
                      const char *const *args, size_t n_args, void **state)
{
  struct sl_nbd_options o = {
    .read_only = cfg->read_only,
    .export_name = cfg->export_name ? cfg->export_name : "",
    .description = cfg->description,
    .workers = cfg->workers,
    .poll_us = cfg->poll_us,
  };
  struct sl_nbd_server *srv;
  int r = sl_nbd_server_create(h, &o, args, n_args, &srv);
  if (r == 0)
    *state = srv;
  return r;
}

static int nbd_start(void *state) { return sl_nbd_server_start(state); }
static void nbd_stop(void *state) { sl_nbd_server_stop(state); }

static const struct sl_export_driver nbd_driver = {
  .name = "nbd",
  .args_help = "unix:PATH | tcp:HOST:PORT",
  .verb = "on",
  .max_args = 8,
  .takes_sockets = true,
  .create = nbd_create,
  .start = nbd_start,
  .stop = nbd_stop,
};

/* ---- FUSE --------------------------------------------------------------- */

#if HAVE_FUSE3
struct fuse_state {
  struct sl_handle *h;
  const char *file;
  bool read_only;
  struct sl_fuse_export *fx;
};

/* Nothing to bind: the mount happens at start, after --daemon's fork (a
 * FUSE session does not survive one). */
static int fuse_create(struct sl_handle *h, const struct sl_export_config *cfg,
                       const char *const *args, size_t n_args, void **state)
{
  struct fuse_state *fs = calloc(1, sizeof *fs);
  if (!fs)
    return sl_error(ENOMEM, "out of memory");
  fs->h = h;
  fs->file = n_args ? args[0] : NULL;
  fs->read_only = cfg->read_only;
  *state = fs;
  return 0;
}

static int fuse_start(void *state)
{
  struct fuse_state *fs = state;
  int r = sl_fuse_export_start(fs->h, fs->file, fs->read_only, &fs->fx);
  return r < 0 ? sl_error_prefix(-r, "--fuse %s", fs->file) : 0;
}

static void fuse_quiesce(void *state)
{
  struct fuse_state *fs = state;
  if (fs)
    sl_fuse_export_quiesce(fs->fx);
}

static void fuse_stop(void *state)
{
  struct fuse_state *fs = state;
  if (!fs)
    return;
  sl_fuse_export_stop(fs->fx);
  free(fs);
}
#endif

static const struct sl_export_driver fuse_driver = {
  .name = "fuse",
  .args_help = "FILE",
  .verb = "as",
  .max_args = 1,
#if HAVE_FUSE3
  .create = fuse_create,
  .start = fuse_start,
  .quiesce = fuse_quiesce,
  .stop = fuse_stop,
#else
  .unavailable = "this sluice was built without libfuse3",
#endif
};

const struct sl_export_driver *const sl_export_drivers[] = {
  &nbd_driver,
  &fuse_driver,
  NULL,
};
