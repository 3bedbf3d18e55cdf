/* trace: a test filter that records the order in which requests pass.
 *
 * Each call appends "TAG > OP" to the log before calling next and "TAG < OP"
 * after, so a stack of traces shows the order requests go down and come back
 * up.  Built twice: "trace" implements every operation; "trace-partial"
 * (TRACE_PARTIAL) implements only writes, to show that operations a filter
 * leaves out go straight past it.
 *
 *   log=PATH   the file to append to (required)
 *   tag=TEXT   what to call this instance in the log (default: its name) */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "filter-util.h"

#ifdef TRACE_PARTIAL
#define TRACE_NAME "trace-partial"
#else
#define TRACE_NAME "trace"
#endif

struct trace {
  char *log;
  char *tag;
  int fd;
};

static int tr_config(void *inst, const char *key, const char *value)
{
  struct trace *t = inst;
  char **slot = strcmp(key, "log") == 0 ? &t->log
              : strcmp(key, "tag") == 0 ? &t->tag : NULL;
  if (!slot)
    return host->error(EINVAL, "unknown parameter '%s' (expected log, tag)", key);
  free(*slot);
  *slot = strdup(value);
  return *slot ? 0 : host->error(ENOMEM, "out of memory");
}

static int tr_config_complete(void *inst, const struct sl_filter_env *env)
{
  struct trace *t = inst;
  if (!t->log)
    return host->error(EINVAL, "log=PATH is required");
  if (!t->tag && !(t->tag = strdup(env->instance_name)))
    return host->error(ENOMEM, "out of memory");
  char *path = fu_resolve(env, t->log);
  t->fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
  int e = errno;
  free(path);
  if (t->fd < 0)
    return host->error(e, "%s: %s", t->log, strerror(e));
  return 0;
}

static void tr_close(void *inst, struct sl_next *next)
{
  struct trace *t = inst;
  if (t->fd > 0)
    close(t->fd);
  free(t->log);
  free(t->tag);
}

static void note(struct trace *t, char dir, const char *op)
{
  char line[128];
  int n = snprintf(line, sizeof line, "%s %c %s\n", t->tag, dir, op);
  if (n > 0 && write(t->fd, line, (size_t)n) < 0) {
    /* A trace that cannot write is a broken test; the request goes on. */
  }
}

#define TRACED(op, call)                                                   \
  do {                                                                     \
    note(inst, '>', op);                                                   \
    int r_ = (call);                                                       \
    note(inst, '<', op);                                                   \
    return r_;                                                             \
  } while (0)

static int tr_pwrite(void *inst, struct sl_next *next, const void *buf,
                     size_t len, uint64_t off, uint32_t flags)
{ TRACED("write", sl_next_pwrite(next, buf, len, off, flags)); }

static int tr_zero(void *inst, struct sl_next *next, uint64_t off,
                   uint64_t len, uint32_t flags)
{ TRACED("zero", sl_next_write_zeroes(next, off, len, flags)); }

#ifndef TRACE_PARTIAL
static int tr_pread(void *inst, struct sl_next *next, void *buf, size_t len,
                    uint64_t off, uint32_t flags)
{ TRACED("read", sl_next_pread(next, buf, len, off, flags)); }

static int tr_flush(void *inst, struct sl_next *next, uint32_t flags)
{ TRACED("flush", sl_next_flush(next, flags)); }

static int tr_discard(void *inst, struct sl_next *next, uint64_t off,
                      uint64_t len, uint32_t flags)
{ TRACED("discard", sl_next_discard(next, off, len, flags)); }

static int tr_block_status(void *inst, struct sl_next *next, uint64_t off,
                           uint64_t len, struct sl_extent *ext)
{ TRACED("block_status", sl_next_block_status(next, off, len, ext)); }

static int tr_open(void *inst, struct sl_next *next,
                   const struct sl_filter_env *env)
{ note(inst, '=', "open"); return 0; }

static int tr_release(void *inst, struct sl_next *next)
{ note(inst, '=', "release"); return 0; }

static int tr_resume(void *inst, struct sl_next *next)
{ note(inst, '=', "resume"); return 0; }

static int tr_snapshot(void *inst, struct sl_next *next)
{ note(inst, '=', "snapshot"); return 0; }
#endif

static const struct sl_filter trace = {
  .api_version = SL_FILTER_API_VERSION,
  .struct_size = sizeof(struct sl_filter),
  .name = TRACE_NAME,
  .description = "test filter: logs the order requests pass",
  .config_help = "log=PATH  file to append to\ntag=TEXT  name in the log",
  .filter_class = SL_FILTER_CLASS_ANY,
  .thread_model = SL_FILTER_PARALLEL,
  .instance_size = sizeof(struct trace),
  .load = fu_load,
  .config = tr_config,
  .config_complete = tr_config_complete,
  .close = tr_close,
  .pwrite = tr_pwrite,
  .write_zeroes = tr_zero,
#ifndef TRACE_PARTIAL
  .open = tr_open,
  .pread = tr_pread,
  .flush = tr_flush,
  .discard = tr_discard,
  .block_status = tr_block_status,
  .release = tr_release,
  .resume = tr_resume,
  .snapshot = tr_snapshot,
#endif
};

SL_REGISTER_FILTER(trace)
