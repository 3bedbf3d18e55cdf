/* lib/ipc process lifecycle: what a long-running sluice server does around
 * its real work -- `sluice serve` today, the cache daemon sluiced next.
 *
 *   sl_proc_block_signals()   before any thread exists
 *   ... bind listeners (errors still reach the terminal) ...
 *   sl_proc_daemonize()       with --daemon: fork, setsid, stdio to /dev/null
 *   sl_proc_pidfile_create()  with --pidfile
 *   ... start serving ...
 *   sl_proc_notify_ready()    READY=1 to systemd (no-op outside systemd)
 *   sl_proc_wait_signal()     until SIGTERM/SIGINT/SIGHUP
 *   sl_proc_notify_stopping() STOPPING=1
 *   ... drain, flush ...
 *   sl_proc_pidfile_remove()
 *
 * Readiness and socket activation follow systemd's definitions
 * (sd_notify(3), sd_listen_fds(3)) through Debian's libsystemd rather than
 * a hand-written copy of the protocol.  Outside systemd they are no-ops.
 *
 * The pidfile is written by the process it names, after the fork, and
 * holds an OFD write lock for that process's life: a second server given the
 * same pidfile while the first runs is refused (-EBUSY, naming the pid that
 * holds it), and a pidfile left by a killed server is simply replaced.  With
 * --daemon the parent waits until the child has written it (or failed), so
 * the pidfile exists when `sluice serve --daemon` returns 0, and a failure
 * of the child before that point is the parent's exit status.
 */
#ifndef SLUICE_IPC_PROCESS_H
#define SLUICE_IPC_PROCESS_H

#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

/* Block SIGTERM, SIGINT and SIGHUP in the calling thread (every thread
 * created later inherits the mask, so only sl_proc_wait_signal takes them)
 * and ignore SIGPIPE (a vanished peer is EPIPE on the socket, not a death).
 * SET receives the blocked set for sl_proc_wait_signal. */
int sl_proc_block_signals(sigset_t *set);

/* Wait for one of SET; returns the signal number. */
int sl_proc_wait_signal(const sigset_t *set);

/* Detach into the background: fork; the parent waits for the child to call
 * sl_proc_detach_done() (or exit) and then exits with 0 (or the child's
 * failure status) without returning; the child starts a new session,
 * points stdin at /dev/null and returns 0.  The child keeps stdout and
 * stderr until sl_proc_detach_done(), so startup errors reach the terminal.  Call it before
 * any thread exists.  Returns -errno if the fork fails (nothing changed). */
int sl_proc_daemonize(const char *who);

/* In the child of sl_proc_daemonize: point stdout/stderr at /dev/null and
 * tell the waiting parent to exit with STATUS (0: started).  A no-op in a process that did not daemonize, and
 * after the first call. */
void sl_proc_detach_done(int status);

/* Create PATH holding this process's pid, locked for the life of the
 * process.  -EBUSY (naming the holder's pid) if a live process holds it. */
int sl_proc_pidfile_create(const char *path);
/* Remove the pidfile created above (if it is still ours) and drop the lock. */
void sl_proc_pidfile_remove(void);

/* systemd readiness notification (sd_notify): READY=1 once serving,
 * STOPPING=1 when shutdown begins; STATUS is an optional free-form line.
 * Returns 1 if a notification socket was told, 0 outside systemd. */
int sl_proc_notify_ready(const char *status);
int sl_proc_notify_stopping(void);

/* Socket activation (sd_listen_fds): the number of listening descriptors
 * systemd passed (starting at SL_PROC_LISTEN_FDS_START), 0 if none.  The
 * LISTEN_* variables are removed from the environment so that children do
 * not inherit them. */
#define SL_PROC_LISTEN_FDS_START 3
int sl_proc_listen_fds(void);

#endif
