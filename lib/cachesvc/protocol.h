/* The sluiced wire protocol (version 1): what the host cache daemon and its
 * clients (the cache filter's client in libsluice, `sluice cache`, the
 * tests) say to each other over a UNIX stream socket.  docs/sluiced-protocol.md
 * is the prose specification; this header is its single C definition, and
 * protocol.c holds the encoders and the validators both sides use, so that
 * the daemon and its clients cannot drift apart.
 *
 * Why these shapes:
 *  - Every message is a fixed 24-byte header (magic, version, opcode,
 *    length, status, request id) and a body whose size the opcode fixes (or,
 *    for READ and STATS, a count fixes).  A receiver can therefore check a
 *    message completely before acting on it, and anything that does not
 *    check out is a protocol error that ends that one connection.
 *  - Both ends share a host, so integers are in host byte order and the
 *    structures are naturally aligned with explicit padding (no
 *    `packed`): the compiler lays them out identically on both sides, and
 *    static asserts in protocol.c pin the sizes.
 *  - Clients never name global objects.  A layer or a memory handle is
 *    named by a small number the daemon chose for this connection when it
 *    was registered; a number the connection was not given names nothing
 *    (-EBADF), so a forged id cannot reach another client's layer.
 *  - Data never travels over the socket: a READ names where the bytes go
 *    (a registered memory handle and an offset in it), the daemon copies
 *    them there, and the reply only carries a status per entry.
 *
 * Compatibility: version 1 is frozen once landed.  Later changes add
 * opcodes, flags or trailing fields under a new version number that HELLO
 * negotiates; docs/sluiced-protocol.md keeps the change log. */
#ifndef SLUICE_CACHESVC_PROTOCOL_H
#define SLUICE_CACHESVC_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SL_CS_MAGIC 0x44434c53u   /* "SLCD" in memory on little-endian hosts */
#define SL_CS_VERSION_MIN 1
#define SL_CS_VERSION_MAX 2       /* 2: REGISTER_RBD */
#define SL_CS_MAX_MSG 65536u      /* largest message, header included */
#define SL_CS_MAX_BATCH 1024u     /* entries in one READ */
#define SL_CS_MAX_READ (2u << 20) /* bytes of one READ entry */
#define SL_CS_MAX_ERRMSG 256u     /* text after an error reply's header */
#define SL_CS_SECTION_SIZE (2u << 20) /* the daemon maps handles in these */
#define SL_CS_MAX_HANDLE_RANGE (64ull << 30) /* bytes one memory handle may span */
#define SL_CS_PATH_MAX 160u       /* layer path bytes in STATS (truncated) */
#define SL_CS_DEFAULT_SOCKET "/run/sluice/sluiced.sock"

enum sl_cs_op {
  SL_CS_HELLO = 1,
  SL_CS_REGISTER_LAYER = 2,
  SL_CS_UNREGISTER_LAYER = 3,
  SL_CS_REGISTER_HANDLE = 4,
  SL_CS_UNREGISTER_HANDLE = 5,
  SL_CS_READ = 6,
  SL_CS_INVALIDATE = 7,
  SL_CS_STATS = 8,
  SL_CS_DROP = 9,
  SL_CS_REGISTER_RBD = 10,        /* version 2 */
  SL_CS_OP_MAX = SL_CS_REGISTER_RBD,
  /* Sent by the daemon alone, just before it closes a connection that
   * broke the protocol; the id is the offending request's when known. */
  SL_CS_ERROR = 0x7fff,
};
#define SL_CS_REPLY 0x8000u       /* set in the opcode of every reply */

struct sl_cs_hdr {
  uint32_t magic;                 /* SL_CS_MAGIC */
  uint16_t version;               /* negotiated version (HELLO: see below) */
  uint16_t op;                    /* enum sl_cs_op, | SL_CS_REPLY in replies */
  uint32_t length;                /* whole message, header included */
  int32_t status;                 /* replies: 0 or -errno; requests: 0 */
  uint64_t id;                    /* chosen by the client, echoed in its reply */
};

/* HELLO: the first message of a connection.  The header carries
 * SL_CS_VERSION_MIN; the body the range the client speaks.  The reply's
 * header carries the chosen version (the highest both speak), which every
 * later message of the connection must carry. */
struct sl_cs_hello {
  uint16_t min_version;
  uint16_t max_version;
  uint32_t flags;                 /* none defined: 0 */
};
struct sl_cs_hello_reply {
  uint16_t version;
  uint16_t reserved;
  uint32_t block_size;            /* the daemon's cache block */
  uint32_t section_size;          /* how it maps memory handles */
  uint32_t max_batch;             /* SL_CS_MAX_BATCH */
  uint64_t capacity_blocks;
  uint32_t max_msg;               /* SL_CS_MAX_MSG */
  uint32_t reserved2;
};

/* REGISTER_LAYER: sent with exactly one descriptor (SCM_RIGHTS in the same
 * sendmsg), open read-only on a regular file or block device. */
#define SL_CS_LAYER_PRIVATE 0x1u  /* a namespace of this connection alone
                                   * (the writable top layer of one disk;
                                   * the client invalidates on write) */
#define SL_CS_LAYER_FLAGS SL_CS_LAYER_PRIVATE
struct sl_cs_register_layer {
  uint32_t flags;
  uint32_t reserved;
};
struct sl_cs_register_layer_reply {
  uint32_t layer;                 /* handle, local to the connection */
  uint32_t flags;                 /* SL_CS_LAYER_* as granted */
  uint64_t size;                  /* bytes of the layer file */
};

/* REGISTER_RBD (version 2): a snapshot of a Ceph RBD image as a shared
 * layer.  No descriptor: the daemon connects to the configured cluster
 * whose monitors MON_HOST names, as client.USER with KEY (the cephx
 * secret, base64), and opens read-only the snapshot the client opened
 * itself, by its ids (FSID, POOL_ID, NS, IMAGE_ID, SNAP_ID; never by the
 * names, which may since name another snapshot), refusing with ESTALE a
 * cluster of another fsid or a size other than SIZE.  POOL, IMAGE and
 * SNAP are only what it shows.  The layer's identity is (fsid, pool id,
 * namespace, image id, snapshot id).  Each text field is NUL-terminated
 * within its size with only zeros after the NUL; NS may be empty, SNAP
 * may be empty (refused: not a snapshot), the others may not.  The
 * client's ceph.conf is never read by the daemon: a configuration file
 * can load plugins and name log files, which no client may choose for it.
 * Reply: struct sl_cs_register_layer_reply. */
#define SL_CS_RBD_NAME 128u
#define SL_CS_RBD_USER 64u
#define SL_CS_RBD_KEY 128u
#define SL_CS_RBD_MON 512u
struct sl_cs_register_rbd {
  uint32_t flags;                 /* none defined: 0 */
  uint32_t reserved;
  char pool[SL_CS_RBD_NAME];
  char ns[SL_CS_RBD_NAME];
  char image[SL_CS_RBD_NAME];
  char snap[SL_CS_RBD_NAME];
  char user[SL_CS_RBD_USER];      /* the client id, without "client." */
  char key[SL_CS_RBD_KEY];
  char mon_host[SL_CS_RBD_MON];   /* as ceph.conf's mon_host */
  /* What the client opened (what it will read if the daemon is gone): */
  char fsid[48];                  /* the cluster's */
  char image_id[64];              /* rbd_get_id */
  int64_t pool_id;                /* rados_ioctx_get_id */
  uint64_t snap_id;
  uint64_t size;                  /* the snapshot's bytes */
};

/* UNREGISTER_LAYER, UNREGISTER_HANDLE: the handle to forget.  Reply: no
 * body. */
struct sl_cs_unregister {
  uint32_t handle;
  uint32_t reserved;
};

/* REGISTER_HANDLE: sent with exactly one descriptor, a memfd sealed with at
 * least F_SEAL_SHRINK.  The daemon may touch bytes [offset, offset+length)
 * of it and no others, only as RIGHTS allow.  Offsets of READ entries are
 * relative to OFFSET. */
#define SL_CS_RIGHT_WRITE 0x1u    /* the daemon may write (READ fills it) */
#define SL_CS_RIGHT_READ 0x2u     /* the daemon may read (reserved for later
                                   * operations that take data from it) */
#define SL_CS_RIGHTS (SL_CS_RIGHT_WRITE | SL_CS_RIGHT_READ)
struct sl_cs_register_handle {
  uint64_t offset;
  uint64_t length;
  uint32_t rights;
  uint32_t reserved;
};
struct sl_cs_register_handle_reply {
  uint32_t handle;
  uint32_t reserved;
};

/* READ: COUNT entries follow.  Each asks for LENGTH bytes of a layer at
 * FILE_OFFSET, to be written into a memory handle at HANDLE_OFFSET.  The
 * reply carries the same count and one result per entry, in order. */
struct sl_cs_read {
  uint32_t count;                 /* 1..SL_CS_MAX_BATCH */
  uint32_t flags;                 /* none defined: 0 */
};
struct sl_cs_read_entry {
  uint32_t layer;
  uint32_t handle;
  uint64_t file_offset;
  uint64_t handle_offset;
  uint32_t length;                /* 1..SL_CS_MAX_READ */
  uint32_t reserved;
};
#define SL_CS_RESULT_HIT 0x1u     /* every block of the entry was cached */
struct sl_cs_read_result {
  int32_t status;                 /* 0: the bytes are in the handle; -errno */
  uint32_t flags;                 /* SL_CS_RESULT_* */
};
struct sl_cs_read_reply {
  uint32_t count;
  uint32_t reserved;
};

/* INVALIDATE: forget the cached blocks of a layer that overlap [offset,
 * offset + length); LENGTH UINT64_MAX means to the end.  Reply: no body. */
struct sl_cs_invalidate {
  uint32_t layer;
  uint32_t reserved;
  uint64_t offset;
  uint64_t length;
};

/* DROP: forget every cached block of one layer (of this connection), or
 * with SL_CS_DROP_ALL of every layer (LAYER ignored).  Reply: no body. */
#define SL_CS_DROP_ALL 0x1u
struct sl_cs_drop {
  uint32_t layer;
  uint32_t flags;
};

/* STATS: totals and up to MAX_LAYERS per-layer records starting at the
 * daemon's layer index FIRST (0 to begin; the reply's NEXT continues,
 * UINT32_MAX when done).  The indices page a listing; they name nothing a
 * client can use. */
struct sl_cs_stats {
  uint32_t first;
  uint32_t max_layers;            /* 0 = as many as fit in one message */
};
struct sl_cs_counters {
  uint64_t hits;                  /* blocks served from the cache */
  uint64_t misses;                /* blocks that were not (filled, waited or read through) */
  uint64_t fills;                 /* blocks the daemon read from the layer */
  uint64_t bytes_served;          /* bytes written into clients' handles */
  uint64_t backend_bytes;         /* bytes read from layer files */
  uint64_t resident_blocks;
};
struct sl_cs_stats_reply {
  struct sl_cs_counters total;
  uint64_t ghost_entries;
  uint64_t mapped_sections;
  uint64_t clients;
  uint64_t layers;
  uint64_t capacity_blocks;
  uint64_t memory_bytes;          /* the data area */
  uint64_t metadata_bytes;        /* everything the cache keeps beside it */
  uint32_t block_size;
  uint32_t count;                 /* layer records that follow */
  uint32_t next;                  /* FIRST of the next page, or UINT32_MAX */
  uint32_t reserved;
};
#define SL_CS_LSTAT_DEAD 0x1u     /* changed: never served again */
#define SL_CS_LSTAT_BLOCKDEV 0x2u
#define SL_CS_LSTAT_DIRECT 0x4u   /* filled with O_DIRECT */
#define SL_CS_LSTAT_LEASE 0x8u    /* guarded by a read lease */
#define SL_CS_LSTAT_PRIVATE 0x10u /* registered with SL_CS_LAYER_PRIVATE */
#define SL_CS_LSTAT_OTHER 0x20u   /* not this client's: path, dev, ino withheld */
#define SL_CS_LSTAT_RBD 0x40u     /* an RBD snapshot (version 2) */
struct sl_cs_layer_stats {
  struct sl_cs_counters c;
  uint64_t dev, ino, size;
  uint64_t clients;               /* registrations now */
  uint32_t index;
  uint32_t flags;                 /* SL_CS_LSTAT_* */
  char path[SL_CS_PATH_MAX];      /* NUL-terminated, possibly truncated */
};

/* A request as the daemon's parser sees it: pointers into the message. */
struct sl_cs_request {
  struct sl_cs_hdr hdr;
  union {
    const struct sl_cs_hello *hello;
    const struct sl_cs_register_layer *reg_layer;
    const struct sl_cs_register_rbd *reg_rbd;
    const struct sl_cs_unregister *unreg;
    const struct sl_cs_register_handle *reg_handle;
    const struct sl_cs_invalidate *invalidate;
    const struct sl_cs_stats *stats;
    const struct sl_cs_drop *drop;
  } u;
  const struct sl_cs_read *read;
  const struct sl_cs_read_entry *entries; /* READ: read->count of them */
};

/* Stream framing: how many bytes the first message of BUF (LEN bytes
 * available) takes.  0 if more bytes are needed to know or to complete it;
 * -EPROTO (with a message) if the header cannot be valid (bad magic,
 * length below the header or above SL_CS_MAX_MSG).  Checks the header
 * alone. */
long sl_cs_frame(const void *buf, size_t len);

/* The number of descriptors a request with opcode OP carries (0 or 1). */
int sl_cs_request_fds(uint16_t op);

/* Check one complete request (LEN bytes, as framed) completely: magic,
 * VERSION (the negotiated one; 0 before HELLO, when only HELLO is
 * accepted), opcode, exact body size for it, zero status and reserved
 * fields, known flags, batch count and entry lengths in range.  Fills REQ
 * with pointers into BUF, which must be aligned to 8 bytes.  0, or -EPROTO
 * with a message naming the field.  Whether a handle or layer number names
 * something is for the daemon to check. */
int sl_cs_parse_request(const void *buf, size_t len, uint16_t version,
                        struct sl_cs_request *req);

/* Check a reply for a request with opcode OP: magic, the reply bit, length
 * exact for the opcode (or carrying an error text when status < 0).  For
 * READ, COUNT is the request's entry count.  0 or -EPROTO. */
int sl_cs_check_reply(const void *buf, size_t len, uint16_t op, uint32_t count);

/* Encoders: write a message into BUF (CAP bytes, aligned to 8) and return
 * its length, or -EMSGSIZE if it does not fit. */
long sl_cs_encode(void *buf, size_t cap, uint16_t version, uint16_t op,
                  int32_t status, uint64_t id, const void *body, size_t body_len);
long sl_cs_encode_read(void *buf, size_t cap, uint16_t version, uint64_t id,
                       const struct sl_cs_read_entry *e, uint32_t count);
/* A reply with STATUS < 0 and TEXT (truncated to SL_CS_MAX_ERRMSG - 1) as
 * its NUL-terminated body. */
long sl_cs_encode_error(void *buf, size_t cap, uint16_t version, uint16_t op,
                        int32_t status, uint64_t id, const char *text);

/* The error text of a reply with status < 0 ("" if none). */
const char *sl_cs_error_text(const void *buf, size_t len);

const char *sl_cs_op_name(uint16_t op);

/* Is the process at the other end of FD, connected to the socket file
 * PATH, one to trust as sluiced?  Its credentials (SO_PEERCRED) must be
 * root's or those of PATH's owner.  0, or -EPERM with a message. */
int sl_cs_check_daemon(int fd, const char *path);

#endif
