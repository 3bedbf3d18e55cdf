/* RBD image names in QEMU's rbd: syntax (see rbd-spec.h).
 *
 * The grammar is QEMU's, including its corners, because users copy these
 * names between qemu-img, libvirt and sluice: the pool ends at the first
 * unescaped '/'; if an unescaped '@' follows anywhere, the image name ends
 * there and the snapshot name at the next unescaped ':'; otherwise the
 * image name ends at the first unescaped ':'.  An image name holding an
 * unescaped '/' is NAMESPACE/IMAGE.  The rest is ':'-separated KEY=VALUE
 * pairs.  Each part is unescaped ("\x" is x) once split.  Where QEMU would
 * fail later (an empty pool or image name), sluice fails here, with a
 * message naming the whole path.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "image/rbd-spec.h"

bool sl_rbd_is_path(const char *path)
{
  return path && strncmp(path, "rbd:", 4) == 0;
}

/* The first DELIM in S not escaped by a backslash, or NULL. */
static char *find_unescaped(char *s, char delim)
{
  for (; *s; s++) {
    if (*s == delim)
      return s;
    if (*s == '\\' && s[1] != '\0')
      s++;
  }
  return NULL;
}

/* Cut S at its first unescaped DELIM: *REST is what follows it (NULL when
 * there is none).  Returns S. */
static char *cut(char *s, char delim, char **rest)
{
  char *d = find_unescaped(s, delim);
  *rest = NULL;
  if (d) {
    *d = '\0';
    *rest = d + 1;
  }
  return s;
}

static void unescape(char *s)
{
  char *o = s;
  for (; *s; s++, o++) {
    if (*s == '\\' && s[1] != '\0')
      s++;
    *o = *s;
  }
  *o = '\0';
}

void sl_rbd_spec_clear(struct sl_rbd_spec *spec)
{
  free(spec->pool);
  free(spec->ns);
  free(spec->image);
  free(spec->snap);
  free(spec->conf);
  free(spec->user);
  for (size_t i = 0; i < spec->n_opts; i++) {
    free(spec->keys[i]);
    free(spec->values[i]);
  }
  free(spec->keys);
  free(spec->values);
  memset(spec, 0, sizeof *spec);
}

static int set_str(char **slot, const char *v)
{
  free(*slot);
  *slot = strdup(v);
  return *slot ? 0 : -ENOMEM;
}

static int add_opt(struct sl_rbd_spec *spec, const char *k, const char *v)
{
  size_t n = spec->n_opts + 1;
  char **keys = realloc(spec->keys, n * sizeof *keys);
  if (!keys)
    return -ENOMEM;
  spec->keys = keys;
  char **values = realloc(spec->values, n * sizeof *values);
  if (!values)
    return -ENOMEM;
  spec->values = values;
  keys[n - 1] = strdup(k);
  values[n - 1] = strdup(v);
  spec->n_opts = n;
  return keys[n - 1] && values[n - 1] ? 0 : -ENOMEM;
}

int sl_rbd_spec_parse(const char *path, struct sl_rbd_spec *spec)
{
  memset(spec, 0, sizeof *spec);
  if (!sl_rbd_is_path(path))
    return sl_error(EINVAL, "%s: an RBD name must start with 'rbd:'", path);
  char *buf = strdup(path + 4);
  if (!buf)
    return sl_error(ENOMEM, "out of memory");
  int r = 0;
  char *p;
  char *pool = cut(buf, '/', &p);
  if (!p) {
    r = sl_error(EINVAL, "%s: a pool name is required (rbd:POOL/IMAGE)", path);
    goto out;
  }
  unescape(pool);
  char *name;
  if (find_unescaped(p, '@')) {
    name = cut(p, '@', &p);
    char *snap = cut(p, ':', &p);
    unescape(snap);
    if (!*snap) {
      r = sl_error(EINVAL, "%s: the snapshot name after '@' is empty", path);
      goto out;
    }
    if ((r = set_str(&spec->snap, snap)) < 0)
      goto oom;
  } else {
    name = cut(p, ':', &p);
  }
  char *ns = "";
  if (find_unescaped(name, '/')) {
    char *rest;
    ns = cut(name, '/', &rest);
    unescape(ns);
    name = rest;
  }
  unescape(name);
  if (!*pool) {
    r = sl_error(EINVAL, "%s: the pool name is empty", path);
    goto out;
  }
  if (!*name) {
    r = sl_error(EINVAL, "%s: the image name is empty", path);
    goto out;
  }
  if ((r = set_str(&spec->pool, pool)) < 0 || (r = set_str(&spec->ns, ns)) < 0 ||
      (r = set_str(&spec->image, name)) < 0)
    goto oom;
  while (p) {
    char *key = cut(p, '=', &p);
    if (!p) {
      unescape(key);
      r = sl_error(EINVAL, "%s: option '%s' has no value (KEY=VALUE)", path, key);
      goto out;
    }
    unescape(key);
    char *value = cut(p, ':', &p);
    unescape(value);
    if (strcmp(key, "conf") == 0)
      r = set_str(&spec->conf, value);
    else if (strcmp(key, "id") == 0)
      r = set_str(&spec->user, value);
    else
      r = add_opt(spec, key, value);
    if (r < 0)
      goto oom;
  }
  free(buf);
  return 0;
oom:
  r = sl_error(ENOMEM, "out of memory");
out:
  free(buf);
  sl_rbd_spec_clear(spec);
  return r;
}

/* Append S to the growing string *OUT (length *LEN), escaping the
 * characters the parser splits on. */
static int append(char **out, size_t *len, const char *s, bool escape)
{
  size_t n = strlen(s);
  char *o = realloc(*out, *len + 2 * n + 1);
  if (!o)
    return -ENOMEM;
  *out = o;
  for (; *s; s++) {
    if (escape && strchr("\\/@:=", *s))
      o[(*len)++] = '\\';
    o[(*len)++] = *s;
  }
  o[*len] = '\0';
  return 0;
}

char *sl_rbd_spec_format(const struct sl_rbd_spec *conn, const char *pool,
                         const char *ns, const char *image, const char *snap)
{
  char *out = NULL;
  size_t len = 0;
  int r = append(&out, &len, "rbd:", false);
  if (r == 0) r = append(&out, &len, pool, true);
  if (r == 0) r = append(&out, &len, "/", false);
  if (r == 0 && ns && *ns) {
    r = append(&out, &len, ns, true);
    if (r == 0) r = append(&out, &len, "/", false);
  }
  if (r == 0) r = append(&out, &len, image, true);
  if (r == 0 && snap) {
    r = append(&out, &len, "@", false);
    if (r == 0) r = append(&out, &len, snap, true);
  }
  if (r == 0 && conn && conn->conf) {
    r = append(&out, &len, ":conf=", false);
    if (r == 0) r = append(&out, &len, conn->conf, true);
  }
  if (r == 0 && conn && conn->user) {
    r = append(&out, &len, ":id=", false);
    if (r == 0) r = append(&out, &len, conn->user, true);
  }
  for (size_t i = 0; r == 0 && conn && i < conn->n_opts; i++) {
    r = append(&out, &len, ":", false);
    if (r == 0) r = append(&out, &len, conn->keys[i], true);
    if (r == 0) r = append(&out, &len, "=", false);
    if (r == 0) r = append(&out, &len, conn->values[i], true);
  }
  if (r < 0) {
    free(out);
    return NULL;
  }
  return out;
}

/* ---- monitor address lists -------------------------------------------- */

/* One monitor address of a mon_host list, as its host (an IP address in
 * canonical form when it is one, else the name as written) and its port
 * ("" when it names none). */
struct mon_addr {
  char host[INET6_ADDRSTRLEN > 256 ? INET6_ADDRSTRLEN : 256];
  char port[8];
};

static bool is_sep(char c) { return c == ',' || c == ';' || c == ' ' || c == '\t'; }

static bool type_prefix(const char *s, size_t *n)
{
  static const char *const types[] = {"v1:", "v2:", "any:"};
  for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
    if (!strncmp(s, types[i], strlen(types[i]))) {
      *n = strlen(types[i]);
      return true;
    }
  return false;
}

/* A host as written; an IP address is put in canonical form, so that
 * "::1" and "0::1" compare equal. */
static void set_host(struct mon_addr *a, const char *s, size_t n)
{
  snprintf(a->host, sizeof a->host, "%.*s", (int)(n < sizeof a->host ? n : sizeof a->host - 1),
           s);
  unsigned char bin[sizeof(struct in6_addr)];
  if (inet_pton(AF_INET, a->host, bin) == 1)
    inet_ntop(AF_INET, bin, a->host, sizeof a->host);
  else if (inet_pton(AF_INET6, a->host, bin) == 1)
    inet_ntop(AF_INET6, bin, a->host, sizeof a->host);
}

/* The next address of the list at *P into A, moving *P past it; false at
 * the end.  Ceph's forms: "h", "h:p", "v1:h:p", "h:p/nonce", "[v2:h:p,v1:h:q]"
 * (an address vector: its brackets only group), IPv6 hosts in brackets
 * ("[::1]:6789", "v2:[::1]:3300") or bare without a port ("::1"). */
static bool next_mon(const char **p, struct mon_addr *a)
{
  const char *s = *p;
  size_t t;
  for (;;) {
    if (is_sep(*s) || *s == ']')
      s++;
    else if (*s == '[' && type_prefix(s + 1, &t))
      s++; /* an address vector opens */
    else
      break;
  }
  if (!*s)
    return false;
  if (type_prefix(s, &t))
    s += t;
  const char *end; /* past the address: a separator, ']' or the end */
  a->port[0] = 0;
  if (*s == '[') { /* [IPv6] with an optional :port */
    size_t n = strcspn(s + 1, "]");
    set_host(a, s + 1, n);
    end = s + 1 + n;
    if (*end == ']')
      end++;
    if (*end == ':') {
      size_t m = strcspn(end + 1, ",; \t]/");
      snprintf(a->port, sizeof a->port, "%.*s", (int)(m < sizeof a->port ? m : sizeof a->port - 1),
               end + 1);
      end += 1 + m;
    }
  } else {
    size_t n = strcspn(s, ",; \t]/");
    const char *colon = memchr(s, ':', n);
    bool one_colon = colon && !memchr(colon + 1, ':', (size_t)(s + n - colon - 1));
    if (one_colon) { /* host:port; more colons are a bare IPv6 address */
      size_t m = (size_t)(s + n - colon - 1);
      set_host(a, s, (size_t)(colon - s));
      snprintf(a->port, sizeof a->port, "%.*s", (int)(m < sizeof a->port ? m : sizeof a->port - 1),
               colon + 1);
    } else {
      set_host(a, s, n);
    }
    end = s + n;
  }
  if (*end == '/') /* a nonce */
    end += strcspn(end, ",; \t]");
  *p = end;
  return true;
}

bool sl_rbd_mons_overlap(const char *a, const char *b)
{
  struct mon_addr x, y;
  for (const char *p = a; next_mon(&p, &x);)
    for (const char *q = b; next_mon(&q, &y);)
      if (x.host[0] && !strcmp(x.host, y.host) &&
          (!x.port[0] || !y.port[0] || !strcmp(x.port, y.port)))
        return true;
  return false;
}
