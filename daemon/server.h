/* sluiced's connection handling: the event loop, the worker pool, and the
 * protocol operations.  See server.c. */
#ifndef SLUICED_SERVER_H
#define SLUICED_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "handles.h"
#include "store.h"

struct sd_options {
  uint64_t memory;                /* data area bytes */
  uint32_t block_size;
  uint32_t workers;               /* fill threads */
  uint32_t max_sections;          /* mapped 2 MiB sections, all clients */
  uint32_t poll_us;               /* the loop polls this long before sleeping */
  uid_t *allow_uid;
  size_t n_allow_uid;
  gid_t *allow_gid;
  size_t n_allow_gid;
  uint64_t fd_budget;             /* descriptors clients' layers and handles may
                                   * hold (0: RLIMIT_NOFILE less a reserve) */
  bool quiet;                     /* no per-connection log lines */
};

struct sd_server;

/* Build the store and the mapping pool (before any thread exists, so that
 * the signal mask set by the caller is inherited by the threads). */
int sd_server_create(const struct sd_options *o, struct sd_server **out);
/* Serve the listening socket LFD (owned by the caller) on the loop thread
 * and O->workers workers; returns once they run. */
int sd_server_start(struct sd_server *srv, int lfd);
/* Stop accepting and serving, join every thread, free everything.  With
 * CHECK, verify the cache's invariants once idle first: -1 (logged) if
 * one does not hold. */
int sd_server_stop(struct sd_server *srv, bool check);

/* Serve one already-connected socket FD (the fuzz target): its
 * credentials are not checked.  The server owns FD from then on. */
int sd_server_adopt(struct sd_server *srv, int fd);
/* Block until no connection is open (tests). */
void sd_server_wait_idle(struct sd_server *srv);
struct sd_store *sd_server_store(struct sd_server *srv);

#endif
