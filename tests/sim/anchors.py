#!/usr/bin/env python3
"""Check `sluice sim` against the libCacheSim miss ratios in ANCHORS.md.

The expected values are parsed from ANCHORS.md at run time, so the test
follows the file rather than a copy of it.  FIFO, LRU and Belady must agree
to four decimals; ARC, both S3-FIFO variants and W-TinyLFU (libCacheSim's
form, wtinylfu-cbf) within 0.5% relative.
LIRS, written from the paper rather than after libCacheSim, must agree
within 2% relative wherever the cache holds at least 10 blocks (below
that the HIR share of 2 blocks, or libCacheSim's 1, dominates; see
ANCHORS.md's caveat on tiny caches).

usage: anchors.py SLUICE ANCHORS.md TRACES_DIR all|fast|TRACE_NAME...
(fast: every table except the two large ARC traces)
Prints per policy the largest absolute and relative deviation; exits 1 if
any cell is out of tolerance.
"""
import json
import re
import subprocess
import sys

EXACT = {"FIFO": "fifo", "LRU": "lru", "Belady": "belady"}
CLOSE = {"ARC": "arc", "S3FIFO(t=2)": "s3fifo", "S3FIFO(t=1)": "s3fifo1",
         "WTinyLFU": "wtinylfu-cbf"}
# W-TinyLFU is compared only where the cache holds at least 10 blocks (its
# 1% window, like S3-FIFO's small queue, admits nothing in smaller caches).
CLOSE_MIN_BLOCKS = {"WTinyLFU": 10}
REL_TOL = 0.005
LOOSE = {"LIRS": "lirs"}
LOOSE_TOL = 0.02
LOOSE_MIN_BLOCKS = 10


def trace_spec(name, tdir):
    """Where a trace named in ANCHORS.md lives and how to read it."""
    if name == "cpio_4k":
        return [f"{tdir}/cloudphysics/cloudPhysicsIO.vscsi", "vscsi"]
    if name == "cpio_4k_reads":
        return [f"{tdir}/cloudphysics/cloudPhysicsIO.vscsi", "vscsi",
                "--reads-only"]
    if name.startswith("arc_"):
        return [f"{tdir}/arc/{name[4:]}.lis.zst", "lis"]
    if name.startswith("lirs_"):
        return [f"{tdir}/lirs/{name[5:]}.trace.gz", "txt"]
    raise SystemExit(f"anchors.py: no trace file known for {name}")


def parse_anchors(path):
    """{trace: (requests, sizes, {algo: [miss ratios]})} from the per-trace
    tables."""
    tables = {}
    current = None
    for line in open(path, encoding="utf-8"):
        m = re.match(r"### (\S+)\s+\((\d+) requests; cache sizes ([\d,]+)"
                     r" blocks = ([\d.%,]+) of footprint\)", line)
        if m:
            sizes = [float(s.rstrip("%")) / 100 for s in m.group(4).split(",")]
            current = (int(m.group(2)), sizes, {})
            tables[m.group(1)] = current
            continue
        if line.startswith("## "):
            current = None
        if current and line.startswith("| ") and not line.startswith("| algo"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            try:
                current[2][cells[0]] = [float(c) for c in
                                        cells[1:1 + len(current[1])]]
            except ValueError:
                pass
    return tables


def main():
    sluice, anchors_md, tdir, names = (sys.argv[1], sys.argv[2], sys.argv[3],
                                       sys.argv[4:])
    tables = parse_anchors(anchors_md)
    if not tables:
        raise SystemExit("anchors.py: no per-trace tables in " + anchors_md)
    if names == ["all"]:
        names = list(tables)
    elif names == ["fast"]:
        names = [n for n in tables if n not in ("arc_OLTP", "arc_P3")]
    worst = {}
    failures = []
    for name in names:
        if name not in tables:
            raise SystemExit(f"anchors.py: {name} is not in {anchors_md}")
        requests, sizes, rows = tables[name]
        spec = trace_spec(name, tdir)
        algos = {a: p for a, p in {**EXACT, **CLOSE, **LOOSE}.items()
                 if a in rows}
        cmd = [sluice, "sim", "--trace", spec[0], "--format", spec[1],
               *spec[2:], "--policy", ",".join(algos.values()),
               "--sizes", ",".join(repr(s) for s in sizes), "--output=json"]
        out = json.loads(subprocess.run(cmd, check=True, stdout=subprocess.PIPE,
                                        text=True).stdout)
        if out["requests"] != requests:
            failures.append(f"{name}: {out['requests']} requests, "
                            f"ANCHORS.md says {requests}")
        got = {(r["policy"], r["size_fraction"]): r["miss_ratio"]
               for r in out["results"]}
        blocks = {r["size_fraction"]: r["cache_blocks"] for r in out["results"]}
        for algo, pol in algos.items():
            for size, want in zip(sizes, rows[algo]):
                if algo in LOOSE and blocks[size] < LOOSE_MIN_BLOCKS:
                    continue
                if blocks[size] < CLOSE_MIN_BLOCKS.get(algo, 0):
                    continue
                have = got[(pol, size)]
                dev = abs(have - want)
                rel = dev / want if want else dev
                w = worst.setdefault(pol, [0.0, 0.0, 0])
                w[0] = max(w[0], dev)
                w[1] = max(w[1], rel)
                w[2] += 1
                if algo in EXACT:
                    ok = f"{have:.4f}" == f"{want:.4f}"
                elif algo in LOOSE:
                    ok = rel <= LOOSE_TOL
                else:
                    ok = rel <= REL_TOL
                if not ok:
                    failures.append(f"{name} {pol} @{size:g}: {have:.4f}, "
                                    f"ANCHORS.md {want:.4f}")
    for pol, (dev, rel, n) in sorted(worst.items()):
        print(f"{pol:8s} {n:3d} points  max |dev| {dev:.5f}  "
              f"max rel {rel * 100:.3f}%")
    for f in failures:
        print("MISMATCH:", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
