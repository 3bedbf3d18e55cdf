/* Disk ownership: who holds a disk for writing, and the conversation that
 * hands it from one process to another without killing anyone (DESIGN.md
 * mechanism 5, docs/ownership.md).
 *
 * The QEMU-compatible locks (lib/image/lock.c) say THAT a disk is held;
 * ownership adds WHO holds it and how to ask for it.  An owner claims the
 * disk once it has opened it, answers release requests on a control
 * channel, and, asked, stops its exports, drains, flushes, closes (which
 * drops the locks) and acknowledges; the requester then opens the disk
 * itself.  A dead owner is recognised (its record names a process that is
 * gone, and the locks are free) and taken over at once; a live owner that
 * does not answer is never overridden.
 *
 * The mechanism sits behind a small backend interface so that storage
 * without local files can bring its own: the `local` backend (local.c)
 * keeps a record file beside the image and a UNIX control socket; a Ceph
 * RBD backend would use the image's exclusive lock and watch/notify.  The
 * functions below pick the backend by the disk's image path (a disk
 * descriptor is resolved to its image first), and every caller -- `sluice
 * serve`, `sluice release`, `sluice owner` -- goes through them only. */
#ifndef SLUICE_OWNER_OWNER_H
#define SLUICE_OWNER_OWNER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "config.h"
#include "owner/record.h"

enum sl_owner_state {
  SL_OWNER_NONE,       /* no owner, nobody holds the locks */
  SL_OWNER_OWNED,      /* a live owner, holding the disk */
  SL_OWNER_STALE,      /* a record whose owner is gone; the locks are free */
  SL_OWNER_FOREIGN,    /* held by a process with no (live) owner record:
                        * QEMU, qemu-img, sluice io, a read-only serve */
  SL_OWNER_RELEASED,   /* the owner lives but no longer holds the disk */
};

struct sl_owner_info {
  enum sl_owner_state state;
  const char *backend;          /* "local" */
  char image[4096];             /* the image the disk's ownership is of */
  char record_path[4096];       /* where its record lives ("" if none) */
  bool has_record;
  struct sl_owner_record rec;   /* valid if has_record */
  bool pid_alive;               /* the record's process runs (same boot) */
  char proc_state[32];          /* "running", "stopped", ... when alive */
  bool locked;                  /* someone holds the disk's write locks */
  char holder[400];             /* "pid N, comm" when found, else "" */
};

/* Describe who owns DISK (an image or a disk descriptor). */
int sl_owner_query(const char *disk, struct sl_owner_info *out);

struct sl_owner_release_opts {
  double timeout_s;             /* whole conversation; default 30 */
  const char *requester;        /* shown to the owner: "sluice serve pid N" */
  /* Progress lines ("owner pid N is gone; taking over"), or NULL. */
  void (*log)(void *arg, const char *line);
  void *log_arg;
};

/* What a release did, for the caller's log and the benchmark. */
struct sl_owner_release_result {
  struct sl_owner_info before;  /* whom we asked */
  bool asked;                   /* a live owner was asked and released */
  bool stale;                   /* a dead owner's record was found */
  uint64_t request_ns;          /* CLOCK_MONOTONIC when the request left */
  uint64_t released_ns;         /* ... when the owner's RELEASED arrived */
  uint64_t drain_ns;            /* the owner's drain+flush+close, its clock */
};

/* Make DISK free to open for writing: nothing to do if nobody holds it or
 * its owner is dead; otherwise ask the owner and wait until it has
 * released and the locks are free.  Fails with a message naming the owner
 * when it refuses (--no-release: -EPERM), does not answer in time
 * (-ETIMEDOUT, the disk untouched), or the disk is held by a process that
 * has no owner record (-EBUSY). */
int sl_owner_release(const char *disk, const struct sl_owner_release_opts *o,
                     struct sl_owner_release_result *res);

/* ---- the owner's side ------------------------------------------------- */

struct sl_owner;

struct sl_owner_claim_opts {
  bool no_release;              /* refuse every release request */
  const char *command;          /* for the record: "sluice serve" */
  /* Called on the control thread once a valid release request has been
   * accepted: the owner must stop its exports, close the disk and call
   * sl_owner_release_done().  Must not block. */
  void (*on_release)(void *arg);
  void *arg;
};

/* Record this process as the owner of DISK (opened for writing by it) and
 * start answering on the control channel. */
int sl_owner_claim(const char *disk, const struct sl_owner_claim_opts *o,
                   struct sl_owner **out);

/* After on_release: STATUS 0 when the disk is closed and its locks
 * dropped, else a negative errno (MESSAGE says why).  Removes this
 * process's record and lets the control thread answer the requester. */
void sl_owner_release_done(struct sl_owner *own, int status, const char *message);

/* Who asked, once on_release was called ("sluice serve pid 42 uid 0"). */
const char *sl_owner_requester(struct sl_owner *own);

/* Stop answering, remove the record if it is still ours, free OWN.  Waits
 * until a release conversation in progress has been answered. */
void sl_owner_drop(struct sl_owner *own);

/* ---- backends ----------------------------------------------------------- */

struct sl_owner_backend {
  const char *name;
  /* Does this backend manage the ownership of IMAGE? */
  bool (*handles)(const char *image);
  int (*query)(const char *image, struct sl_owner_info *out);
  int (*release)(const char *image, const struct sl_owner_release_opts *o,
                 struct sl_owner_release_result *res);
  int (*claim)(const char *image, const struct sl_owner_claim_opts *o,
               struct sl_owner **out);
  void (*release_done)(struct sl_owner *own, int status, const char *message);
  const char *(*requester)(struct sl_owner *own);
  void (*drop)(struct sl_owner *own);
};

/* Every sl_owner a backend returns starts with this. */
struct sl_owner_base {
  const struct sl_owner_backend *backend;
};

extern const struct sl_owner_backend sl_owner_local;
#if HAVE_RBD
extern const struct sl_owner_backend sl_owner_rbd;   /* rbd.c */
#endif

/* "none", "owned", ... */
const char *sl_owner_state_name(enum sl_owner_state s);

#endif
