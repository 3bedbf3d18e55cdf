/* Loading trusted filter modules: a process-wide registry of loaded
 * modules with reference counts, and the checks of the filter ABI at load.
 * What may be loaded is trust.c's decision (a sealed, verified memfd);
 * what a module may call is host.c's table, handed to its load().
 *
 * Loaded modules are kept in a process-wide registry with a reference count.
 * The memfd stays open while the module is loaded: glibc recognises an
 * already loaded object by its name, and a reused descriptor number would
 * otherwise make a second module's "/proc/self/fd/N" match the first. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "disk/host.h"
#include "disk/module.h"
#include "disk/trust.h"

/* ---- registry of loaded modules ----------------------------------------- */

struct sl_module {
  struct sl_module *next;
  char name[64];
  unsigned refs;
  int memfd;
  void *dl;
  struct sl_filter filter;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sl_module *registry;

const struct sl_filter *sl_module_filter(const struct sl_module *m)
{
  return &m->filter;
}

/* dlopen the module in MFD (which it then owns, also on failure) and check
 * that it is a sluice filter called NAME. */
static int load_from_memfd(const char *name, int mfd, struct sl_module **out)
{
  char procpath[64];
  snprintf(procpath, sizeof procpath, "/proc/self/fd/%d", mfd);
  void *dl = dlopen(procpath, RTLD_NOW | RTLD_LOCAL);
  if (!dl) {
    close(mfd);
    const char *err = dlerror();
    const char *undef = err ? strstr(err, "undefined symbol: ") : NULL;
    if (undef)
      return sl_error(ENOEXEC, "filter %s: refused: it calls %s, which is not "
                      "part of the filter ABI (a filter may use only the host "
                      "table of <sluice/filter.h>, never libsluice's internal "
                      "functions)", name, undef + strlen("undefined symbol: "));
    return sl_error(ENOEXEC, "filter %s: cannot load: %s", name, err);
  }
  sl_filter_init_fn init = (sl_filter_init_fn)dlsym(dl, SL_FILTER_INIT_SYMBOL);
  const struct sl_filter_abi *abi = dlsym(dl, SL_FILTER_ABI_SYMBOL);
  const struct sl_filter *reg = init ? init() : NULL;
  int r = 0;
  if (!abi || abi->magic != SL_FILTER_ABI_MAGIC)
    r = sl_error(ENOEXEC, "filter %s: no ABI stamp (%s): not built with "
                 "SL_REGISTER_FILTER from <sluice/filter.h>", name,
                 SL_FILTER_ABI_SYMBOL);
  else if (abi->api_version > SL_FILTER_API_VERSION)
    r = sl_error(ENOEXEC, "filter %s: built against filter API version %u, "
                 "newer than this sluice's (version %u): upgrade sluice, or "
                 "build the filter against this sluice's <sluice/filter.h> "
                 "(pkg-config sluice-filter)", name, abi->api_version,
                 SL_FILTER_API_VERSION);
  else if (abi->api_version != SL_FILTER_API_VERSION)
    r = sl_error(ENOEXEC, "filter %s: built against filter API version %u, "
                 "older than this sluice's (version %u): rebuild it against "
                 "this sluice's <sluice/filter.h> (pkg-config sluice-filter)",
                 name, abi->api_version, SL_FILTER_API_VERSION);
  else if (!reg)
    r = sl_error(ENOEXEC, "filter %s: no %s() or it returned NULL", name,
                 SL_FILTER_INIT_SYMBOL);
  else if (reg->api_version != SL_FILTER_API_VERSION)
    r = sl_error(ENOEXEC, "filter %s: built for filter API version %u, this "
                 "sluice speaks version %u", name, reg->api_version,
                 SL_FILTER_API_VERSION);
  else if (reg->struct_size != abi->filter_size)
    r = sl_error(ENOEXEC, "filter %s: its record says %u bytes but it was "
                 "compiled with a %u-byte struct sl_filter", name,
                 reg->struct_size, abi->filter_size);
  else if (reg->struct_size < offsetof(struct sl_filter, load))
    r = sl_error(ENOEXEC, "filter %s: registration record too short (%u "
                 "bytes)", name, reg->struct_size);
  else if (!reg->name || strcmp(reg->name, name) != 0)
    r = sl_error(ENOEXEC, "filter %s: module calls itself '%s'", name,
                 reg->name ? reg->name : "(null)");
  struct sl_module *m = r < 0 ? NULL : calloc(1, sizeof *m);
  if (r == 0 && !m)
    r = sl_error(ENOMEM, "out of memory");
  if (r == 0) {
    /* Copy what the module declares; fields it does not know stay NULL. */
    memcpy(&m->filter, reg, SL_MIN((size_t)reg->struct_size, sizeof m->filter));
    m->filter.struct_size = sizeof m->filter;
    if (m->filter.load && (r = m->filter.load(&sl_filter_host)) < 0)
      sl_error_prefix(-r, "filter %s: load", name);
  }
  if (r < 0) {
    free(m);
    dlclose(dl);
    close(mfd);
    return r;
  }
  snprintf(m->name, sizeof m->name, "%s", name);
  m->refs = 1;
  m->memfd = mfd;
  m->dl = dl;
  *out = m;
  return 0;
}

static void unload_module(struct sl_module *m)
{
  if (m->filter.unload)
    m->filter.unload();
  dlclose(m->dl);
  close(m->memfd);
  free(m);
}

static int load_module(const char *name, struct sl_module **out)
{
  int mfd = sl_trust_verified_memfd(name);
  return mfd < 0 ? mfd : load_from_memfd(name, mfd, out);
}

int sl_module_get(const char *name, struct sl_module **out)
{
  if (!sl_module_name_valid(name))
    return sl_error(EINVAL, "'%s' is not a valid filter name", name);
  SCOPED_LOCK(&registry_lock);
  for (struct sl_module *m = registry; m; m = m->next)
    if (strcmp(m->name, name) == 0) {
      m->refs++;
      *out = m;
      return 0;
    }
  int r = load_module(name, out);
  if (r < 0)
    return r;
  (*out)->next = registry;
  registry = *out;
  return 0;
}

void sl_module_put(struct sl_module *m)
{
  if (!m)
    return;
  SCOPED_LOCK(&registry_lock);
  if (--m->refs > 0)
    return;
  for (struct sl_module **p = &registry; *p; p = &(*p)->next)
    if (*p == m) {
      *p = m->next;
      break;
    }
  unload_module(m);
}

/* For install: load the sealed copy once (proving it is a sluice filter
 * called NAME that this core accepts) and unload it again.  MFD stays the
 * caller's. */
static int probe_load(const char *name, int mfd)
{
  int dup_fd = fcntl(mfd, F_DUPFD_CLOEXEC, 0);
  if (dup_fd < 0)
    return sl_error(errno, "filter %s: %s", name, strerror(errno));
  struct sl_module *m;
  int r = load_from_memfd(name, dup_fd, &m);
  if (r == 0)
    unload_module(m);
  return r;
}

int sl_module_install(const char *src, struct sl_module_entry *entry)
{
  return sl_trust_install(src, probe_load, entry);
}
