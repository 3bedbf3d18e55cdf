/* lib/ipc sockets: listening, connecting, descriptor passing and peer
 * credentials, for every server in sluice (the NBD export, the cache daemon
 * sluiced, the owner's control socket) and their clients.
 *
 * Why a layer of its own: the cache daemon and its clients speak over UNIX
 * sockets and pass memfds and image descriptors (DESIGN.md mechanisms 2-4),
 * and the NBD export listens on the same kind of socket.  The rules below
 * are easy to get subtly wrong, so they are written once:
 *
 *  - A listener never unlinks a LIVE socket.  Before binding a path that
 *    already exists, it connects to it: if a process answers, the path is in
 *    use and the listener refuses (EADDRINUSE, naming the path); only a
 *    stale socket (connection refused) is replaced, and anything that is not
 *    a socket at all is refused (EEXIST).  On close the path is unlinked only
 *    if it is still the socket this listener bound (same file),
 *    so a successor that replaced it keeps its path.
 *  - Received descriptors arrive close-on-exec (MSG_CMSG_CLOEXEC), their
 *    number is bounded by the caller, and descriptors beyond the bound (or in
 *    a truncated control message) are closed, never leaked.
 *
 * Every function returns 0 (or a count) on success and -errno with a message
 * (sl_last_error()) on failure, as everywhere in libsluice.
 */
#ifndef SLUICE_IPC_SOCKET_H
#define SLUICE_IPC_SOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* Most descriptors one message may carry (the kernel's SCM_MAX_FD is 253). */
#define SL_IPC_MAX_FDS 32

/* A listening socket.  PATH is set for UNIX sockets this process bound
 * (and is unlinked by sl_ipc_listener_close); DEV, INO and CTIME identify
 * the socket file so that close removes only our own (an inode number alone
 * is reused as soon as a replaced socket file is freed).  fd is -1 when
 * closed. */
struct sl_ipc_listener {
  int fd;
  char *path;
  dev_t dev;
  ino_t ino;
  struct timespec ctime;
};

/* Listen on a UNIX stream socket at PATH (backlog 64, SOCK_CLOEXEC).
 * Refuses with -EADDRINUSE if a process accepts connections there, with
 * -EEXIST if PATH exists and is not a socket, -ENAMETOOLONG if PATH does not
 * fit sockaddr_un.  A stale socket (nobody listening) is replaced. */
int sl_ipc_listen_unix(const char *path, struct sl_ipc_listener *l);

/* Listen on TCP "HOST:PORT" ("[::1]:PORT" for IPv6; empty HOST = any),
 * SO_REUSEADDR, the first address getaddrinfo offers that binds. */
int sl_ipc_listen_tcp(const char *hostport, struct sl_ipc_listener *l);

/* Listen on SPEC: "unix:PATH", "tcp:HOST:PORT", or "fd:N" (adopt an
 * inherited descriptor, which must be a listening stream socket: what
 * socket activation hands over).  The message names SPEC on failure. */
int sl_ipc_listen(const char *spec, struct sl_ipc_listener *l);

/* Adopt FD, already bound and listening (socket activation).  Refuses with
 * -ENOTSOCK / -EINVAL if FD is not a listening stream socket.  The listener
 * owns FD from then on; PATH stays NULL (systemd owns the socket file). */
int sl_ipc_listener_adopt(int fd, struct sl_ipc_listener *l);

/* Close the listener: closes fd, and unlinks PATH only if PATH is still the
 * socket this listener bound.  Safe to call again, and on a listener that
 * sl_ipc_listener_init() set up and nothing bound (every sl_ipc_listen*
 * leaves L initialised, even when it fails). */
void sl_ipc_listener_close(struct sl_ipc_listener *l);

/* Mark L as holding nothing (fd -1, no path). */
void sl_ipc_listener_init(struct sl_ipc_listener *l);

/* Connect to the UNIX stream socket at PATH.  Returns the connected
 * descriptor (SOCK_CLOEXEC) or -errno (-ECONNREFUSED for a stale socket,
 * -ENOENT when absent) with a message naming PATH. */
int sl_ipc_connect_unix(const char *path);

/* Send LEN bytes of DATA (LEN >= 1: a descriptor needs at least one byte to
 * travel with) and N_FDS descriptors (<= SL_IPC_MAX_FDS) in one sendmsg on
 * the stream or seqpacket socket SOCK.  Retries EINTR; a short send of the
 * data continues without the descriptors, which went with the first byte.
 * MSG_NOSIGNAL: a vanished peer is -EPIPE, not SIGPIPE. */
int sl_ipc_send_fds(int sock, const void *data, size_t len,
                    const int *fds, size_t n_fds);

/* Receive up to LEN bytes into BUF and up to MAX_FDS descriptors into FDS
 * (*N_FDS set to how many; each close-on-exec, owned by the caller).
 * Returns the number of bytes (0 at end of stream) or -errno.  Descriptors
 * beyond MAX_FDS, or any that came with a truncated control message, are
 * closed and the call fails with -EMSGSIZE (and closes the ones it would
 * have returned, so a failure never leaves the caller owning anything). */
long sl_ipc_recv_fds(int sock, void *buf, size_t len,
                     int *fds, size_t max_fds, size_t *n_fds);

/* The credentials of the process at the other end of the UNIX socket SOCK,
 * as the kernel recorded them at connect() (SO_PEERCRED): cannot be forged
 * by the peer. */
int sl_ipc_peer_cred(int sock, pid_t *pid, uid_t *uid, gid_t *gid);

/* Stream helpers for protocols over a connected socket.  Each retries
 * EINTR and returns 0, or -1 when the peer went away or the socket failed
 * (errno set; MSG_NOSIGNAL, so a vanished peer is never SIGPIPE). */
struct iovec;
/* Receive exactly LEN bytes (end of stream before that is -1). */
int sl_ipc_recv_full(int fd, void *buf, size_t len);
/* Receive and drop LEN bytes. */
int sl_ipc_recv_discard(int fd, uint64_t len);
/* Send all of IOV[0..IOVCNT), which is consumed (advanced) on the way. */
int sl_ipc_send_iov(int fd, struct iovec *iov, int iovcnt);
int sl_ipc_send_all(int fd, const void *buf, size_t len);

#endif
