/* crypt: AES-256-XTS encryption of everything below it.
 *
 * The image holds ciphertext; each 512-byte sector is encrypted with its
 * sector number (little-endian, 16 bytes) as the XTS tweak, so identical
 * plaintext in two sectors gives different ciphertext and sectors can be
 * read and written independently.  The key is 64 bytes (two AES-256 keys)
 * read from a file given as key=PATH; nothing about the key is stored in
 * the image, so the wrong key reads garbage rather than failing (there is
 * nothing to check it against, and nothing leaks from an error).
 *
 * Requests that do not cover whole sectors are read-modify-written: the
 * partial head and tail sectors are read and decrypted, the new bytes laid
 * over them and the whole range encrypted.  A read-write lock keeps an RMW
 * from racing another write to the same sector: aligned writes share it,
 * RMW takes it exclusively.
 *
 * Write-zeroes writes encrypted zeros (zeros in the image would not read as
 * zeros).  Block status reports everything as data, for the same reason;
 * the owning layer (depth) passes up unchanged.  Discard passes through:
 * a discarded range reads as unspecified data, which discard permits. */
#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "filter-util.h"

#define SECTOR 512u
#define KEY_BYTES 64u
#define ZERO_CHUNK (1u << 20)

struct crypt {
  char *key_path;
  unsigned char key[KEY_BYTES];
  bool have_key;
  pthread_rwlock_t rmw;
};

static int cr_config(void *inst, const char *k, const char *v)
{
  struct crypt *c = inst;
  if (strcmp(k, "key") != 0)
    return host->error(EINVAL, "unknown parameter '%s' (expected key)", k);
  free(c->key_path);
  c->key_path = strdup(v);
  return c->key_path ? 0 : host->error(ENOMEM, "out of memory");
}

static int cr_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct crypt *c = inst;
  if (!c->key_path)
    return host->error(EINVAL, "key=PATH is required (a file of %u bytes)",
                       KEY_BYTES);
  char *path = fu_resolve(env, c->key_path);
  if (!path)
    return host->error(ENOMEM, "out of memory");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  int e = errno;
  if (fd < 0) {
    free(path);
    return host->error(e, "key file %s: %s", c->key_path, strerror(e));
  }
  unsigned char extra;
  ssize_t n = read(fd, c->key, KEY_BYTES);
  ssize_t more = read(fd, &extra, 1);
  close(fd);
  free(path);
  if (n != (ssize_t)KEY_BYTES || more != 0)
    return host->error(EINVAL, "key file %s must hold exactly %u bytes (two "
                       "AES-256 keys), e.g. head -c 64 /dev/urandom",
                       c->key_path, KEY_BYTES);
  if (memcmp(c->key, c->key + KEY_BYTES / 2, KEY_BYTES / 2) == 0)
    return host->error(EINVAL, "key file %s: the two halves of an XTS key "
                       "must differ", c->key_path);
  c->have_key = true;
  pthread_rwlock_init(&c->rmw, NULL);
  return 0;
}

static int cr_open(void *inst, struct sl_next *next,
                   const struct sl_filter_env *env)
{
  int64_t size = sl_next_get_size(next);
  if (size < 0)
    return (int)size;
  if (size % SECTOR)
    return host->error(EINVAL, "the image size %" PRId64 " is not a multiple "
                       "of %u bytes", size, SECTOR);
  return 0;
}

static void cr_close(void *inst, struct sl_next *next)
{
  struct crypt *c = inst;
  if (c->have_key)
    pthread_rwlock_destroy(&c->rmw);
  memset(c->key, 0, sizeof c->key);
  free(c->key_path);
}

/* En/decrypt LEN bytes (whole sectors) in place; the first is SECTOR_NO. */
static int xts(struct crypt *c, bool enc, unsigned char *buf, size_t len,
               uint64_t sector_no)
{
  EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
  if (!ctx)
    return host->error(ENOMEM, "out of memory");
  int r = 0;
  if (!EVP_CipherInit_ex(ctx, EVP_aes_256_xts(), NULL, c->key, NULL, enc))
    r = host->error(EIO, "crypt: cannot set up AES-256-XTS");
  for (size_t done = 0; r == 0 && done < len; done += SECTOR, sector_no++) {
    unsigned char iv[16] = {0};
    for (int i = 0; i < 8; i++)
      iv[i] = (unsigned char)(sector_no >> (8 * i));
    int outl;
    if (!EVP_CipherInit_ex(ctx, NULL, NULL, NULL, iv, enc) ||
        !EVP_CipherUpdate(ctx, buf + done, &outl, buf + done, SECTOR))
      r = host->error(EIO, "crypt: AES-256-XTS failed at sector %" PRIu64,
                      sector_no);
  }
  EVP_CIPHER_CTX_free(ctx);
  return r;
}

static int cr_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{
  uint64_t start = off / SECTOR * SECTOR;
  uint64_t end = (off + len + SECTOR - 1) / SECTOR * SECTOR;
  bool aligned = start == off && end == off + len;
  unsigned char *b = aligned ? buf : malloc(end - start);
  if (!b)
    return host->error(ENOMEM, "out of memory");
  int r = sl_next_pread(next, b, end - start, start, flags);
  if (r == 0)
    r = xts(inst, false, b, end - start, start / SECTOR);
  if (!aligned) {
    if (r == 0)
      memcpy(buf, b + (off - start), len);
    free(b);
  }
  return r;
}

/* Read and decrypt the sector at OFF into B. */
static int read_sector(struct crypt *c, struct sl_next *next,
                       unsigned char *b, uint64_t off)
{
  int r = sl_next_pread(next, b, SECTOR, off, 0);
  return r < 0 ? r : xts(c, false, b, SECTOR, off / SECTOR);
}

static int cr_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{
  struct crypt *c = inst;
  uint64_t start = off / SECTOR * SECTOR;
  uint64_t end = (off + len + SECTOR - 1) / SECTOR * SECTOR;
  bool aligned = start == off && end == off + len;
  unsigned char *b = malloc(end - start);
  if (!b)
    return host->error(ENOMEM, "out of memory");
  if (aligned)
    pthread_rwlock_rdlock(&c->rmw);
  else
    pthread_rwlock_wrlock(&c->rmw);
  int r = 0;
  if (start != off)
    r = read_sector(c, next, b, start);
  if (r == 0 && end != off + len && (end - SECTOR != start || start == off))
    r = read_sector(c, next, b + (end - SECTOR - start), end - SECTOR);
  if (r == 0) {
    memcpy(b + (off - start), buf, len);
    r = xts(c, true, b, end - start, start / SECTOR);
  }
  if (r == 0)
    r = sl_next_pwrite(next, b, end - start, start, flags);
  pthread_rwlock_unlock(&c->rmw);
  free(b);
  return r;
}

static int cr_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{
  unsigned char *zero = calloc(1, ZERO_CHUNK);
  if (!zero)
    return host->error(ENOMEM, "out of memory");
  int r = 0;
  while (r == 0 && len > 0) {
    size_t n = len < ZERO_CHUNK ? (size_t)len : ZERO_CHUNK;
    r = cr_pwrite(inst, next, zero, n, off, flags & SL_FUA);
    off += n;
    len -= n;
  }
  free(zero);
  return r;
}

static int cr_can_zero(void *inst, struct sl_next *next)
{
  return sl_next_can_write(next);
}

static int cr_block_status(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{
  int r = sl_next_block_status(next, off, len, ext);
  if (r == 0) {
    /* Zeros below are not zeros above; depth is left as reported. */
    ext->type = SL_EXTENT_DATA;
  }
  return r;
}

static const struct sl_filter crypt_filter = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = "crypt",
  .description = "AES-256-XTS encryption (sector number as tweak)",
  .config_help = "key=PATH  file of 64 random bytes",
  .filter_class = SL_FILTER_CLASS_ENCRYPTION,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct crypt),
  .load = fu_load,
  .config = cr_config,
  .config_complete = cr_config_complete,
  .open = cr_open,
  .close = cr_close,
  .can_zero = cr_can_zero,
  .pread = cr_pread, .pwrite = cr_pwrite, .write_zeroes = cr_zero,
  .block_status = cr_block_status,
};

SL_REGISTER_FILTER(crypt_filter)
