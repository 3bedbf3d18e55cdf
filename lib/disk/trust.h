/* Trust in filter modules (design mechanism 7): the manifest of installed
 * modules and verification of a module into a sealed memfd.  Below the
 * loader (module.h), which loads only what sl_trust_verified_memfd()
 * returns.  Internal to libsluice and the sluice command. */
#ifndef SLUICE_DISK_TRUST_H
#define SLUICE_DISK_TRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

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

/* A module name: letters, digits, '-', '_'; what the manifest may hold. */
bool sl_module_name_valid(const char *name);

/* Read NAME.so once into a sealed memfd and check it against the manifest.
 * Returns the memfd (>= 0, the caller's), or -errno with a message that
 * names the module and lists everything that differs from what was
 * installed. */
int sl_trust_verified_memfd(const char *name);

/* Verify NAME against the manifest without loading it: 0 or -errno with the
 * message saying what differs. */
int sl_module_verify(const char *name);

/* How install proves that a module loads: given its name and the sealed
 * memfd of its bytes (still the caller's), 0 or -errno with a message. */
typedef int (*sl_trust_probe_fn)(const char *name, int mfd);

/* Copy SRC into the module directory as NAME.so (NAME from the file name
 * without "lib"/"sluice-filter-"/".so"), after PROBE accepted the very bytes
 * that are installed, and record it in the manifest.  Nothing changes in the
 * directory if anything refuses.  Fills *entry. */
int sl_trust_install(const char *src, sl_trust_probe_fn probe,
                     struct sl_module_entry *entry);
int sl_module_remove(const char *name);
/* The manifest's entries; caller frees *out. */
int sl_module_list(struct sl_module_entry **out, size_t *n);

#endif
