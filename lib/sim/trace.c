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
 *
 * The loops are written once: next_record() steps through fixed-size
 * binary records, read_lines() through text lines (skipping blank ones and
 * keeping a copy of each for messages), and the per-format code only
 * decodes one record or line.
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
#include "sim/synth.h"
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

/* Where a reader is, for messages: "trace.vscsi: record 12". */
struct pos {
  struct sl_input *in;
  const char *unit;     /* "record", "entry", "line" */
  uint64_t no;
};

/* Blocks FIRST..LAST inclusive.  Refuses absurd ranges (a corrupt length)
 * rather than allocating without bound. */
static int push_range(struct sl_trace *t, uint64_t first, uint64_t last,
                      const struct pos *at)
{
  if (last < first)
    last = first;
  if (last - first >= (1u << 24))
    return sl_error(EINVAL, "%s: %s %" PRIu64 ": request spans %" PRIu64
                    " blocks; the length looks corrupt", sl_input_name(at->in),
                    at->unit, at->no, last - first + 1);
  for (uint64_t b = first; b <= last; b++) {
    int r = push(t, b);
    if (r < 0)
      return r;
  }
  return 0;
}

/* Bytes [off, off+size) as 4 KiB blocks; a zero size touches one block. */
static int push_bytes(struct sl_trace *t, uint64_t base, uint64_t off,
                      uint64_t size, const struct pos *at)
{
  uint64_t last = size ? (off + size - 1) / 4096 : off / 4096;
  return push_range(t, base + off / 4096, base + last, at);
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

/* Record AT->no, REC bytes, at *P: 1, 0 at the end of the input, or
 * -errno (a record cut short by the end of the file is an error). */
static int next_record(const struct pos *at, size_t rec, const uint8_t **p)
{
  int64_t n = sl_input_peek(at->in, rec, p);
  if (n < 0)
    return (int)n;
  if (n == 0)
    return 0;
  if ((size_t)n < rec)
    return sl_error(EINVAL, "%s: %s %" PRIu64 " is truncated (%" PRId64
                    " of %zu bytes)", sl_input_name(at->in), at->unit, at->no,
                    n, rec);
  return 1;
}

static bool scsi_is_read(uint16_t cmd)
{
  return cmd == 0x08 || cmd == 0x28 || cmd == 0x88 || cmd == 0xa8;
}

/* v1: 32-byte records, version at 14; v2: 40-byte, version at 2.  The
 * first two records must agree.  Returns 1, 2, 0 for neither, or -errno. */
static int vscsi_version(struct sl_input *in)
{
  const uint8_t *p;
  int64_t n = sl_input_peek(in, 80, &p);
  if (n < 0)
    return (int)n;
  if (n >= 32 && le16(p + 14) >> 8 == 1 && (n < 64 || le16(p + 46) >> 8 == 1))
    return 1;
  if (n >= 40 && le16(p + 2) >> 8 == 2 && (n < 80 || le16(p + 42) >> 8 == 2))
    return 2;
  return 0;
}

static int read_vscsi(struct sl_input *in, const struct sl_trace_options *o,
                      struct sl_trace *t)
{
  const uint8_t *p;
  int64_t n = sl_input_peek(in, 1, &p);
  if (n <= 0)
    return (int)n;
  int version = vscsi_version(in);
  if (version < 0)
    return version;
  if (!version)
    return sl_error(EINVAL, "%s: not a VSCSI trace (no v1 or v2 version "
                    "field in the first records)", sl_input_name(in));
  size_t rec = version == 1 ? 32 : 40;
  struct pos at = { in, "record", 0 };
  for (;; at.no++) {
    int r = next_record(&at, rec, &p);
    if (r <= 0)
      return r;
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
                      "v%d trace", sl_input_name(in), at.no, ver >> 8,
                      version);
    sl_input_consume(in, rec);
    if (o->reads_only && !scsi_is_read(cmd))
      continue;
    uint64_t sectors = ((uint64_t)len + 511) / 512; /* len may be ~4 GiB */
    if (sectors == 0)
      sectors = 1;
    r = push_range(t, lbn / 8, (lbn + sectors - 1) / 8, &at);
    if (r < 0)
      return r;
  }
}

/* One block id per REC-byte record: a uint32 (u32) or the uint64 at
 * offset 4 (oracleGeneral's obj_id). */
static int read_fixed(struct sl_input *in, struct sl_trace *t, size_t rec,
                      const char *what)
{
  struct pos at = { in, what, 0 };
  for (;; at.no++) {
    const uint8_t *p;
    int r = next_record(&at, rec, &p);
    if (r <= 0)
      return r;
    r = push(t, rec == 4 ? le32(p) : le64(p + 4));
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

/* One non-blank line handed to a format's parser. */
struct line {
  struct pos at;
  const struct sl_trace_options *o;
  struct sl_trace *t;
  char *text;           /* the line; parsers may split it in place */
  char copy[128];       /* the line as read, for messages */
};

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

static int bad_line(const struct line *l, const char *why)
{
  return sl_error(EINVAL, "%s: line %" PRIu64 ": %s: \"%.60s\"",
                  sl_input_name(l->at.in), l->at.no, why, l->copy);
}

static bool blank(const char *s)
{
  while (*s == ' ' || *s == '\t')
    s++;
  return *s == '\0';
}

/* Hand every non-blank line to PARSE (0 or -errno); stop at the end or
 * the first error. */
static int read_lines(struct sl_input *in, const struct sl_trace_options *o,
                      struct sl_trace *t, int (*parse)(struct line *))
{
  struct line l = { .at = { in, "line", 0 }, .o = o, .t = t };
  for (l.at.no = 1;; l.at.no++) {
    int64_t n = sl_input_line(in, &l.text);
    if (n == -1)
      return 0;
    if (n < 0)
      return (int)n;
    if (blank(l.text))
      continue;
    snprintf(l.copy, sizeof l.copy, "%s", l.text);
    int r = parse(&l);
    if (r < 0)
      return r;
  }
}

static int parse_txt(struct line *l)
{
  char *end;
  uint64_t b;
  if (strcmp(l->text, "*") == 0)
    return 0;
  if (!parse_u64(l->text, &end, &b) || !at_field_end(end, '\0'))
    return bad_line(l, "expected one block number");
  return push(l->t, b);
}

static int parse_lis(struct line *l)
{
  char *end;
  uint64_t start, count;
  if (!parse_u64(l->text, &end, &start) || !parse_u64(end, &end, &count))
    return bad_line(l, "expected \"start count ignored reqno\"");
  if (count == 0)
    return 0;
  return push_range(l->t, start, start + count - 1, &l->at);
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

static int parse_msr(struct line *l)
{
  char *f[8];
  uint64_t off, size;
  if (l->at.no == 1 && strncmp(l->text, "Timestamp", 9) == 0)
    return 0;
  if (split_csv(l->text, f, 8) != 7 || !field_u64(f[4], &off) ||
      !field_u64(f[5], &size))
    return bad_line(l, "expected \"timestamp,host,disk,type,offset,size,"
                    "latency\"");
  bool is_read = strcasecmp(f[3], "Read") == 0;
  if (!is_read && strcasecmp(f[3], "Write") != 0)
    return bad_line(l, "type is neither Read nor Write");
  if (l->o->reads_only && !is_read)
    return 0;
  return push_bytes(l->t, 0, off, size, &l->at);
}

/* Tencent CBS: volumes are separate disks, so the volume id goes into the
 * top bits of the block id to keep their blocks apart. */
static int parse_tencent(struct line *l)
{
  char *f[6];
  uint64_t ts, off, size, op, vol;
  if (split_csv(l->text, f, 6) != 5 || !field_u64(f[0], &ts) ||
      !field_u64(f[1], &off) || !field_u64(f[2], &size) ||
      !field_u64(f[3], &op) || !field_u64(f[4], &vol) || op > 1)
    return bad_line(l, "expected \"timestamp,offset,size,iotype(0|1),"
                    "volume\"");
  if (l->o->reads_only && op != 0)
    return 0;
  if (off >= (1ULL << 40) / 8 * 512 || vol >= (1ULL << 24))
    return bad_line(l, "offset or volume out of range");
  return push_bytes(l->t, vol << 40, off * 512, size * 512, &l->at);
}

/* SYSTOR'17: Timestamp,Response,IOType(R/W),LUN,Offset(bytes),Size(bytes). */
static int parse_systor(struct line *l)
{
  char *f[7];
  uint64_t lun, off, size;
  if (strncmp(l->text, "Timestamp", 9) == 0)
    return 0;
  if (split_csv(l->text, f, 7) != 6 || !field_u64(f[3], &lun) ||
      !field_u64(f[4], &off) || !field_u64(f[5], &size) ||
      (strcmp(f[2], "R") != 0 && strcmp(f[2], "W") != 0))
    return bad_line(l, "expected \"timestamp,response,R|W,lun,offset,"
                    "size\"");
  if (l->o->reads_only && f[2][0] != 'R')
    return 0;
  if (lun >= (1ULL << 16) || off >= (1ULL << 58))
    return bad_line(l, "LUN or offset out of range");
  return push_bytes(l->t, lun << 48, off, size, &l->at);
}

/* ---- dispatch ---- */

/* A binary format has a reader of its own; a text format only parses one
 * line and read_lines() does the rest. */
struct format {
  const char *name;
  const char *description;
  int (*read)(struct sl_input *, const struct sl_trace_options *,
              struct sl_trace *);
  int (*parse_line)(struct line *);
};

static const struct format formats[] = {
  { "vscsi", "VMware vscsiStats v1/v2 binary, expanded to 4 KiB blocks",
    read_vscsi, NULL },
  { "oracle", "libCacheSim oracleGeneral binary, one access per record",
    read_oracle, NULL },
  { "lis", "ARC traces: \"start n _ reqno\" lines, n page accesses each",
    NULL, parse_lis },
  { "txt", "one block number per line, \"*\" lines skipped", NULL,
    parse_txt },
  { "u32", "flat little-endian uint32 block numbers", read_u32, NULL },
  { "msr", "MSR Cambridge CSV, expanded to 4 KiB blocks", NULL, parse_msr },
  { "tencent", "Tencent CBS CSV (sectors), 4 KiB blocks per volume", NULL,
    parse_tencent },
  { "systor", "SYSTOR'17 VDI CSV, 4 KiB blocks per LUN", NULL,
    parse_systor },
  /* not read at all: sl_trace_read hands the "path" to synth.c */
  { "synth", "synthetic: the \"path\" is a spec like loop:n=1500,len=1e5",
    NULL, NULL },
};

#define N_FORMATS (sizeof formats / sizeof formats[0])

const char *const *sl_trace_formats(void)
{
  static const char *const names[] = { "vscsi", "oracle", "lis", "txt",
                                        "u32", "msr", "tencent", "systor",
                                        "synth", NULL };
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
  if (strcmp(f->name, "synth") == 0)
    return sl_synth_generate(path, t);
  struct sl_input *in;
  int r = sl_input_open(path, &in);
  if (r < 0)
    return r;
  t->name = strdup(path);
  if (!opts)
    opts = &defaults;
  if (!t->name)
    r = -ENOMEM;
  else if (f->read)
    r = f->read(in, opts, t);
  else
    r = read_lines(in, opts, t, f->parse_line);
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
