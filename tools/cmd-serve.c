/* sluice serve: export a disk (image, chain or descriptor, through its
 * filter stack) over NBD and/or FUSE until SIGTERM or SIGINT, which drain
 * in-flight requests, flush the disk and exit 0. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "export/export.h"
#include "ipc/process.h"
#include "tools/cli.h"

#include "config.h"

#define MAX_NBD 8
#define MAX_FILTERS 32
#define DEFAULT_POLL_US 64

static const char usage_text[] =
  "Usage: sluice serve [--nbd unix:PATH | --nbd tcp:HOST:PORT]... [--fuse FILE]\n"
  "                    [--read-only [-U]] [--filter NAME[:k=v,...]]... [--at FILTER]\n"
  "                    [--export-name NAME] [--workers N] [--poll-us N] [-f FMT]\n"
  "                    [--pidfile FILE] [--daemon]\n"
  "                    [-t|--cache none|writeback|writethrough|directsync|unsafe]\n"
  "                    [--sluiced[=SOCKET]] DISK\n"
  "\n"
  "Export DISK (an image, a backing chain, or a disk descriptor) over NBD\n"
  "and/or as a FUSE file.  Runs in the foreground until SIGTERM or SIGINT,\n"
  "which finish in-flight requests, flush, and exit 0.  --cache chooses how\n"
  "the host page cache is used, as qemu-nbd's option does (default writeback).\n"
  "--sluiced reads the backing layers through the host cache daemon (the\n"
  "cache filter, which must be installed: sluice filter install cache.so).\n"
  "-U (--force-share) serves read-only an image another process may write.\n";

int cmd_serve(int argc, char **argv)
{
  enum { OPT_NBD = 256, OPT_FUSE, OPT_RO, OPT_FILTER, OPT_AT, OPT_PIDFILE,
         OPT_DAEMON, OPT_NAME, OPT_WORKERS, OPT_DESC, OPT_POLL, OPT_CACHE, OPT_SLUICED };
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"nbd", required_argument, NULL, OPT_NBD},
    {"fuse", required_argument, NULL, OPT_FUSE},
    {"read-only", no_argument, NULL, OPT_RO},
    {"filter", required_argument, NULL, OPT_FILTER},
    {"at", required_argument, NULL, OPT_AT},
    {"pidfile", required_argument, NULL, OPT_PIDFILE},
    {"daemon", no_argument, NULL, OPT_DAEMON},
    {"export-name", required_argument, NULL, OPT_NAME},
    {"description", required_argument, NULL, OPT_DESC},
    {"workers", required_argument, NULL, OPT_WORKERS},
    {"poll-us", required_argument, NULL, OPT_POLL},
    {"format", required_argument, NULL, 'f'},
    {"cache", required_argument, NULL, 't'},
    {"sluiced", optional_argument, NULL, OPT_SLUICED},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
  };
  const char *nbd[MAX_NBD], *filters[MAX_FILTERS + 1];
  char *sluiced_filter = NULL;
  size_t n_nbd = 0, n_filters = 0;
  const char *fuse_file = NULL, *at = NULL, *pidfile = NULL;
  bool daemon_mode = false;
  struct sl_nbd_options nopts = {.export_name = "", .poll_us = DEFAULT_POLL_US};
  struct sl_disk_open_opts dopts = {0};
  uint64_t v;
  int c;

  while ((c = getopt_long(argc, argv, "f:rt:Uh", longopts, NULL)) != -1) {
    switch (c) {
    case OPT_NBD:
      if (n_nbd == MAX_NBD)
        return cli_fail("serve", "at most %d --nbd listeners", MAX_NBD);
      nbd[n_nbd++] = optarg;
      break;
    case OPT_FUSE:
      if (fuse_file)
        return cli_fail("serve", "only one --fuse export per process");
      fuse_file = optarg;
      break;
    case 'r':
    case OPT_RO: dopts.read_only = nopts.read_only = true; break;
    case 'U': dopts.force_share = true; break;
    case OPT_FILTER:
      if (n_filters == MAX_FILTERS)
        return cli_fail("serve", "at most %d --filter options", MAX_FILTERS);
      filters[n_filters++] = optarg;
      break;
    case OPT_AT: at = optarg; break;
    case OPT_PIDFILE: pidfile = optarg; break;
    case OPT_DAEMON: daemon_mode = true; break;
    case OPT_NAME: nopts.export_name = optarg; break;
    case OPT_DESC: nopts.description = optarg; break;
    case OPT_WORKERS:
      if (sl_parse_uint("--workers", optarg, 1, 16, &v) < 0)
        return cli_fail("serve", "%s", sl_last_error());
      nopts.workers = (unsigned)v;
      break;
    case OPT_POLL:
      if (sl_parse_uint("--poll-us", optarg, 0, 1000000, &v) < 0)
        return cli_fail("serve", "%s", sl_last_error());
      nopts.poll_us = (unsigned)v;
      break;
    case 'f':
      if (sl_format_parse(optarg, &dopts.format) < 0)
        return cli_fail("serve", "%s", sl_last_error());
      break;
    case 't':
      if (sl_cache_mode_parse(optarg, &dopts.direct, &dopts.dsync,
                              &dopts.no_flush) < 0)
        return cli_fail("serve", "--cache: %s", sl_last_error());
      break;
    case OPT_SLUICED:
      /* The cache filter, stacked on top like --filter: no descriptor
       * edit.  A descriptor with observe or throttle filters (which belong
       * above a cache) names the cache filter itself instead. */
      free(sluiced_filter);
      if (asprintf(&sluiced_filter, "cache%s%s", optarg ? ":socket=" : "",
                   optarg ? optarg : "") < 0)
        return cli_fail("serve", "out of memory");
      break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(usage_text, stderr);
    return cli_fail("serve", optind >= argc ? "no DISK given" : "too many arguments");
  }
  /* Socket activation: every socket systemd passed is one more NBD
   * listener ("fd:N" for lib/ipc). */
  char activated[MAX_NBD][16];
  int n_act = sl_proc_listen_fds();
  if (n_act < 0)
    return cli_fail("serve", "%s", sl_last_error());
  if ((size_t)n_act > MAX_NBD - n_nbd)
    return cli_fail("serve", "at most %d NBD listeners (--nbd and systemd sockets together)",
                    MAX_NBD);
  for (int i = 0; i < n_act; i++) {
    snprintf(activated[i], sizeof activated[i], "fd:%d", SL_PROC_LISTEN_FDS_START + i);
    nbd[n_nbd++] = activated[i];
  }
  if (n_nbd == 0 && !fuse_file)
    return cli_fail("serve", "nothing to serve: give --nbd and/or --fuse");
  if (fuse_file && !HAVE_FUSE3)
    return cli_fail("serve", "--fuse: this sluice was built without libfuse3");
  const char *path = argv[optind];
  if (sluiced_filter)
    filters[n_filters++] = sluiced_filter;
  if (dopts.force_share && !dopts.read_only)
    return cli_fail("serve", "%s: -U (force-share) needs --read-only", path);
  dopts.extra_filters = filters;
  dopts.n_extra_filters = n_filters;

  /* Signals are taken synchronously by this thread; block them before any
   * thread exists so that every thread inherits the mask. */
  sigset_t sigs;
  if (sl_proc_block_signals(&sigs) < 0)
    return cli_fail("serve", "%s", sl_last_error());

  struct sl_disk *disk;
  if (sl_disk_open(path, &dopts, &disk) < 0) {
    int r = cli_fail("serve", "%s%s", sl_last_error(),
                     sluiced_filter ? " (--sluiced needs the cache filter "
                     "module: sluice filter install build/filters/cache.so)" : "");
    free(sluiced_filter);
    return r;
  }
  struct sl_handle *h = at ? sl_disk_at(disk, at) : sl_disk_top(disk);
  if (!h) {
    sl_disk_close(disk);
    return cli_fail("serve", "%s: --at %s: %s", path, at, sl_last_error());
  }
  struct sl_nbd_server *srv = NULL;
  if (n_nbd && sl_nbd_server_create(h, &nopts, nbd, n_nbd, &srv) < 0) {
    sl_disk_close(disk);
    return cli_fail("serve", "%s", sl_last_error());
  }
  /* Fork once the sockets are bound, so that binding errors still reach
   * the terminal; the parent exits when the child reports below. */
  if (daemon_mode && sl_proc_daemonize("serve") < 0) {
    cli_fail("serve", "%s", sl_last_error());
    sl_nbd_server_stop(srv);
    sl_disk_close(disk);
    return 1;
  }
  if (pidfile && sl_proc_pidfile_create(pidfile) < 0) {
    cli_fail("serve", "%s", sl_last_error());
    sl_proc_detach_done(1);
    sl_nbd_server_stop(srv);
    sl_disk_close(disk);
    return 1;
  }
  int ret = 0;
  struct sl_fuse_export *fx = NULL;
  if (srv && sl_nbd_server_start(srv) < 0)
    ret = cli_fail("serve", "%s", sl_last_error());
#if HAVE_FUSE3
  if (ret == 0 && fuse_file && sl_fuse_export_start(h, fuse_file, nopts.read_only, &fx) < 0)
    ret = cli_fail("serve", "--fuse %s: %s", fuse_file, sl_last_error());
#endif
  sl_proc_detach_done(ret ? 1 : 0);
  if (ret == 0) {
    char size[32];
    fprintf(stderr, "sluice serve: serving %s (%s)", path,
            sl_human_size(sl_disk_size(h), size, sizeof size));
    for (size_t i = 0; i < n_nbd; i++)
      fprintf(stderr, " on %s", nbd[i]);
    if (fuse_file)
      fprintf(stderr, " as %s", fuse_file);
    fprintf(stderr, "\n");
    sl_proc_notify_ready(NULL);
    int sig = sl_proc_wait_signal(&sigs);
    sl_proc_notify_stopping();
    fprintf(stderr, "sluice serve: %s: draining and flushing\n", strsignal(sig));
  }
#if HAVE_FUSE3
  sl_fuse_export_stop(fx);
#endif
  sl_nbd_server_stop(srv);
  if (sl_disk_close(disk) < 0 && ret == 0)
    ret = cli_fail("serve", "%s: %s", path, sl_last_error());
  sl_proc_pidfile_remove();
  free(sluiced_filter);
  return ret;
}
