/* The host table handed to every filter module's load() (see host.c). */
#ifndef SLUICE_DISK_HOST_H
#define SLUICE_DISK_HOST_H

#include <sluice/filter.h>

extern const struct sl_filter_host sl_filter_host;

#endif
