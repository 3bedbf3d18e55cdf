/* sluice filter: trusted modules and the filters of a disk.
 *
 *   sluice filter install MODULE.so      copy into the module dir, record digest
 *   sluice filter remove NAME
 *   sluice filter list                   installed modules and whether each verifies
 *   sluice filter list DESC              the disk's stack, top first
 *   sluice filter attach DESC NAME [k=v[,k=v...]]...
 *   sluice filter detach DESC NAME
 *
 * attach puts the filter at its class's place in the default order (see
 * sluice-disk(1)) and proves the new stack opens before saving it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include <sluice/filter.h>
#include "disk/descriptor.h"
#include "disk/module.h"
#include "tools/cli.h"

static int filter_usage(FILE *f)
{
  fprintf(f,
    "Usage: sluice filter install MODULE.so\n"
    "       sluice filter remove NAME\n"
    "       sluice filter list [DESC]\n"
    "       sluice filter attach DESC NAME [KEY=VALUE[,KEY=VALUE...]]...\n"
    "       sluice filter detach DESC NAME\n"
    "Modules live in $SLUICE_FILTER_DIR (default %s).\n", sl_filter_dir());
  return f == stdout ? 0 : 1;
}

static int do_install(int argc, char **argv)
{
  if (argc != 2)
    return filter_usage(stderr);
  struct sl_module_entry e;
  if (sl_module_install(argv[1], &e) < 0)
    return cli_fail("filter", "%s", sl_last_error());
  printf("installed %s in %s (sha256 %s)\n", e.name, sl_filter_dir(), e.sha256);
  return 0;
}

static int do_remove(int argc, char **argv)
{
  if (argc != 2)
    return filter_usage(stderr);
  if (sl_module_remove(argv[1]) < 0)
    return cli_fail("filter", "%s", sl_last_error());
  return 0;
}

static int list_modules(void)
{
  struct sl_module_entry *e;
  size_t n;
  if (sl_module_list(&e, &n) < 0)
    return cli_fail("filter", "%s", sl_last_error());
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    struct sl_module *m;
    if (sl_module_get(e[i].name, &m) < 0) {
      printf("%-10s UNTRUSTED: %s\n", e[i].name, sl_last_error());
      bad = 1;
      continue;
    }
    const struct sl_filter *f = sl_module_filter(m);
    printf("%-10s %-12s %s\n", e[i].name, sl_filter_class_name(f->filter_class),
           f->description ? f->description : "");
    sl_module_put(m);
  }
  free(e);
  return bad;
}

static int list_stack(const char *path)
{
  struct sl_descriptor *d;
  if (sl_descriptor_load(path, &d) < 0)
    return cli_fail("filter", "%s", sl_last_error());
  for (size_t i = 0; i < d->n_filters; i++) {
    const struct sl_desc_filter *f = &d->filters[i];
    printf("%s", f->name);
    if (strcmp(f->name, f->module) != 0)
      printf(" (%s)", f->module);
    for (size_t j = 0; j < f->n_params; j++)
      printf(" %s=%s", f->keys[j], f->values[j]);
    putchar('\n');
  }
  sl_descriptor_free(d);
  return 0;
}

static int class_of(const struct sl_desc_filter *f)
{
  struct sl_module *m;
  if (sl_module_get(f->module, &m) < 0)
    return SL_FILTER_CLASS_ANY;   /* the trial open below reports it */
  int c = sl_module_filter(m)->filter_class;
  sl_module_put(m);
  return c;
}

/* Where a filter of class C goes by default: above the first classed filter
 * that belongs below it; unclassed filters go to the bottom, and stay
 * there: a classed filter with nothing of its kind below goes above the
 * unclassed ones at the bottom. */
static size_t default_position(const struct sl_descriptor *d, int c)
{
  if (c == SL_FILTER_CLASS_ANY)
    return d->n_filters;
  for (size_t i = 0; i < d->n_filters; i++) {
    int ci = class_of(&d->filters[i]);
    if (ci != SL_FILTER_CLASS_ANY && ci > c)
      return i;
  }
  size_t pos = d->n_filters;
  while (pos > 0 && class_of(&d->filters[pos - 1]) == SL_FILTER_CLASS_ANY)
    pos--;
  return pos;
}

static int do_attach(int argc, char **argv)
{
  if (argc < 3)
    return filter_usage(stderr);
  const char *path = argv[1];
  struct sl_descriptor *d = NULL;
  struct sl_desc_filter f = {0};
  struct sl_module *m = NULL;
  struct sl_disk *disk = NULL;
  int r = sl_descriptor_load(path, &d);
  if (r == 0)
    r = sl_desc_filter_parse(argv[2], &f);
  for (int i = 3; r == 0 && i < argc; i++) {
    char *save = NULL;
    for (char *kv = strtok_r(argv[i], ",", &save); r == 0 && kv;
         kv = strtok_r(NULL, ",", &save))
      r = sl_desc_filter_add_param(&f, kv);
  }
  if (r == 0)
    r = sl_module_get(f.module, &m);
  if (r == 0) {
    size_t pos = default_position(d, sl_module_filter(m)->filter_class);
    r = sl_descriptor_insert(d, pos, &f);
  }
  struct sl_disk_open_opts o = {.read_only = true};
  if (r == 0 && (r = sl_disk_open_descriptor(d, &o, &disk)) == 0)
    r = sl_disk_close(disk);
  if (r == 0)
    r = sl_descriptor_save(d, path);
  if (r < 0)
    cli_fail("filter", "%s", sl_last_error());
  sl_module_put(m);
  sl_desc_filter_clear(&f);
  sl_descriptor_free(d);
  return r < 0;
}

static int do_detach(int argc, char **argv)
{
  if (argc != 3)
    return filter_usage(stderr);
  struct sl_descriptor *d;
  if (sl_descriptor_load(argv[1], &d) < 0)
    return cli_fail("filter", "%s", sl_last_error());
  int i = sl_descriptor_find(d, argv[2]);
  int r;
  if (i < 0)
    r = sl_error(ENOENT, "%s: no filter '%s' in the stack", argv[1], argv[2]);
  else {
    sl_descriptor_remove(d, (size_t)i);
    r = sl_descriptor_save(d, argv[1]);
  }
  sl_descriptor_free(d);
  if (r < 0)
    return cli_fail("filter", "%s", sl_last_error());
  return 0;
}

int cmd_filter(int argc, char **argv)
{
  if (argc < 2)
    return filter_usage(stderr);
  const char *sub = argv[1];
  if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
    return filter_usage(stdout);
  if (strcmp(sub, "install") == 0)
    return do_install(argc - 1, argv + 1);
  if (strcmp(sub, "remove") == 0)
    return do_remove(argc - 1, argv + 1);
  if (strcmp(sub, "list") == 0) {
    if (argc == 2)
      return list_modules();
    if (argc == 3)
      return list_stack(argv[2]);
    return filter_usage(stderr);
  }
  if (strcmp(sub, "attach") == 0)
    return do_attach(argc - 1, argv + 1);
  if (strcmp(sub, "detach") == 0)
    return do_detach(argc - 1, argv + 1);
  cli_fail("filter", "unknown subcommand '%s'", sub);
  return filter_usage(stderr), 1;
}
