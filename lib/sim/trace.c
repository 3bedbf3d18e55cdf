/* Trace readers: one small parser per format, all feeding one growing
 * array of block ids.
 *
 * The expansion rules are the ones the anchors in shared/traces/ANCHORS.md
 * assume (see shared/traces/README.md): a request for a byte or sector
 * range becomes one access per 4 KiB block it touches, in order; ARC's lis
 * lines become one access per 512-byte page; oracleGeneral records are
 * whole requests and stay one access each.  Every parser checks what it
 * reads, and a bad line or a cut-off record stops the read with a message
 * naming the file, the line or record, and what is wrong.
 */
#include "sim/trace.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "sim/input.h"
#include "sim/simhash.h"
#include "sluice/error.h"

static int push(struct sl_trace *t, uint64_t block)
{
  if (t->len == t->cap) {
    uint64_t ncap = t->cap ? t->cap * 2 : 1 << 16;
    uint64_t *nb = realloc(t->blocks, ncap * sizeof *nb);
    if (!nb)
      return sl_error(ENOMEM, "out of memory after %" PRIu64 " accesses",
                      t->len);
    t->blocks = nb;
    t->cap = ncap;
  }
  t->blocks[t->len++] = block;
  return 0;
}

/* Blocks FIRST..LAST inclusive.  Refuses absurd ranges (a corrupt length)
 * rather than allocating without bound. */
static int push_range(struct sl_trace *t, uint64_t first, uint64_t last,
                      const char *where)
{
  if (last < first)
    last = first;
  if (last - first >= (1u << 24))
    return sl_error(EINVAL, "%s: request spans %" PRIu64
                    " blocks; the length looks corrupt", where,
                    last - first + 1);
  for (uint64_t b = first; b <= last; b++) {
    int r = push(t, b);
    if (r < 0)
      return r;
  }
  return 0;
}

static inline uint16_t le16(const uint8_t *p) { return p[0] | p[1] << 8; }
static inline uint32_t le32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
static inline uint64_t le64(const uint8_t *p)
{
  return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* ---- binary formats ---- */

static bool scsi_is_read(uint16_t cmd)
{
  return cmd == 0x08 || cmd == 0x28 || cmd == 0x88 || cmd == 0xa8;
}

static int read_vscsi(struct sl_input *in, const struct sl_trace_options *o,
                      struct sl_trace *t)
{
  const uint8_t *p;
  int64_t n = sl_input_peek(in, 80, &p);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return 0;
  /* v1: 32-byte records, version at 14; v2: 40-byte, version at 2. */
  int version = 0;
  if (n >= 32 && le16(p + 14) >> 8 == 1 && (n < 64 || le16(p + 46) >> 8 == 1))
    version = 1;
  else if (n >= 40 && le16(p + 2) >> 8 == 2 &&
           (n < 80 || le16(p + 42) >> 8 == 2))
    version = 2;
  if (!version)
    return sl_error(EINVAL, "%s: not a VSCSI trace (no v1 or v2 version "
                    "field in the first records)", sl_input_name(in));
  size_t rec = version == 1 ? 32 : 40;
  char where[256];
  for (uint64_t i = 0;; i++) {
    n = sl_input_peek(in, rec, &p);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return 0;
    if ((size_t)n < rec)
      return sl_error(EINVAL, "%s: record %" PRIu64 " is truncated (%" PRId64
                      " of %zu bytes)", sl_input_name(in), i, n, rec);
    uint32_t len;
    uint16_t cmd, ver;
    uint64_t lbn;
    if (version == 1) {
      len = le32(p + 4);
      cmd = le16(p + 12);
      ver = le16(p + 14);
      lbn = le64(p + 16);
    } else {
      cmd = le16(p);
      ver = le16(p + 2);
      len = le32(p + 8);
      lbn = le64(p + 16);
    }
    if (ver >> 8 != version)
      return sl_error(EINVAL, "%s: record %" PRIu64 " has version %u in a "
                      "v%d trace", sl_input_name(in), i, ver >> 8, version);
    sl_input_consume(in, rec);
    if (o->reads_only && !scsi_is_read(cmd))
      continue;
    uint64_t sectors = (len + 511) / 512;
    if (sectors == 0)
      sectors = 1;
    snprintf(where, sizeof where, "%s: record %" PRIu64, sl_input_name(in), i);
    int r = push_range(t, lbn / 8, (lbn + sectors - 1) / 8, where);
    if (r < 0)
      return r;
  }
}

static int read_fixed(struct sl_input *in, struct sl_trace *t, size_t rec,
                      const char *what)
{
  for (uint64_t i = 0;; i++) {
    const uint8_t *p;
    int64_t n = sl_input_peek(in, rec, &p);
    if (n < 0)
      return (int)n;
    if (n == 0)
      return 0;
    if ((size_t)n < rec)
      return sl_error(EINVAL, "%s: %s %" PRIu64 " is truncated (%" PRId64
                      " of %zu bytes)", sl_input_name(in), what, i, n, rec);
    int r = push(t, rec == 4 ? le32(p) : le64(p + 4));
    if (r < 0)
      return r;
    sl_input_consume(in, rec);
  }
}

static int read_oracle(struct sl_input *in, const struct sl_trace_options *o,
                       struct sl_trace *t)
{
  (void)o;
  return read_fixed(in, t, 24, "record");
}

static int read_u32(struct sl_input *in, const struct sl_trace_options *o,
                    struct sl_trace *t)
{
  (void)o;
  return read_fixed(in, t, 4, "entry");
}

/* ---- text formats ---- */

/* Parse an unsigned decimal field ending at a separator or the end. */
static bool parse_u64(const char *s, char **end, uint64_t *v)
{
  while (*s == ' ' || *s == '\t')
    s++;
  if (*s < '0' || *s > '9')
    return false;
  errno = 0;
  *v = strtoull(s, end, 10);
  return errno == 0;
}

static bool at_field_end(const char *s, char sep)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return *s == sep || *s == '\0';
}

static int bad_line(struct sl_input *in, uint64_t lineno, const char *why,
                    const char *line)
{
  return sl_error(EINVAL, "%s: line %" PRIu64 ": %s: \"%.60s\"",
                  sl_input_name(in), lineno, why, line);
}

static bool blank(const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return *s == '\0';
}

static int read_txt(struct sl_input *in, const struct sl_trace_options *o,
                    struct sl_trace *t)
{
  (void)o;
  char *line, *end;
  for (uint64_t lineno = 1;; lineno++) {
    int64_t n = sl_input_line(in, &line);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(line) || strcmp(line, "*") == 0)
      continue;
    uint64_t b;
    if (!parse_u64(line, &end, &b) || !at_field_end(end, '\0'))
      return bad_line(in, lineno, "expected one block number", line);
    int r = push(t, b);
    if (r < 0)
      return r;
  }
}

static int read_lis(struct sl_input *in, const struct sl_trace_options *o,
                    struct sl_trace *t)
{
  (void)o;
  char *line, *end;
  char where[256];
  for (uint64_t lineno = 1;; lineno++) {
    int64_t n = sl_input_line(in, &line);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(line))
      continue;
    uint64_t start, count;
    if (!parse_u64(line, &end, &start) || !parse_u64(end, &end, &count))
      return bad_line(in, lineno, "expected \"start count ignored reqno\"",
                      line);
    if (count == 0)
      continue;
    snprintf(where, sizeof where, "%s: line %" PRIu64, sl_input_name(in),
             lineno);
    int r = push_range(t, start, start + count - 1, where);
    if (r < 0)
      return r;
  }
}

/* Split a CSV line in place into at most MAX fields; returns the count. */
static int split_csv(char *line, char **fields, int max)
{
  int n = 0;
  fields[n++] = line;
  for (char *p = line; *p && n < max; p++)
    if (*p == ',') {
      *p = '\0';
      fields[n++] = p + 1;
    }
  return n;
}

static bool field_u64(const char *s, uint64_t *v)
{
  char *end;
  return parse_u64(s, &end, v) && at_field_end(end, '\0');
}

/* Bytes [off, off+size) as 4 KiB blocks; a zero size touches one block. */
static int push_bytes(struct sl_trace *t, uint64_t base, uint64_t off,
                      uint64_t size, const char *where)
{
  uint64_t last = size ? (off + size - 1) / 4096 : off / 4096;
  return push_range(t, base + off / 4096, base + last, where);
}

static int read_msr(struct sl_input *in, const struct sl_trace_options *o,
                    struct sl_trace *t)
{
  char *line, *f[8];
  char where[256];
  for (uint64_t lineno = 1;; lineno++) {
    int64_t n = sl_input_line(in, &line);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(line) || (lineno == 1 && strncmp(line, "Timestamp", 9) == 0))
      continue;
    char copy[128];
    snprintf(copy, sizeof copy, "%s", line);
    uint64_t off, size;
    if (split_csv(line, f, 8) != 7 || !field_u64(f[4], &off) ||
        !field_u64(f[5], &size))
      return bad_line(in, lineno, "expected \"timestamp,host,disk,type,"
                      "offset,size,latency\"", copy);
    bool is_read = strcasecmp(f[3], "Read") == 0;
    if (!is_read && strcasecmp(f[3], "Write") != 0)
      return bad_line(in, lineno, "type is neither Read nor Write", copy);
    if (o->reads_only && !is_read)
      continue;
    snprintf(where, sizeof where, "%s: line %" PRIu64, sl_input_name(in),
             lineno);
    int r = push_bytes(t, 0, off, size, where);
    if (r < 0)
      return r;
  }
}

/* Tencent CBS: volumes are separate disks, so the volume id goes into the
 * top bits of the block id to keep their blocks apart. */
static int read_tencent(struct sl_input *in, const struct sl_trace_options *o,
                        struct sl_trace *t)
{
  char *line, *f[6];
  char where[256];
  for (uint64_t lineno = 1;; lineno++) {
    int64_t n = sl_input_line(in, &line);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(line))
      continue;
    char copy[128];
    snprintf(copy, sizeof copy, "%s", line);
    uint64_t ts, off, size, op, vol;
    if (split_csv(line, f, 6) != 5 || !field_u64(f[0], &ts) ||
        !field_u64(f[1], &off) || !field_u64(f[2], &size) ||
        !field_u64(f[3], &op) || !field_u64(f[4], &vol) || op > 1)
      return bad_line(in, lineno, "expected \"timestamp,offset,size,"
                      "iotype(0|1),volume\"", copy);
    if (o->reads_only && op != 0)
      continue;
    if (off >= (1ULL << 40) / 8 * 512 || vol >= (1ULL << 24))
      return bad_line(in, lineno, "offset or volume out of range", copy);
    snprintf(where, sizeof where, "%s: line %" PRIu64, sl_input_name(in),
             lineno);
    int r = push_bytes(t, vol << 40, off * 512, size * 512, where);
    if (r < 0)
      return r;
  }
}

/* SYSTOR'17: Timestamp,Response,IOType(R/W),LUN,Offset(bytes),Size(bytes). */
static int read_systor(struct sl_input *in, const struct sl_trace_options *o,
                       struct sl_trace *t)
{
  char *line, *f[7];
  char where[256];
  for (uint64_t lineno = 1;; lineno++) {
    int64_t n = sl_input_line(in, &line);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(line) || strncmp(line, "Timestamp", 9) == 0)
      continue;
    char copy[128];
    snprintf(copy, sizeof copy, "%s", line);
    uint64_t lun, off, size;
    if (split_csv(line, f, 7) != 6 || !field_u64(f[3], &lun) ||
        !field_u64(f[4], &off) || !field_u64(f[5], &size) ||
        (strcmp(f[2], "R") != 0 && strcmp(f[2], "W") != 0))
      return bad_line(in, lineno, "expected \"timestamp,response,R|W,lun,"
                      "offset,size\"", copy);
    if (o->reads_only && f[2][0] != 'R')
      continue;
    if (lun >= (1ULL << 16) || off >= (1ULL << 58))
      return bad_line(in, lineno, "LUN or offset out of range", copy);
    snprintf(where, sizeof where, "%s: line %" PRIu64, sl_input_name(in),
             lineno);
    int r = push_bytes(t, lun << 48, off, size, where);
    if (r < 0)
      return r;
  }
}

/* ---- dispatch ---- */

struct format {
  const char *name;
  const char *description;
  int (*read)(struct sl_input *, const struct sl_trace_options *,
              struct sl_trace *);
};

static const struct format formats[] = {
  { "vscsi", "VMware vscsiStats v1/v2 binary, expanded to 4 KiB blocks",
    read_vscsi },
  { "oracle", "libCacheSim oracleGeneral binary, one access per record",
    read_oracle },
  { "lis", "ARC traces: \"start n _ reqno\" lines, n page accesses each",
    read_lis },
  { "txt", "one block number per line, \"*\" lines skipped", read_txt },
  { "u32", "flat little-endian uint32 block numbers", read_u32 },
  { "msr", "MSR Cambridge CSV, expanded to 4 KiB blocks", read_msr },
  { "tencent", "Tencent CBS CSV (sectors), 4 KiB blocks per volume",
    read_tencent },
  { "systor", "SYSTOR'17 VDI CSV, 4 KiB blocks per LUN", read_systor },
};

#define N_FORMATS (sizeof formats / sizeof formats[0])

const char *const *sl_trace_formats(void)
{
  static const char *const names[] = { "vscsi", "oracle", "lis", "txt",
                                        "u32", "msr", "tencent", "systor",
                                        NULL };
  _Static_assert(sizeof names / sizeof names[0] == N_FORMATS + 1,
                 "format names out of step");
  return names;
}

static const struct format *find_format(const char *name)
{
  for (size_t i = 0; i < N_FORMATS; i++)
    if (strcmp(formats[i].name, name) == 0)
      return &formats[i];
  return NULL;
}

const char *sl_trace_format_description(const char *name)
{
  const struct format *f = find_format(name);
  return f ? f->description : NULL;
}

void sl_trace_free(struct sl_trace *t)
{
  free(t->name);
  free(t->blocks);
  memset(t, 0, sizeof *t);
}

int sl_trace_read(const char *path, const char *format,
                  const struct sl_trace_options *opts, struct sl_trace *t)
{
  static const struct sl_trace_options defaults;
  memset(t, 0, sizeof *t);
  const struct format *f = find_format(format);
  if (!f) {
    char list[256] = "";
    for (size_t i = 0; i < N_FORMATS; i++) {
      strcat(list, i ? ", " : "");
      strcat(list, formats[i].name);
    }
    return sl_error(EINVAL, "unknown trace format \"%s\" (valid: %s)", format,
                    list);
  }
  struct sl_input *in;
  int r = sl_input_open(path, &in);
  if (r < 0)
    return r;
  t->name = strdup(path);
  r = t->name ? f->read(in, opts ? opts : &defaults, t) : -ENOMEM;
  sl_input_close(in);
  if (r < 0) {
    sl_trace_free(t);
    return r;
  }
  return 0;
}

int64_t sl_trace_footprint(const struct sl_trace *t)
{
  struct sl_simhash seen;
  if (sl_simhash_init(&seen, t->len) < 0)
    return sl_error(ENOMEM, "out of memory counting the footprint");
  for (uint64_t i = 0; i < t->len; i++)
    if (sl_simhash_get(&seen, t->blocks[i]) == SL_SIMHASH_EMPTY)
      sl_simhash_put(&seen, t->blocks[i], 0);
  int64_t n = (int64_t)seen.count;
  sl_simhash_free(&seen);
  return n;
}

int sl_trace_next_use(const struct sl_trace *t, uint64_t **next)
{
  if (t->len >= UINT32_MAX)
    return sl_error(EOVERFLOW, "%s: too many accesses for next-use indices",
                    t->name);
  uint64_t *nu = malloc((t->len ? t->len : 1) * sizeof *nu);
  struct sl_simhash last;
  if (!nu || sl_simhash_init(&last, t->len) < 0) {
    free(nu);
    return sl_error(ENOMEM, "out of memory computing next uses");
  }
  /* Walk backwards remembering where each block is seen next. */
  for (uint64_t i = t->len; i-- > 0;) {
    uint32_t j = sl_simhash_get(&last, t->blocks[i]);
    nu[i] = j == SL_SIMHASH_EMPTY ? UINT64_MAX : j;
    sl_simhash_put(&last, t->blocks[i], (uint32_t)i);
  }
  sl_simhash_free(&last);
  *next = nu;
  return 0;
}
