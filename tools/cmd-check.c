/* sluice check: verify (and optionally repair) an image's metadata, with
 * qemu-img check's messages, JSON keys and exit codes:
 *   0 clean, 1 the check could not complete, 2 corruptions, 3 leaks only,
 *   63 the format has nothing to check (raw). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <sluice/sluice.h>
#include "tools/cli-util.h"
#include "tools/cli.h"

static const char usage_text[] =
  "Usage: sluice check [-f FMT] [-r leaks|all] [-U] [--output=human|json] [-q] FILE\n"
  "\n"
  "Check FILE's metadata.  -r leaks frees leaked clusters; -r all also fixes\n"
  "wrong reference counts.  Exit status: 0 clean, 1 check failed,\n"
  "2 corruptions found, 3 only leaks found, 63 format without checks (raw).\n"
  "-U (--force-share) checks an image another process writes (no -r).\n";

static void print_human(const struct sl_check_result *r)
{
  if (r->corruptions)
    printf("\n%" PRId64 " errors were found on the image.\n"
           "Data may be corrupted, or further writes to the image may corrupt it.\n",
           r->corruptions);
  if (r->leaks)
    printf("\n%" PRId64 " leaked clusters were found on the image.\n"
           "This means waste of disk space, but no harm to data.\n", r->leaks);
  if (r->check_errors)
    printf("\n%" PRId64 " internal errors have occurred during the check.\n",
           r->check_errors);
  if (!r->corruptions && !r->leaks && !r->check_errors)
    printf("No errors were found on the image.\n");
  if (r->total_clusters && r->allocated_clusters) {
    double total = (double)r->total_clusters, alloc = (double)r->allocated_clusters;
    printf("%" PRId64 "/%" PRId64 " = %0.2f%% allocated, %0.2f%% fragmented, "
           "%0.2f%% compressed clusters\n",
           r->allocated_clusters, r->total_clusters, alloc * 100.0 / total,
           (double)r->fragmented_clusters * 100.0 / alloc,
           (double)r->compressed_clusters * 100.0 / alloc);
  }
  if (r->image_end_offset)
    printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

static void json_field(const char *key, int64_t v, bool *first)
{
  printf("%s\n    \"%s\": %" PRId64, *first ? "" : ",", key, v);
  *first = false;
}

static void print_json(const char *file, const char *fmt, const struct sl_check_result *r)
{
  bool first = true;
  printf("{");
  if (r->image_end_offset)
    json_field("image-end-offset", (int64_t)r->image_end_offset, &first);
  if (r->total_clusters) {
    json_field("total-clusters", r->total_clusters, &first);
    json_field("allocated-clusters", r->allocated_clusters, &first);
    json_field("fragmented-clusters", r->fragmented_clusters, &first);
    json_field("compressed-clusters", r->compressed_clusters, &first);
  }
  json_field("check-errors", r->check_errors, &first);
  if (r->leaks)
    json_field("leaks", r->leaks, &first);
  if (r->corruptions)
    json_field("corruptions", r->corruptions, &first);
  if (r->leaks_fixed)
    json_field("leaks-fixed", r->leaks_fixed, &first);
  if (r->corruptions_fixed)
    json_field("corruptions-fixed", r->corruptions_fixed, &first);
  printf(",\n    \"filename\": ");
  json_string(stdout, file);
  printf(",\n    \"format\": \"%s\"\n}\n", fmt);
}

static bool has_qcow2_magic(const char *file)
{
  unsigned char m[4] = {0};
  FILE *f = fopen(file, "rb");
  if (!f)
    return false;
  size_t n = fread(m, 1, 4, f);
  fclose(f);
  return n == 4 && m[0] == 'Q' && m[1] == 'F' && m[2] == 'I' && m[3] == 0xfb;
}

static int exit_code(const struct sl_check_result *r)
{
  if (r->check_errors)
    return 1;
  if (r->corruptions)
    return 2;
  if (r->leaks)
    return 3;
  return 0;
}

int cmd_check(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, 'O'},
    {"repair", required_argument, NULL, 'r'},
    {"format", required_argument, NULL, 'f'},
    {NULL, 0, NULL, 0},
  };
  unsigned repair = 0;
  bool json = false, quiet = false, force_share = false;
  enum sl_format fmt = SL_FORMAT_AUTO;
  int c;

  while ((c = getopt_long(argc, argv, "f:r:Uqh", longopts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (sl_format_parse(optarg, &fmt) < 0)
        return cli_fail("check", "%s", sl_last_error());
      break;
    case 'r':
      if (strcmp(optarg, "leaks") == 0)
        repair = SL_CHECK_REPAIR_LEAKS;
      else if (strcmp(optarg, "all") == 0)
        repair = SL_CHECK_REPAIR_LEAKS | SL_CHECK_REPAIR_ALL;
      else
        return cli_fail("check", "-r: '%s' is not leaks or all", optarg);
      break;
    case 'O':
      if (strcmp(optarg, "json") == 0)
        json = true;
      else if (strcmp(optarg, "human") != 0)
        return cli_fail("check", "--output: '%s' is not human or json", optarg);
      break;
    case 'U': force_share = true; break;
    case 'q': quiet = true; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(usage_text, stderr);
    return cli_fail("check", optind >= argc ? "no FILE given" : "too many arguments");
  }
  const char *file = argv[optind];
  if (force_share && repair)
    return cli_fail("check", "%s: -U (force-share) is for read-only checks, "
                    "not with -r", file);

  /* Probe the format the way open does, so a raw file says "raw". */
  struct sl_image_open_opts oo = {.format = fmt, .read_only = true, .no_backing = true,
                                .force_share = force_share};
  struct sl_image *img;
  const char *fmt_name;
  bool checkable;
  if (sl_image_open(file, &oo, &img) == 0) {
    fmt_name = sl_format_name(sl_image_format(img));
    checkable = sl_image_format(img) == SL_FORMAT_QCOW2;
    sl_image_close(img);
  } else if (fmt != SL_FORMAT_RAW && has_qcow2_magic(file)) {
    /* A qcow2 image whose tables lie past the end of the file or overlap
     * does not open for I/O, but check opens it as qemu-img's does and
     * reports (and repairs) what it finds. */
    fmt_name = "qcow2";
    checkable = true;
  } else {
    return cli_fail("check", "%s", sl_last_error());
  }
  if (!checkable) {
    /* qemu-img's answer and exit status for formats without metadata. */
    fprintf(stderr, "sluice check: %s: this image format (%s) does not support checks\n",
            file, fmt_name);
    return 63;
  }

  struct sl_check_result res;
  if (sl_image_check(file, repair | (force_share ? SL_CHECK_FORCE_SHARE : 0),
                     &res) < 0)
    return cli_fail("check", "%s", sl_last_error());
  if (repair && (res.leaks_fixed || res.corruptions_fixed)) {
    if (!json && !quiet)
      printf("The following inconsistencies were found and repaired:\n\n"
             "    %" PRId64 " leaked clusters\n    %" PRId64 " corruptions\n\n"
             "Double checking the fixed image now...\n",
             res.leaks_fixed, res.corruptions_fixed);
    struct sl_check_result again;
    if (sl_image_check(file, 0, &again) < 0)
      return cli_fail("check", "%s", sl_last_error());
    again.leaks_fixed = res.leaks_fixed;
    again.corruptions_fixed = res.corruptions_fixed;
    res = again;
  }
  if (json)
    print_json(file, fmt_name, &res);
  else if (!quiet)
    print_human(&res);
  return exit_code(&res);
}
