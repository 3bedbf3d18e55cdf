/* Disk descriptors: the persisted form of a disk (docs/disk-descriptor.md).
 *
 *   sluice-disk 1
 *   image base.raw            (relative to the descriptor's directory)
 *   format raw                (optional; probed otherwise)
 *   filter stats name=top     (top of the stack first)
 *   filter crypt key=disk.key
 *
 * Internal to libsluice and the sluice command. */
#ifndef SLUICE_DISK_DESCRIPTOR_H
#define SLUICE_DISK_DESCRIPTOR_H

#include <stdbool.h>
#include <stddef.h>

#define SL_DESC_MAGIC "sluice-disk 1"

struct sl_desc_filter {
  char *module;          /* module name */
  char *name;            /* instance name: name= or the module's */
  size_t n_params;
  char **keys, **values; /* without name= */
};

struct sl_descriptor {
  char *path;            /* as opened, or NULL for an image opened directly */
  char *dir;             /* base for relative paths */
  char *image;           /* as written */
  char *format;          /* NULL = probe */
  size_t n_filters;
  struct sl_desc_filter *filters;  /* top first */
};

/* True if PATH's content starts with the descriptor magic. */
bool sl_is_descriptor(const char *path);
int sl_descriptor_load(const char *path, struct sl_descriptor **out);
int sl_descriptor_save(const struct sl_descriptor *d, const char *path);
/* A descriptor at PATH for IMAGE (given relative to the cwd or absolute);
 * the image is stored relative to PATH's directory. */
int sl_descriptor_new(const char *path, const char *image,
                      struct sl_descriptor **out);
void sl_descriptor_free(struct sl_descriptor *d);
/* The image path resolved against d->dir; caller frees. */
char *sl_descriptor_image_path(const struct sl_descriptor *d);

/* Parse "NAME[:k=v,...]" (command-line form). */
int sl_desc_filter_parse(const char *spec, struct sl_desc_filter *out);
/* Add a k=v to F ("name" sets the instance name); -EINVAL if malformed. */
int sl_desc_filter_add_param(struct sl_desc_filter *f, const char *kv);
void sl_desc_filter_clear(struct sl_desc_filter *f);
/* Insert F (moved, not copied) at POS (0 = top). */
int sl_descriptor_insert(struct sl_descriptor *d, size_t pos,
                         struct sl_desc_filter *f);
/* Index of instance NAME, or -1. */
int sl_descriptor_find(const struct sl_descriptor *d, const char *name);
void sl_descriptor_remove(struct sl_descriptor *d, size_t idx);

#endif
