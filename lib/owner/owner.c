/* Ownership front end: resolves a disk (image or descriptor) to the image
 * whose ownership is meant, picks the backend that manages it, and passes
 * the call on.  The backends are listed here in the order they are asked;
 * the local one takes any file, so it comes last. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "disk/descriptor.h"
#include "owner/owner.h"

static const struct sl_owner_backend *const backends[] = {
#if HAVE_RBD
  &sl_owner_rbd,
#endif
  &sl_owner_local,
};

const char *sl_owner_state_name(enum sl_owner_state s)
{
  switch (s) {
  case SL_OWNER_NONE: return "none";
  case SL_OWNER_OWNED: return "owned";
  case SL_OWNER_STALE: return "stale";
  case SL_OWNER_FOREIGN: return "foreign";
  case SL_OWNER_RELEASED: return "released";
  }
  return "?";
}

/* The image a disk's ownership is of: a descriptor's image (the locks are
 * on the image, which several descriptors may name), else DISK itself. */
static int resolve(const char *disk, char **image,
                   const struct sl_owner_backend **be)
{
  *image = NULL;
  if (sl_is_descriptor(disk)) {
    struct sl_descriptor *d;
    int r = sl_descriptor_load(disk, &d);
    if (r < 0)
      return r;
    *image = sl_descriptor_image_path(d);
    sl_descriptor_free(d);
  } else {
    *image = strdup(disk);
  }
  if (!*image)
    return sl_error(ENOMEM, "out of memory");
  for (size_t i = 0; i < sizeof backends / sizeof backends[0]; i++)
    if (backends[i]->handles(*image)) {
      *be = backends[i];
      return 0;
    }
  int r = sl_error(ENOTSUP, "%s: no ownership backend manages this disk", disk);
  free(*image);
  *image = NULL;
  return r;
}

int sl_owner_query(const char *disk, struct sl_owner_info *out)
{
  char *image;
  const struct sl_owner_backend *be;
  int r = resolve(disk, &image, &be);
  if (r < 0)
    return r;
  r = be->query(image, out);
  free(image);
  return r;
}

int sl_owner_release(const char *disk, const struct sl_owner_release_opts *o,
                     struct sl_owner_release_result *res)
{
  char *image;
  const struct sl_owner_backend *be;
  int r = resolve(disk, &image, &be);
  if (r < 0)
    return r;
  r = be->release(image, o, res);
  free(image);
  return r;
}

int sl_owner_claim(const char *disk, const struct sl_owner_claim_opts *o,
                   struct sl_owner **out)
{
  char *image;
  const struct sl_owner_backend *be;
  int r = resolve(disk, &image, &be);
  if (r < 0)
    return r;
  r = be->claim(image, o, out);
  free(image);
  return r;
}

#define BASE(own) ((const struct sl_owner_base *)(const void *)(own))

void sl_owner_release_done(struct sl_owner *own, int status, const char *message)
{
  BASE(own)->backend->release_done(own, status, message);
}

const char *sl_owner_requester(struct sl_owner *own)
{
  return BASE(own)->backend->requester(own);
}

void sl_owner_drop(struct sl_owner *own)
{
  if (own)
    BASE(own)->backend->drop(own);
}
