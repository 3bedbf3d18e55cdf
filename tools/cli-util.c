/* Helpers shared by the sluice subcommands: see cli-util.h. */
#include <string.h>
#include <strings.h>

#include <sluice/sluice.h>
#include "disk/descriptor.h"
#include "tools/cli-util.h"

void warn_if_probed_raw(struct sl_disk *disk, const char *path)
{
  /* A disk descriptor is configuration, not a user's ad hoc command line:
   * descriptors made by `sluice disk create` record the format, and older
   * ones keep the sector-0 guard without the noise. */
  struct sl_image *img = sl_disk_image(disk);
  if (!img || sl_is_descriptor(path) || sl_image_read_only(img) ||
      !sl_image_probed_raw(img))
    return;
  fprintf(stderr,
          "sluice: warning: Image format was not specified for '%s' and "
          "probing guessed raw.\n"
          "         Automatically detecting the format is dangerous for raw "
          "images, write operations on block 0 will be restricted.\n"
          "         Specify the 'raw' format explicitly (-f raw, or 'format "
          "raw' in a disk descriptor) to remove the restrictions.\n",
          sl_image_filename(img));
}

void json_string(FILE *f, const char *s)
{
  if (!s) {
    fputs("null", f);
    return;
  }
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    switch (*p) {
    case '"': fputs("\\\"", f); break;
    case '\\': fputs("\\\\", f); break;
    case '\n': fputs("\\n", f); break;
    case '\r': fputs("\\r", f); break;
    case '\t': fputs("\\t", f); break;
    default:
      if (*p < 0x20)
        fprintf(f, "\\u%04x", *p);
      else
        fputc(*p, f);
    }
  }
  fputc('"', f);
}

int kv_each(char *list, int (*fn)(void *opaque, const char *k, const char *v),
            void *opaque)
{
  char *save = NULL;
  for (char *item = strtok_r(list, ",", &save); item;
       item = strtok_r(NULL, ",", &save)) {
    char *eq = strchr(item, '=');
    if (eq)
      *eq++ = '\0';
    int r = fn(opaque, item, eq);
    if (r)
      return r;
  }
  return 0;
}

int parse_bool(const char *v)
{
  static const char *const yes[] = {"on", "true", "yes", "1"};
  static const char *const no[] = {"off", "false", "no", "0"};
  if (!v)
    return 1; /* a bare key means on */
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0)
      return 1;
    if (strcasecmp(v, no[i]) == 0)
      return 0;
  }
  return -1;
}

void progress_init(struct progress *p, bool enabled, uint64_t total)
{
  p->enabled = enabled;
  p->total = total;
  p->last_hundredths = -1;
  progress_update(p, 0);
}

void progress_update(struct progress *p, uint64_t done)
{
  if (!p->enabled)
    return;
  int h = p->total ? (int)((double)done * 10000.0 / (double)p->total) : 10000;
  if (h == p->last_hundredths)
    return;
  p->last_hundredths = h;
  fprintf(stderr, "    (%d.%02d/100%%)\r", h / 100, h % 100);
  fflush(stderr);
}

void progress_finish(struct progress *p)
{
  if (!p->enabled)
    return;
  progress_update(p, p->total);
  fputc('\n', stderr);
}
