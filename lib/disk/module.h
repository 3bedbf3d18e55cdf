/* Trusted filter modules: install, list, remove, and load only what the
 * manifest vouches for.  Internal to libsluice and the sluice command. */
#ifndef SLUICE_DISK_MODULE_H
#define SLUICE_DISK_MODULE_H

#include <stdint.h>
#include <sys/types.h>

#include <sluice/filter.h>

struct sl_module;

/* $SLUICE_FILTER_DIR or the built-in system path. */
const char *sl_filter_dir(void);

struct sl_module_entry {
  char name[64];
  char sha256[65];
  uint64_t size;
  mode_t mode;
  uid_t uid;
  gid_t gid;
  uint64_t ino;          /* the installed file's inode; 0 = not recorded */
};

/* Copy MODULE.so into the module directory as NAME.so (NAME from the file
 * name without "lib"/".so"), record it in the manifest and check that it
 * loads.  Fills *entry. */
int sl_module_install(const char *path, struct sl_module_entry *entry);
int sl_module_remove(const char *name);
/* The manifest's entries; caller frees *out. */
int sl_module_list(struct sl_module_entry **out, size_t *n);
/* Verify NAME against the manifest without keeping it loaded: 0 or -errno
 * with the message saying what differs. */
int sl_module_verify(const char *name);

/* Load (or reference an already loaded) module; verified as above. */
int sl_module_get(const char *name, struct sl_module **out);
void sl_module_put(struct sl_module *m);
/* The registration, padded to this core's struct size. */
const struct sl_filter *sl_module_filter(const struct sl_module *m);
extern const struct sl_filter_host sl_filter_host;

#endif
