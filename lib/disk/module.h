/* Loading trusted filter modules (module.c), on top of trust.h (which
 * decides what may be loaded).  Internal to libsluice and the sluice
 * command. */
#ifndef SLUICE_DISK_MODULE_H
#define SLUICE_DISK_MODULE_H

#include <sluice/filter.h>
#include "disk/trust.h"

struct sl_module;

/* Install the module file PATH (see sl_trust_install), proving first that
 * this core loads it. */
int sl_module_install(const char *path, struct sl_module_entry *entry);

/* Load (or reference an already loaded) module; verified by trust.c.  A
 * module that needs a symbol the core does not offer (anything but the host
 * table) is refused here with a message saying so. */
int sl_module_get(const char *name, struct sl_module **out);
void sl_module_put(struct sl_module *m);
/* The registration, padded to this core's struct size. */
const struct sl_filter *sl_module_filter(const struct sl_module *m);

#endif
