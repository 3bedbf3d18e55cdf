/* qcow2 internal snapshots: reading the snapshot table.
 *
 * `qemu-img snapshot -c` records the image's L1 table in a snapshot table
 * entry and raises the refcount of every L2 table and data cluster it
 * references, so that the live image copies a cluster before it writes
 * it (the COPIED flag is clear on shared entries; qcow2-cluster.c does the
 * copy-on-write).  sluice never creates, applies or deletes snapshots; it
 * has to know where they are for three reasons: check counts the clusters
 * they reference (no false leaks), info shows them as qemu-img does, and
 * the metadata overlap check must never let a write land on the snapshot
 * table or a snapshot's L1 table.
 *
 * The table is parsed once at open into s->snapshots.  A table that does
 * not parse (past the end of the file, absurd sizes) is remembered in
 * s->snapshot_error rather than failing the open: read-only opens (info,
 * check, convert) still work, while a writable open is refused, because
 * a writer that does not know where the snapshots are could overwrite
 * them (QEMU refuses every open of such an image).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/error.h>
#include "common/util.h"
#include "image/qcow2.h"

#define SNAPSHOT_HEADER_LEN 40
#define MAX_SNAPSHOTS 65536
#define MAX_SNAPSHOT_EXTRA 1024
#define MAX_SNAPSHOT_TABLE (64u << 20)

static void snapshot_fail(struct qcow2_state *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void snapshot_fail(struct qcow2_state *s, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  free(s->snapshot_error);
  if (vasprintf(&s->snapshot_error, fmt, ap) < 0)
    s->snapshot_error = NULL;
  va_end(ap);
  qcow2_free_snapshots(s);
}

void qcow2_free_snapshots(struct qcow2_state *s)
{
  for (uint32_t i = 0; i < s->nsnapshots; i++) {
    free(s->snapshots[i].id);
    free(s->snapshots[i].name);
  }
  free(s->snapshots);
  s->snapshots = NULL;
  s->nsnapshots = 0;
  s->snapshots_size = 0;
}

int qcow2_read_snapshots(struct qcow2_state *s)
{
  const char *fn = s->img->filename;
  uint64_t cs = s->cluster_size, fsize = qcow2_file_size(s);
  if (s->nb_snapshots == 0)
    return 0;
  if (s->nb_snapshots > MAX_SNAPSHOTS) {
    snapshot_fail(s, "%s: the snapshot table has %u entries, more than "
                  "%u", fn, s->nb_snapshots, MAX_SNAPSHOTS);
    return 0;
  }
  uint64_t off = s->snapshots_offset;
  if (off == 0 || (off & (cs - 1)) || off >= fsize) {
    snapshot_fail(s, "%s: the snapshot table offset 0x%" PRIx64 " is "
                  "invalid", fn, off);
    return 0;
  }
  s->snapshots = calloc(s->nb_snapshots, sizeof *s->snapshots);
  if (!s->snapshots)
    return sl_error(ENOMEM, "%s: out of memory", fn);
  uint64_t pos = off;
  for (uint32_t i = 0; i < s->nb_snapshots; i++) {
    uint8_t h[SNAPSHOT_HEADER_LEN];
    if (pos + SNAPSHOT_HEADER_LEN > fsize) {
      snapshot_fail(s, "%s: snapshot table entry %u lies past the end of "
                    "the file", fn, i);
      return 0;
    }
    int r = qcow2_io_read(s, h, sizeof h, pos);
    if (r < 0)
      return r;
    struct qcow2_snapshot *sn = &s->snapshots[i];
    s->nsnapshots = i + 1;
    sn->l1_offset = qcow2_be64(h);
    sn->l1_size = qcow2_be32(h + 8);
    uint32_t id_len = (uint32_t)h[12] << 8 | h[13];
    uint32_t name_len = (uint32_t)h[14] << 8 | h[15];
    sn->date_sec = qcow2_be32(h + 16);
    sn->date_nsec = qcow2_be32(h + 20);
    sn->vm_clock_nsec = qcow2_be64(h + 24);
    sn->vm_state_size = qcow2_be32(h + 32);
    sn->extra_size = qcow2_be32(h + 36);
    sn->disk_size = s->size;
    sn->icount = UINT64_MAX;
    if (sn->extra_size > MAX_SNAPSHOT_EXTRA) {
      snapshot_fail(s, "%s: snapshot %u has %u bytes of extra data, more "
                    "than %u", fn, i, sn->extra_size, MAX_SNAPSHOT_EXTRA);
      return 0;
    }
    uint64_t body = (uint64_t)sn->extra_size + id_len + name_len;
    uint64_t next = pos + SL_ROUND_UP(SNAPSHOT_HEADER_LEN + body, 8);
    if (pos + SNAPSHOT_HEADER_LEN + body > fsize ||
        next - off > MAX_SNAPSHOT_TABLE) {
      snapshot_fail(s, "%s: snapshot table entry %u lies past the end of "
                    "the file", fn, i);
      return 0;
    }
    uint8_t *b = malloc(body + 1);
    if (!b)
      return sl_error(ENOMEM, "%s: out of memory", fn);
    r = qcow2_io_read(s, b, body, pos + SNAPSHOT_HEADER_LEN);
    if (r < 0) {
      free(b);
      return r;
    }
    if (sn->extra_size >= 8)
      sn->vm_state_size = qcow2_be64(b);
    if (sn->extra_size >= 16)
      sn->disk_size = qcow2_be64(b + 8);
    if (sn->extra_size >= 24)
      sn->icount = qcow2_be64(b + 16);
    sn->id = strndup((char *)b + sn->extra_size, id_len);
    sn->name = strndup((char *)b + sn->extra_size + id_len, name_len);
    free(b);
    if (!sn->id || !sn->name)
      return sl_error(ENOMEM, "%s: out of memory", fn);
    uint64_t l1_bytes = (uint64_t)sn->l1_size * 8;
    if (l1_bytes > QCOW2_MAX_L1_BYTES) {
      snapshot_fail(s, "%s: snapshot '%s' has an L1 table of %u entries, "
                    "too large", fn, sn->name, sn->l1_size);
      return 0;
    }
    if (sn->l1_size && ((sn->l1_offset & (cs - 1)) || sn->l1_offset == 0 ||
                        sn->l1_offset > fsize ||
                        l1_bytes > fsize - sn->l1_offset)) {
      snapshot_fail(s, "%s: snapshot '%s' has an invalid L1 table offset "
                    "0x%" PRIx64, fn, sn->name, sn->l1_offset);
      return 0;
    }
    pos = next;
  }
  s->snapshots_size = pos - off;
  return 0;
}
