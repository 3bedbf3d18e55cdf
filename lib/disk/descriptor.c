/* Disk descriptors: parse, print and edit the small text file that names a
 * disk's image and its filter stack (see descriptor.h for the format).
 *
 * The format is line based and deliberately dull: one keyword per line, no
 * quoting, so that a person can read and fix it and a program can rewrite it
 * without losing anything.  Values therefore cannot contain whitespace. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/error.h>
#include <sluice/image.h>
#include "common/util.h"
#include "disk/descriptor.h"

/* Any "sluice-disk " header counts, whatever its version: a descriptor of
 * a version this sluice does not know must be refused as such, not opened
 * (and written to) as a raw image. */
#define DESC_PREFIX "sluice-disk "

bool sl_is_descriptor(const char *path)
{
  char buf[sizeof DESC_PREFIX];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
  close(fd);
  return n == (ssize_t)sizeof buf - 1 &&
         memcmp(buf, DESC_PREFIX, sizeof buf - 1) == 0;
}

void sl_desc_filter_clear(struct sl_desc_filter *f)
{
  free(f->module);
  free(f->name);
  for (size_t i = 0; i < f->n_params; i++) {
    free(f->keys[i]);
    free(f->values[i]);
  }
  free(f->keys);
  free(f->values);
  memset(f, 0, sizeof *f);
}

void sl_descriptor_free(struct sl_descriptor *d)
{
  if (!d)
    return;
  for (size_t i = 0; i < d->n_filters; i++)
    sl_desc_filter_clear(&d->filters[i]);
  free(d->filters);
  free(d->path);
  free(d->dir);
  free(d->image);
  free(d->format);
  free(d);
}

static bool valid_name(const char *s)
{
  if (!*s)
    return false;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
      return false;
  return true;
}

int sl_desc_filter_add_param(struct sl_desc_filter *f, const char *kv)
{
  const char *eq = strchr(kv, '=');
  if (!eq || eq == kv)
    return sl_error(EINVAL, "filter %s: parameter '%s' is not KEY=VALUE",
                    f->module, kv);
  for (const char *p = kv; *p; p++)
    if (isspace((unsigned char)*p))
      return sl_error(EINVAL, "filter %s: parameter '%s' contains whitespace",
                      f->module, kv);
  char *key = strndup(kv, (size_t)(eq - kv));
  char *val = strdup(eq + 1);
  if (!key || !val) {
    free(key);
    free(val);
    return sl_error(ENOMEM, "out of memory");
  }
  if (strcmp(key, "name") == 0) {
    free(key);
    if (!valid_name(val)) {
      free(val);
      return sl_error(EINVAL, "filter %s: instance name '%s' must be letters, "
                      "digits, '-', '_' or '.'", f->module, eq + 1);
    }
    free(f->name);
    f->name = val;
    return 0;
  }
  char **k = realloc(f->keys, (f->n_params + 1) * sizeof *k);
  if (k)
    f->keys = k;
  char **v = realloc(f->values, (f->n_params + 1) * sizeof *v);
  if (v)
    f->values = v;
  if (!k || !v) {
    free(key);
    free(val);
    return sl_error(ENOMEM, "out of memory");
  }
  f->keys[f->n_params] = key;
  f->values[f->n_params] = val;
  f->n_params++;
  return 0;
}

static int filter_init(struct sl_desc_filter *f, const char *module)
{
  memset(f, 0, sizeof *f);
  if (!valid_name(module))
    return sl_error(EINVAL, "'%s' is not a valid filter name", module);
  f->module = strdup(module);
  return f->module ? 0 : sl_error(ENOMEM, "out of memory");
}

static int filter_finish(struct sl_desc_filter *f)
{
  if (!f->name && !(f->name = strdup(f->module)))
    return sl_error(ENOMEM, "out of memory");
  return 0;
}

int sl_desc_filter_parse(const char *spec, struct sl_desc_filter *out)
{
  CLEANUP_FREE char *copy = strdup(spec);
  if (!copy)
    return sl_error(ENOMEM, "out of memory");
  char *params = strchr(copy, ':');
  if (params)
    *params++ = '\0';
  int r = filter_init(out, copy);
  if (r < 0)
    return r;
  if (params && *params) {
    char *save = NULL;
    for (char *kv = strtok_r(params, ",", &save); kv;
         kv = strtok_r(NULL, ",", &save))
      if ((r = sl_desc_filter_add_param(out, kv)) < 0) {
        sl_desc_filter_clear(out);
        return r;
      }
  }
  if ((r = filter_finish(out)) < 0)
    sl_desc_filter_clear(out);
  return r;
}

int sl_descriptor_find(const struct sl_descriptor *d, const char *name)
{
  for (size_t i = 0; i < d->n_filters; i++)
    if (strcmp(d->filters[i].name, name) == 0)
      return (int)i;
  return -1;
}

int sl_descriptor_insert(struct sl_descriptor *d, size_t pos,
                         struct sl_desc_filter *f)
{
  if (sl_descriptor_find(d, f->name) >= 0)
    return sl_error(EEXIST, "a filter named '%s' is already in the stack "
                    "(give another with name=)", f->name);
  struct sl_desc_filter *nf = realloc(d->filters,
                                      (d->n_filters + 1) * sizeof *nf);
  if (!nf)
    return sl_error(ENOMEM, "out of memory");
  d->filters = nf;
  if (pos > d->n_filters)
    pos = d->n_filters;
  memmove(&nf[pos + 1], &nf[pos], (d->n_filters - pos) * sizeof *nf);
  nf[pos] = *f;
  memset(f, 0, sizeof *f);
  d->n_filters++;
  return 0;
}

void sl_descriptor_remove(struct sl_descriptor *d, size_t idx)
{
  sl_desc_filter_clear(&d->filters[idx]);
  memmove(&d->filters[idx], &d->filters[idx + 1],
          (d->n_filters - idx - 1) * sizeof *d->filters);
  d->n_filters--;
}

static char *dir_of(const char *path)
{
  CLEANUP_FREE char *copy = strdup(path);
  return copy ? strdup(dirname(copy)) : NULL;
}

static int parse_line(struct sl_descriptor *d, char *line, unsigned lineno)
{
  char *save = NULL;
  char *kw = strtok_r(line, " \t", &save);
  if (!kw || kw[0] == '#')
    return 0;
  char *arg = strtok_r(NULL, " \t", &save);
  if (strcmp(kw, "image") == 0 || strcmp(kw, "format") == 0) {
    char **slot = kw[0] == 'i' ? &d->image : &d->format;
    if (!arg || strtok_r(NULL, " \t", &save))
      return sl_error(EINVAL, "%s:%u: '%s' takes exactly one value",
                      d->path, lineno, kw);
    if (*slot)
      return sl_error(EINVAL, "%s:%u: '%s' given twice", d->path, lineno, kw);
    *slot = strdup(arg);
    return *slot ? 0 : sl_error(ENOMEM, "out of memory");
  }
  if (strcmp(kw, "filter") == 0) {
    if (!arg)
      return sl_error(EINVAL, "%s:%u: 'filter' needs a name", d->path, lineno);
    struct sl_desc_filter f;
    int r = filter_init(&f, arg);
    for (char *kv; r == 0 && (kv = strtok_r(NULL, " \t", &save));)
      r = sl_desc_filter_add_param(&f, kv);
    if (r == 0)
      r = filter_finish(&f);
    if (r == 0)
      r = sl_descriptor_insert(d, d->n_filters, &f);
    if (r < 0) {
      sl_desc_filter_clear(&f);
      return sl_error_prefix(-r, "%s:%u", d->path, lineno);
    }
    return 0;
  }
  return sl_error(EINVAL, "%s:%u: unknown keyword '%s' (expected image, "
                  "format or filter)", d->path, lineno, kw);
}

int sl_descriptor_load(const char *path, struct sl_descriptor **out)
{
  CLEANUP_FCLOSE FILE *f = fopen(path, "re");
  if (!f)
    return sl_error(errno, "%s: %s", path, strerror(errno));
  struct sl_descriptor *d = calloc(1, sizeof *d);
  if (!d || !(d->path = strdup(path)) || !(d->dir = dir_of(path))) {
    sl_descriptor_free(d);
    return sl_error(ENOMEM, "out of memory");
  }
  CLEANUP_FREE char *line = NULL;
  size_t cap = 0;
  unsigned lineno = 0;
  int r = 0;
  ssize_t n;
  while (r == 0 && (n = getline(&line, &cap, f)) >= 0) {
    lineno++;
    if (n > 0 && line[n - 1] == '\n')
      line[--n] = '\0';
    if (n > 0 && line[n - 1] == '\r')   /* edited on another system */
      line[--n] = '\0';
    if (lineno == 1) {
      if (strncmp(line, DESC_PREFIX, strlen(DESC_PREFIX)) == 0 &&
          strcmp(line, SL_DESC_MAGIC) != 0)
        r = sl_error(ENOTSUP, "%s: disk descriptor version '%s' is not "
                     "supported (this sluice reads '%s')", path,
                     line + strlen(DESC_PREFIX), SL_DESC_MAGIC);
      else if (strcmp(line, SL_DESC_MAGIC) != 0)
        r = sl_error(EINVAL, "%s: not a disk descriptor (first line must be "
                     "'%s')", path, SL_DESC_MAGIC);
      continue;
    }
    r = parse_line(d, line, lineno);
  }
  if (r == 0 && lineno == 0)
    r = sl_error(EINVAL, "%s: empty disk descriptor", path);
  if (r == 0 && !d->image)
    r = sl_error(EINVAL, "%s: no 'image' line", path);
  if (r < 0) {
    sl_descriptor_free(d);
    return r;
  }
  *out = d;
  return 0;
}

int sl_descriptor_save(const struct sl_descriptor *d, const char *path)
{
  CLEANUP_FREE char *tmp = NULL;
  if (asprintf(&tmp, "%s.tmp%d", path, (int)getpid()) < 0)
    return sl_error(ENOMEM, "out of memory");
  FILE *f = fopen(tmp, "we");
  if (!f)
    return sl_error(errno, "%s: %s", tmp, strerror(errno));
  fprintf(f, "%s\n# sluice disk descriptor: see sluice-disk(1).  Filters are "
          "listed top of the stack first.\n", SL_DESC_MAGIC);
  fprintf(f, "image %s\n", d->image);
  if (d->format)
    fprintf(f, "format %s\n", d->format);
  for (size_t i = 0; i < d->n_filters; i++) {
    const struct sl_desc_filter *fl = &d->filters[i];
    fprintf(f, "filter %s", fl->module);
    if (strcmp(fl->name, fl->module) != 0)
      fprintf(f, " name=%s", fl->name);
    for (size_t j = 0; j < fl->n_params; j++)
      fprintf(f, " %s=%s", fl->keys[j], fl->values[j]);
    fputc('\n', f);
  }
  int bad = ferror(f);
  if (fflush(f) != 0 || fsync(fileno(f)) != 0)
    bad = 1;
  if (fclose(f) != 0 || bad) {
    int e = errno ? errno : EIO;
    unlink(tmp);
    return sl_error(e, "%s: cannot write: %s", path, strerror(e));
  }
  if (rename(tmp, path) < 0) {
    int e = errno;
    unlink(tmp);
    return sl_error(e, "%s: %s", path, strerror(e));
  }
  return 0;
}

/* IMAGE (relative to the cwd) expressed relative to directory DIR. */
static char *relative_to(const char *dir, const char *image)
{
  char rdir[PATH_MAX], rimg[PATH_MAX];
  if (!realpath(dir, rdir) || !realpath(image, rimg))
    return NULL;
  size_t common = 0, i = 0;
  /* Longest common prefix that ends at a path component. */
  while (rdir[i] && rdir[i] == rimg[i]) {
    i++;
    if (rdir[i] == '/' || rdir[i] == '\0')
      if (rimg[i] == '/' || rimg[i] == '\0')
        common = i;
  }
  if (strcmp(rdir, "/") == 0)
    common = 0;
  char out[PATH_MAX * 2] = "";
  for (const char *p = rdir + common; *p; p++)
    if (*p == '/')
      strcat(out, "../");
  const char *rest = rimg + common;
  while (*rest == '/')
    rest++;
  strncat(out, rest, sizeof out - strlen(out) - 1);
  return strdup(out);
}

int sl_descriptor_new(const char *path, const char *image,
                      struct sl_descriptor **out)
{
  /* An RBD name is kept as given: it is not a file beside the descriptor. */
  bool rbd = sl_image_path_is_rbd(image);
  if (!rbd && access(image, R_OK) < 0)
    return sl_error(errno, "%s: %s", image, strerror(errno));
  struct sl_descriptor *d = calloc(1, sizeof *d);
  if (!d || !(d->path = strdup(path)) || !(d->dir = dir_of(path))) {
    sl_descriptor_free(d);
    return sl_error(ENOMEM, "out of memory");
  }
  d->image = rbd ? strdup(image) : relative_to(d->dir, image);
  if (!d->image) {
    int e = errno;
    sl_descriptor_free(d);
    return sl_error(e, "%s: cannot resolve the path of %s relative to %s: %s",
                    path, image, d->dir, strerror(e));
  }
  *out = d;
  return 0;
}

char *sl_descriptor_image_path(const struct sl_descriptor *d)
{
  char *p = NULL;
  if (d->image[0] == '/' || !d->dir || sl_image_path_is_rbd(d->image))
    return strdup(d->image);
  if (asprintf(&p, "%s/%s", d->dir, d->image) < 0)
    return NULL;
  return p;
}
