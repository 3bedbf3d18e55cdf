/* The `local` ownership backend: disks that are files on this host.
 *
 * Who holds the disk is what the QEMU-compatible OFD locks say (a writer
 * holds byte 101, refuses 201; docs/locking.md).  Who that is, and how to
 * ask it, is the owner record IMAGE.owner beside the image (record.h),
 * written atomically (a temporary file renamed over it) once the owner has
 * opened the image, and removed by the owner before it acknowledges a
 * release.  The control socket is a UNIX stream socket in the runtime
 * directory, named by the image's device and inode, so a successor of the
 * same image binds the same path (lib/ipc replaces it if stale, refuses it
 * if live).
 *
 * A record is believed only as far as the kernel confirms it: the owner is
 * alive if the boot is the same (boot_id), the pid exists, is not a zombie,
 * and started when the record says (so a reused pid is not mistaken for
 * the owner).  A dead owner whose locks are free is stale and is taken over
 * at once; a live owner is asked, and one that does not answer in time is
 * left alone (the requester fails, naming it and its process state).
 *
 * The owner's control thread serves any number of connections with one
 * poll loop, each bounded in bytes and in time, and checks the peer's
 * credentials (SO_PEERCRED) before reading a byte: only the owner's uid
 * and root may ask.  Nothing a requester sends is acted on until
 * proto.c's parser has accepted a whole message; garbage, half messages
 * and floods only ever end their own connections. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/driver.h"
#include "ipc/socket.h"
#include "owner/owner.h"
#include "owner/proto.h"

#define MAX_CONNS 64               /* pending requester connections */
#define CONN_DEADLINE_NS 2000000000ull  /* to send one whole message */
#define BUF_SIZE (SL_OWNP_HEADER + SL_OWNP_MAX_PAYLOAD)

/* ---- what the kernel says about a process and a file --------------------- */

static void read_boot_id(char *buf, size_t len)
{
  buf[0] = '\0';
  FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
  if (!f)
    return;
  if (fgets(buf, (int)len, f))
    buf[strcspn(buf, "\n")] = '\0';
  fclose(f);
}

/* PID's state letter and start time (clock ticks after boot), from
 * /proc/PID/stat; -ESRCH if there is no such process. */
static int proc_stat(pid_t pid, char *state, unsigned long long *start)
{
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -ESRCH;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0)
    return -ESRCH;
  buf[n] = '\0';
  /* The command name may hold spaces and parentheses: skip to the last ')'. */
  char *p = strrchr(buf, ')');
  if (!p || sscanf(p + 1, " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u "
                   "%*d %*d %*d %*d %*d %*d %llu", state, start) != 2)
    return -ESRCH;
  return 0;
}

static const char *state_words(char c)
{
  switch (c) {
  case 'R': return "running";
  case 'S': return "sleeping";
  case 'D': return "in uninterruptible I/O";
  case 'T': return "stopped";
  case 't': return "stopped by a tracer";
  case 'Z': return "a zombie";
  case 'X': return "dead";
  }
  return "in an unknown state";
}

/* The lock bytes a writable open of the image would conflict with: the
 * write and resize permissions taken (101, 103) and consistent read,
 * write and resize not shared (200, 201, 203); docs/locking.md. */
static const long long writer_bytes[] = {101, 103, 200, 201, 203};

static int probe_lock(const char *image, bool *locked, char *holder, size_t n)
{
  *locked = false;
  if (holder)
    holder[0] = '\0';
  int fd = open(image, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0)
    return sl_error(errno, "%s: %s", image, strerror(errno));
  for (size_t i = 0; i < SL_ARRAY_SIZE(writer_bytes); i++) {
    int r = sl_lock_byte_taken(fd, writer_bytes[i]);
    if (r == -EINVAL || r == -ENOLCK || r == -EOPNOTSUPP)
      break; /* no OFD locks here: nothing can be known from them */
    if (r < 0) {
      close(fd);
      return sl_error(-r, "%s: cannot test locks: %s", image, strerror(-r));
    }
    if (r > 0) {
      *locked = true;
      if (holder)
        sl_lock_holder(fd, writer_bytes[i], holder, n);
      break;
    }
  }
  close(fd);
  return 0;
}

static bool record_is_mine(const struct sl_owner_record *r, unsigned long long my_start)
{
  return r->pid == getpid() && r->pid_start == my_start;
}

static int read_record(const char *path, struct sl_owner_record *rec, bool *exists)
{
  *exists = false;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
  if (fd < 0) {
    if (errno == ENOENT)
      return 0;
    return sl_error(errno, "%s: %s", path, strerror(errno));
  }
  *exists = true;
  char buf[SL_OWNER_RECORD_MAX + 1];
  size_t have = 0;
  for (;;) {
    ssize_t n = read(fd, buf + have, sizeof buf - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return sl_error(e, "%s: %s", path, strerror(e));
    }
    if (n == 0 || (have += (size_t)n) == sizeof buf)
      break;
  }
  close(fd);
  int r = sl_owner_record_parse(buf, have, rec);
  return r < 0 ? sl_error_prefix(-r, "%s", path) : 0;
}

/* ---- query ------------------------------------------------------------------ */

static int local_query(const char *image, struct sl_owner_info *out)
{
  memset(out, 0, sizeof *out);
  out->backend = "local";
  char *abs = realpath(image, NULL);
  if (!abs)
    return sl_error(errno, "%s: %s", image, strerror(errno));
  int n = snprintf(out->image, sizeof out->image, "%s", abs);
  int m = snprintf(out->record_path, sizeof out->record_path, "%s%s", abs,
                   SL_OWNER_SUFFIX);
  free(abs);
  if (n < 0 || (size_t)n >= sizeof out->image || m < 0 ||
      (size_t)m >= sizeof out->record_path)
    return sl_error(ENAMETOOLONG, "%s: path too long", image);
  int r = probe_lock(out->image, &out->locked, out->holder, sizeof out->holder);
  if (r < 0)
    return r;
  bool exists;
  r = read_record(out->record_path, &out->rec, &exists);
  if (r < 0)
    return r;
  out->has_record = exists;
  if (exists) {
    char boot[40];
    read_boot_id(boot, sizeof boot);
    char st;
    unsigned long long start;
    if (strcmp(boot, out->rec.boot_id) == 0 &&
        proc_stat(out->rec.pid, &st, &start) == 0 &&
        start == out->rec.pid_start && st != 'Z' && st != 'X') {
      out->pid_alive = true;
      snprintf(out->proc_state, sizeof out->proc_state, "%s", state_words(st));
    }
  }
  if (exists && out->pid_alive)
    out->state = out->locked ? SL_OWNER_OWNED : SL_OWNER_RELEASED;
  else if (out->locked)
    out->state = SL_OWNER_FOREIGN;
  else
    out->state = exists ? SL_OWNER_STALE : SL_OWNER_NONE;
  return 0;
}

/* ---- requester -------------------------------------------------------------- */

static void logf_(const struct sl_owner_release_opts *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void logf_(const struct sl_owner_release_opts *o, const char *fmt, ...)
{
  if (!o->log)
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  o->log(o->log_arg, line);
}

/* "pid 42 (sluice serve, host h, since 2026-12-07 16:20:00 UTC)" */
static void describe_owner(const struct sl_owner_info *i, char *buf, size_t len)
{
  char when[64] = "?";
  time_t t = (time_t)i->rec.started;
  struct tm tm;
  if (gmtime_r(&t, &tm))
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
  snprintf(buf, len, "pid %d (%s, host %s, since %s)", (int)i->rec.pid,
           i->rec.command[0] ? i->rec.command : "?", i->rec.host, when);
}

/* Connect without blocking past DEADLINE (a full backlog would block a
 * plain connect forever on a hung owner). */
static int connect_until(const char *path, uint64_t deadline)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof sa.sun_path)
    return sl_error(ENAMETOOLONG, "%s: socket path too long", path);
  strcpy(sa.sun_path, path);
  for (;;) {
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
      return sl_error(errno, "socket: %s", strerror(errno));
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
      return fd;
    int e = errno;
    close(fd);
    if (e != EAGAIN || sl_now_ns() >= deadline)
      return sl_error(e, "%s: %s", path, strerror(e));
    usleep(2000); /* backlog full: the owner is not accepting */
  }
}

/* Read one message from FD by DEADLINE.  0 and *M, -ETIMEDOUT, -ECONNRESET
 * at end of stream, or the parser's error. */
static int recv_msg(int fd, unsigned char *buf, size_t *have, uint64_t deadline,
                    struct sl_ownp_msg *m)
{
  for (;;) {
    if (*have) {
      long r = sl_ownp_parse(buf, *have, m);
      if (r < 0)
        return (int)r;
      if (r > 0) {
        memmove(buf, buf + r, *have - (size_t)r);
        *have -= (size_t)r;
        return 0;
      }
    }
    if (*have == BUF_SIZE)
      return sl_error(EBADMSG, "oversized message");
    uint64_t now = sl_now_ns();
    if (now >= deadline)
      return -ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint64_t left_ms = (deadline - now + 999999) / 1000000;
    int pr = poll(&p, 1, (int)SL_MIN(left_ms, 1000));
    if (pr < 0 && errno != EINTR)
      return sl_error(errno, "poll: %s", strerror(errno));
    if (pr <= 0)
      continue;
    ssize_t n = recv(fd, buf + *have, BUF_SIZE - *have, MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (n <= 0)
      return -ECONNRESET;
    *have += (size_t)n;
  }
}

static int wait_unlocked(const char *image, uint64_t deadline)
{
  for (;;) {
    bool locked;
    int r = probe_lock(image, &locked, NULL, 0);
    if (r < 0 || !locked)
      return r;
    if (sl_now_ns() >= deadline)
      return -ETIMEDOUT;
    usleep(500);
  }
}

static int local_release(const char *image, const struct sl_owner_release_opts *o,
                         struct sl_owner_release_result *res)
{
  memset(res, 0, sizeof *res);
  double timeout = o->timeout_s > 0 ? o->timeout_s : 30;
  uint64_t start = sl_now_ns();
  uint64_t deadline = start + (uint64_t)(timeout * 1e9);
  struct sl_owner_info *i = &res->before;
  char who[600];
  for (;;) {
    int r = local_query(image, i);
    if (r < 0)
      return r;
    describe_owner(i, who, sizeof who);
    switch (i->state) {
    case SL_OWNER_NONE:
      return 0;
    case SL_OWNER_STALE:
      res->stale = true;
      logf_(o, "%s: owner %s is gone and holds no lock: taking over its stale "
            "record", i->image, who);
      return 0;
    case SL_OWNER_RELEASED:
      logf_(o, "%s: owner %s no longer holds it", i->image, who);
      return 0;
    case SL_OWNER_FOREIGN:
      if (i->has_record)
        return sl_error(EBUSY, "%s: in use by %s; its owner record names %s, "
                        "which is gone, so nobody can be asked to release it",
                        i->image, i->holder[0] ? i->holder : "another process",
                        who);
      return sl_error(EBUSY, "%s: in use by %s, which has no sluice owner "
                      "record: it cannot be asked to release it", i->image,
                      i->holder[0] ? i->holder : "another process (holder not found)");
    case SL_OWNER_OWNED:
      break;
    }
    /* A live owner: ask it. */
    int fd = connect_until(i->rec.socket, deadline);
    if (fd < 0) {
      if ((fd == -ECONNREFUSED || fd == -ENOENT) && sl_now_ns() < deadline) {
        usleep(5000); /* between its release and its exit, or starting */
        continue;
      }
      if (fd == -EAGAIN)
        return sl_error(ETIMEDOUT, "%s: owner %s did not accept a connection "
                        "within %g s (it is %s); the disk was left to it",
                        i->image, who, timeout, i->proc_state);
      if (fd == -EACCES)
        return sl_error(EPERM, "%s: owner %s runs as uid %u: only that user "
                        "and root may ask it to release the disk", i->image,
                        who, (unsigned)i->rec.uid);
      return sl_error_prefix(-fd, "%s: cannot reach owner %s", i->image, who);
    }
    unsigned char buf[BUF_SIZE];
    uint64_t now = sl_now_ns();
    uint32_t left_ms = (uint32_t)SL_MIN((deadline - SL_MIN(now, deadline)) / 1000000,
                                        SL_OWNP_MAX_TIMEOUT_MS);
    size_t len = sl_ownp_encode(buf, SL_OWNP_RELEASE, left_ms, 0,
                                o->requester ? o->requester : "sluice");
    res->request_ns = sl_now_ns();
    if (send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) != (ssize_t)len) {
      int e = errno;
      close(fd);
      return sl_error(e, "%s: cannot send the release request to owner %s: %s",
                      i->image, who, strerror(e));
    }
    size_t have = 0;
    struct sl_ownp_msg m;
    bool accepted = false;
    for (;;) {
      r = recv_msg(fd, buf, &have, deadline, &m);
      if (r < 0)
        break;
      if (m.type == SL_OWNP_ACCEPTED && !accepted) {
        accepted = true;
        continue;
      }
      break;
    }
    close(fd);
    if (r == -ETIMEDOUT) {
      /* Re-read the process state for the message: "stopped" says why. */
      struct sl_owner_info now_i;
      if (local_query(image, &now_i) == 0 && now_i.pid_alive)
        snprintf(i->proc_state, sizeof i->proc_state, "%s", now_i.proc_state);
      if (accepted)
        return sl_error(ETIMEDOUT, "%s: owner %s accepted the release but had "
                        "not finished it within %g s (it is %s)", i->image, who,
                        timeout, i->proc_state);
      return sl_error(ETIMEDOUT, "%s: owner %s did not answer the release "
                      "request within %g s (it is %s); the disk was left to it",
                      i->image, who, timeout, i->proc_state);
    }
    if (r == -ECONNRESET) {
      /* It went away without a word: died, or released and exited before
       * we read.  Judge again by the locks and its pid. */
      struct sl_owner_info again;
      if (local_query(image, &again) == 0 && !again.locked) {
        logf_(o, "%s: owner %s closed the connection without answering; the "
              "disk is free", i->image, who);
        res->released_ns = sl_now_ns();
        return 0;
      }
      return sl_error(ECONNRESET, "%s: owner %s closed the connection without "
                      "answering and still holds the disk", i->image, who);
    }
    if (r < 0)
      return sl_error_prefix(-r, "%s: owner %s answered with a malformed message",
                             i->image, who);
    if (m.type == SL_OWNP_ERROR && accepted)
      return sl_error((int)m.code, "%s: owner %s failed to release it: %s",
                      i->image, who, m.text);
    if (m.type == SL_OWNP_ERROR)
      return sl_error((int)m.code, "%s: owner %s refuses to release it: %s",
                      i->image, who, m.text);
    if (m.type != SL_OWNP_RELEASED) {
      char tn[32];
      return sl_error(EBADMSG, "%s: owner %s answered %s to a release request",
                      i->image, who, sl_ownp_type_name(m.type, tn, sizeof tn));
    }
    res->released_ns = sl_now_ns();
    res->drain_ns = m.drain_ns;
    res->asked = true;
    /* It closed the image before answering, so its locks are gone; wait
     * briefly in case the kernel is slower than the message. */
    r = wait_unlocked(i->image, deadline);
    if (r == -ETIMEDOUT)
      return sl_error(ETIMEDOUT, "%s: owner %s said it released the disk but "
                      "the locks are still held", i->image, who);
    return r;
  }
}

/* ---- owner ------------------------------------------------------------------ */

struct conn {
  int fd;
  uid_t uid;
  pid_t pid;
  uint64_t deadline;
  size_t have;
  unsigned char buf[BUF_SIZE];
};

struct local_owner {
  struct sl_owner_base base;
  struct sl_owner_claim_opts opts;
  struct sl_owner_record rec;
  char record_path[4096 + 8];
  struct sl_ipc_listener listener;
  int wake[2];
  pthread_t thread;
  bool thread_started;
  pthread_mutex_t lock;
  /* Under lock: */
  bool stopping;               /* drop: end the thread */
  bool releasing;              /* a release was accepted */
  bool done;                   /* release_done called */
  int done_status;
  char done_msg[SL_OWNP_MAX_TEXT];
  uint64_t accepted_ns;
  uint64_t drain_ns;
  char requester[SL_OWNP_MAX_TEXT + 64];
  int release_fd;              /* the requester's connection, answered at done */
  struct conn *conns[MAX_CONNS];
};

static void send_quiet(int fd, const void *buf, size_t len)
{
  /* Replies are small and the socket's buffer empty: one send does.  A
   * requester that does not read only loses its own answer. */
  ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;
}

static void reply_error(int fd, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void reply_error(int fd, int code, const char *fmt, ...)
{
  char text[SL_OWNP_MAX_TEXT];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  unsigned char buf[BUF_SIZE];
  send_quiet(fd, buf, sl_ownp_encode(buf, SL_OWNP_ERROR, (uint32_t)code, 0, text));
}

static void conn_close(struct local_owner *o, int k)
{
  close(o->conns[k]->fd);
  free(o->conns[k]);
  o->conns[k] = NULL;
}

static void remove_record_if_mine(struct local_owner *o)
{
  struct sl_owner_record cur;
  bool exists;
  if (read_record(o->record_path, &cur, &exists) == 0 && exists &&
      record_is_mine(&cur, o->rec.pid_start))
    unlink(o->record_path);
}

/* Accept one connection; false when the backlog is empty. */
static bool accept_one(struct local_owner *o)
{
  int fd = accept4(o->listener.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd < 0)
    return errno == EINTR || errno == ECONNABORTED;
  pid_t pid;
  uid_t uid;
  gid_t gid;
  if (sl_ipc_peer_cred(fd, &pid, &uid, &gid) < 0) {
    close(fd);
    return true;
  }
  /* Only the owner's own uid and root may ask (docs/ownership.md). */
  if (uid != 0 && uid != geteuid()) {
    reply_error(fd, EPERM, "uid %u may not ask pid %d to release %s: only "
                "uid %u and root may", (unsigned)uid, (int)getpid(),
                o->rec.image, (unsigned)geteuid());
    close(fd);
    return true;
  }
  int slot = -1, oldest = 0;
  for (int k = 0; k < MAX_CONNS; k++) {
    if (!o->conns[k]) {
      slot = k;
      break;
    }
    if (o->conns[k]->deadline < o->conns[oldest]->deadline)
      oldest = k;
  }
  if (slot < 0) {
    /* A flood of idle connections: the oldest makes room. */
    reply_error(o->conns[oldest]->fd, EBUSY, "too many connections");
    conn_close(o, oldest);
    slot = oldest;
  }
  struct conn *c = malloc(sizeof *c);
  if (!c) {
    close(fd);
    return true;
  }
  c->fd = fd;
  c->uid = uid;
  c->pid = pid;
  c->have = 0;
  c->deadline = sl_now_ns() + CONN_DEADLINE_NS;
  o->conns[slot] = c;
  return true;
}

/* A whole, valid message M arrived on connection K. */
static void handle(struct local_owner *o, int k, const struct sl_ownp_msg *m)
{
  struct conn *c = o->conns[k];
  unsigned char buf[BUF_SIZE];
  char tn[32];
  if (m->type == SL_OWNP_QUERY) {
    char text[SL_OWNER_RECORD_MAX];
    if (sl_owner_record_format(&o->rec, text, sizeof text) < 0)
      text[0] = '\0';
    send_quiet(c->fd, buf, sl_ownp_encode(buf, SL_OWNP_INFO, 0, 0, text));
    conn_close(o, k);
    return;
  }
  if (m->type != SL_OWNP_RELEASE) {
    reply_error(c->fd, EBADMSG, "%s is not a request",
                sl_ownp_type_name(m->type, tn, sizeof tn));
    conn_close(o, k);
    return;
  }
  pthread_mutex_lock(&o->lock);
  if (o->opts.no_release || !o->opts.on_release) {
    pthread_mutex_unlock(&o->lock);
    reply_error(c->fd, EPERM, "pid %d (%s --no-release) does not release %s",
                (int)getpid(), o->rec.command, o->rec.image);
    conn_close(o, k);
    return;
  }
  if (o->releasing || o->stopping) {
    pthread_mutex_unlock(&o->lock);
    reply_error(c->fd, EBUSY, "pid %d is already releasing %s (to %s)",
                (int)getpid(), o->rec.image, o->requester);
    conn_close(o, k);
    return;
  }
  /* A request whose sender has hung up is not acted on: it waited in the
   * backlog while this process was stopped, and its requester timed out
   * and told its user that the disk was left alone. */
  struct pollfd hup = {.fd = c->fd, .events = POLLRDHUP};
  if (poll(&hup, 1, 0) > 0 && (hup.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
    pthread_mutex_unlock(&o->lock);
    conn_close(o, k);
    return;
  }
  o->releasing = true;
  o->accepted_ns = sl_now_ns();
  snprintf(o->requester, sizeof o->requester, "%.512s (pid %d, uid %u)", m->text,
           (int)c->pid, (unsigned)c->uid);
  o->release_fd = c->fd;
  free(c);
  o->conns[k] = NULL;
  pthread_mutex_unlock(&o->lock);
  send_quiet(o->release_fd, buf, sl_ownp_encode(buf, SL_OWNP_ACCEPTED, 0, 0, NULL));
  o->opts.on_release(o->opts.arg);
}

static void on_readable(struct local_owner *o, int k)
{
  struct conn *c = o->conns[k];
  ssize_t n = recv(c->fd, c->buf + c->have, BUF_SIZE - c->have, MSG_DONTWAIT);
  if (n < 0 && (errno == EINTR || errno == EAGAIN))
    return;
  if (n <= 0) {
    conn_close(o, k);
    return;
  }
  c->have += (size_t)n;
  struct sl_ownp_msg m;
  long r = sl_ownp_parse(c->buf, c->have, &m);
  if (r == 0 && c->have < BUF_SIZE)
    return; /* a prefix: wait for the rest, until the deadline */
  if (r <= 0) {
    reply_error(c->fd, r == -EPROTONOSUPPORT ? EPROTONOSUPPORT : EBADMSG, "%s",
                r == 0 ? "message too long" : sl_last_error());
    conn_close(o, k);
    return;
  }
  /* One request per connection; anything after it is ignored. */
  handle(o, k, &m);
}

static void answer_release(struct local_owner *o)
{
  unsigned char buf[BUF_SIZE];
  size_t len;
  if (o->done_status == 0)
    len = sl_ownp_encode(buf, SL_OWNP_RELEASED, 0, o->drain_ns, o->done_msg);
  else
    len = sl_ownp_encode(buf, SL_OWNP_ERROR, (uint32_t)-o->done_status, 0,
                         o->done_msg);
  /* Blocking for this one answer: the requester waits for it. */
  int flags = fcntl(o->release_fd, F_GETFL);
  if (flags >= 0)
    fcntl(o->release_fd, F_SETFL, flags & ~O_NONBLOCK);
  struct timeval tv = {.tv_sec = 2};
  setsockopt(o->release_fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ssize_t n = send(o->release_fd, buf, len, MSG_NOSIGNAL);
  (void)n;
  close(o->release_fd);
  o->release_fd = -1;
}

static void *control_main(void *arg)
{
  struct local_owner *o = arg;
  struct pollfd p[2 + MAX_CONNS];
  int idx[2 + MAX_CONNS];
  for (;;) {
    pthread_mutex_lock(&o->lock);
    bool stop = o->stopping, done = o->done;
    bool answer = done && o->release_fd >= 0;
    pthread_mutex_unlock(&o->lock);
    if (answer) {
      /* Before the answer: the requester binds the same path next. */
      sl_ipc_listener_close(&o->listener);
      answer_release(o);
    }
    if (stop || done)
      break;
    int np = 0;
    p[np++] = (struct pollfd){.fd = o->wake[0], .events = POLLIN};
    if (o->listener.fd >= 0)
      p[np++] = (struct pollfd){.fd = o->listener.fd, .events = POLLIN};
    int first_conn = np;
    uint64_t now = sl_now_ns(), next = now + 1000000000ull;
    for (int k = 0; k < MAX_CONNS; k++) {
      if (!o->conns[k])
        continue;
      if (o->conns[k]->deadline <= now) {
        reply_error(o->conns[k]->fd, ETIMEDOUT, "no whole message within %llu s",
                    CONN_DEADLINE_NS / 1000000000ull);
        conn_close(o, k);
        continue;
      }
      next = SL_MIN(next, o->conns[k]->deadline);
      idx[np] = k;
      p[np++] = (struct pollfd){.fd = o->conns[k]->fd, .events = POLLIN};
    }
    int timeout = (int)((next - now) / 1000000 + 1);
    int r = poll(p, (nfds_t)np, timeout);
    if (r <= 0)
      continue;
    if (p[0].revents) {
      char b[64];
      ssize_t n = read(o->wake[0], b, sizeof b);
      (void)n;
    }
    for (int j = first_conn; j < np; j++)
      if (p[j].revents && o->conns[idx[j]])
        on_readable(o, idx[j]);
    /* Empty the backlog (the listener does not block): a flood must not
     * keep a real requester waiting behind it. */
    if (first_conn == 2 && p[1].revents)
      for (int n = 0; n < 256 && accept_one(o); n++)
        ;
  }
  for (int k = 0; k < MAX_CONNS; k++)
    if (o->conns[k])
      conn_close(o, k);
  return NULL;
}

static int runtime_dir(char *buf, size_t len)
{
  const char *env = getenv("SLUICE_RUNTIME_DIR");
  const char *xdg = getenv("XDG_RUNTIME_DIR");
  int n;
  if (env && *env)
    n = snprintf(buf, len, "%s", env);
  else if (geteuid() == 0)
    n = snprintf(buf, len, "/run/sluice");
  else if (xdg && *xdg)
    n = snprintf(buf, len, "%s/sluice", xdg);
  else
    n = snprintf(buf, len, "/tmp/sluice-%u", (unsigned)geteuid());
  if (n < 0 || (size_t)n >= len)
    return sl_error(ENAMETOOLONG, "runtime directory path too long");
  if (mkdir(buf, 0700) < 0 && errno != EEXIST)
    return sl_error(errno, "%s: cannot create the runtime directory: %s", buf,
                    strerror(errno));
  return 0;
}

static int write_record(struct local_owner *o)
{
  char text[SL_OWNER_RECORD_MAX];
  int n = sl_owner_record_format(&o->rec, text, sizeof text);
  if (n < 0)
    return n;
  char tmp[sizeof o->record_path + 32];
  snprintf(tmp, sizeof tmp, "%s.tmp.%d", o->record_path, (int)getpid());
  unlink(tmp);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0)
    return sl_error(errno, "%s: cannot write the owner record: %s", tmp,
                    strerror(errno));
  int r = sl_pwrite_full(fd, text, (size_t)n, 0);
  if (close(fd) < 0 && r == 0)
    r = -errno;
  /* rename() replaces the record whole: a reader sees the old or the new. */
  if (r == 0 && rename(tmp, o->record_path) < 0)
    r = -errno;
  if (r < 0) {
    unlink(tmp);
    return sl_error(-r, "%s: cannot write the owner record: %s", o->record_path,
                    strerror(-r));
  }
  return 0;
}

static void free_owner(struct local_owner *o)
{
  sl_ipc_listener_close(&o->listener);
  if (o->wake[0] >= 0)
    close(o->wake[0]);
  if (o->wake[1] >= 0)
    close(o->wake[1]);
  pthread_mutex_destroy(&o->lock);
  free(o);
}

static int local_claim(const char *image, const struct sl_owner_claim_opts *opts,
                       struct sl_owner **out)
{
  struct local_owner *o = calloc(1, sizeof *o);
  if (!o)
    return sl_error(ENOMEM, "out of memory");
  o->base.backend = &sl_owner_local;
  o->opts = *opts;
  o->wake[0] = o->wake[1] = -1;
  o->release_fd = -1;
  pthread_mutex_init(&o->lock, NULL);
  sl_ipc_listener_init(&o->listener);
  struct sl_owner_record *rec = &o->rec;
  int r = 0;
  char *abs = realpath(image, NULL);
  struct stat st;
  if (!abs || stat(abs, &st) < 0) {
    r = sl_error(errno, "%s: %s", image, strerror(errno));
    goto fail;
  }
  if (snprintf(rec->image, sizeof rec->image, "%s", abs) >= (int)sizeof rec->image ||
      snprintf(o->record_path, sizeof o->record_path, "%s%s", abs,
               SL_OWNER_SUFFIX) >= (int)sizeof o->record_path) {
    r = sl_error(ENAMETOOLONG, "%s: path too long", image);
    goto fail;
  }
  for (const char *p = abs; *p; p++)
    if ((unsigned char)*p < 0x20) {
      r = sl_error(EINVAL, "%s: a control character in the path; no owner "
                   "record can name it", image);
      goto fail;
    }
  char dir[160];
  if ((r = runtime_dir(dir, sizeof dir)) < 0)
    goto fail;
  snprintf(rec->backend, sizeof rec->backend, "local");
  rec->pid = getpid();
  char state;
  if (proc_stat(rec->pid, &state, &rec->pid_start) < 0) {
    r = sl_error(EIO, "cannot read /proc/self/stat");
    goto fail;
  }
  read_boot_id(rec->boot_id, sizeof rec->boot_id);
  if (!rec->boot_id[0])
    snprintf(rec->boot_id, sizeof rec->boot_id, "unknown");
  if (gethostname(rec->host, sizeof rec->host - 1) < 0 || !rec->host[0])
    snprintf(rec->host, sizeof rec->host, "localhost");
  rec->uid = geteuid();
  rec->started = (long long)time(NULL);
  rec->release = !opts->no_release;
  snprintf(rec->command, sizeof rec->command, "%s",
           opts->command ? opts->command : "sluice");
  if (snprintf(rec->socket, sizeof rec->socket, "%s/owner-%jx-%ju.sock", dir,
               (uintmax_t)st.st_dev, (uintmax_t)st.st_ino) >= (int)sizeof rec->socket) {
    r = sl_error(ENAMETOOLONG, "%s: control socket path too long (runtime "
                 "directory %s)", image, dir);
    goto fail;
  }
  if ((r = sl_ipc_listen_unix(rec->socket, &o->listener)) < 0)
    goto fail;
  int fl = fcntl(o->listener.fd, F_GETFL);
  if (fl < 0 || fcntl(o->listener.fd, F_SETFL, fl | O_NONBLOCK) < 0) {
    r = sl_error(errno, "%s: %s", rec->socket, strerror(errno));
    goto fail;
  }
  /* Owner-only (root passes anyway); the peer check below is the rule,
   * this keeps other users from even connecting.  chmod changes the
   * file's ctime, by which the listener recognises its own socket at
   * close: record the new one. */
  struct stat sst;
  if (chmod(rec->socket, 0600) == 0 && stat(rec->socket, &sst) == 0 &&
      sst.st_ino == o->listener.ino)
    o->listener.ctime = sst.st_ctim;
  if (pipe2(o->wake, O_CLOEXEC | O_NONBLOCK) < 0) {
    r = sl_error(errno, "pipe: %s", strerror(errno));
    goto fail;
  }
  if ((r = write_record(o)) < 0)
    goto fail;
  if (pthread_create(&o->thread, NULL, control_main, o) != 0) {
    unlink(o->record_path);
    r = sl_error(EAGAIN, "cannot start the ownership control thread");
    goto fail;
  }
  o->thread_started = true;
  free(abs);
  *out = (struct sl_owner *)(void *)o;
  return 0;
fail:
  free(abs);
  free_owner(o);
  return r;
}

static void wake(struct local_owner *o)
{
  ssize_t n = write(o->wake[1], "x", 1);
  (void)n;
}

static void local_release_done(struct sl_owner *own, int status, const char *message)
{
  struct local_owner *o = (struct local_owner *)(void *)own;
  /* Before the answer: once the requester hears it, it writes its own
   * record and binds the same socket path. */
  remove_record_if_mine(o);
  pthread_mutex_lock(&o->lock);
  o->done = true;
  o->done_status = status;
  o->drain_ns = sl_now_ns() - o->accepted_ns;
  snprintf(o->done_msg, sizeof o->done_msg, "%s", message ? message : "");
  pthread_mutex_unlock(&o->lock);
  wake(o);
}

static const char *local_requester(struct sl_owner *own)
{
  /* Set once, under the lock, on the control thread; the lock orders this
   * read after that write. */
  struct local_owner *o = (struct local_owner *)(void *)own;
  pthread_mutex_lock(&o->lock);
  const char *r = o->requester;
  pthread_mutex_unlock(&o->lock);
  return r;
}

static void local_drop(struct sl_owner *own)
{
  struct local_owner *o = (struct local_owner *)(void *)own;
  pthread_mutex_lock(&o->lock);
  o->stopping = true;
  if (o->releasing && !o->done) {
    /* Shut down (SIGTERM) while a release was under way: the disk is
     * closed by now (drop comes after close), so the requester may go on. */
    o->done = true;
    o->done_status = 0;
    o->drain_ns = sl_now_ns() - o->accepted_ns;
    snprintf(o->done_msg, sizeof o->done_msg, "the owner shut down");
  }
  pthread_mutex_unlock(&o->lock);
  wake(o);
  if (o->thread_started)
    pthread_join(o->thread, NULL);
  remove_record_if_mine(o);
  free_owner(o);
}

static bool local_handles(const char *image)
{
  (void)image;
  return true;
}

const struct sl_owner_backend sl_owner_local = {
  .name = "local",
  .handles = local_handles,
  .query = local_query,
  .release = local_release,
  .claim = local_claim,
  .release_done = local_release_done,
  .requester = local_requester,
  .drop = local_drop,
};
