/* lib/ipc process lifecycle (see process.h for the sequence and contracts).
 *
 * The daemonizing parent does not exit at once: it waits on a pipe for the
 * child to report that it has started (sl_proc_detach_done).  Exiting at
 * once, as the classic double-dance does, would let `sluice serve --daemon`
 * return 0 for a server whose pidfile or exports then fail in the
 * background with stderr on /dev/null; waiting makes the parent's status
 * the truth about startup, as systemd's Type=forking expects.
 *
 * The pidfile lock is an OFD lock (F_OFD_SETLK): it belongs to the open
 * file description, not to a thread or to "the process" in the POSIX-lock
 * sense that any close() of the file would silently drop.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include <sluice/error.h>
#include "ipc/process.h"

_Static_assert(SL_PROC_LISTEN_FDS_START == SD_LISTEN_FDS_START,
               "socket activation starts where systemd starts");

int sl_proc_block_signals(sigset_t *set)
{
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
  sigaddset(set, SIGHUP);
  int r = pthread_sigmask(SIG_BLOCK, set, NULL);
  if (r != 0)
    return sl_error(r, "cannot block signals: %s", strerror(r));
  signal(SIGPIPE, SIG_IGN);
  return 0;
}

int sl_proc_wait_signal(const sigset_t *set)
{
  int sig = 0;
  while (sigwait(set, &sig) != 0)
    ;
  return sig;
}

static int detach_fd = -1; /* the child's end of the parent's pipe */

/* stdin always; stdout and stderr only once startup is over, so that an
 * error between the fork and sl_proc_detach_done still reaches the
 * terminal that started us. */
static void redirect_stdio(bool in, bool out)
{
  int null = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null < 0)
    return;
  if (in)
    dup2(null, 0);
  if (out) {
    fflush(NULL);
    dup2(null, 1);
    dup2(null, 2);
  }
  if (null > 2)
    close(null);
}

int sl_proc_daemonize(const char *who)
{
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0)
    return sl_error(errno, "%s: pipe: %s", who, strerror(errno));
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(p[0]);
    close(p[1]);
    return sl_error(e, "%s: fork: %s", who, strerror(e));
  }
  if (pid > 0) {
    close(p[1]);
    unsigned char status = 1;
    ssize_t n;
    do
      n = read(p[0], &status, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) {
      /* The child died (or exited) before reporting: its status. */
      int ws = 0;
      if (waitpid(pid, &ws, WNOHANG) == pid && WIFEXITED(ws) && WEXITSTATUS(ws))
        _exit(WEXITSTATUS(ws));
      _exit(1);
    }
    _exit(status);
  }
  close(p[0]);
  detach_fd = p[1];
  setsid();
  redirect_stdio(true, false);
  return 0;
}

void sl_proc_detach_done(int status)
{
  if (detach_fd < 0)
    return;
  unsigned char s = (unsigned char)(status & 0xff);
  ssize_t n;
  do
    n = write(detach_fd, &s, 1);
  while (n < 0 && errno == EINTR);
  close(detach_fd);
  detach_fd = -1;
  redirect_stdio(false, true);
}

static int pidfile_fd = -1;
static char *pidfile_path;
static dev_t pidfile_dev;
static ino_t pidfile_ino;

int sl_proc_pidfile_create(const char *path)
{
  int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET};
  if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
    int e = errno;
    char buf[32] = "";
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    close(fd);
    if (e == EAGAIN || e == EACCES) {
      buf[n > 0 ? n : 0] = '\0';
      buf[strcspn(buf, "\n")] = '\0';
      return sl_error(EBUSY, "%s: pidfile held by running process %s", path,
                      buf[0] ? buf : "(unknown pid)");
    }
    return sl_error(e, "%s: cannot lock the pidfile: %s", path, strerror(e));
  }
  char buf[32];
  int len = snprintf(buf, sizeof buf, "%d\n", (int)getpid());
  struct stat st;
  if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, (size_t)len, 0) != len ||
      fstat(fd, &st) < 0) {
    int e = errno;
    close(fd);
    return sl_error(e, "%s: %s", path, strerror(e));
  }
  if (!(pidfile_path = strdup(path))) {
    close(fd);
    return sl_error(ENOMEM, "out of memory");
  }
  pidfile_fd = fd;
  pidfile_dev = st.st_dev;
  pidfile_ino = st.st_ino;
  return 0;
}

void sl_proc_pidfile_remove(void)
{
  if (pidfile_fd < 0)
    return;
  struct stat st;
  if (stat(pidfile_path, &st) == 0 && st.st_dev == pidfile_dev &&
      st.st_ino == pidfile_ino)
    unlink(pidfile_path);
  close(pidfile_fd);
  pidfile_fd = -1;
  free(pidfile_path);
  pidfile_path = NULL;
}

int sl_proc_notify_ready(const char *status)
{
  if (status)
    return sd_notifyf(0, "READY=1\nSTATUS=%s", status) > 0;
  return sd_notify(0, "READY=1") > 0;
}

int sl_proc_notify_stopping(void)
{
  return sd_notify(0, "STOPPING=1") > 0;
}

int sl_proc_listen_fds(void)
{
  int n = sd_listen_fds(1);
  if (n < 0)
    return sl_error(-n, "socket activation: %s", strerror(-n));
  return n;
}
