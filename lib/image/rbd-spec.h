/* Parsing and printing of RBD image names in QEMU's syntax.
 *
 *   rbd:POOL/[NAMESPACE/]IMAGE[@SNAP][:KEY=VALUE]...
 *
 * KEY "conf" names a ceph.conf, "id" the client (user) name; any other key
 * is a Ceph option set on the connection (mon_host, keyring, ...).  A
 * backslash escapes the next character, so names may hold '/', '@', ':'
 * and '='.  The rules are those of QEMU 7.2's rbd driver, so a name a user
 * gives to qemu-img means the same image to sluice.  This file has no
 * librbd dependency: it is built (and fuzzed) even without RBD support.
 */
#ifndef SLUICE_IMAGE_RBD_SPEC_H
#define SLUICE_IMAGE_RBD_SPEC_H

#include <stdbool.h>
#include <stddef.h>

struct sl_rbd_spec {
  char *pool;
  char *ns;           /* "" when none */
  char *image;
  char *snap;         /* NULL when none */
  char *conf;         /* NULL: Ceph's default search (CEPH_CONF, /etc/ceph) */
  char *user;         /* NULL: admin */
  size_t n_opts;      /* other KEY=VALUE pairs, in order */
  char **keys, **values;
};

/* Does PATH name an RBD image (starts with "rbd:")? */
bool sl_rbd_is_path(const char *path);
/* Parse PATH.  On error returns -EINVAL with a message naming PATH. */
int sl_rbd_spec_parse(const char *path, struct sl_rbd_spec *spec);
void sl_rbd_spec_clear(struct sl_rbd_spec *spec);
/* The name of image POOL/NS/IMAGE@SNAP reached with the connection options
 * of CONN (conf, id, others), escaped so that it parses back to the same
 * parts.  SNAP may be NULL.  NULL when out of memory. */
char *sl_rbd_spec_format(const struct sl_rbd_spec *conn, const char *pool,
                         const char *ns, const char *image, const char *snap);

/* Do the monitor lists A and B (Ceph's mon_host syntax: "h:p,h:p",
 * "[v2:h:p,v1:h:q]", IPv6 hosts in brackets, nonces) name a monitor in
 * common: the same host, and the same port where both name one?  IP
 * addresses compare by value ("::1" is "0::1"); names are not resolved. */
bool sl_rbd_mons_overlap(const char *a, const char *b);

#endif
