/* The image-driver interface inside libsluice.
 *
 * A driver (raw.c, qcow2*.c) handles ONE layer.  The generic code in
 * image.c opens the backing chain, detects loops and missing files, and
 * turns a driver's "not allocated here" into a lookup in the next layer, so
 * drivers never recurse themselves:
 *   - reads of unallocated ranges go through sl_image_read_backing();
 *   - block_status reports this layer only: DATA/ZERO at depth 0, or
 *     UNALLOCATED, which image.c resolves down the chain.
 */
#ifndef SLUICE_IMAGE_DRIVER_H
#define SLUICE_IMAGE_DRIVER_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include <sluice/image.h>
#include "config.h"

struct sl_image_driver {
  const char *name;
  enum sl_format format;
  /* Does this header belong to the driver?  BUF holds up to 512 bytes. */
  bool (*probe)(const uint8_t *buf, size_t len);
  int (*create)(const char *path, const struct sl_image_create_opts *opts,
                uint64_t size);
  /* Parse the layer.  Fills img->size, img->backing_file, img->backing_fmt
   * (the chain is opened by image.c afterwards) and img->priv. */
  int (*open)(struct sl_image *img, const struct sl_image_open_opts *opts);
  int (*close)(struct sl_image *img);
  int (*pread)(struct sl_image *img, void *buf, size_t len, uint64_t off);
  int (*pwrite)(struct sl_image *img, const void *buf, size_t len,
                uint64_t off, uint32_t flags);
  int (*flush)(struct sl_image *img);
  int (*discard)(struct sl_image *img, uint64_t off, uint64_t len);
  int (*write_zeroes)(struct sl_image *img, uint64_t off, uint64_t len,
                      uint32_t flags);
  int (*block_status)(struct sl_image *img, uint64_t off, uint64_t len,
                      struct sl_extent *ext);
  void (*get_info)(const struct sl_image *img, struct sl_image_info *info);
  int (*check)(const char *path, unsigned repair, struct sl_check_result *res);
};

struct sl_image {
  const struct sl_image_driver *drv;
  void *priv;
  char *filename;          /* as opened */
  int fd;                  /* the layer's file, O_RDWR unless read_only */
  bool read_only;
  bool direct;
  bool no_flush;           /* cache=unsafe: never fdatasync */
  struct stat st;          /* at open time, for the layer id */
  uint64_t size;           /* virtual size */
  char *backing_file;      /* as recorded by the driver, or NULL */
  enum sl_format backing_fmt;
  char *backing_path;      /* resolved path of the backing file */
  struct sl_image *backing;
  int depth;               /* 0 for the image opened by the user */
  /* Opened without a format and probed as raw: writes that would make its
   * first sector probe as another format are refused (image.c). */
  bool probed_raw;
  atomic_bool warned_probe; /* the refusal was reported on stderr once */
};

extern const struct sl_image_driver sl_raw_driver;
extern const struct sl_image_driver sl_qcow2_driver;

/* RBD (rbd.c, with librbd only): a layer without a file descriptor.
 * image.c sends "rbd:" names here instead of open()ing them. */
struct sl_rbd_spec;
#if HAVE_RBD
extern const struct sl_image_driver sl_rbd_driver;
int sl_rbd_create(const char *path, const struct sl_image_create_opts *o,
                  uint64_t size);
int sl_rbd_layer_id(const struct sl_image *img, struct sl_layer_id *id);
/* Is IMG (an RBD layer) the image S names, whatever the snapshot? */
bool sl_rbd_same_image(const struct sl_image *img, const struct sl_rbd_spec *s);
#endif

/* Read from the layer below IMG: zeros past its end or without one. */
int sl_image_read_backing(struct sl_image *img, void *buf, size_t len,
                          uint64_t off);

/* QEMU's block permissions (include/block/block-common.h, 7.2): bit i is
 * published as lock byte 100+i (taken) or 200+i (not shared); lock.c. */
#define SL_PERM_CONSISTENT_READ 0x1u
#define SL_PERM_WRITE           0x2u
#define SL_PERM_WRITE_UNCHANGED 0x4u
#define SL_PERM_RESIZE          0x8u
#define SL_PERM_ALL             0xfu
#define SL_PERM_BITS            4
/* Take the lock bytes for PERM and ~SHARED on FD, and fail with a message
 * naming PATH (and the holder when found) if another user conflicts. */
int sl_lock_fd(int fd, const char *path, unsigned perm, unsigned shared);
/* 1 if another open file description holds lock byte OFF of FD's file, 0
 * if not, -errno (the ownership code asks whether a disk is held). */
int sl_lock_byte_taken(int fd, long long off);
/* Best effort: "pid N, comm" of a process holding byte OFF, else "". */
void sl_lock_holder(int fd, long long off, char *who, size_t n);
/* The permissions sluice takes for an open of a layer, as QEMU would. */
int sl_lock_image_fd(int fd, const char *path, enum sl_format fmt,
                     bool read_only, bool force_share);
/* Open PATH to create an image in it: created if absent, emptied only once
 * the QEMU locks of a creator are held.  Returns the fd (O_RDWR). */
int sl_create_open(const char *path);

#endif
