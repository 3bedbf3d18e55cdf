/* sluiced: the host cache daemon (issue 13; DESIGN.md "The host cache
 * daemon").  This file is the thin process around server.c: options, the
 * listening socket (or the one systemd passed), the allow lists, and the
 * lifecycle from lib/ipc (signals, --daemon, --pidfile, readiness).
 *
 *   sluiced [--socket PATH] [--memory SIZE] [--block-size SIZE]
 *           [--allow-user U,...] [--allow-group G,...] [--pidfile F]
 *           [--daemon] [--workers N] [--max-sections N] [--poll-us N]
 *           [--quiet] [--check-on-exit] [--ceph-conf FILE]...
 *
 * Defaults: socket /run/sluice/sluiced.sock (mode 0660), memory 1G, block
 * 64K, in the foreground, logging to stderr; SIGTERM (or SIGINT, SIGHUP)
 * stops it cleanly.  Only root, the --allow-user users and members of the
 * --allow-group groups (by default the socket's group) may connect.  RBD
 * snapshots are read only from the Ceph clusters the --ceph-conf files
 * describe (by default /etc/ceph/ceph.conf, when it exists). */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <inttypes.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "ipc/process.h"
#include "ipc/socket.h"
#include "rbd.h"
#include "server.h"

#define SD_DEFAULT_CEPH_CONF "/etc/ceph/ceph.conf"

static void usage(FILE *f)
{
  fprintf(f,
    "usage: sluiced [--socket PATH] [--memory SIZE] [--block-size SIZE]\n"
    "               [--allow-user U,...] [--allow-group G,...] [--pidfile F]\n"
    "               [--daemon] [--workers N] [--max-sections N] [--poll-us N] [--quiet]\n"
    "               [--check-on-exit] [--ceph-conf FILE]...\n"
    "The host cache daemon of sluice: see sluiced(8).\n");
}

static int add_ids(const char *list, bool users, uid_t **uids, gid_t **gids, size_t *n)
{
  char *copy = strdup(list), *save = NULL;
  if (!copy)
    return -ENOMEM;
  for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    char *end;
    unsigned long v = strtoul(t, &end, 10);
    bool numeric = *t && !*end;
    unsigned id;
    if (users) {
      struct passwd *pw = numeric ? NULL : getpwnam(t);
      if (!numeric && !pw) {
        fprintf(stderr, "sluiced: --allow-user: no user '%s'\n", t);
        free(copy);
        return -EINVAL;
      }
      id = numeric ? (unsigned)v : pw->pw_uid;
      uid_t *p = realloc(*uids, (*n + 1) * sizeof *p);
      if (!p)
        return -ENOMEM;
      p[(*n)++] = id;
      *uids = p;
    } else {
      struct group *gr = numeric ? NULL : getgrnam(t);
      if (!numeric && !gr) {
        fprintf(stderr, "sluiced: --allow-group: no group '%s'\n", t);
        free(copy);
        return -EINVAL;
      }
      id = numeric ? (unsigned)v : gr->gr_gid;
      gid_t *p = realloc(*gids, (*n + 1) * sizeof *p);
      if (!p)
        return -ENOMEM;
      p[(*n)++] = id;
      *gids = p;
    }
  }
  free(copy);
  return 0;
}

/* mkdir -p for the socket's directory (/run/sluice by default). */
static void make_parent(const char *path)
{
  char *d = strdup(path);
  if (!d)
    return;
  for (char *p = d + 1; *p; p++) {
    if (*p != '/')
      continue;
    *p = 0;
    mkdir(d, 0755);
    *p = '/';
  }
  free(d);
}

int main(int argc, char **argv)
{
  const char *sock = SL_CS_DEFAULT_SOCKET, *pidfile = NULL;
  bool daemonize = false, gave_groups = false, check = false, gave_ceph = false;
  struct sd_options o = {.memory = 1ull << 30, .block_size = 64 << 10, .workers = 16,
                         .max_sections = 1024, .poll_us = 20};
  static const struct option lo[] = {
    {"socket", required_argument, NULL, 's'},
    {"memory", required_argument, NULL, 'm'},
    {"block-size", required_argument, NULL, 'b'},
    {"allow-user", required_argument, NULL, 'u'},
    {"allow-group", required_argument, NULL, 'g'},
    {"pidfile", required_argument, NULL, 'p'},
    {"daemon", no_argument, NULL, 'd'},
    {"workers", required_argument, NULL, 'w'},
    {"max-sections", required_argument, NULL, 'M'},
    {"poll-us", required_argument, NULL, 'P'},
    {"quiet", no_argument, NULL, 'q'},
    {"check-on-exit", no_argument, NULL, 'C'},
    {"ceph-conf", required_argument, NULL, 'c'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  int opt;
  uint64_t v;
  while ((opt = getopt_long(argc, argv, "s:m:b:u:g:p:dw:M:P:qh", lo, NULL)) != -1) {
    switch (opt) {
    case 's': sock = optarg; break;
    case 'm':
      if (sl_parse_size("--memory", optarg, &o.memory) < 0) {
        fprintf(stderr, "sluiced: %s\n", sl_last_error());
        return 2;
      }
      break;
    case 'b':
      if (sl_parse_size("--block-size", optarg, &v) < 0 || v < 4096 || v > (2u << 20) ||
          !SL_IS_POWER_OF_2(v)) {
        fprintf(stderr, "sluiced: --block-size %s: must be a power of two from 4K to 2M\n",
                optarg);
        return 2;
      }
      o.block_size = (uint32_t)v;
      break;
    case 'u':
      if (add_ids(optarg, true, &o.allow_uid, NULL, &o.n_allow_uid) < 0)
        return 2;
      break;
    case 'g':
      if (add_ids(optarg, false, NULL, &o.allow_gid, &o.n_allow_gid) < 0)
        return 2;
      gave_groups = true;
      break;
    case 'p': pidfile = optarg; break;
    case 'd': daemonize = true; break;
    case 'w':
      if (sl_parse_uint("--workers", optarg, 1, 64, &v) < 0) {
        fprintf(stderr, "sluiced: %s\n", sl_last_error());
        return 2;
      }
      o.workers = (uint32_t)v;
      break;
    case 'M':
      if (sl_parse_uint("--max-sections", optarg, 8, 1u << 20, &v) < 0) {
        fprintf(stderr, "sluiced: %s\n", sl_last_error());
        return 2;
      }
      o.max_sections = (uint32_t)v;
      break;
    case 'P':
      if (sl_parse_uint("--poll-us", optarg, 0, 10000, &v) < 0) {
        fprintf(stderr, "sluiced: %s\n", sl_last_error());
        return 2;
      }
      o.poll_us = (uint32_t)v;
      break;
    case 'q': o.quiet = true; break;
    case 'C': check = true; break;
    case 'c':
      if (sd_rbd_add_cluster(optarg) < 0) {
        fprintf(stderr, "sluiced: %s\n", sl_last_error());
        return 2;
      }
      gave_ceph = true;
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "sluiced: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return 2;
  }
  /* The host's own cluster, when it has one; a broken default file only
   * means no RBD layers, not no daemon. */
  if (!gave_ceph && sd_rbd_supported() && access(SD_DEFAULT_CEPH_CONF, F_OK) == 0 &&
      sd_rbd_add_cluster(SD_DEFAULT_CEPH_CONF) < 0)
    fprintf(stderr, "sluiced: RBD layers refused: %s\n", sl_last_error());

  /* Every thread inherits this mask: TERM/INT/HUP are taken by the main
   * thread below, the lease-break signals by the event loop's signalfd. */
  sigset_t stop;
  if (sl_proc_block_signals(&stop) < 0) {
    fprintf(stderr, "sluiced: %s\n", sl_last_error());
    return 1;
  }
  sigset_t lease;
  sigemptyset(&lease);
  sigaddset(&lease, sd_lease_signal());
  sigaddset(&lease, SIGIO);
  pthread_sigmask(SIG_BLOCK, &lease, NULL);

  struct sl_ipc_listener l;
  sl_ipc_listener_init(&l);
  const char *where = sock;
  int nfds = sl_proc_listen_fds();
  int r;
  if (nfds > 0) {
    r = sl_ipc_listener_adopt(SL_PROC_LISTEN_FDS_START, &l);
    where = "the socket systemd passed";
  } else {
    make_parent(sock);
    /* born 0660 (bind applies the umask): a chmod afterwards would change
     * the file the listener recognises as its own when it removes it */
    mode_t old = umask(0117);
    r = sl_ipc_listen_unix(sock, &l);
    umask(old);
  }
  if (r < 0) {
    fprintf(stderr, "sluiced: %s\n", sl_last_error());
    sl_ipc_listener_close(&l);
    return 1;
  }
  if (!gave_groups) {
    /* the socket's group may connect: that is what its mode 0660 says */
    struct sockaddr_un sa;
    socklen_t sl = sizeof sa;
    struct stat st;
    if (getsockname(l.fd, (struct sockaddr *)&sa, &sl) == 0 && sa.sun_path[0] &&
        stat(sa.sun_path, &st) == 0) {
      o.allow_gid = malloc(sizeof *o.allow_gid);
      if (o.allow_gid) {
        o.allow_gid[0] = st.st_gid;
        o.n_allow_gid = 1;
      }
    }
  }
  if (daemonize && sl_proc_daemonize("sluiced") < 0) {
    fprintf(stderr, "sluiced: %s\n", sl_last_error());
    sl_ipc_listener_close(&l);
    return 1;
  }
  if (pidfile && sl_proc_pidfile_create(pidfile) < 0) {
    fprintf(stderr, "sluiced: %s\n", sl_last_error());
    sl_proc_detach_done(1);
    sl_ipc_listener_close(&l);
    return 1;
  }
  struct sd_server *srv;
  r = sd_server_create(&o, &srv);
  if (r == 0)
    r = sd_server_start(srv, l.fd);
  if (r < 0) {
    fprintf(stderr, "sluiced: %s\n", sl_last_error());
    sl_proc_detach_done(1);
    if (pidfile)
      sl_proc_pidfile_remove();
    sl_ipc_listener_close(&l);
    return 1;
  }
  struct sd_store *st = sd_server_store(srv);
  struct sd_store_info info;
  sd_store_info(st, &info);
  char mem[32], meta[32];
  fprintf(stderr, "sluiced: serving %s: %s in %" PRIu64 " blocks of %u bytes, metadata %s "
          "(%.1f bytes per block)\n", where,
          sl_human_size(st->nblocks * st->block_size, mem, sizeof mem), st->nblocks,
          st->block_size, sl_human_size(info.metadata_bytes, meta, sizeof meta),
          (double)info.metadata_bytes / (double)st->nblocks);
  sl_proc_detach_done(0);
  sl_proc_notify_ready("serving");
  int sig = sl_proc_wait_signal(&stop);
  sl_proc_notify_stopping();
  fprintf(stderr, "sluiced: signal %d: stopping\n", sig);
  int bad = sd_server_stop(srv, check);
  sl_ipc_listener_close(&l);
  if (pidfile)
    sl_proc_pidfile_remove();
  free(o.allow_uid);
  free(o.allow_gid);
  return bad ? 3 : 0;
}
