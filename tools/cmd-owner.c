/* sluice owner DISK: who holds a disk for writing (the owner record, checked
 * against the locks and the process table); sluice release DISK: ask the
 * owner to let go of it, without taking it (a backup tool, QEMU or
 * qemu-img opens it next).  Both go through lib/owner/owner.h only, so a
 * second ownership backend (Ceph RBD) needs no change here.
 * docs/ownership.md describes the mechanism. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <sluice/error.h>
#include "common/util.h"
#include "owner/owner.h"
#include "tools/cli-util.h"
#include "tools/cli.h"

static const char owner_usage[] =
  "Usage: sluice owner [--output=human|json] DISK\n"
  "\n"
  "Show who holds DISK (an image or a disk descriptor) for writing: the\n"
  "owner record beside its image, whether that process is alive and still\n"
  "holds the image's locks, and the control socket to ask it on.  The state\n"
  "is one of none, owned, stale (the owner is gone, nothing holds the locks),\n"
  "foreign (held by a process without an owner record, such as QEMU) and\n"
  "released (the owner lives but has let go).\n";

static const char release_usage[] =
  "Usage: sluice release [--timeout SECONDS] DISK\n"
  "\n"
  "Ask the owner of DISK to release it: the owner stops its exports,\n"
  "finishes the requests in flight, flushes, closes the image and answers.\n"
  "Exits 0 once the disk is free (also when nobody owned it, or its owner\n"
  "was dead), 1 when the owner refuses (serve --no-release), does not answer\n"
  "within the timeout (default 30 s; the disk is then left alone), or the\n"
  "disk is held by a process that has no owner record.\n";

static void owner_log(void *arg, const char *line)
{
  fprintf(stderr, "sluice %s: %s\n", (const char *)arg, line);
}

/* --timeout: seconds, fractions allowed, (0, 3600]. */
int cli_parse_timeout(const char *cmd, const char *s, double *out)
{
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !(v > 0) || v > 3600)
    return cli_fail(cmd, "--timeout: '%s' is not a number of seconds in (0, 3600]", s);
  *out = v;
  return 0;
}

static void print_human(const struct sl_owner_info *i)
{
  printf("image: %s\n", i->image);
  printf("state: %s\n", sl_owner_state_name(i->state));
  if (i->has_record) {
    const struct sl_owner_record *r = &i->rec;
    char when[64] = "?";
    time_t t = (time_t)r->started;
    struct tm tm;
    if (gmtime_r(&t, &tm))
      strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
    printf("owner: pid %d (%s) on %s, uid %u, since %s\n", (int)r->pid,
           r->command[0] ? r->command : "?", r->host, (unsigned)r->uid, when);
    printf("process: %s\n", i->pid_alive ? i->proc_state : "gone");
    printf("releases: %s\n", r->release ? "yes" : "no (--no-release)");
    printf("control socket: %s\n", r->socket);
    printf("record: %s\n", i->record_path);
  }
  printf("locked: %s\n", i->locked ? "yes" : "no");
  if (i->locked && i->state != SL_OWNER_OWNED)
    printf("held by: %s\n", i->holder[0] ? i->holder : "(not found)");
}

static void print_json(const struct sl_owner_info *i)
{
  printf("{\n    \"image\": ");
  json_string(stdout, i->image);
  printf(",\n    \"backend\": ");
  json_string(stdout, i->backend);
  printf(",\n    \"state\": ");
  json_string(stdout, sl_owner_state_name(i->state));
  printf(",\n    \"locked\": %s", i->locked ? "true" : "false");
  printf(",\n    \"holder\": ");
  json_string(stdout, i->locked && i->holder[0] ? i->holder : NULL);
  printf(",\n    \"record\": ");
  json_string(stdout, i->has_record ? i->record_path : NULL);
  printf(",\n    \"owner\": ");
  if (!i->has_record) {
    printf("null\n}\n");
    return;
  }
  const struct sl_owner_record *r = &i->rec;
  printf("{\n        \"pid\": %d,\n        \"host\": ", (int)r->pid);
  json_string(stdout, r->host);
  printf(",\n        \"uid\": %u,\n        \"started\": %lld,\n        \"command\": ",
         (unsigned)r->uid, r->started);
  json_string(stdout, r->command[0] ? r->command : NULL);
  printf(",\n        \"socket\": ");
  json_string(stdout, r->socket);
  printf(",\n        \"release\": %s,\n        \"alive\": %s,\n        \"process\": ",
         r->release ? "true" : "false", i->pid_alive ? "true" : "false");
  json_string(stdout, i->pid_alive ? i->proc_state : NULL);
  printf("\n    }\n}\n");
}

int cmd_owner(int argc, char **argv)
{
  static const struct option opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"output", required_argument, NULL, 'o'},
    {NULL, 0, NULL, 0},
  };
  bool json = false;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'o':
      if (strcmp(optarg, "json") == 0)
        json = true;
      else if (strcmp(optarg, "human") == 0)
        json = false;
      else
        return cli_fail("owner", "--output: '%s' is not human or json", optarg);
      break;
    case 'h': fputs(owner_usage, stdout); return 0;
    default: fputs(owner_usage, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(owner_usage, stderr);
    return cli_fail("owner", optind >= argc ? "no DISK given" : "too many arguments");
  }
  struct sl_owner_info info;
  if (sl_owner_query(argv[optind], &info) < 0)
    return cli_fail("owner", "%s", sl_last_error());
  if (json)
    print_json(&info);
  else
    print_human(&info);
  return 0;
}

int cmd_release(int argc, char **argv)
{
  static const struct option opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"timeout", required_argument, NULL, 'T'},
    {NULL, 0, NULL, 0},
  };
  double timeout = 30;
  int c;
  while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (c) {
    case 'T':
      if (cli_parse_timeout("release", optarg, &timeout))
        return 1;
      break;
    case 'h': fputs(release_usage, stdout); return 0;
    default: fputs(release_usage, stderr); return 1;
    }
  }
  if (optind != argc - 1) {
    fputs(release_usage, stderr);
    return cli_fail("release", optind >= argc ? "no DISK given" : "too many arguments");
  }
  struct sl_owner_release_opts o = {
    .timeout_s = timeout, .requester = "sluice release",
    .log = owner_log, .log_arg = "release",
  };
  struct sl_owner_release_result res;
  if (sl_owner_release(argv[optind], &o, &res) < 0)
    return cli_fail("release", "%s", sl_last_error());
  if (res.asked)
    fprintf(stderr, "sluice release: %s: released by pid %d in %.1f ms\n",
            res.before.image, (int)res.before.rec.pid,
            (double)(res.released_ns - res.request_ns) / 1e6);
  else if (res.before.state == SL_OWNER_NONE)
    fprintf(stderr, "sluice release: %s: nobody owns it\n", res.before.image);
  return 0;
}
