/* Helpers shared by the C tests of the filter stack: a private directory
 * that is also the trusted module directory, the filter modules of this
 * build installed into it, descriptors written by hand (so a test controls
 * the exact order of the stack) and small file utilities.
 *
 * Header-only: each test program is one .c file plus this. */
#ifndef SLUICE_TESTS_DISK_STACK_TEST_H
#define SLUICE_TESTS_DISK_STACK_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sluice/disk.h>
#include <sluice/error.h>
#include <sluice/image.h>
#include "disk/module.h"

static char test_dir[256];

/* DIR/NAME in a static ring of buffers, so a call can use several. */
static inline const char *tpath(const char *name)
{
  static char ring[8][512];
  static unsigned next;
  char *p = ring[next++ % 8];
  snprintf(p, sizeof ring[0], "%s/%s", test_dir, name);
  return p;
}

static inline void test_die(const char *what)
{
  fprintf(stderr, "test setup: %s: %s\n", what, sl_last_error());
  exit(1);
}

/* Make the private directory, point SLUICE_FILTER_DIR into it and install
 * the modules of this build (NULL-terminated list). */
static inline void stack_test_setup(const char *prefix, const char *const *modules)
{
  const char *build = getenv("BUILDDIR");
  if (!build) {
    fprintf(stderr, "BUILDDIR is not set: run through meson test\n");
    exit(1);
  }
  snprintf(test_dir, sizeof test_dir, "/tmp/%s.XXXXXX", prefix);
  if (!mkdtemp(test_dir))
    abort();
  if (chmod(test_dir, 0755) < 0)
    abort();
  if (mkdir(tpath("mods"), 0755) < 0)
    abort();
  setenv("SLUICE_FILTER_DIR", tpath("mods"), 1);
  for (size_t i = 0; modules[i]; i++) {
    char so[1024];
    snprintf(so, sizeof so, "%s/filters/%s.so", build, modules[i]);
    if (sl_module_install(so, NULL) < 0)
      test_die(so);
  }
}

/* A 64-byte AES-XTS key file NAME in the test directory; the bytes follow
 * i * MUL + ADD so each test's key differs from the others'. */
static inline void write_test_key(const char *name, int mul, int add)
{
  unsigned char key[64];
  for (int i = 0; i < 64; i++)
    key[i] = (unsigned char)(i * mul + add);
  int fd = open(tpath(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, key, sizeof key) != (ssize_t)sizeof key)
    test_die(name);
  close(fd);
}

static inline void stack_test_teardown(void)
{
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", test_dir);
  if (system(cmd) != 0)
    fprintf(stderr, "could not remove %s\n", test_dir);
}

/* Write a descriptor NAME for IMAGE with the given filter lines (top
 * first, each "MODULE k=v ..."), NULL-terminated varargs. */
static inline const char *write_descriptor(const char *name, const char *image, ...)
{
  const char *path = tpath(name);
  FILE *f = fopen(path, "w");
  if (!f)
    abort();
  fprintf(f, "sluice-disk 1\nimage %s\n", image);
  va_list ap;
  va_start(ap, image);
  for (const char *line; (line = va_arg(ap, const char *));)
    fprintf(f, "filter %s\n", line);
  va_end(ap);
  if (fclose(f) != 0)
    abort();
  return path;
}

/* A raw image of SIZE bytes filled with zeros (sparse). */
static inline void make_raw(const char *name, uint64_t size)
{
  int fd = open(tpath(name), O_RDWR | O_CREAT | O_TRUNC, 0644);
  if (fd < 0 || ftruncate(fd, (off_t)size) < 0)
    abort();
  close(fd);
}

/* The whole content of a file, NUL-terminated; caller frees. */
static inline char *slurp(const char *path, size_t *len_out)
{
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (len_out)
      *len_out = 0;
    return calloc(1, 1);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  if (!b || fread(b, 1, (size_t)n, f) != (size_t)n)
    abort();
  b[n] = '\0';
  fclose(f);
  if (len_out)
    *len_out = (size_t)n;
  return b;
}

/* PATH's content, then empty it (appenders keep appending at the new end). */
static inline char *take_log(const char *path)
{
  char *s = slurp(path, NULL);
  if (truncate(path, 0) < 0 && errno != ENOENT)
    abort();
  return s;
}

static inline struct sl_disk *open_disk(const char *path, bool read_only)
{
  struct sl_disk *d = NULL;
  struct sl_disk_open_opts o = {.read_only = read_only};
  if (sl_disk_open(path, &o, &d) < 0) {
    fprintf(stderr, "open %s: %s\n", path, sl_last_error());
    return NULL;
  }
  return d;
}

#endif
