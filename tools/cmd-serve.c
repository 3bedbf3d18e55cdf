/* sluice serve: export a disk (image, chain or descriptor, through its
 * filter stack) over NBD and/or FUSE until SIGTERM or SIGINT, which drain
 * in-flight requests, flush the disk and exit 0.
 *
 * A writable serve owns the disk (lib/owner, docs/ownership.md): it
 * records itself once the disk is open and answers release requests from
 * another process (--take-over, sluice release) by stopping its exports
 * (NBD answers what it has read, FUSE fails later requests with EIO),
 * draining, flushing and closing the disk, then acknowledging and exiting
 * 0.  --take-over is the other side: ask the owner, wait, then open.
 *
 * The exports are known only through the driver table (export.h): each
 * driver is an option named after it, and its create/start/stop are
 * called in that order around lib/ipc's process lifecycle.  The order
 * in which stop runs (FUSE before NBD) is the reverse of the table's. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "export/export.h"
#include "ipc/process.h"
#include "owner/owner.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

#include "config.h"

#define MAX_EXPORTS 8
#define MAX_FILTERS 32
#define DEFAULT_POLL_US 64

static const char usage_text[] =
  "Usage: sluice serve [--nbd unix:PATH | --nbd tcp:HOST:PORT]... [--fuse FILE]\n"
  "                    [--read-only [-U]] [--filter NAME[:k=v,...]]... [--at FILTER]\n"
  "                    [--export-name NAME] [--workers N] [--poll-us N] [-f FMT]\n"
  "                    [--pidfile FILE] [--daemon]\n"
  "                    [-t|--cache none|writeback|writethrough|directsync|unsafe]\n"
  "                    [--sluiced[=SOCKET]] [--take-over [--timeout SECONDS]]\n"
  "                    [--no-release] DISK\n"
  "\n"
  "Export DISK (an image, a backing chain, or a disk descriptor) over NBD\n"
  "and/or as a FUSE file.  Runs in the foreground until SIGTERM or SIGINT,\n"
  "which finish in-flight requests, flush, and exit 0.  --cache chooses how\n"
  "the host page cache is used, as qemu-nbd's option does (default writeback).\n"
  "--sluiced reads the backing layers through the host cache daemon (the\n"
  "cache filter, which must be installed: sluice filter install cache.so).\n"
  "-U (--force-share) serves read-only an image another process may write.\n"
  "A writable serve owns DISK: `sluice release DISK` or another serve's\n"
  "--take-over asks it to stop, flush, close and exit 0; --no-release refuses.\n"
  "--take-over asks the owner of DISK to release it first and waits up to\n"
  "--timeout seconds (default 30); a dead owner is taken over at once.\n";

/* What the command line asked of one export driver. */
struct export_use {
  const struct sl_export_driver *drv;
  const char *args[16];
  size_t n_args;
  char activated[16][16];    /* "fd:N" for socket-activated listeners */
  void *state;
};

/* The main thread, woken with SIGUSR1 when a release request is accepted
 * (on the ownership control thread, which must not block). */
static pthread_t main_thread;
static void on_release(void *arg)
{
  (void)arg;
  pthread_kill(main_thread, SIGUSR1);
}

static void serve_log(void *arg, const char *line)
{
  (void)arg;
  fprintf(stderr, "sluice serve: %s\n", line);
}

/* Ask the owner of PATH to release it (--take-over). */
static int take_over(const char *path, double timeout)
{
  /* The owner adds our pid and uid, as the kernel vouches for them. */
  struct sl_owner_release_opts o = {
    .timeout_s = timeout, .requester = "sluice serve --take-over", .log = serve_log,
  };
  struct sl_owner_release_result res;
  if (sl_owner_release(path, &o, &res) < 0)
    return cli_fail("serve", "--take-over: %s", sl_last_error());
  /* The request time on CLOCK_MONOTONIC lets bench/handoff.sh measure
   * request-to-first-request-served across processes. */
  if (res.asked)
    fprintf(stderr, "sluice serve: %s: released by pid %d in %.2f ms (its "
            "drain, flush and close %.2f ms; request sent at monotonic "
            "%.6f s)\n", res.before.image, (int)res.before.rec.pid,
            (double)(res.released_ns - res.request_ns) / 1e6,
            (double)res.drain_ns / 1e6, (double)res.request_ns / 1e9);
  return 0;
}

/* After a failed open: if the disk has a sluice owner, say how to ask it. */
static void hint_owner(const char *path)
{
  struct sl_owner_info i;
  if (sl_owner_query(path, &i) == 0 && i.state == SL_OWNER_OWNED)
    fprintf(stderr, "sluice serve: %s is owned by pid %d (%s); --take-over asks "
            "it to release the disk%s\n", path, (int)i.rec.pid, i.rec.command,
            i.rec.release ? "" : ", but it runs with --no-release");
}

static void stop_exports(struct export_use *ex, size_t n)
{
  /* Last started first, as a stack unwinds. */
  for (size_t i = n; i-- > 0;) {
    if (ex[i].state && ex[i].drv->stop)
      ex[i].drv->stop(ex[i].state);
    ex[i].state = NULL;
  }
}

int cmd_serve(int argc, char **argv)
{
  enum { OPT_RO = 256, OPT_FILTER, OPT_AT, OPT_PIDFILE,
         OPT_DAEMON, OPT_NAME, OPT_WORKERS, OPT_DESC, OPT_POLL, OPT_SLUICED,
         OPT_TAKE_OVER, OPT_TIMEOUT, OPT_NO_RELEASE,
         OPT_DRIVER = 512 /* + index in sl_export_drivers */ };
  static const struct option fixed_opts[] = {
    {"help", no_argument, NULL, 'h'},
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
    {"take-over", no_argument, NULL, OPT_TAKE_OVER},
    {"timeout", required_argument, NULL, OPT_TIMEOUT},
    {"no-release", no_argument, NULL, OPT_NO_RELEASE},
  };
  /* The exports come from the driver table: each is an option named after
   * its driver (--nbd, --fuse). */
  struct export_use ex[MAX_EXPORTS];
  size_t n_ex = 0;
  struct option longopts[SL_ARRAY_SIZE(fixed_opts) + MAX_EXPORTS + 1];
  memcpy(longopts, fixed_opts, sizeof fixed_opts);
  size_t n_opts = SL_ARRAY_SIZE(fixed_opts);
  for (; sl_export_drivers[n_ex] && n_ex < MAX_EXPORTS; n_ex++) {
    ex[n_ex] = (struct export_use){.drv = sl_export_drivers[n_ex]};
    longopts[n_opts++] = (struct option){sl_export_drivers[n_ex]->name,
                                         required_argument, NULL,
                                         OPT_DRIVER + (int)n_ex};
  }
  longopts[n_opts] = (struct option){NULL, 0, NULL, 0};

  const char *filters[MAX_FILTERS + 1];
  char *sluiced_filter = NULL;
  size_t n_filters = 0;
  const char *at = NULL, *pidfile = NULL;
  bool daemon_mode = false, want_take_over = false, no_release = false;
  double timeout = 30;
  const char *timeout_arg = NULL;
  struct sl_export_config cfg = {.export_name = "", .poll_us = DEFAULT_POLL_US};
  struct sl_disk_open_opts dopts = {0};
  uint64_t v;
  int c;

  while ((c = getopt_long(argc, argv, "f:rt:Uh", longopts, NULL)) != -1) {
    if (c >= OPT_DRIVER && c < OPT_DRIVER + (int)n_ex) {
      struct export_use *e = &ex[c - OPT_DRIVER];
      size_t max = SL_MIN(e->drv->max_args, SL_ARRAY_SIZE(e->args));
      if (e->n_args == max) {
        if (max == 1)
          return cli_fail("serve", "only one --%s export per process", e->drv->name);
        return cli_fail("serve", "at most %zu --%s listeners", max, e->drv->name);
      }
      e->args[e->n_args++] = optarg;
      continue;
    }
    switch (c) {
    case 'r':
    case OPT_RO: dopts.read_only = cfg.read_only = true; break;
    case 'U': dopts.force_share = true; break;
    case OPT_FILTER:
      if (n_filters == MAX_FILTERS)
        return cli_fail("serve", "at most %d --filter options", MAX_FILTERS);
      filters[n_filters++] = optarg;
      break;
    case OPT_AT: at = optarg; break;
    case OPT_PIDFILE: pidfile = optarg; break;
    case OPT_DAEMON: daemon_mode = true; break;
    case OPT_NAME: cfg.export_name = optarg; break;
    case OPT_DESC: cfg.description = optarg; break;
    case OPT_WORKERS:
      if (sl_parse_uint("--workers", optarg, 1, 16, &v) < 0)
        return cli_fail("serve", "%s", sl_last_error());
      cfg.workers = (unsigned)v;
      break;
    case OPT_POLL:
      if (sl_parse_uint("--poll-us", optarg, 0, 1000000, &v) < 0)
        return cli_fail("serve", "%s", sl_last_error());
      cfg.poll_us = (unsigned)v;
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
    case OPT_TAKE_OVER: want_take_over = true; break;
    case OPT_TIMEOUT:
      if (cli_parse_timeout("serve", optarg, &timeout))
        return 1;
      timeout_arg = optarg;
      break;
    case OPT_NO_RELEASE: no_release = true; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(usage_text, stderr);
    return cli_fail("serve", optind >= argc ? "no DISK given" : "too many arguments");
  }
  if (timeout_arg && !want_take_over)
    return cli_fail("serve", "--timeout %s: only with --take-over", timeout_arg);
  if (no_release && dopts.read_only)
    return cli_fail("serve", "--no-release: a --read-only serve does not own the "
                    "disk, so there is nothing to refuse");
  /* Socket activation: every socket systemd passed is one more listener of
   * the first driver that takes sockets ("fd:N" for lib/ipc). */
  int n_act = sl_proc_listen_fds();
  if (n_act < 0)
    return cli_fail("serve", "%s", sl_last_error());
  for (size_t k = 0; n_act > 0 && k < n_ex; k++) {
    struct export_use *e = &ex[k];
    if (!e->drv->takes_sockets)
      continue;
    size_t max = SL_MIN(e->drv->max_args, SL_ARRAY_SIZE(e->args));
    if ((size_t)n_act > max - e->n_args)
      return cli_fail("serve", "at most %zu %s listeners (--%s and systemd sockets "
                      "together)", max, e->drv->name, e->drv->name);
    for (int i = 0; i < n_act; i++) {
      snprintf(e->activated[i], sizeof e->activated[i], "fd:%d",
               SL_PROC_LISTEN_FDS_START + i);
      e->args[e->n_args++] = e->activated[i];
    }
    n_act = 0;
  }
  size_t used = 0;
  for (size_t k = 0; k < n_ex; k++) {
    if (!ex[k].n_args)
      continue;
    if (ex[k].drv->unavailable)
      return cli_fail("serve", "--%s: %s", ex[k].drv->name, ex[k].drv->unavailable);
    used++;
  }
  if (used == 0)
    return cli_fail("serve", "nothing to serve: give --nbd and/or --fuse");
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
  /* SIGUSR1: the ownership control thread's "release accepted". */
  sigaddset(&sigs, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &sigs, NULL);
  main_thread = pthread_self();

  if (want_take_over && take_over(path, timeout)) {
    free(sluiced_filter);
    return 1;
  }
  struct sl_disk *disk;
  if (sl_disk_open(path, &dopts, &disk) < 0) {
    int e = sl_last_errno();
    int r = cli_fail("serve", "%s%s", sl_last_error(),
                     sluiced_filter ? " (--sluiced needs the cache filter "
                     "module: sluice filter install build/filters/cache.so)" : "");
    if (e == EAGAIN && !want_take_over)
      hint_owner(path);
    free(sluiced_filter);
    return r;
  }
  warn_if_probed_raw(disk, path);
  /* A request to an RBD image holds its worker for a network round trip,
   * so the workers bound the requests in flight: 16 instead of 4 doubled
   * 4K random reads at depth 32 (bench/rbd.sh, docs/benchmarks.md). */
  if (!cfg.workers && sl_image_path_is_rbd(sl_image_filename(sl_disk_image(disk))))
    cfg.workers = 16;
  /* The pidfile is written over: it must not be a layer of the disk. */
  if (pidfile && sl_image_refuse_layer(sl_disk_image(disk), pidfile, "--pidfile") < 0) {
    sl_disk_close(disk);
    return cli_fail("serve", "%s", sl_last_error());
  }
  struct sl_handle *h = at ? sl_disk_at(disk, at) : sl_disk_top(disk);
  if (!h) {
    sl_disk_close(disk);
    return cli_fail("serve", "%s: --at %s: %s", path, at, sl_last_error());
  }
  int ret = 0;
  for (size_t k = 0; ret == 0 && k < n_ex; k++)
    if (ex[k].n_args && ex[k].drv->create(h, &cfg, ex[k].args, ex[k].n_args,
                                          &ex[k].state) < 0)
      ret = cli_fail("serve", "%s", sl_last_error());
  /* Fork once the sockets are bound, so that binding errors still reach
   * the terminal; the parent exits when the child reports below. */
  if (ret == 0 && daemon_mode && sl_proc_daemonize("serve") < 0)
    ret = cli_fail("serve", "%s", sl_last_error());
  if (ret == 0 && pidfile && sl_proc_pidfile_create(pidfile) < 0)
    ret = cli_fail("serve", "%s", sl_last_error());
  /* Own the disk once open and after --daemon's fork (the record names
   * this process; the control thread must not cross a fork). */
  struct sl_owner *owner = NULL;
  if (ret == 0 && !dopts.read_only) {
    struct sl_owner_claim_opts co = {
      .no_release = no_release,
      .command = no_release ? "sluice serve --no-release" : "sluice serve",
      .on_release = on_release,
    };
    if (sl_owner_claim(path, &co, &owner) < 0)
      fprintf(stderr, "sluice serve: warning: %s; serving without an owner "
              "record (release requests cannot reach this process)\n",
              sl_last_error());
  }
  bool released = false;
  for (size_t k = 0; ret == 0 && k < n_ex; k++)
    if (ex[k].state && ex[k].drv->start(ex[k].state) < 0)
      ret = cli_fail("serve", "%s", sl_last_error());
  sl_proc_detach_done(ret ? 1 : 0);
  if (ret == 0) {
    char size[32];
    fprintf(stderr, "sluice serve: serving %s (%s)", path,
            sl_human_size(sl_disk_size(h), size, sizeof size));
    for (size_t k = 0; k < n_ex; k++)
      for (size_t i = 0; i < ex[k].n_args; i++)
        fprintf(stderr, " %s %s", ex[k].drv->verb, ex[k].args[i]);
    fprintf(stderr, "\n");
    sl_proc_notify_ready(NULL);
    /* SIGUSR1 counts only when the control thread accepted a request (a
     * stray `kill -USR1` is ignored). */
    int sig;
    do
      sig = sl_proc_wait_signal(&sigs);
    while (sig == SIGUSR1 && !(owner && sl_owner_requester(owner)[0]));
    sl_proc_notify_stopping();
    if (sig == SIGUSR1) {
      released = true;
      fprintf(stderr, "sluice serve: %s: release requested by %s: stopping "
              "exports, draining and flushing\n", path,
              sl_owner_requester(owner));
      /* Requests that arrive from here on fail (FUSE: EIO); those already
       * taken are finished and answered. */
      for (size_t k = 0; k < n_ex; k++)
        if (ex[k].state && ex[k].drv->quiesce)
          ex[k].drv->quiesce(ex[k].state);
    } else {
      fprintf(stderr, "sluice serve: %s: draining and flushing\n", strsignal(sig));
    }
  }
  stop_exports(ex, n_ex);
  /* Close drains, gives every filter the release event, flushes and drops
   * the image's locks: only then may the requester be told. */
  int cr = sl_disk_close(disk);
  if (cr < 0 && ret == 0)
    ret = cli_fail("serve", "%s: %s", path, sl_last_error());
  if (released) {
    /* A successor given the same --pidfile takes it as soon as it is told. */
    sl_proc_pidfile_remove();
    sl_owner_release_done(owner, cr, cr < 0 ? sl_last_error() : "released");
    if (cr == 0)
      fprintf(stderr, "sluice serve: %s: released to %s\n", path,
              sl_owner_requester(owner));
  }
  sl_owner_drop(owner);
  sl_proc_pidfile_remove();
  free(sluiced_filter);
  return ret;
}
