/* Ceph connections (rados_t) shared within a process.
 *
 * A rados connection is expensive: a dozen librados threads, a session
 * with the monitors (cephx authentication, maps), a watch per open image.
 * Everything in a process that reaches Ceph with the same settings
 * therefore shares one: the RBD driver's layers of a chain and images of
 * one process (the settings are ceph.conf, client id and the name's
 * options), the owner protocol's objects, and sluiced's registrations of
 * one client identity (its settings are the configured monitors, the
 * client id and its key, never a configuration file; daemon/rbd.c).
 *
 * The caller says who may share by a key string (equal keys share) and how
 * a new connection is made (settings before the configuration file, the
 * file and CEPH_ARGS or none, settings after).  A connection lives while
 * anything holds it: the last sl_rbd_conn_put shuts it down, so a process
 * keeps no idle sessions and a limit on their number (sluiced's) counts
 * only connections in use.  Two callers that connect the same key at once
 * both connect; the second to finish uses the first's and drops its own,
 * so a key never has two.
 *
 * A connection whose cluster stopped answering while an image closed is
 * marked gone (sl_rbd_conn_set_gone): it is then never shut down -- every
 * request of the shutdown would wait out a timeout -- only forgotten, the
 * process being on its way out. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rados/librados.h>

#include <sluice/error.h>
#include "image/rbd.h"

struct sl_rbd_conn {
  struct sl_rbd_conn *next;
  char *key;                 /* who shares it (may hold a secret: wiped) */
  rados_t cluster;
  char fsid[40];
  int refs;                  /* under conns_lock */
  atomic_bool gone;
};

static pthread_mutex_t conns_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl_rbd_conn *conns;
static int nconns; /* in the list, plus those being connected */

static void conn_free(struct sl_rbd_conn *c)
{
  if (!atomic_load(&c->gone))
    rados_shutdown(c->cluster);
  explicit_bzero(c->key, strlen(c->key));
  free(c->key);
  free(c);
}

void sl_rbd_conn_put(struct sl_rbd_conn *c)
{
  if (!c)
    return;
  pthread_mutex_lock(&conns_lock);
  bool last = --c->refs == 0;
  if (last) {
    for (struct sl_rbd_conn **pp = &conns; *pp; pp = &(*pp)->next)
      if (*pp == c) {
        *pp = c->next;
        break;
      }
    nconns--;
  }
  pthread_mutex_unlock(&conns_lock);
  if (last)
    conn_free(c);
}

/* Under conns_lock: the connection of KEY, with one more reference, or
 * NULL. */
static struct sl_rbd_conn *find_locked(const char *key)
{
  for (struct sl_rbd_conn *c = conns; c; c = c->next)
    if (strcmp(c->key, key) == 0) {
      c->refs++;
      return c;
    }
  return NULL;
}

static int set_all(rados_t cl, const struct sl_rbd_conn_setup *su, const char *const *keys,
                   const char *const *values, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    int r = rados_conf_set(cl, keys[i], values[i]);
    if (r < 0) {
      bool secret = su->secret_opt && !strcmp(keys[i], su->secret_opt);
      return sl_error(EINVAL, "%s: invalid Ceph option %s=%s: %s", su->what, keys[i],
                      secret ? "(secret)" : values[i], strerror(-r));
    }
  }
  return 0;
}

/* Make the connection SU describes in C->cluster: 0 or -errno with a
 * message. */
static int connect_new(struct sl_rbd_conn *c, const struct sl_rbd_conn_setup *su)
{
  int r = set_all(c->cluster, su, su->pre_keys, su->pre_values, su->n_pre);
  if (r < 0)
    return r;
  if (su->read_conf) {
    r = rados_conf_read_file(c->cluster, su->conf);
    if (r < 0 && (su->conf || r != -ENOENT))
      return sl_error(-r, "%s: cannot read the Ceph configuration %s: %s", su->what,
                      su->conf ? su->conf : "(CEPH_CONF or /etc/ceph/ceph.conf)",
                      strerror(-r));
    rados_conf_parse_env(c->cluster, NULL);
  }
  if ((r = set_all(c->cluster, su, su->post_keys, su->post_values, su->n_post)) < 0)
    return r;
  r = rados_connect(c->cluster);
  if (r < 0) {
    char mons[256], t[32] = "?";
    if (rados_conf_get(c->cluster, "mon_host", mons, sizeof mons) < 0 || !mons[0])
      snprintf(mons, sizeof mons, "none configured");
    rados_conf_get(c->cluster, "client_mount_timeout", t, sizeof t);
    if (r == -ETIMEDOUT)
      return sl_error(ETIMEDOUT, "%s: no Ceph monitor answered within %s s (monitors: %s)",
                      su->what, t, mons);
    if (r == -EACCES || r == -EPERM)
      return sl_error(EACCES, "%s: Ceph refused %s: authentication failed (wrong key or "
                      "unknown user?)", su->what, su->client);
    if (r == -ENOENT)
      return sl_error(ENOENT, "%s: no key for %s (keyring not found)", su->what, su->client);
    return sl_error(-r, "%s: cannot connect to the Ceph cluster (monitors: %s) as %s: %s",
                    su->what, mons, su->client, strerror(-r));
  }
  rados_cluster_fsid(c->cluster, c->fsid, sizeof c->fsid);
  return 0;
}

int sl_rbd_conn_get(const struct sl_rbd_conn_setup *su, struct sl_rbd_conn **out)
{
  pthread_mutex_lock(&conns_lock);
  struct sl_rbd_conn *c = find_locked(su->key);
  if (c) {
    pthread_mutex_unlock(&conns_lock);
    *out = c;
    return 0;
  }
  if (su->max > 0 && nconns >= su->max) {
    pthread_mutex_unlock(&conns_lock);
    return sl_error(EAGAIN, "%s: %d Ceph connections in use, the limit", su->what, su->max);
  }
  nconns++; /* reserved while we connect, outside the lock */
  pthread_mutex_unlock(&conns_lock);

  int r = 0;
  c = calloc(1, sizeof *c);
  if (c && !(c->key = strdup(su->key))) {
    free(c);
    c = NULL;
  }
  if (!c) {
    r = sl_error(ENOMEM, "%s: out of memory", su->what);
  } else {
    c->refs = 1;
    r = rados_create2(&c->cluster, "ceph", su->client, 0);
    if (r < 0) {
      r = sl_error(-r, "%s: cannot set up a Ceph client %s: %s", su->what, su->client,
                   strerror(-r));
      atomic_store(&c->gone, true); /* nothing to shut down */
    } else {
      r = connect_new(c, su);
    }
    if (r < 0) {
      conn_free(c);
      c = NULL;
    }
  }
  pthread_mutex_lock(&conns_lock);
  struct sl_rbd_conn *o = c ? find_locked(su->key) : NULL;
  if (c && !o) {
    c->next = conns;
    conns = c;
  } else {
    nconns--; /* failed, or another caller connected the same meanwhile */
  }
  pthread_mutex_unlock(&conns_lock);
  if (o) {
    conn_free(c);
    c = o;
  }
  *out = c;
  return r;
}

rados_t sl_rbd_conn_cluster(struct sl_rbd_conn *c) { return c->cluster; }

const char *sl_rbd_conn_fsid(const struct sl_rbd_conn *c) { return c->fsid; }

bool sl_rbd_conn_gone(struct sl_rbd_conn *c) { return atomic_load(&c->gone); }

void sl_rbd_conn_set_gone(struct sl_rbd_conn *c) { atomic_store(&c->gone, true); }
