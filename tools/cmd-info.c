/* sluice info: describe an image (and with --backing-chain every layer
 * below it), in qemu-img info's human and JSON layouts.
 *
 * Given a disk descriptor, it opens the disk (read-only, so every filter is
 * instantiated and the stack is the one that would serve I/O) and shows the
 * stack first, top down, each filter with its class and parameters, then
 * the image under it as for a plain image.  Parameters are shown as the
 * descriptor gives them: a key file's path, never what it holds. */
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "disk/descriptor.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

static const char usage_text[] =
  "Usage: sluice info [-f FMT] [-U] [--output=human|json] [--backing-chain] FILE\n"
  "\n"
  "Show the format, sizes and format-specific details of FILE.  With\n"
  "--backing-chain, show every layer of its backing chain, top first.\n"
  "If FILE is a disk descriptor, show its filter stack (top first, with\n"
  "each filter's class and parameters) and then its image.\n"
  "  -U, --force-share  open even if another process writes the image\n";

/* The backing path the way it would be opened: relative to FILE's dir. */
static char *full_backing(const struct sl_image_info *info, const char *file)
{
  if (info->backing_path)
    return strdup(info->backing_path);
  if (!info->backing_file)
    return NULL;
  if (info->backing_file[0] == '/' || !strchr(file, '/') ||
      sl_image_path_is_rbd(info->backing_file) || sl_image_path_is_rbd(file))
    return strdup(info->backing_file); /* as qemu-img shows it */
  CLEANUP_FREE char *copy = strdup(file);
  char *res = NULL;
  if (copy && asprintf(&res, "%s/%s", dirname(copy), info->backing_file) < 0)
    res = NULL;
  return res;
}

/* qemu-img's "Snapshot list:" table (its bdrv_snapshot_dump() columns). */
static void print_snapshots_human(const struct sl_image_info *info)
{
  if (!info->n_snapshots)
    return;
  printf("Snapshot list:\n");
  printf("%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
         "VM CLOCK", "ICOUNT");
  for (size_t i = 0; i < info->n_snapshots; i++) {
    const struct sl_snapshot_info *sn = &info->snapshots[i];
    char size[32], date[32] = "", clock[48], icount[32] = "";
    time_t t = (time_t)sn->date_sec;
    struct tm tm;
    if (localtime_r(&t, &tm))
      strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = sn->vm_clock_nsec / 1000000000;
    snprintf(clock, sizeof clock, "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60),
             (int)((sn->vm_clock_nsec / 1000000) % 1000));
    if (sn->icount != UINT64_MAX)
      snprintf(icount, sizeof icount, "%" PRId64, (int64_t)sn->icount);
    printf("%-9s %-16s %8s%20s%13s%11s\n", sn->id, sn->name,
           sl_human_size(sn->vm_state_size, size, sizeof size), date, clock,
           icount);
  }
}

static void print_human(const struct sl_image *img, const struct sl_image_info *info)
{
  char a[32], b[32];
  const char *file = sl_image_filename(img);
  printf("image: %s\n", file);
  printf("file format: %s\n", sl_format_name(info->format));
  printf("virtual size: %s (%" PRIu64 " bytes)\n",
         sl_human_size(info->virtual_size, a, sizeof a), info->virtual_size);
  /* An RBD image: qemu-img's lines for it, and its parent snapshot (an
   * RBD clone's backing layer) as the backing file. */
  if (sl_image_path_is_rbd(file)) {
    printf("disk size: unavailable\n");
    printf("cluster_size: %u\n", info->cluster_size);
    if (info->backing_file)
      printf("backing file: %s\n", info->backing_file);
    return;
  }
  printf("disk size: %s\n", sl_human_size(info->actual_size, b, sizeof b));
  if (info->format != SL_FORMAT_QCOW2)
    return;
  printf("cluster_size: %u\n", info->cluster_size);
  if (info->backing_file) {
    CLEANUP_FREE char *full = full_backing(info, file);
    if (full && strcmp(full, info->backing_file) != 0)
      printf("backing file: %s (actual path: %s)\n", info->backing_file, full);
    else
      printf("backing file: %s\n", info->backing_file);
    if (info->backing_format)
      printf("backing file format: %s\n", info->backing_format);
  }
  print_snapshots_human(info);
  printf("Format specific information:\n");
  printf("    compat: %s\n", info->qcow2_version >= 3 ? "1.1" : "0.10");
  printf("    compression type: %s\n",
         info->compression_type ? info->compression_type : "zlib");
  if (info->qcow2_version >= 3)
    printf("    lazy refcounts: %s\n", info->lazy_refcounts ? "true" : "false");
  if (info->n_bitmaps) {
    printf("    bitmaps:\n");
    for (size_t i = 0; i < info->n_bitmaps; i++) {
      const struct sl_bitmap_info *bm = &info->bitmaps[i];
      int k = 0;
      printf("        [%zu]:\n            flags:\n", i);
      if (bm->in_use)
        printf("                [%d]: in-use\n", k++);
      if (bm->enabled)
        printf("                [%d]: auto\n", k++);
      printf("            name: %s\n", bm->name);
      printf("            granularity: %" PRIu64 "\n", bm->granularity);
    }
  }
  printf("    refcount bits: %d\n", info->refcount_bits);
  if (info->qcow2_version >= 3) {
    printf("    corrupt: %s\n", info->corrupt ? "true" : "false");
    printf("    extended l2: %s\n", info->extended_l2 ? "true" : "false");
  }
  if (info->dirty)
    printf("    dirty: true\n");
}

/* INDENT prefixes every line; LEAD only the first (the caller may have
 * started that line with a member name). */
static void print_json(const struct sl_image *img,
                          const struct sl_image_info *info,
                          const char *lead, const char *indent)
{
  const char *file = sl_image_filename(img);
  printf("%s{\n", lead);
  if (info->n_snapshots) {
    printf("%s    \"snapshots\": [\n", indent);
    for (size_t i = 0; i < info->n_snapshots; i++) {
      const struct sl_snapshot_info *sn = &info->snapshots[i];
      printf("%s        {\n", indent);
      if (sn->icount != UINT64_MAX)
        printf("%s            \"icount\": %" PRId64 ",\n", indent,
               (int64_t)sn->icount);
      printf("%s            \"vm-clock-nsec\": %" PRIu64 ",\n", indent,
             sn->vm_clock_nsec % 1000000000);
      printf("%s            \"name\": ", indent);
      json_string(stdout, sn->name);
      printf(",\n%s            \"date-sec\": %u,\n", indent, sn->date_sec);
      printf("%s            \"date-nsec\": %u,\n", indent, sn->date_nsec);
      printf("%s            \"vm-clock-sec\": %" PRIu64 ",\n", indent,
             sn->vm_clock_nsec / 1000000000);
      printf("%s            \"id\": ", indent);
      json_string(stdout, sn->id);
      printf(",\n%s            \"vm-state-size\": %" PRIu64 "\n", indent,
             sn->vm_state_size);
      printf("%s        }%s\n", indent, i + 1 < info->n_snapshots ? "," : "");
    }
    printf("%s    ],\n", indent);
  }
  printf("%s    \"virtual-size\": %" PRIu64 ",\n", indent, info->virtual_size);
  printf("%s    \"filename\": ", indent);
  json_string(stdout, file);
  printf(",\n");
  if (info->format == SL_FORMAT_QCOW2)
    printf("%s    \"cluster-size\": %u,\n", indent, info->cluster_size);
  printf("%s    \"format\": \"%s\",\n", indent, sl_format_name(info->format));
  printf("%s    \"actual-size\": %" PRIu64 ",\n", indent, info->actual_size);
  if (info->format == SL_FORMAT_QCOW2) {
    printf("%s    \"format-specific\": {\n", indent);
    printf("%s        \"type\": \"qcow2\",\n", indent);
    printf("%s        \"data\": {\n", indent);
    printf("%s            \"compat\": \"%s\",\n", indent,
           info->qcow2_version >= 3 ? "1.1" : "0.10");
    printf("%s            \"compression-type\": \"%s\",\n", indent,
           info->compression_type ? info->compression_type : "zlib");
    printf("%s            \"lazy-refcounts\": %s,\n", indent,
           info->lazy_refcounts ? "true" : "false");
    if (info->n_bitmaps) {
      printf("%s            \"bitmaps\": [\n", indent);
      for (size_t i = 0; i < info->n_bitmaps; i++) {
        const struct sl_bitmap_info *bm = &info->bitmaps[i];
        printf("%s                {\n%s                    \"flags\": [\n",
               indent, indent);
        if (bm->in_use)
          printf("%s                        \"in-use\"%s\n", indent,
                 bm->enabled ? "," : "");
        if (bm->enabled)
          printf("%s                        \"auto\"\n", indent);
        printf("%s                    ],\n%s                    \"name\": ",
               indent, indent);
        json_string(stdout, bm->name);
        printf(",\n%s                    \"granularity\": %" PRIu64 "\n",
               indent, bm->granularity);
        printf("%s                }%s\n", indent,
               i + 1 < info->n_bitmaps ? "," : "");
      }
      printf("%s            ],\n", indent);
    }
    printf("%s            \"refcount-bits\": %d,\n", indent, info->refcount_bits);
    printf("%s            \"corrupt\": %s,\n", indent, info->corrupt ? "true" : "false");
    printf("%s            \"extended-l2\": %s\n", indent,
           info->extended_l2 ? "true" : "false");
    printf("%s        }\n", indent);
    printf("%s    },\n", indent);
  }
  if (info->backing_file) {
    CLEANUP_FREE char *full = full_backing(info, file);
    printf("%s    \"full-backing-filename\": ", indent);
    json_string(stdout, full);
    printf(",\n%s    \"backing-filename\": ", indent);
    json_string(stdout, info->backing_file);
    printf(",\n");
    if (info->backing_format) {
      printf("%s    \"backing-filename-format\": ", indent);
      json_string(stdout, info->backing_format);
      printf(",\n");
    }
  }
  printf("%s    \"dirty-flag\": %s\n", indent, info->dirty ? "true" : "false");
  printf("%s}", indent);
}

/* The layers of IMG (just the top one unless CHAIN), each as qemu-img info
 * shows it.  JSON: an array when CHAIN, else one object; LEAD and INDENT as
 * for print_json. */
static int print_layers(struct sl_image *img, bool json, bool chain,
                        const char *lead, const char *indent)
{
  int n = chain ? sl_image_chain_length(img) : 1;
  char inner[32];
  snprintf(inner, sizeof inner, "%s%s", indent, chain ? "    " : "");
  if (json && chain)
    printf("%s[\n", lead);
  for (int d = 0; d < n; d++) {
    struct sl_image *layer = sl_image_layer(img, d);
    struct sl_image_info info;
    if (sl_image_get_info(layer, &info) < 0)
      return -1;
    if (json) {
      print_json(layer, &info, chain ? inner : lead, inner);
      printf(chain && d + 1 < n ? ",\n" : "\n");
    } else {
      if (d > 0)
        printf("\n");
      print_human(layer, &info);
    }
  }
  if (json && chain)
    printf("%s]\n", indent);
  return 0;
}

static void print_disk_human(struct sl_disk *disk)
{
  char a[32];
  uint64_t size = sl_disk_size(sl_disk_top(disk));
  int n = sl_disk_filter_count(disk);
  printf("disk descriptor: %s\n", sl_disk_descriptor_path(disk));
  printf("virtual size: %s (%" PRIu64 " bytes)\n",
         sl_human_size(size, a, sizeof a), size);
  printf("filters (top first):%s\n", n ? "" : " none");
  for (int i = 0; i < n; i++) {
    struct sl_disk_filter_info fi;
    if (sl_disk_filter_info(disk, i, &fi) < 0)
      continue;
    printf("  %d. %s", i + 1, fi.name);
    if (strcmp(fi.name, fi.module) != 0)
      printf(" (module %s)", fi.module);
    printf(", class %s: %s\n", sl_filter_class_name(fi.filter_class),
           fi.description);
    if (fi.n_params) {
      printf("     parameters:");
      for (size_t k = 0; k < fi.n_params; k++)
        printf(" %s=%s", fi.keys[k], fi.values[k]);
      printf("\n");
    }
  }
  printf("\n");
}

static void print_disk_json(struct sl_disk *disk)
{
  int n = sl_disk_filter_count(disk);
  printf("{\n    \"disk-descriptor\": ");
  json_string(stdout, sl_disk_descriptor_path(disk));
  printf(",\n    \"virtual-size\": %" PRIu64 ",\n",
         sl_disk_size(sl_disk_top(disk)));
  printf("    \"filters\": [%s", n ? "\n" : "");
  for (int i = 0; i < n; i++) {
    struct sl_disk_filter_info fi;
    if (sl_disk_filter_info(disk, i, &fi) < 0)
      continue;
    printf("        {\n            \"name\": ");
    json_string(stdout, fi.name);
    printf(",\n            \"module\": ");
    json_string(stdout, fi.module);
    printf(",\n            \"class\": \"%s\",\n            \"description\": ",
           sl_filter_class_name(fi.filter_class));
    json_string(stdout, fi.description);
    printf(",\n            \"virtual-size\": %" PRIu64 ",\n", fi.size);
    printf("            \"parameters\": {");
    for (size_t k = 0; k < fi.n_params; k++) {
      printf("%s", k ? ", " : "");
      json_string(stdout, fi.keys[k]);
      printf(": ");
      json_string(stdout, fi.values[k]);
    }
    printf("}\n        }%s\n", i + 1 < n ? "," : "");
  }
  printf("%s],\n", n ? "    " : "");
}

static int info_disk(const char *path, enum sl_format format, bool json,
                     bool chain, bool force_share)
{
  struct sl_disk_open_opts o = {.read_only = true, .format = format,
                                .force_share = force_share};
  struct sl_disk *disk;
  if (sl_disk_open(path, &o, &disk) < 0)
    return cli_fail("info", "%s", sl_last_error());
  int r;
  if (json) {
    print_disk_json(disk);
    printf("    \"%s\": ", chain ? "backing-chain" : "image");
    r = print_layers(sl_disk_image(disk), true, chain, "", "    ");
    printf("}\n");
  } else {
    print_disk_human(disk);
    r = print_layers(sl_disk_image(disk), false, chain, "", "");
  }
  if (r < 0)
    cli_fail("info", "%s", sl_last_error());
  sl_disk_close(disk);
  return r < 0;
}

int cmd_info(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, 'O'},
    {"backing-chain", no_argument, NULL, 'B'},
    {"format", required_argument, NULL, 'f'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
  };
  struct sl_image_open_opts o = {.read_only = true, .no_backing = true};
  bool json = false, chain = false;
  int c;

  while ((c = getopt_long(argc, argv, "f:Uh", longopts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (sl_format_parse(optarg, &o.format) < 0)
        return cli_fail("info", "%s", sl_last_error());
      break;
    case 'O':
      if (strcmp(optarg, "json") == 0)
        json = true;
      else if (strcmp(optarg, "human") != 0)
        return cli_fail("info", "--output: '%s' is not human or json", optarg);
      break;
    case 'U': o.force_share = true; break;
    case 'B': chain = true; o.no_backing = false; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(usage_text, stderr);
    return cli_fail("info", optind >= argc ? "no FILE given" : "too many arguments");
  }
  if (sl_is_descriptor(argv[optind]))
    return info_disk(argv[optind], o.format, json, chain, o.force_share);
  struct sl_image *img;
  if (sl_image_open(argv[optind], &o, &img) < 0)
    return cli_fail("info", "%s", sl_last_error());
  if (print_layers(img, json, chain, "", "") < 0) {
    sl_image_close(img);
    return cli_fail("info", "%s", sl_last_error());
  }
  sl_image_close(img);
  return 0;
}
