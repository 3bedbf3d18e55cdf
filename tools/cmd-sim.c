/* sluice sim: replay a block trace against cache replacement policies and
 * report miss ratios per cache size.
 *
 * The command only parses options, reads the trace once, and prints; the
 * readers, the replay loop and the policies live in lib/sim so tests and
 * benchmarks use the same code.  Sizes are fractions of the trace's
 * footprint (distinct blocks), rounded down, and every run starts empty,
 * as in libCacheSim, so the figures compare with shared/traces/ANCHORS.md.
 */
#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/util.h"
#include "sluice/error.h"
#include "sim/policy.h"
#include "sim/sim.h"
#include "sim/trace.h"
#include "sluice/error.h"
#include "tools/cli.h"

#define MAX_POLICIES 32
#define MAX_SIZES 64
#define DEFAULT_SIZES "0.01,0.05,0.1,0.2,0.4"

static void usage(FILE *f)
{
  fprintf(f,
    "Usage: sluice sim --trace FILE|- --format FMT [--policy P1,P2,...]\n"
    "                  [--sizes F1,F2,...] [--output=json|md|csv]\n"
    "                  [--plot FILE.png] [--reads-only] [--threads N]\n"
    "Replay a block trace and print the miss ratio of each policy at each\n"
    "cache size (a fraction of the footprint; default " DEFAULT_SIZES ").\n"
    "\nFormats:\n");
  for (const char *const *n = sl_trace_formats(); *n; n++)
    fprintf(f, "  %-8s %s\n", *n, sl_trace_format_description(*n));
  fprintf(f, "\nPolicies (default twophase):\n");
  for (const struct sl_sim_policy *const *p = sl_sim_policies(); *p; p++)
    fprintf(f, "  %-8s %s\n", (*p)->name, (*p)->description);
}

/* Append WORD to the space-separated list in BUF (for "valid: ..."). */
static void append_word(char *buf, size_t len, const char *word)
{
  size_t used = strlen(buf);
  snprintf(buf + used, len - used, "%s%s", used ? " " : "", word);
}

static void list_policies(char *buf, size_t len)
{
  buf[0] = '\0';
  for (const struct sl_sim_policy *const *p = sl_sim_policies(); *p; p++)
    append_word(buf, len, (*p)->name);
}

/* A comma-separated option value and how to parse one of its items. */
struct list_option {
  const char *option;   /* "--policy" */
  const char *item;     /* "policy", as in "--policy names no policy" */
  const char *items;    /* "policies", as in "too many policies" */
  unsigned max;
  /* Parse ITEM into slot I of OUT: 0, or 1 after a message. */
  int (*parse)(const char *item, void *out, unsigned i);
};

/* Parse every item of ARG into OUT; *N is how many.  0, or 1 after a
 * message. */
static int parse_list(const struct list_option *lo, const char *arg,
                      void *out, unsigned *n)
{
  CLEANUP_FREE char *copy = strdup(arg);
  char *save = NULL;
  *n = 0;
  if (!copy)
    return cli_fail("sim", "out of memory");
  for (char *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    if (*n == lo->max)
      return cli_fail("sim", "too many %s (at most %u)", lo->items, lo->max);
    if (lo->parse(tok, out, *n))
      return 1;
    (*n)++;
  }
  if (*n == 0)
    return cli_fail("sim", "%s names no %s", lo->option, lo->item);
  return 0;
}

/* The copies parse_policy makes for "NAME:ARGS", freed when cmd_sim ends. */
static struct sl_sim_policy *arg_copies[MAX_POLICIES];
static unsigned n_arg_copies;

static int parse_policy(const char *full, void *out, unsigned i)
{
  /* "NAME:ARGS" runs NAME with arguments (twophase's tunables): the job
   * gets a copy of the policy named by the full text, carrying ARGS. */
  char name[64];
  const char *colon = strchr(full, ':');
  size_t len = colon ? (size_t)(colon - full) : strlen(full);
  if (len >= sizeof name)
    len = sizeof name - 1;
  memcpy(name, full, len);
  name[len] = 0;
  const struct sl_sim_policy *p = sl_sim_policy_find(name);
  if (p && colon) {
    if (!p->create_args)
      return cli_fail("sim", "policy %s takes no arguments (\"%s\")", name, full);
    void *probe = p->create_args(16, colon + 1);
    if (!probe)
      return cli_fail("sim", "policy \"%s\": %s", full, sl_last_error());
    p->destroy(probe);
    struct sl_sim_policy *copy = malloc(sizeof *copy);
    char *text = strdup(full);
    if (!copy || !text) {
      free(copy);
      free(text);
      return cli_fail("sim", "out of memory");
    }
    *copy = *p;
    copy->name = text;
    copy->args = text + (colon - full) + 1;
    arg_copies[n_arg_copies++] = copy; /* at most one per listed policy */
    p = copy;
  }
  if (!p) {
    char valid[512];
    list_policies(valid, sizeof valid);
    if (strcmp(name, "twophase") == 0)
      return cli_fail("sim", "policy twophase is not built into this "
                      "sluice (valid: %s)", valid);
    return cli_fail("sim", "unknown policy \"%s\" (valid: %s)", name, valid);
  }
  ((const struct sl_sim_policy **)out)[i] = p;
  return 0;
}

static int parse_size(const char *text, void *out, unsigned i)
{
  char *end;
  errno = 0;
  double f = strtod(text, &end);
  if (errno || end == text || *end || !(f > 0) || f > 1)
    return cli_fail("sim", "size \"%s\" is not a fraction in (0, 1]", text);
  ((double *)out)[i] = f;
  return 0;
}

static const struct list_option policy_list = {
  "--policy", "policy", "policies", MAX_POLICIES, parse_policy,
};
static const struct list_option size_list = {
  "--sizes", "size", "sizes", MAX_SIZES, parse_size,
};

static void json_string(FILE *f, const char *s)
{
  fputc('"', f);
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

static void print_json(FILE *f, const char *trace, uint64_t requests,
                       uint64_t footprint, const struct sl_sim_job *jobs,
                       unsigned njobs)
{
  fprintf(f, "{\"trace\": ");
  json_string(f, trace);
  fprintf(f, ", \"requests\": %llu, \"footprint\": %llu, \"results\": [",
          (unsigned long long)requests, (unsigned long long)footprint);
  for (unsigned i = 0; i < njobs; i++)
    fprintf(f, "%s\n  {\"policy\": \"%s\", \"size_fraction\": %g, "
            "\"cache_blocks\": %llu, \"miss_ratio\": %.8f}",
            i ? "," : "", jobs[i].policy->name, jobs[i].size_fraction,
            (unsigned long long)jobs[i].cache_blocks, jobs[i].miss_ratio);
  fprintf(f, "\n]}\n");
}

static void print_csv(FILE *f, const struct sl_sim_job *jobs, unsigned njobs)
{
  fprintf(f, "policy,size_fraction,cache_blocks,miss_ratio\n");
  for (unsigned i = 0; i < njobs; i++)
    fprintf(f, "%s,%g,%llu,%.8f\n", jobs[i].policy->name,
            jobs[i].size_fraction, (unsigned long long)jobs[i].cache_blocks,
            jobs[i].miss_ratio);
}

/* One row per policy, one column per size, like ANCHORS.md. */
static void print_md(FILE *f, const char *trace, uint64_t requests,
                     uint64_t footprint, const struct sl_sim_job *jobs,
                     unsigned npol, unsigned nsizes)
{
  fprintf(f, "### %s  (%llu requests, footprint %llu blocks)\n", trace,
          (unsigned long long)requests, (unsigned long long)footprint);
  fprintf(f, "| policy |");
  for (unsigned s = 0; s < nsizes; s++)
    fprintf(f, " %g%% (%llu) |", jobs[s].size_fraction * 100,
            (unsigned long long)jobs[s].cache_blocks);
  fprintf(f, "\n|---|");
  for (unsigned s = 0; s < nsizes; s++)
    fprintf(f, "---|");
  fprintf(f, "\n");
  for (unsigned p = 0; p < npol; p++) {
    fprintf(f, "| %s |", jobs[p * nsizes].policy->name);
    for (unsigned s = 0; s < nsizes; s++)
      fprintf(f, " %.4f |", jobs[p * nsizes + s].miss_ratio);
    fprintf(f, "\n");
  }
}

/* gnuplot draws the curves: one data block per policy, log x axis. */
static int plot(const char *png, const char *trace,
                const struct sl_sim_job *jobs, unsigned npol, unsigned nsizes)
{
  char data[] = "/tmp/sluice-sim-plot.XXXXXX";
  int fd = mkstemp(data);
  if (fd < 0)
    return cli_fail("sim", "--plot: cannot create a temporary file: %s",
                    strerror(errno));
  FILE *d = fdopen(fd, "w");
  if (!d) {
    close(fd);
    unlink(data);
    return cli_fail("sim", "--plot: %s", strerror(errno));
  }
  for (unsigned p = 0; p < npol; p++) {
    for (unsigned s = 0; s < nsizes; s++)
      fprintf(d, "%g %.6f\n", jobs[p * nsizes + s].size_fraction,
              jobs[p * nsizes + s].miss_ratio);
    fprintf(d, "\n\n");
  }
  fclose(d);
  FILE *g = popen("gnuplot 2>&1", "w");
  if (!g) {
    unlink(data);
    return cli_fail("sim", "--plot: cannot run gnuplot");
  }
  fprintf(g, "set terminal pngcairo size 900,600\n");
  fprintf(g, "set output '");
  for (const char *c = png; *c; c++)
    fprintf(g, *c == '\'' ? "''" : "%c", *c);
  fprintf(g, "'\nset title \"");
  for (const char *c = trace; *c; c++)
    if (*c != '"' && *c != '\\')
      fputc(*c, g);
  fprintf(g, "\" noenhanced\nset logscale x\nset xlabel 'cache size "
          "(fraction of footprint)'\nset ylabel 'miss ratio'\nset grid\n"
          "set key outside right\nplot ");
  for (unsigned p = 0; p < npol; p++)
    fprintf(g, "%s'%s' index %u with linespoints title '%s'", p ? ", " : "",
            data, p, jobs[p * nsizes].policy->name);
  fprintf(g, "\n");
  int rc = pclose(g);
  unlink(data);
  if (rc != 0)
    return cli_fail("sim", "--plot: gnuplot failed (exit status %d)", rc);
  if (access(png, F_OK) != 0)
    return cli_fail("sim", "--plot: gnuplot wrote no %s", png);
  return 0;
}

static int sim_main(int argc, char **argv);

int cmd_sim(int argc, char **argv)
{
  int rc = sim_main(argc, argv);
  while (n_arg_copies > 0) {
    struct sl_sim_policy *c = arg_copies[--n_arg_copies];
    free((char *)c->name);
    free(c);
  }
  return rc;
}

static int sim_main(int argc, char **argv)
{
  static const struct option longopts[] = {
    { "trace", required_argument, NULL, 't' },
    { "format", required_argument, NULL, 'f' },
    { "policy", required_argument, NULL, 'p' },
    { "sizes", required_argument, NULL, 's' },
    { "output", required_argument, NULL, 'o' },
    { "plot", required_argument, NULL, 'P' },
    { "reads-only", no_argument, NULL, 'r' },
    { "threads", required_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  const char *trace = NULL, *format = NULL, *policy_arg = "twophase";
  const char *sizes_arg = DEFAULT_SIZES, *output = "md", *png = NULL;
  struct sl_trace_options topts = { 0 };
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  uint64_t threads = ncpu > 0 ? (uint64_t)ncpu : 1;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "t:f:p:s:o:P:rj:h", longopts, NULL)) != -1) {
    switch (c) {
    case 't': trace = optarg; break;
    case 'f': format = optarg; break;
    case 'p': policy_arg = optarg; break;
    case 's': sizes_arg = optarg; break;
    case 'o': output = optarg; break;
    case 'P': png = optarg; break;
    case 'r': topts.reads_only = true; break;
    case 'j':
      if (sl_parse_uint("--threads", optarg, 1, 64, &threads) < 0)
        return cli_fail_lib("sim", "bad --threads");
      break;
    case 'h': usage(stdout); return 0;
    default: usage(stderr); return 1;
    }
  }
  if (optind != argc)
    return cli_fail("sim", "unexpected argument \"%s\"", argv[optind]);
  if (!trace)
    return cli_fail("sim", "--trace FILE (or - for standard input) is required");
  if (!format)
    return cli_fail("sim", "--format is required (see sluice sim --help)");
  if (strcmp(output, "json") && strcmp(output, "md") && strcmp(output, "csv"))
    return cli_fail("sim", "unknown --output \"%s\" (valid: json md csv)",
                    output);
  if (!sl_trace_format_description(format)) {
    char valid[256] = "";
    for (const char *const *n = sl_trace_formats(); *n; n++)
      append_word(valid, sizeof valid, *n);
    return cli_fail("sim", "unknown format \"%s\" (valid: %s)", format, valid);
  }

  const struct sl_sim_policy *policies[MAX_POLICIES];
  double sizes[MAX_SIZES];
  unsigned npol, nsizes;
  if (parse_list(&policy_list, policy_arg, policies, &npol) ||
      parse_list(&size_list, sizes_arg, sizes, &nsizes))
    return 1;

  struct sl_trace t;
  if (sl_trace_read(trace, format, &topts, &t) < 0)
    return cli_fail("sim", "%s", sl_last_error());
  int rc = 1;
  CLEANUP_FREE uint64_t *next_use = NULL;
  CLEANUP_FREE struct sl_sim_job *jobs = calloc(npol * nsizes, sizeof *jobs);
  int64_t footprint = sl_trace_footprint(&t);
  if (!jobs || footprint < 0) {
    cli_fail("sim", "out of memory");
    goto out;
  }
  if (t.len == 0) {
    cli_fail("sim", "%s: the trace holds no requests", trace);
    goto out;
  }
  bool need_future = false;
  for (unsigned p = 0; p < npol; p++)
    need_future |= policies[p]->needs_future;
  if (need_future && sl_trace_next_use(&t, &next_use) < 0) {
    cli_fail_lib("sim", "%s", trace);
    goto out;
  }
  for (unsigned p = 0; p < npol; p++)
    for (unsigned s = 0; s < nsizes; s++) {
      struct sl_sim_job *j = &jobs[p * nsizes + s];
      j->policy = policies[p];
      j->size_fraction = sizes[s];
      j->cache_blocks = sl_sim_cache_blocks(sizes[s], (uint64_t)footprint);
    }
  if (sl_sim_run(&t, next_use, jobs, npol * nsizes, (unsigned)threads) < 0) {
    cli_fail("sim", "%s", sl_last_error());
    goto out;
  }
  if (strcmp(output, "json") == 0)
    print_json(stdout, trace, t.len, (uint64_t)footprint, jobs, npol * nsizes);
  else if (strcmp(output, "csv") == 0)
    print_csv(stdout, jobs, npol * nsizes);
  else
    print_md(stdout, trace, t.len, (uint64_t)footprint, jobs, npol, nsizes);
  if (fflush(stdout) != 0) {
    cli_fail("sim", "writing the results: %s", strerror(errno));
    goto out;
  }
  rc = png ? plot(png, trace, jobs, npol, nsizes) : 0;
out:
  sl_trace_free(&t);
  return rc;
}
