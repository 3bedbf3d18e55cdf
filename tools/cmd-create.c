/* sluice create: make a new qcow2 or raw image, optionally as a linked
 * clone (overlay) of a backing image.  Options follow qemu-img create. */
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

static const char usage_text[] =
  "Usage: sluice create [-f qcow2|raw] [-b BACKING [-F FMT]] [-o OPTIONS] [-q] FILE [SIZE]\n"
  "\n"
  "Create the image FILE of SIZE bytes (K, M, G, T suffixes).  With -b the new\n"
  "image is an overlay of BACKING (a path relative to FILE's directory) and\n"
  "SIZE defaults to the backing image's size.\n"
  "\n"
  "  -f FMT        image format: qcow2 (default) or raw\n"
  "  -b BACKING    backing file\n"
  "  -F FMT        backing file format (probed if not given, and recorded)\n"
  "  -o OPTIONS    cluster_size=N (512..2M), extended_l2=on|off,\n"
  "                compression_type=zlib|zstd, backing_file=, backing_fmt=,\n"
  "                compat=0.10|1.1, lazy_refcounts=on|off, refcount_bits=N,\n"
  "                preallocation=off|metadata|falloc|full\n"
  "  -q            quiet\n";

struct create_args {
  struct sl_image_create_opts o;
  char *backing_fmt_name;
};

static int create_option(void *opaque, const char *k, const char *v)
{
  struct create_args *a = opaque;
  if (strcmp(k, "help") == 0 || strcmp(k, "?") == 0) {
    fputs("cluster_size=N, extended_l2=on|off, compression_type=zlib|zstd, "
          "backing_file=FILE, backing_fmt=FMT, compat=0.10|1.1, "
          "lazy_refcounts=on|off, refcount_bits=N, "
          "preallocation=off|metadata|falloc|full\n", stdout);
    exit(0);
  }
  if (strcmp(k, "data_file") == 0 || strcmp(k, "data_file_raw") == 0)
    return cli_fail("create", "-o %s: external data files are not supported "
                    "by sluice", k);
  if (strcmp(k, "encryption") == 0 || strncmp(k, "encrypt.", 8) == 0 ||
      strcmp(k, "encrypt") == 0)
    return cli_fail("create", "-o %s: encrypted qcow2 images are not supported "
                    "by sluice (use the crypt filter)", k);
  if (!v && strcmp(k, "extended_l2") != 0 && strcmp(k, "lazy_refcounts") != 0)
    return cli_fail("create", "option '%s' needs a value", k);
  if (strcmp(k, "cluster_size") == 0) {
    uint64_t cs;
    if (sl_parse_size("cluster_size", v, &cs) < 0)
      return cli_fail("create", "%s", sl_last_error());
    if (cs < 512 || cs > 2 * 1024 * 1024 || !SL_IS_POWER_OF_2(cs))
      return cli_fail("create", "cluster_size %" PRIu64
                      " must be a power of two between 512 and 2M", cs);
    a->o.cluster_size = (uint32_t)cs;
  } else if (strcmp(k, "extended_l2") == 0) {
    int b = parse_bool(v);
    if (b < 0)
      return cli_fail("create", "extended_l2: '%s' is not on or off", v);
    a->o.extended_l2 = b;
  } else if (strcmp(k, "compression_type") == 0) {
    if (strcmp(v, "zlib") != 0 && strcmp(v, "zstd") != 0)
      return cli_fail("create", "compression_type: '%s' is not zlib or zstd", v);
    a->o.compression_type = v;
  } else if (strcmp(k, "lazy_refcounts") == 0) {
    int b = parse_bool(v);
    if (b < 0)
      return cli_fail("create", "lazy_refcounts: '%s' is not on or off", v);
    a->o.lazy_refcounts = b;
  } else if (strcmp(k, "compat") == 0) {
    if (strcmp(v, "0.10") == 0 || strcmp(v, "v2") == 0)
      a->o.compat = 2;
    else if (strcmp(v, "1.1") == 0 || strcmp(v, "v3") == 0)
      a->o.compat = 3;
    else
      return cli_fail("create", "compat: '%s' is not 0.10 or 1.1", v);
  } else if (strcmp(k, "refcount_bits") == 0) {
    uint64_t rb;
    if (sl_parse_uint("refcount_bits", v, 1, 64, &rb) < 0 || !SL_IS_POWER_OF_2(rb))
      return cli_fail("create", "refcount_bits: '%s' is not a power of two "
                      "between 1 and 64", v);
    a->o.refcount_bits = (unsigned)rb;
  } else if (strcmp(k, "preallocation") == 0) {
    if (sl_prealloc_parse(v, &a->o.preallocation) < 0)
      return cli_fail("create", "%s", sl_last_error());
  } else if (strcmp(k, "backing_file") == 0) {
    a->o.backing_file = v;
  } else if (strcmp(k, "backing_fmt") == 0) {
    a->backing_fmt_name = (char *)v;
  } else {
    return cli_fail("create", "unknown option '%s' (see -o help)", k);
  }
  return 0;
}

int cmd_create(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  struct create_args a = {.o = {.format = SL_FORMAT_QCOW2}};
  bool quiet = false;
  uint64_t given_size = 0;
  char *optlists[16];
  int nopt = 0;
  int c;
  bool fmt_given = false;

  while ((c = getopt_long(argc, argv, "f:b:F:o:qh", longopts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (sl_format_parse(optarg, &a.o.format) < 0)
        return cli_fail("create", "%s", sl_last_error());
      fmt_given = true;
      break;
    case 'b': a.o.backing_file = optarg; break;
    case 'F': a.backing_fmt_name = optarg; break;
    case 'o':
      if (nopt == (int)SL_ARRAY_SIZE(optlists))
        return cli_fail("create", "too many -o options");
      optlists[nopt++] = optarg;
      break;
    case 'q': quiet = true; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  for (int i = 0; i < nopt; i++)
    if (kv_each(optlists[i], create_option, &a))
      return 1;
  if (a.backing_fmt_name && sl_format_parse(a.backing_fmt_name, &a.o.backing_format) < 0)
    return cli_fail("create", "backing format: %s", sl_last_error());
  if (optind >= argc) {
    fputs(usage_text, stderr);
    return cli_fail("create", "no FILE given");
  }
  const char *file = argv[optind++];
  /* An RBD image is raw (its object size is -o cluster_size), as with
   * qemu-img create rbd:... */
  bool rbd = sl_image_path_is_rbd(file);
  if (rbd && !fmt_given)
    a.o.format = SL_FORMAT_RAW;
  if (optind < argc) {
    if (sl_parse_size("size", argv[optind++], &a.o.size) < 0)
      return cli_fail("create", "%s", sl_last_error());
    a.o.size_set = true;
    /* As qemu-img: whole 512-byte sectors (the message shows what was
     * given, as qemu-img's does). */
    if (a.o.size > UINT64_MAX - 511)
      return cli_fail("create", "%s: size %" PRIu64 " is too large", file, a.o.size);
    given_size = a.o.size;
    a.o.size = SL_ROUND_UP(a.o.size, (uint64_t)512);
  } else if (!a.o.backing_file) {
    return cli_fail("create", "%s: a SIZE is needed without a backing file (-b)", file);
  }
  if (optind < argc)
    return cli_fail("create", "unexpected argument '%s'", argv[optind]);
  if (a.o.format == SL_FORMAT_RAW &&
      (a.o.backing_file || (a.o.cluster_size && !rbd) || a.o.extended_l2 || a.o.compat ||
       a.o.lazy_refcounts || a.o.refcount_bits || a.o.compression_type))
    return cli_fail("create", "%s: raw images take no backing file or qcow2 options", file);

  if (!quiet) {
    /* In qemu-img 7.2's order. */
    bool q = a.o.format == SL_FORMAT_QCOW2;
    printf("Formatting '%s', fmt=%s", file, sl_format_name(a.o.format));
    if (q)
      printf(" cluster_size=%u extended_l2=%s",
             a.o.cluster_size ? a.o.cluster_size : 65536,
             a.o.extended_l2 ? "on" : "off");
    if (q && a.o.preallocation)
      printf(" preallocation=%s", sl_prealloc_name(a.o.preallocation));
    if (q)
      printf(" compression_type=%s",
             a.o.compression_type ? a.o.compression_type : "zlib");
    if (a.o.size_set || a.o.size)
      printf(" size=%" PRIu64, given_size);
    if (!q && a.o.preallocation)
      printf(" preallocation=%s", sl_prealloc_name(a.o.preallocation));
    if (q && a.o.compat)
      printf(" compat=%s", a.o.compat == 2 ? "0.10" : "1.1");
    if (a.o.backing_file)
      printf(" backing_file=%s", a.o.backing_file);
    if (a.backing_fmt_name)
      printf(" backing_fmt=%s", a.backing_fmt_name);
    if (q)
      printf(" lazy_refcounts=%s refcount_bits=%u", a.o.lazy_refcounts ? "on" : "off",
             a.o.refcount_bits ? a.o.refcount_bits : 16);
    printf("\n");
    fflush(stdout);
  }
  if (sl_image_create(file, &a.o) < 0)
    return cli_fail("create", "%s", sl_last_error());
  return 0;
}
