#!/usr/bin/python3
"""bedGraph (plain or gzip/bgzip, sorted in .fai order) -> bigWig, with pyBigWig.

Usage: bedgraph_to_bigwig.py GENOME.fa.fai IN.bedgraph[.gz] OUT.bw
Values are written as they are (one entry per bedGraph line); the output appears only when complete.
"""
import gzip, os, sys

import pyBigWig

fai, src, dst = sys.argv[1:4]
sizes = []
with open(fai) as f:
    for line in f:
        if line.strip():
            name, length = line.split("\t")[:2]
            sizes.append((name, int(length)))
tmp = os.path.join(os.path.dirname(os.path.abspath(dst)), "." + os.path.basename(dst) + ".tmp")
bw = pyBigWig.open(tmp, "w")
bw.addHeader(sizes, maxZooms=10)
opener = gzip.open if src.endswith(".gz") else open
batch = ([], [], [], [])
n = 0


def flush():
    if batch[0]:
        bw.addEntries(batch[0], batch[1], ends=batch[2], values=batch[3])
        for b in batch:
            b.clear()


with opener(src, "rt") as f:
    for lineno, line in enumerate(f, 1):
        if not line.strip() or line.startswith(("track", "browser", "#")):
            continue
        try:
            c, s, e, v = line.split("\t")[:4]
            batch[0].append(c)
            batch[1].append(int(s))
            batch[2].append(int(e))
            batch[3].append(float(v))
        except ValueError:
            sys.exit(f"{src}:{lineno}: not a bedGraph line: {line.strip()!r}")
        n += 1
        if len(batch[0]) >= 1 << 16:
            flush()
flush()
bw.close()
os.replace(tmp, dst)
print(f"{dst}: {n} entries", file=sys.stderr)
