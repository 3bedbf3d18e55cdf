/* sluice demo: the boot storm that sluiced exists for, on this machine.
 *
 * A golden image and N linked clones of it (each with a little data of its
 * own), then N "VMs" booting at once: one process per clone opens its disk
 * with O_DIRECT (--cache=none, as production VMs run) and reads the same
 * boot set -- random reads of 4 KiB to 64 KiB covering a region of the
 * base, in the same order for every clone, as identical guests do.  The
 * storm runs twice: without the shared cache, then with the cache filter
 * and a sluiced of the demo's own (a private socket, started and stopped
 * by pid).  The table shows each clone's time, the bytes its process read
 * from storage (/proc/self/io), and the share of its base reads that
 * sluiced answered from memory; the totals add what sluiced itself read.
 *
 * Everything lives in a private directory that is removed at the end
 * (--keep leaves it).  The cache filter is installed into a module
 * directory of the demo's own, so the demo trusts nothing it did not
 * install itself.  Processes, not threads, play the VMs: each has its own
 * client connection and its own I/O accounting, as separate `sluice
 * serve` processes would.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sluice/sluice.h>
#include "cachesvc/call.h"
#include "cachesvc/client.h"
#include "common/util.h"
#include "disk/module.h"
#include "tools/cli.h"

static const char usage_text[] =
  "Usage: sluice demo [-n CLONES] [--size SIZE] [--boot-set SIZE] [--dir DIR]\n"
  "                   [--plot FILE.png] [--keep]\n"
  "\n"
  "Create a golden image and CLONES (4) linked clones in a private directory\n"
  "under DIR (/var/tmp), start a sluiced of its own, and boot every clone at\n"
  "once (random 4K-64K reads of the same BOOT-SET (64M) of each disk, with\n"
  "O_DIRECT) twice: without the shared cache and with it.  Prints time,\n"
  "bytes read from storage and hit ratio per clone; --plot draws them.\n";

struct result {
  uint64_t ns, read_bytes, reads, served, hits;
  int status;
};

struct demo {
  unsigned n;
  uint64_t size, boot;
  char dir[PATH_MAX], sock[PATH_MAX + 16], exe_dir[PATH_MAX];
  pid_t daemon;
};

static uint64_t xorshift(uint64_t *s)
{
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static uint64_t proc_read_bytes(void)
{
  FILE *f = fopen("/proc/self/io", "r");
  char line[128];
  uint64_t v = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "read_bytes: %" SCNu64, &v) == 1)
      break;
  if (f)
    fclose(f);
  return v;
}

/* The golden image: BOOT bytes of pseudo-random data (the rest holes), so
 * every clone has something real to read from it. */
static int make_images(struct demo *d)
{
  char base[PATH_MAX + 32];
  snprintf(base, sizeof base, "%s/base.qcow2", d->dir);
  struct sl_image_create_opts co = {.format = SL_FORMAT_QCOW2, .size = d->size};
  struct sl_image *img;
  struct sl_image_open_opts oo = {0};
  int r = sl_image_create(base, &co);
  if (r == 0)
    r = sl_image_open(base, &oo, &img);
  if (r < 0)
    return r;
  size_t chunk = 1u << 20;
  uint64_t *buf = malloc(chunk), seed = 0x9e3779b97f4a7c15ull;
  if (!buf) {
    sl_image_close(img);
    return sl_error(ENOMEM, "out of memory");
  }
  for (uint64_t off = 0; r == 0 && off < d->boot; off += chunk) {
    for (size_t i = 0; i < chunk / 8; i++)
      buf[i] = xorshift(&seed);
    r = sl_image_pwrite(img, buf, chunk, off, 0);
  }
  free(buf);
  int rc = sl_image_close(img);
  if (r == 0)
    r = rc;
  for (unsigned i = 0; r == 0 && i < d->n; i++) {
    char clone[PATH_MAX + 32];
    snprintf(clone, sizeof clone, "%s/clone%u.qcow2", d->dir, i + 1);
    struct sl_image_create_opts cc = {.format = SL_FORMAT_QCOW2,
                                      .backing_file = "base.qcow2",
                                      .backing_format = SL_FORMAT_QCOW2};
    if ((r = sl_image_create(clone, &cc)) < 0 || (r = sl_image_open(clone, &oo, &img)) < 0)
      break;
    /* A little data of its own, as a clone that has run once has. */
    char own[65536];
    memset(own, 'a' + (int)(i % 26), sizeof own);
    r = sl_image_pwrite(img, own, sizeof own, (uint64_t)i * sizeof own, 0);
    rc = sl_image_close(img);
    if (r == 0)
      r = rc;
  }
  return r;
}

/* Drop the images from the page cache, so each storm starts cold. */
static void evict(struct demo *d)
{
  char p[PATH_MAX + 32];
  for (unsigned i = 0; i <= d->n; i++) {
    if (i == 0)
      snprintf(p, sizeof p, "%s/base.qcow2", d->dir);
    else
      snprintf(p, sizeof p, "%s/clone%u.qcow2", d->dir, i);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      fdatasync(fd);
      posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
      close(fd);
    }
  }
}

/* One VM: open the clone (with the cache filter when WITH), read the boot
 * set, report on FD. */
static void boot_one(struct demo *d, unsigned i, bool with, int fd)
{
  struct result res = {.status = 1};
  char clone[PATH_MAX + 32], filter[PATH_MAX + 64];
  snprintf(clone, sizeof clone, "%s/clone%u.qcow2", d->dir, i + 1);
  snprintf(filter, sizeof filter, "cache:socket=%s", d->sock);
  const char *filters[] = {filter};
  struct sl_disk_open_opts o = {.read_only = true, .direct = true,
                                .extra_filters = with ? filters : NULL,
                                .n_extra_filters = with ? 1 : 0};
  struct sl_disk *disk;
  uint64_t rb0 = proc_read_bytes();
  if (sl_disk_open(clone, &o, &disk) < 0) {
    fprintf(stderr, "sluice demo: %s\n", sl_last_error());
    goto out;
  }
  struct sl_handle *h = sl_disk_top(disk);
  void *buf = NULL;
  if (posix_memalign(&buf, 4096, 65536) != 0)
    goto close;
  uint64_t seed = 42, t0 = sl_now_ns(), done = 0;
  res.status = 0;
  while (done < d->boot) {
    uint64_t len = 4096u << (xorshift(&seed) % 5);          /* 4K..64K */
    uint64_t off = (xorshift(&seed) % (d->boot / 4096)) * 4096;
    if (off + len > d->boot)
      off = d->boot - len;
    if (sl_disk_pread(h, buf, (size_t)len, off, 0) < 0) {
      fprintf(stderr, "sluice demo: clone %u: %s\n", i + 1, sl_last_error());
      res.status = 1;
      break;
    }
    done += len;
  }
  res.ns = sl_now_ns() - t0;
  free(buf);
close:
  if (with) {
    struct sl_csc *c;
    if (sl_csc_get(d->sock, &c) == 0) {
      struct sl_csc_stats st;
      sl_csc_get_stats(c, &st);
      res.reads = st.reads;
      res.served = st.served;
      res.hits = st.hits;
      sl_csc_put(c);
    }
  }
  sl_disk_close(disk);
  res.read_bytes = proc_read_bytes() - rb0;
out:
  if (write(fd, &res, sizeof res) != (ssize_t)sizeof res)
    _exit(1);
  _exit(res.status);
}

static int storm(struct demo *d, bool with, struct result *res, uint64_t *wall)
{
  evict(d);
  int pipes[64][2];
  pid_t pids[64];
  uint64_t t0 = sl_now_ns();
  fflush(NULL);
  for (unsigned i = 0; i < d->n; i++) {
    if (pipe(pipes[i]) < 0)
      return sl_error(errno, "pipe: %s", strerror(errno));
    pids[i] = fork();
    if (pids[i] < 0)
      return sl_error(errno, "fork: %s", strerror(errno));
    if (pids[i] == 0) {
      close(pipes[i][0]);
      boot_one(d, i, with, pipes[i][1]);
    }
    close(pipes[i][1]);
  }
  int bad = 0;
  for (unsigned i = 0; i < d->n; i++) {
    if (read(pipes[i][0], &res[i], sizeof res[i]) != (ssize_t)sizeof res[i])
      res[i].status = 1;
    close(pipes[i][0]);
    int st;
    waitpid(pids[i], &st, 0);
    if (res[i].status || !WIFEXITED(st) || WEXITSTATUS(st))
      bad++;
  }
  *wall = sl_now_ns() - t0;
  return bad ? sl_error(EIO, "%d clone(s) failed to boot", bad) : 0;
}

static int start_daemon(struct demo *d)
{
  char exe[PATH_MAX + 16];
  snprintf(exe, sizeof exe, "%s/sluiced", d->exe_dir);
  if (access(exe, X_OK) != 0)
    return sl_error(ENOENT, "%s: no sluiced next to this sluice (build it: "
                    "scripts/build.sh build)", exe);
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0)
    return sl_error(errno, "fork: %s", strerror(errno));
  if (pid == 0) {
    int null = open("/dev/null", O_WRONLY);
    if (null >= 0)
      dup2(null, 2);
    execl(exe, exe, "--socket", d->sock, "--memory", "512M", (char *)NULL);
    _exit(127);
  }
  d->daemon = pid;
  for (int i = 0; i < 200; i++) {
    struct sl_cs_conn c;
    if (sl_cs_connect(d->sock, &c) == 0) {
      sl_cs_close(&c);
      return 0;
    }
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      d->daemon = 0;
      return sl_error(ECHILD, "%s exited before it served", exe);
    }
    usleep(20000);
  }
  return sl_error(ETIMEDOUT, "%s did not open %s", exe, d->sock);
}

static void stop_daemon(struct demo *d)
{
  if (d->daemon > 0) {
    kill(d->daemon, SIGTERM);
    waitpid(d->daemon, NULL, 0);
    d->daemon = 0;
  }
}

static uint64_t daemon_backend_bytes(struct demo *d)
{
  struct sl_cs_conn c;
  uint64_t v = 0;
  if (sl_cs_connect(d->sock, &c) < 0)
    return 0;
  struct sl_cs_stats rq = {.first = 0, .max_layers = 1};
  if (sl_cs_call(&c, SL_CS_STATS, &rq, sizeof rq, -1, 0) == 0) {
    struct sl_cs_stats_reply r;
    memcpy(&r, sl_cs_reply_body(&c), sizeof r);
    v = r.total.backend_bytes;
  }
  sl_cs_close(&c);
  return v;
}

static void print_table(struct demo *d, const char *label, const struct result *r,
                        uint64_t wall, uint64_t daemon_bytes, bool with)
{
  uint64_t sum = 0;
  printf("\n%s (wall %.2f s)\n", label, (double)wall / 1e9);
  printf("  %-8s %9s %16s %10s\n", "clone", "time s", "storage MiB", "hit ratio");
  for (unsigned i = 0; i < d->n; i++) {
    sum += r[i].read_bytes;
    char hr[16] = "-";
    if (with && r[i].reads)
      snprintf(hr, sizeof hr, "%.2f", (double)r[i].hits / (double)r[i].reads);
    printf("  clone%-3u %9.2f %16.1f %10s\n", i + 1, (double)r[i].ns / 1e9,
           (double)r[i].read_bytes / 1048576.0, hr);
  }
  printf("  %-8s %9s %16.1f\n", "clones", "", (double)sum / 1048576.0);
  if (with)
    printf("  %-8s %9s %16.1f   (read by the daemon)\n", "sluiced", "",
           (double)daemon_bytes / 1048576.0);
}

static int plot(const char *png, struct demo *d, const struct result *a,
                const struct result *b)
{
  char data[PATH_MAX + 32];
  snprintf(data, sizeof data, "%s/plot.dat", d->dir);
  FILE *f = fopen(data, "w");
  if (!f)
    return sl_error(errno, "%s: %s", data, strerror(errno));
  for (unsigned i = 0; i < d->n; i++)
    fprintf(f, "clone%u %.3f %.3f %.1f %.1f\n", i + 1, (double)a[i].ns / 1e9,
            (double)b[i].ns / 1e9, (double)a[i].read_bytes / 1048576.0,
            (double)b[i].read_bytes / 1048576.0);
  fclose(f);
  FILE *g = popen("gnuplot 2>&1", "w");
  if (!g)
    return sl_error(ENOENT, "--plot: cannot run gnuplot");
  fprintf(g, "set terminal pngcairo size 1000,450\nset output '");
  for (const char *c = png; *c; c++)
    fprintf(g, *c == '\'' ? "''" : "%c", *c);
  fprintf(g, "'\nset multiplot layout 1,2 title 'boot storm of %u clones: "
          "without and with sluiced'\nset style data histograms\n"
          "set style fill solid 0.8\nset grid y\nset yrange [0:*]\n"
          "set ylabel 'seconds'\nset title 'boot time'\n"
          "plot '%s' using 2:xtic(1) title 'without', '' using 3 title 'with sluiced'\n"
          "set ylabel 'MiB'\nset title 'read from storage by the clone'\n"
          "plot '%s' using 4:xtic(1) title 'without', '' using 5 title 'with sluiced'\n"
          "unset multiplot\n", d->n, data, data);
  int rc = pclose(g);
  if (rc != 0 || access(png, F_OK) != 0)
    return sl_error(EIO, "--plot: gnuplot failed (exit status %d)", rc);
  return 0;
}

int cmd_demo(int argc, char **argv)
{
  enum { OPT_SIZE = 256, OPT_BOOT, OPT_DIR, OPT_PLOT, OPT_KEEP };
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"clones", required_argument, NULL, 'n'},
    {"size", required_argument, NULL, OPT_SIZE},
    {"boot-set", required_argument, NULL, OPT_BOOT},
    {"dir", required_argument, NULL, OPT_DIR},
    {"plot", required_argument, NULL, OPT_PLOT},
    {"keep", no_argument, NULL, OPT_KEEP},
    {NULL, 0, NULL, 0},
  };
  struct demo d = {.n = 4, .size = 256u << 20, .boot = 64u << 20};
  const char *dir = "/var/tmp", *png = NULL;
  bool keep = false;
  uint64_t v;
  int c;
  while ((c = getopt_long(argc, argv, "n:h", longopts, NULL)) != -1) {
    switch (c) {
    case 'n':
      if (sl_parse_uint("-n", optarg, 1, 64, &v) < 0)
        return cli_fail("demo", "%s", sl_last_error());
      d.n = (unsigned)v;
      break;
    case OPT_SIZE:
      if (sl_parse_size("--size", optarg, &d.size) < 0)
        return cli_fail("demo", "%s", sl_last_error());
      break;
    case OPT_BOOT:
      if (sl_parse_size("--boot-set", optarg, &d.boot) < 0)
        return cli_fail("demo", "%s", sl_last_error());
      break;
    case OPT_DIR: dir = optarg; break;
    case OPT_PLOT: png = optarg; break;
    case OPT_KEEP: keep = true; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc)
    return cli_fail("demo", "unexpected argument '%s'", argv[optind]);
  if (d.boot < (1u << 20) || d.boot % (1u << 20) || d.boot > d.size)
    return cli_fail("demo", "--boot-set must be a multiple of 1M, at least 1M "
                    "and at most --size");
  ssize_t n = readlink("/proc/self/exe", d.exe_dir, sizeof d.exe_dir - 1);
  if (n <= 0)
    return cli_fail("demo", "cannot find this program: %s", strerror(errno));
  d.exe_dir[n] = 0;
  char *slash = strrchr(d.exe_dir, '/');
  if (slash)
    *slash = 0;
  snprintf(d.dir, sizeof d.dir, "%s/sluice-demo.XXXXXX", dir);
  if (!mkdtemp(d.dir))
    return cli_fail("demo", "%s: cannot create a directory: %s", dir, strerror(errno));
  snprintf(d.sock, sizeof d.sock, "%s/sluiced.sock", d.dir);

  int ret = 0;
  struct result without[64], with[64];
  uint64_t wall_a = 0, wall_b = 0, dbytes = 0;
  char mods[PATH_MAX + 16], so[PATH_MAX + 32];
  snprintf(mods, sizeof mods, "%s/filters", d.dir);
  snprintf(so, sizeof so, "%s/filters/cache.so", d.exe_dir);
  struct sl_module_entry ent;
  printf("sluice demo: %u clones of a %" PRIu64 " MiB golden image in %s\n", d.n,
         d.size >> 20, d.dir);
  if (mkdir(mods, 0755) < 0 || setenv("SLUICE_FILTER_DIR", mods, 1) < 0 ||
      sl_module_install(so, &ent) < 0) {
    ret = cli_fail("demo", "cannot install the cache filter %s: %s", so,
                   sl_last_error());
    goto out;
  }
  if (make_images(&d) < 0 || start_daemon(&d) < 0) {
    ret = cli_fail("demo", "%s", sl_last_error());
    goto out;
  }
  printf("boot set: %" PRIu64 " MiB of random 4K-64K reads per clone, O_DIRECT, "
         "the page cache dropped before each storm\n", d.boot >> 20);
  if (storm(&d, false, without, &wall_a) < 0 || storm(&d, true, with, &wall_b) < 0) {
    ret = cli_fail("demo", "%s", sl_last_error());
    goto out;
  }
  dbytes = daemon_backend_bytes(&d);
  print_table(&d, "without the shared cache", without, wall_a, 0, false);
  print_table(&d, "with sluiced", with, wall_b, dbytes, true);
  if (png && plot(png, &d, without, with) < 0)
    ret = cli_fail("demo", "%s", sl_last_error());
  else if (png)
    printf("\nplot: %s\n", png);
out:
  stop_daemon(&d);
  if (!keep) {
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof cmd, "rm -rf -- '%s'", d.dir);
    if (system(cmd) != 0)
      fprintf(stderr, "sluice demo: could not remove %s\n", d.dir);
  } else {
    printf("kept %s\n", d.dir);
  }
  return ret;
}
