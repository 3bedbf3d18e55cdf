/* sluice cache: look at and empty the host cache daemon (sluiced).
 *
 *   sluice cache stats [--socket PATH] [--output=human|json|prometheus]
 *   sluice cache drop [--socket PATH] LAYER|--all
 *
 * stats asks the daemon for its totals and per-layer counters (STATS,
 * docs/sluiced-protocol.md) and prints them for a person, as JSON, or in
 * Prometheus' text exposition format, so that node_exporter's textfile
 * collector can publish them (write to a temporary file and rename it into
 * the collector's directory).  drop forgets what the daemon caches of one
 * layer file -- named by its path: the command opens it read-only and
 * registers it, since clients never name the daemon's own ids -- or, with
 * --all, of every layer. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/error.h>
#include "cachesvc/call.h"
#include "common/util.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

static const char usage_text[] =
  "Usage: sluice cache stats [--socket PATH] [--output=human|json|prometheus]\n"
  "       sluice cache drop [--socket PATH] LAYER|--all\n"
  "\n"
  "stats: the host cache daemon's counters, in total and per layer file\n"
  "(hits, misses, fills, bytes served, backend bytes read, resident blocks),\n"
  "and its ghost entries, mapped sections and clients.\n"
  "drop: forget the cached blocks of the layer file LAYER, or of all layers.\n"
  "The socket defaults to " SL_CS_DEFAULT_SOCKET ".\n";

/* All pages of STATS: the totals into *TOT, the layers into *LAYERS. */
static int fetch(struct sl_cs_conn *c, struct sl_cs_stats_reply *tot, struct sl_cs_layer_stats **layers,
                 size_t *n)
{
  *layers = NULL;
  *n = 0;
  uint32_t first = 0;
  for (int page = 0; page < 100000; page++) {
    struct sl_cs_stats q = {.first = first};
    int r = sl_cs_call(c, SL_CS_STATS, &q, sizeof q, -1, 0);
    if (r < 0)
      return r;
    const struct sl_cs_stats_reply *rep = sl_cs_reply_body(c);
    if (page == 0)
      *tot = *rep;
    struct sl_cs_layer_stats *p = realloc(*layers, (*n + rep->count) * sizeof *p);
    if (!p && rep->count)
      return sl_error(ENOMEM, "out of memory");
    *layers = p;
    memcpy(p + *n, rep + 1, rep->count * sizeof *p);
    *n += rep->count;
    if (rep->next == UINT32_MAX || rep->next <= first)
      break;
    first = rep->next;
  }
  return 0;
}

static void flags_text(uint32_t f, char *buf, size_t len)
{
  snprintf(buf, len, "%s%s%s%s%s%s", f & SL_CS_LSTAT_DEAD ? "stale," : "",
           f & SL_CS_LSTAT_PRIVATE ? "private," : "", f & SL_CS_LSTAT_BLOCKDEV ? "blockdev," : "",
           f & SL_CS_LSTAT_DIRECT ? "direct," : "", f & SL_CS_LSTAT_LEASE ? "lease," : "",
           f & SL_CS_LSTAT_RBD ? "rbd," : "");
  size_t l = strlen(buf);
  if (l)
    buf[l - 1] = 0;
  else
    snprintf(buf, len, "-");
}

static double ratio(uint64_t hits, uint64_t misses)
{
  return hits + misses ? (double)hits / (double)(hits + misses) : 0.0;
}

static void print_human(const struct sl_cs_stats_reply *t, const struct sl_cs_layer_stats *l,
                        size_t n)
{
  char a[32], b[32], c[32], d[32];
  printf("cache: %s in %" PRIu64 " blocks of %u bytes (metadata %s)\n",
         sl_human_size(t->memory_bytes, a, sizeof a), t->capacity_blocks, t->block_size,
         sl_human_size(t->metadata_bytes, b, sizeof b));
  printf("resident blocks: %" PRIu64 ", ghost entries: %" PRIu64 ", mapped sections: %" PRIu64
         ", clients: %" PRIu64 ", layers: %" PRIu64 "\n", t->total.resident_blocks,
         t->ghost_entries, t->mapped_sections, t->clients, t->layers);
  printf("hits: %" PRIu64 ", misses: %" PRIu64 " (hit ratio %.3f), fills: %" PRIu64
         ", bytes served: %s, backend bytes read: %s\n", t->total.hits, t->total.misses,
         ratio(t->total.hits, t->total.misses), t->total.fills,
         sl_human_size(t->total.bytes_served, c, sizeof c),
         sl_human_size(t->total.backend_bytes, d, sizeof d));
  if (!n)
    return;
  printf("\n%10s %10s %10s %12s %12s %9s %7s %-22s %s\n", "hits", "misses", "fills", "served",
         "backend", "resident", "clients", "flags", "layer");
  for (size_t i = 0; i < n; i++) {
    char f[64];
    flags_text(l[i].flags, f, sizeof f);
    printf("%10" PRIu64 " %10" PRIu64 " %10" PRIu64 " %12" PRIu64 " %12" PRIu64 " %9" PRIu64
           " %7" PRIu64 " %-22s %s\n", l[i].c.hits, l[i].c.misses, l[i].c.fills,
           l[i].c.bytes_served, l[i].c.backend_bytes, l[i].c.resident_blocks, l[i].clients, f,
           l[i].path);
  }
}

static void json_counters(const struct sl_cs_counters *c)
{
  printf("\"hits\": %" PRIu64 ", \"misses\": %" PRIu64 ", \"fills\": %" PRIu64
         ", \"bytes_served\": %" PRIu64 ", \"backend_bytes\": %" PRIu64
         ", \"resident_blocks\": %" PRIu64, c->hits, c->misses, c->fills, c->bytes_served,
         c->backend_bytes, c->resident_blocks);
}

static void print_json(const struct sl_cs_stats_reply *t, const struct sl_cs_layer_stats *l,
                       size_t n)
{
  printf("{\n  \"block_size\": %u,\n  \"capacity_blocks\": %" PRIu64 ",\n  \"memory_bytes\": %"
         PRIu64 ",\n  \"metadata_bytes\": %" PRIu64 ",\n  \"ghost_entries\": %" PRIu64
         ",\n  \"mapped_sections\": %" PRIu64 ",\n  \"clients\": %" PRIu64 ",\n  \"total\": {",
         t->block_size, t->capacity_blocks, t->memory_bytes, t->metadata_bytes,
         t->ghost_entries, t->mapped_sections, t->clients);
  json_counters(&t->total);
  printf("},\n  \"layers\": [");
  for (size_t i = 0; i < n; i++) {
    char f[64];
    flags_text(l[i].flags, f, sizeof f);
    printf("%s\n    {\"path\": ", i ? "," : "");
    json_string(stdout, l[i].path);
    printf(", \"dev\": %" PRIu64 ", \"ino\": %" PRIu64 ", \"size\": %" PRIu64
           ", \"clients\": %" PRIu64 ", \"flags\": \"%s\", ", l[i].dev, l[i].ino, l[i].size,
           l[i].clients, strcmp(f, "-") ? f : "");
    json_counters(&l[i].c);
    printf("}");
  }
  printf("%s]\n}\n", n ? "\n  " : "");
}

/* A label value in the exposition format: \, " and newline escaped. */
static void prom_label(const char *s)
{
  for (; *s; s++) {
    if (*s == '\\' || *s == '"')
      printf("\\%c", *s);
    else if (*s == '\n')
      printf("\\n");
    else
      putchar(*s);
  }
}

static void print_prometheus(const struct sl_cs_stats_reply *t, const struct sl_cs_layer_stats *l,
                             size_t n)
{
  static const struct {
    const char *name, *type, *help;
    size_t off;
  } m[] = {
    {"hits", "counter", "Blocks served from the cache.", offsetof(struct sl_cs_counters, hits)},
    {"misses", "counter", "Blocks asked for that were not cached.",
     offsetof(struct sl_cs_counters, misses)},
    {"fills", "counter", "Blocks the daemon read from layer files into the cache.",
     offsetof(struct sl_cs_counters, fills)},
    {"served_bytes", "counter", "Bytes written into clients' memory handles.",
     offsetof(struct sl_cs_counters, bytes_served)},
    {"backend_read_bytes", "counter", "Bytes the daemon read from layer files.",
     offsetof(struct sl_cs_counters, backend_bytes)},
    {"resident_blocks", "gauge", "Blocks cached now.",
     offsetof(struct sl_cs_counters, resident_blocks)},
  };
  for (size_t k = 0; k < SL_ARRAY_SIZE(m); k++) {
    /* counters end in _total, as the exposition format's conventions ask */
    const char *suffix = strcmp(m[k].type, "counter") == 0 ? "_total" : "", *csuffix = "";
    printf("# HELP sluiced_%s%s%s %s\n# TYPE sluiced_%s%s%s %s\n", m[k].name, suffix, csuffix,
           m[k].help, m[k].name, suffix, csuffix, m[k].type);
    printf("sluiced_%s%s%s %" PRIu64 "\n", m[k].name, suffix, csuffix,
           *(const uint64_t *)((const char *)&t->total + m[k].off));
    printf("# HELP sluiced_layer_%s%s%s %s (per layer file)\n# TYPE sluiced_layer_%s%s%s %s\n",
           m[k].name, suffix, csuffix, m[k].help, m[k].name, suffix, csuffix, m[k].type);
    for (size_t i = 0; i < n; i++) {
      printf("sluiced_layer_%s%s%s{path=\"", m[k].name, suffix, csuffix);
      prom_label(l[i].path);
      printf("\",dev=\"%" PRIu64 "\",ino=\"%" PRIu64 "\",stale=\"%d\"} %" PRIu64 "\n", l[i].dev,
             l[i].ino, (l[i].flags & SL_CS_LSTAT_DEAD) != 0,
             *(const uint64_t *)((const char *)&l[i].c + m[k].off));
    }
  }
  printf("# HELP sluiced_ghost_entries Evicted blocks the policy still remembers.\n"
         "# TYPE sluiced_ghost_entries gauge\nsluiced_ghost_entries %" PRIu64 "\n"
         "# HELP sluiced_mapped_sections Sections of clients' memory handles mapped now.\n"
         "# TYPE sluiced_mapped_sections gauge\nsluiced_mapped_sections %" PRIu64 "\n"
         "# HELP sluiced_clients Connected clients.\n"
         "# TYPE sluiced_clients gauge\nsluiced_clients %" PRIu64 "\n"
         "# HELP sluiced_layers Layer files known to the cache.\n"
         "# TYPE sluiced_layers gauge\nsluiced_layers %" PRIu64 "\n"
         "# HELP sluiced_capacity_blocks Blocks the data area holds.\n"
         "# TYPE sluiced_capacity_blocks gauge\nsluiced_capacity_blocks %" PRIu64 "\n"
         "# HELP sluiced_block_size_bytes The cache block size.\n"
         "# TYPE sluiced_block_size_bytes gauge\nsluiced_block_size_bytes %u\n"
         "# HELP sluiced_memory_bytes The data area.\n"
         "# TYPE sluiced_memory_bytes gauge\nsluiced_memory_bytes %" PRIu64 "\n"
         "# HELP sluiced_metadata_bytes Memory the cache keeps beside the data area.\n"
         "# TYPE sluiced_metadata_bytes gauge\nsluiced_metadata_bytes %" PRIu64 "\n",
         t->ghost_entries, t->mapped_sections, t->clients, t->layers, t->capacity_blocks,
         t->block_size, t->memory_bytes, t->metadata_bytes);
}

int cmd_cache(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? 1 : 0;
  }
  const char *sub = argv[1];
  bool is_stats = !strcmp(sub, "stats"), is_drop = !strcmp(sub, "drop");
  if (!is_stats && !is_drop)
    return cli_fail("cache", "unknown subcommand '%s' (stats, drop)", sub);
  const char *sock = NULL, *output = "human";
  bool all = false;
  static const struct option lo[] = {
    {"socket", required_argument, NULL, 's'},
    {"output", required_argument, NULL, 'o'},
    {"all", no_argument, NULL, 'a'},
    {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  int opt;
  optind = 1;
  while ((opt = getopt_long(argc - 1, argv + 1, "s:o:ah", lo, NULL)) != -1) {
    switch (opt) {
    case 's': sock = optarg; break;
    case 'o': output = optarg; break;
    case 'a': all = true; break;
    case 'h': fputs(usage_text, stdout); return 0;
    default: fputs(usage_text, stderr); return 1;
    }
  }
  int nargs = argc - 1 - optind;
  char **args = argv + 1 + optind;
  if (is_stats) {
    if (nargs || all)
      return cli_fail("cache", "stats takes no arguments besides --socket and --output");
    if (strcmp(output, "human") && strcmp(output, "json") && strcmp(output, "prometheus"))
      return cli_fail("cache", "--output=%s: expected human, json or prometheus", output);
  } else {
    if (all == (nargs == 1) || nargs > 1)
      return cli_fail("cache", "drop takes one layer file or --all");
    if (strcmp(output, "human"))
      return cli_fail("cache", "drop has no --output");
  }
  struct sl_cs_conn c;
  if (sl_cs_connect(sock, &c) < 0)
    return cli_fail_lib("cache", "cannot reach the cache daemon");
  int ret = 0;
  if (is_stats) {
    struct sl_cs_stats_reply t;
    struct sl_cs_layer_stats *l;
    size_t n;
    if (fetch(&c, &t, &l, &n) < 0) {
      ret = cli_fail_lib("cache", "stats");
    } else {
      if (!strcmp(output, "json"))
        print_json(&t, l, n);
      else if (!strcmp(output, "prometheus"))
        print_prometheus(&t, l, n);
      else
        print_human(&t, l, n);
    }
    free(l);
  } else {
    struct sl_cs_drop d = {.flags = all ? SL_CS_DROP_ALL : 0};
    if (!all) {
      int fd = open(args[0], O_RDONLY | O_CLOEXEC);
      if (fd < 0) {
        sl_cs_close(&c);
        return cli_fail("cache", "%s: %s", args[0], strerror(errno));
      }
      struct sl_cs_register_layer q = {0};
      int r = sl_cs_call(&c, SL_CS_REGISTER_LAYER, &q, sizeof q, fd, 0);
      close(fd);
      if (r < 0) {
        sl_cs_close(&c);
        return cli_fail_lib("cache", "%s", args[0]);
      }
      d.layer = ((const struct sl_cs_register_layer_reply *)sl_cs_reply_body(&c))->layer;
    }
    if (sl_cs_call(&c, SL_CS_DROP, &d, sizeof d, -1, 0) < 0)
      ret = cli_fail_lib("cache", "drop");
  }
  sl_cs_close(&c);
  return ret;
}
