/* sluice io: read, write, zero, discard and map ranges of an image or disk,
 * for scripts, tests and the demo (a small qemu-io).  Operations run in
 * order; the first failure stops the rest and sets the exit status. */
#include <ctype.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/sluice.h>
#include "common/util.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

#define MAX_WORDS 16

static const char usage_text[] =
  "Usage: sluice io [-f FMT] [-r] [-U] [--at FILTER] FILE OP [ARGS]...\n"
  "       sluice io [-f FMT] [-r] [-U] [--at FILTER] -c 'OP ARGS' [-c ...] FILE\n"
  "-U (--force-share): read an image another process writes (no writes)\n"
  "\n"
  "Operations (offsets and lengths take K, M, G suffixes):\n"
  "  read [-P BYTE] [-v] OFF LEN   read; -P verifies every byte, -v hexdumps\n"
  "  write [-P BYTE | -s STRING | -i FILE] OFF [LEN]\n"
  "                                write a pattern (default 0xcd), a string or a file\n"
  "  zero [-u] OFF LEN             write zeroes (-u: the range may be deallocated)\n"
  "  discard OFF LEN               discard (reads back as zeros or backing data)\n"
  "  flush                         make completed writes durable\n"
  "  map                           list extents: offset, length, type, layer depth\n"
  "  cat OFF LEN                   copy the bytes to standard output\n"
  "  size                          print the virtual size in bytes\n";

static int get_range(const char *op, char **w, int n, int i, uint64_t *off,
                     uint64_t *len, bool len_optional)
{
  if (i >= n)
    return cli_fail("io", "%s: OFFSET missing", op);
  if (sl_parse_size("offset", w[i], off) < 0)
    return cli_fail("io", "%s: %s", op, sl_last_error());
  if (i + 1 >= n) {
    if (len_optional)
      return 0;
    return cli_fail("io", "%s: LENGTH missing", op);
  }
  if (sl_parse_size("length", w[i + 1], len) < 0)
    return cli_fail("io", "%s: %s", op, sl_last_error());
  if (i + 2 < n)
    return cli_fail("io", "%s: unexpected argument '%s'", op, w[i + 2]);
  return 0;
}

static int parse_pattern(const char *op, const char *s, int *pattern)
{
  uint64_t v;
  if (sl_parse_uint("pattern", s, 0, 255, &v) < 0)
    return cli_fail("io", "%s: -P %s: %s", op, s, sl_last_error());
  *pattern = (int)v;
  return 0;
}

static void hexdump(const unsigned char *p, size_t len, uint64_t base)
{
  for (size_t i = 0; i < len; i += 16) {
    printf("%08" PRIx64 ":  ", base + i);
    for (size_t j = 0; j < 16; j++)
      if (i + j < len)
        printf("%02x ", p[i + j]);
      else
        printf("   ");
    printf(" ");
    for (size_t j = 0; j < 16 && i + j < len; j++)
      putchar(isprint(p[i + j]) ? p[i + j] : '.');
    putchar('\n');
  }
}

static int op_read(struct sl_handle *h, char **w, int n, bool to_stdout)
{
  int pattern = -1, i = 1;
  bool verbose = false;
  for (; i < n && w[i][0] == '-' && w[i][1]; i++) {
    if (strcmp(w[i], "-P") == 0 && i + 1 < n) {
      if (parse_pattern("read", w[++i], &pattern))
        return 1;
    } else if (strcmp(w[i], "-v") == 0) {
      verbose = true;
    } else {
      return cli_fail("io", "read: unknown option '%s'", w[i]);
    }
  }
  uint64_t off, len = 0;
  if (get_range(w[0], w, n, i, &off, &len, false))
    return 1;
  CLEANUP_FREE unsigned char *buf = malloc(len ? len : 1);
  if (!buf)
    return cli_fail("io", "read: cannot allocate %" PRIu64 " bytes", len);
  if (sl_disk_pread(h, buf, len, off, 0) < 0)
    return cli_fail("io", "read at %" PRIu64 ": %s", off, sl_last_error());
  if (to_stdout) {
    if (fwrite(buf, 1, len, stdout) != len)
      return cli_fail("io", "cat: write to standard output failed");
    return 0;
  }
  if (pattern >= 0)
    for (uint64_t k = 0; k < len; k++)
      if (buf[k] != pattern)
        return cli_fail("io", "pattern verification failed at offset %" PRIu64
                        ": 0x%02x, expected 0x%02x", off + k, buf[k], pattern);
  if (verbose)
    hexdump(buf, len, off);
  printf("read %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
  return 0;
}

static int op_write(struct sl_handle *h, char **w, int n)
{
  int pattern = 0xcd, i = 1;
  const char *str = NULL, *infile = NULL;
  for (; i < n && w[i][0] == '-' && w[i][1]; i++) {
    if (strcmp(w[i], "-P") == 0 && i + 1 < n) {
      if (parse_pattern("write", w[++i], &pattern))
        return 1;
    } else if (strcmp(w[i], "-s") == 0 && i + 1 < n) {
      str = w[++i];
    } else if (strcmp(w[i], "-i") == 0 && i + 1 < n) {
      infile = w[++i];
    } else {
      return cli_fail("io", "write: unknown option '%s'", w[i]);
    }
  }
  uint64_t off, len = UINT64_MAX;
  if (get_range("write", w, n, i, &off, &len, str || infile))
    return 1;
  CLEANUP_FREE char *buf = NULL;
  if (infile) {
    FILE *f = fopen(infile, "rb");
    if (!f)
      return cli_fail("io", "write: %s: %m", infile);
    fseek(f, 0, SEEK_END);
    long fsize = ftell(f);
    rewind(f);
    if (len == UINT64_MAX)
      len = (uint64_t)(fsize > 0 ? fsize : 0);
    buf = calloc(1, len ? len : 1);
    size_t got = buf ? fread(buf, 1, len, f) : 0;
    fclose(f);
    if (!buf)
      return cli_fail("io", "write: out of memory");
    (void)got; /* a short file is padded with zeros */
  } else if (str) {
    if (len == UINT64_MAX)
      len = strlen(str);
    buf = calloc(1, len ? len : 1);
    if (!buf)
      return cli_fail("io", "write: out of memory");
    memcpy(buf, str, SL_MIN(len, strlen(str)));
  } else {
    buf = malloc(len ? len : 1);
    if (!buf)
      return cli_fail("io", "write: cannot allocate %" PRIu64 " bytes", len);
    memset(buf, pattern, len);
  }
  if (sl_disk_pwrite(h, buf, len, off, 0) < 0)
    return cli_fail("io", "write at %" PRIu64 ": %s", off, sl_last_error());
  printf("wrote %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
  return 0;
}

static int op_zero_discard(struct sl_handle *h, char **w, int n, bool zero)
{
  int i = 1;
  uint32_t flags = SL_NO_HOLE;
  if (zero && i < n && strcmp(w[i], "-u") == 0) {
    flags = 0;
    i++;
  }
  uint64_t off, len;
  if (get_range(w[0], w, n, i, &off, &len, false))
    return 1;
  int r = zero ? sl_disk_write_zeroes(h, off, len, flags) : sl_disk_discard(h, off, len);
  if (r < 0)
    return cli_fail("io", "%s at %" PRIu64 ": %s", w[0], off, sl_last_error());
  printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n",
         zero ? "zeroed" : "discarded", len, len, off);
  return 0;
}

static int op_map(struct sl_handle *h)
{
  static const char *const names[] = {"data", "zero", "unallocated"};
  uint64_t size = sl_disk_size(h), off = 0;
  while (off < size) {
    struct sl_extent e;
    if (sl_disk_block_status(h, off, size - off, &e) < 0)
      return cli_fail("io", "map at %" PRIu64 ": %s", off, sl_last_error());
    printf("%" PRIu64 " %" PRIu64 " %s %d\n", off, e.length, names[e.type], e.depth);
    off += e.length;
  }
  return 0;
}

static bool op_writes(const char *op)
{
  return strcmp(op, "write") == 0 || strcmp(op, "zero") == 0 ||
         strcmp(op, "discard") == 0 || strcmp(op, "flush") == 0;
}

static int run_op(struct sl_handle *h, char **w, int n)
{
  const char *op = w[0];
  if (strcmp(op, "read") == 0)
    return op_read(h, w, n, false);
  if (strcmp(op, "cat") == 0)
    return op_read(h, w, n, true);
  if (strcmp(op, "write") == 0)
    return op_write(h, w, n);
  if (strcmp(op, "zero") == 0 || strcmp(op, "discard") == 0)
    return op_zero_discard(h, w, n, op[0] == 'z');
  if (strcmp(op, "flush") == 0)
    return sl_disk_flush(h) < 0 ? cli_fail("io", "flush: %s", sl_last_error()) : 0;
  if (strcmp(op, "map") == 0)
    return op_map(h);
  if (strcmp(op, "size") == 0) {
    printf("%" PRIu64 "\n", sl_disk_size(h));
    return 0;
  }
  return cli_fail("io", "unknown operation '%s' (read, write, zero, discard, "
                  "flush, map, cat, size)", op);
}

/* Split a -c string on blanks, honouring 'single' and "double" quotes. */
static int split_words(char *s, char **w)
{
  int n = 0;
  while (*s) {
    while (isspace((unsigned char)*s))
      s++;
    if (!*s)
      break;
    if (n == MAX_WORDS)
      return -1;
    char quote = (*s == '\'' || *s == '"') ? *s++ : 0;
    w[n++] = s;
    while (*s && (quote ? *s != quote : !isspace((unsigned char)*s)))
      s++;
    if (*s)
      *s++ = '\0';
  }
  return n;
}

int cmd_io(int argc, char **argv)
{
  static const struct option longopts[] = {
    {"help", no_argument, NULL, 'h'},
    {"at", required_argument, NULL, 'A'},
    {"force-share", no_argument, NULL, 'U'},
    {NULL, 0, NULL, 0},
  };
  struct sl_disk_open_opts o = {0};
  const char *at = NULL;
  char *cmds[64];
  int ncmds = 0, c;
  bool read_only = false;

  /* '+': options end at FILE, so an operation's own -P is not ours. */
  while ((c = getopt_long(argc, argv, "+f:c:rUh", longopts, NULL)) != -1) {
    switch (c) {
    case 'f':
      if (sl_format_parse(optarg, &o.format) < 0)
        return cli_fail("io", "%s", sl_last_error());
      break;
    case 'c':
      if (ncmds == (int)SL_ARRAY_SIZE(cmds))
        return cli_fail("io", "too many -c operations");
      cmds[ncmds++] = optarg;
      break;
    case 'r': read_only = true; break;
    case 'U': o.force_share = true; break;
    case 'A': at = optarg; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  if (optind >= argc) {
    fputs(usage_text, stderr);
    return cli_fail("io", "no FILE given");
  }
  const char *file = argv[optind++];
  char **inline_words = argv + optind;
  int n_inline = argc - optind;
  if (ncmds == 0 && n_inline == 0)
    return cli_fail("io", "no operation given");
  if (ncmds > 0 && n_inline > 0)
    return cli_fail("io", "give operations either with -c or after FILE, not both");

  bool writes = n_inline > 0 && op_writes(inline_words[0]);
  for (int i = 0; i < ncmds; i++) {
    char first[16] = "";
    sscanf(cmds[i], " %15s", first);
    writes |= op_writes(first);
  }
  o.read_only = read_only || !writes;
  if (o.force_share && !o.read_only)
    return cli_fail("io", "%s: -U (force-share) is for reads only, not writes", file);
  struct sl_disk *disk;
  if (sl_disk_open(file, &o, &disk) < 0)
    return cli_fail("io", "%s", sl_last_error());
  warn_if_probed_raw(disk, file);
  struct sl_handle *h = at ? sl_disk_at(disk, at) : sl_disk_top(disk);
  int ret = 0;
  if (!h) {
    ret = cli_fail("io", "%s: --at %s: %s", file, at, sl_last_error());
  } else if (ncmds == 0) {
    ret = run_op(h, inline_words, n_inline);
  } else {
    for (int i = 0; i < ncmds && ret == 0; i++) {
      char *w[MAX_WORDS];
      int n = split_words(cmds[i], w);
      if (n < 0)
        ret = cli_fail("io", "'%s': too many words", cmds[i]);
      else if (n > 0)
        ret = run_op(h, w, n);
    }
  }
  fflush(stdout);
  if (sl_disk_close(disk) < 0 && ret == 0)
    ret = cli_fail("io", "%s: close: %s", file, sl_last_error());
  return ret;
}
