#!/usr/bin/env python3
"""qcow2 corruption corpus: damaged copies of one clean image, one per kind.

Why a generator and not stored images: the damage is described against
the structure of a real qemu-img image (where its L1, L2 tables, refcount
table and blocks, snapshot table and data actually are), so each kind
names what it breaks and stays meaningful if qemu-img's layout changes.
The base is made by qemu-img and written by qemu-io: known byte patterns
at known guest offsets (data() below), an internal snapshot, and one write
after it, so the image has a snapshot table, an inactive L1 and shared
clusters.  The differential test (test-image-corrupt-diff.sh) uses data() to
count how much of the guest's data survives each tool's repair.

The libFuzzer image target's seeds fuzz/corpus/image/corrupt-KIND.qcow2
are `apply KIND` on `base IMAGE 512` (512-byte clusters keep them ~9 KiB).

Usage:
  qcow2-corrupt.py kinds                     the kinds, one per line
  qcow2-corrupt.py base IMAGE [CLUSTER_SIZE] make the clean base image
  qcow2-corrupt.py apply KIND IMAGE          damage IMAGE in place
  qcow2-corrupt.py data [CLUSTER_SIZE]       "offset length pattern" lines
  qcow2-corrupt.py recovered RAW [CLUSTER_SIZE]
                                             how many 512-byte blocks of the
                                             written data RAW holds
"""
import os
import struct
import subprocess
import sys

COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET_MASK = 0x00fffffffffffe00


def span(cs):
    """Guest bytes one L2 table maps."""
    return cs * cs // 8


def size(cs):
    return 4 * span(cs)


def data(cs):
    """(guest offset, bytes, pattern byte) written before and after the
    snapshot: data under L1 entries 0, 1 and 3; with 4 KiB clusters at
    0, 2M and 6M+4k, then 4k (copy-on-write of a shared cluster)."""
    before = [(0, 4 * cs, 0x11), (span(cs), 2 * cs, 0x22),
              (3 * span(cs) + cs, cs, 0x33)]
    after = [(cs, cs, 0x44)]
    return before, after


def data_blocks(cs):
    """The final guest contents: {512-byte block offset: pattern}."""
    blocks = {}
    before, after = data(cs)
    for off, n, pat in before + after:
        for b in range(off, off + n, 512):
            blocks[b] = pat
    return blocks


def make_base(path, cs=4096):
    def run(*cmd):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o",
        "cluster_size=%d" % cs, path, str(size(cs)))
    before, after = data(cs)
    for batch in (before, "snapshot", after):
        if batch == "snapshot":
            run("qemu-img", "snapshot", "-c", "s1", path)
            continue
        args = []
        for off, n, pat in batch:
            args += ["-c", "write -P 0x%x %d %d" % (pat, off, n)]
        run("qemu-io", *args, path)


class Image:
    def __init__(self, path):
        self.f = open(path, "r+b")
        self.cb = self.u32(20)
        self.cs = 1 << self.cb
        self.l1_size = self.u32(36)
        self.l1 = self.u64(40)
        self.rt = self.u64(48)
        self.rt_clusters = self.u32(56)
        self.nb_snap = self.u32(60)
        self.snap = self.u64(64)
        self.order = self.u32(96)
        self.f.seek(0, 2)
        self.end = self.f.tell()
        self.rb0 = self.u64(self.rt) & OFFSET_MASK
        self.l2 = [self.u64(self.l1 + 8 * i) & OFFSET_MASK
                   for i in range(self.l1_size)]
        self.l2a = self.l2[0]                      # guest 0..span
        self.l2b = self.l2[1]                      # guest span..2*span
        self.snap_l1 = self.u64(self.snap) if self.nb_snap else 0

    def u32(self, off):
        self.f.seek(off)
        return struct.unpack(">I", self.f.read(4))[0]

    def u64(self, off):
        self.f.seek(off)
        return struct.unpack(">Q", self.f.read(8))[0]

    def w32(self, off, v):
        self.f.seek(off)
        self.f.write(struct.pack(">I", v & 0xffffffff))

    def w64(self, off, v):
        self.f.seek(off)
        self.f.write(struct.pack(">Q", v & 0xffffffffffffffff))

    def l2e(self, table, i):
        return self.u64(table + 8 * i)

    def set_refcount(self, host, v):
        c = host >> self.cb
        bits = 1 << self.order
        per_block = self.cs * 8 // bits
        blk = self.u64(self.rt + 8 * (c // per_block)) & OFFSET_MASK
        assert bits == 16, "the corpus expects 16-bit refcounts"
        self.f.seek(blk + 2 * (c % per_block))
        self.f.write(struct.pack(">H", v))

    def truncate(self, off):
        self.f.truncate(off)


def past_eof(img):
    return (img.end + 64 * img.cs) & ~(img.cs - 1)


# Each kind: (name, what it does, function(img)).
def kinds():
    k = []

    def add(name, doc):
        def deco(fn):
            k.append((name, doc, fn))
            return fn
        return deco

    # L1 entries (an L2 table) pointing into other metadata.
    @add("l1-into-l1", "L1[1] names the L1 table itself as its L2 table")
    def _(i): i.w64(i.l1 + 8, i.l1 | COPIED)

    @add("l1-into-reftable", "L1[1] names the refcount table as an L2 table")
    def _(i): i.w64(i.l1 + 8, i.rt | COPIED)

    @add("l1-into-refblock", "L1[1] names a refcount block as an L2 table")
    def _(i): i.w64(i.l1 + 8, i.rb0 | COPIED)

    @add("l1-into-l2", "L1[1] names L1[0]'s L2 table (one table, two entries)")
    def _(i): i.w64(i.l1 + 8, i.l2a | COPIED)

    @add("l1-into-snaptable", "L1[1] names the snapshot table as an L2 table")
    def _(i): i.w64(i.l1 + 8, i.snap | COPIED)

    @add("l1-past-eof", "L1[1] names an L2 table past the end of the file")
    def _(i): i.w64(i.l1 + 8, past_eof(i) | COPIED)

    @add("l1-unaligned", "L1[1] names an L2 table 512 bytes into a cluster")
    def _(i): i.w64(i.l1 + 8, (i.l2b + 512) | COPIED)

    @add("l1-reserved", "L1[0] has reserved bit 1 set")
    def _(i): i.w64(i.l1, i.u64(i.l1) | 2)

    # L2 entries (data clusters) pointing into metadata.
    @add("l2-into-header", "a compressed L2 entry whose data lies in the header")
    def _(i): i.w64(i.l2a + 8 * 8, COMPRESSED | 0x100)

    @add("l2-into-l1", "L2 entry 1 names the L1 table as its data cluster")
    def _(i): i.w64(i.l2a + 8, i.l1 | COPIED)

    @add("l2-into-l2", "L2 entry 1 names its own L2 table as data")
    def _(i): i.w64(i.l2a + 8, i.l2a | COPIED)

    @add("l2-into-reftable", "L2 entry 1 names the refcount table as data")
    def _(i): i.w64(i.l2a + 8, i.rt | COPIED)

    @add("l2-into-refblock", "L2 entry 1 names a refcount block as data")
    def _(i): i.w64(i.l2a + 8, i.rb0 | COPIED)

    @add("l2-into-snapl1", "L2 entry 1 names the snapshot's L1 table as data")
    def _(i): i.w64(i.l2a + 8, (i.snap_l1 & ~(i.cs - 1)) | COPIED)

    @add("l2-dup", "L2 entries 0 and 1 of the second table name one cluster")
    def _(i): i.w64(i.l2b + 8, i.l2e(i.l2b, 0))

    @add("l2-past-eof", "L2 entry 2 names a data cluster past the end of file")
    def _(i): i.w64(i.l2a + 16, past_eof(i) | COPIED)

    @add("l2-unaligned", "L2 entry 0 of the second table is 512 bytes off")
    def _(i): i.w64(i.l2b, i.l2e(i.l2b, 0) + 512)

    @add("l2-reserved", "L2 entry 2 has reserved bit 1 set")
    def _(i): i.w64(i.l2a + 16, i.l2e(i.l2a, 2) | 2)

    # Refcount table entries (refcount blocks) over other metadata.
    @add("rt-into-l1", "the refcount table names the L1 table as block 0")
    def _(i): i.w64(i.rt, i.l1)

    @add("rt-into-l2", "the refcount table names an L2 table as block 0")
    def _(i): i.w64(i.rt, i.l2a)

    @add("rt-into-reftable", "the refcount table names itself as block 0")
    def _(i): i.w64(i.rt, i.rt)

    @add("rt-past-eof", "refcount block 0 lies past the end of the file")
    def _(i): i.w64(i.rt, past_eof(i))

    @add("rt-unaligned", "refcount block 0 is 512 bytes into its cluster")
    def _(i): i.w64(i.rt, i.rb0 + 512)

    @add("rt-reserved", "refcount table entry 0 has reserved bit 0 set")
    def _(i): i.w64(i.rt, i.rb0 | 1)

    # Refcount entries.
    @add("rc-zero-data", "the refcount of an active data cluster is 0")
    def _(i): i.set_refcount(i.l2e(i.l2b, 0) & OFFSET_MASK, 0)

    @add("rc-zero-l2", "the refcount of an active L2 table is 0")
    def _(i): i.set_refcount(i.l2b, 0)

    @add("rc-zero-l1", "the refcount of the L1 table is 0")
    def _(i): i.set_refcount(i.l1, 0)

    @add("rc-zero-refblock", "the refcount of refcount block 0 is 0")
    def _(i): i.set_refcount(i.rb0, 0)

    @add("rc-two-data", "the refcount of an owned data cluster is 2")
    def _(i): i.set_refcount(i.l2e(i.l2a, 1) & OFFSET_MASK, 2)

    # Header fields: single bit flips.
    @add("hdr-l1-size", "header l1_size with bit 4 flipped")
    def _(i): i.w32(36, i.l1_size ^ 0x10)

    @add("hdr-l1-size-zero", "header l1_size 0 (too small for the size)")
    def _(i): i.w32(36, 0)

    @add("hdr-refcount-order", "header refcount_order 4 -> 5")
    def _(i): i.w32(96, i.order ^ 1)

    @add("hdr-cluster-bits", "header cluster_bits with bit 0 flipped")
    def _(i): i.w32(20, i.cb ^ 1)

    @add("hdr-cluster-bits-big", "header cluster_bits with bit 4 flipped")
    def _(i): i.w32(20, i.cb ^ 0x10)

    @add("hdr-backing-offset", "header backing_file_offset bit 20, length 4")
    def _(i): i.w64(8, 1 << 20); i.w32(16, 4)

    @add("hdr-backing-length", "a backing name running past the header cluster")
    def _(i): i.w64(8, i.cs - 256); i.w32(16, 1000)

    @add("hdr-header-length", "header_length with bit 12 flipped")
    def _(i): i.w32(100, i.u32(100) ^ 0x1000)

    @add("hdr-ext-length", "first header extension's length with bit 12 flipped")
    def _(i): i.w32(i.u32(100) + 4, i.u32(i.u32(100) + 4) ^ 0x1000)

    @add("hdr-l1-offset", "header l1_table_offset names the refcount table")
    def _(i): i.w64(40, i.rt)

    @add("hdr-rt-offset", "header refcount_table_offset names the L1 table")
    def _(i): i.w64(48, i.l1)

    # Snapshot table.
    @add("snap-table-into-l1", "header snapshot table offset names the L1 table")
    def _(i): i.w64(64, i.l1)

    @add("snap-l1-into-l1", "the snapshot's L1 pointer names the active L1")
    def _(i): i.w64(i.snap, i.l1)

    @add("snap-l1-past-eof", "the snapshot's L1 table lies past the end of file")
    def _(i): i.w64(i.snap, past_eof(i))

    # Truncation inside each structure.
    @add("trunc-reftable", "file truncated in the middle of the refcount table")
    def _(i): i.truncate(i.rt + i.cs // 2)

    @add("trunc-refblock", "file truncated in the middle of refcount block 0")
    def _(i): i.truncate(i.rb0 + i.cs // 2)

    @add("trunc-l1", "file truncated in the middle of the L1 table")
    def _(i): i.truncate(i.l1 + 16)

    @add("trunc-l2", "file truncated in the middle of the last L2 table")
    def _(i): i.truncate(max(x for x in i.l2 if x) + i.cs // 2)

    @add("trunc-data", "file truncated in the middle of the last data cluster")
    def _(i): i.truncate(i.end - i.cs // 2)

    @add("trunc-snaptable", "file truncated inside the snapshot table")
    def _(i): i.truncate(i.snap + 16)

    return k


def main(argv):
    if len(argv) >= 2 and argv[1] == "kinds":
        for name, doc, _ in kinds():
            print(name if "-v" not in argv else "%-22s %s" % (name, doc))
    elif len(argv) >= 3 and argv[1] == "base":
        make_base(argv[2], int(argv[3]) if len(argv) > 3 else 4096)
    elif len(argv) == 4 and argv[1] == "apply":
        table = {name: fn for name, _, fn in kinds()}
        if argv[2] not in table:
            sys.exit("qcow2-corrupt: unknown kind '%s'" % argv[2])
        img = Image(argv[3])
        table[argv[2]](img)
        img.f.close()
    elif len(argv) in (2, 3) and argv[1] == "data":
        cs = int(argv[2]) if len(argv) > 2 else 4096
        for b, pat in sorted(data_blocks(cs).items()):
            print(b, 512, "0x%02x" % pat)
    elif len(argv) in (3, 4) and argv[1] == "recovered":
        cs = int(argv[3]) if len(argv) > 3 else 4096
        n = 0
        try:
            with open(argv[2], "rb") as f:
                for b, pat in data_blocks(cs).items():
                    f.seek(b)
                    n += f.read(512) == bytes([pat]) * 512
        except OSError:
            pass
        print(n)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
