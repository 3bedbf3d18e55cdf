/* The cache service entries of the filter host table (attach.c); lib/disk/host.c
 * puts them into struct sl_filter_host. */
#ifndef SLUICE_CACHESVC_HOST_H
#define SLUICE_CACHESVC_HOST_H

#include <sluice/filter.h>

int sl_cache_host_attach(struct sl_next *next, const char *socket,
                         unsigned flags, struct sl_cache_disk **out);
void sl_cache_host_detach(struct sl_cache_disk *cd);
int sl_cache_host_read(struct sl_cache_disk *cd, struct sl_cache_read *rd,
                       unsigned n, uint64_t deadline_ns);
void sl_cache_host_invalidate(struct sl_cache_disk *cd, int depth,
                              uint64_t file_offset, uint64_t len);
void sl_cache_host_stats(struct sl_cache_disk *cd, struct sl_cache_stats *st);

#endif
