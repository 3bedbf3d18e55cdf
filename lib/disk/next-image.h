/* What the core tells the host cache service about a filter's `next`.
 * Internal to libsluice (filters reach it through the host table). */
#ifndef SLUICE_DISK_NEXT_IMAGE_H
#define SLUICE_DISK_NEXT_IMAGE_H

#include <sluice/filter.h>

/* The image below the filter whose `next` is N, if every byte N reads is
 * the image's own: no filter between them handles reads or block status.
 * Otherwise NULL, with a message naming the filter in the way. */
struct sl_image *sl_disk_next_image(struct sl_next *n);

#endif
