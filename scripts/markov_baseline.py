#!/usr/bin/python3
"""Order-k Markov baselines for next-base prediction, in bits per base.

For every k in --orders, counts (k+1)-mers of A/C/G/T over the training FASTA files (both
strands: each record and its reverse complement; k-mers never span records or non-ACGT bases),
then evaluates P(x | previous k bases) = (count(ctx, x) + 1) / (count(ctx) + 4) (add-one smoothing)
on the held-out sequence: every position whose base and k preceding bases are A/C/G/T (the first
k positions of the held-out sequence have no full context and are not counted). Lowercase counts as
uppercase. Prints one line per order and the best.

Default split (shared/data README): train on every FASTA under DATA except yeast chromosome XVI;
evaluate on yeast XVI (forward strand).
Usage: markov_baseline.py [--data DIR] [--orders 1-12] [--no-human] [--heldout-max-bases N] [--tsv OUT.tsv]
"""
import argparse, glob, gzip, math, os, sys, time
import numpy as np

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../shared/data"))
p.add_argument("--orders", default="1-12", help="k range, e.g. 1-12 or 4")
p.add_argument("--heldout-file", default="yeast/yeast_r64.fa.gz")
p.add_argument("--heldout-contig", default="XVI")
p.add_argument("--no-human", action="store_true", help="train on the non-human genomes only")
p.add_argument("--heldout-max-bases", type=int, default=0, help="evaluate on the first N bases only (0: all)")
p.add_argument("--tsv", help="write order<TAB>bits_per_base here")
a = p.parse_args()

LUT = np.full(256, 4, dtype=np.uint8)
for i, c in enumerate(b"ACGT"):
    LUT[c] = i
    LUT[c | 0x20] = i


def read_fasta(path):
    op = gzip.open if path.endswith(".gz") else open
    name, chunks = None, []
    with op(path, "rb") as f:
        for line in f:
            if line.startswith(b">"):
                if name is not None:
                    yield name, b"".join(chunks)
                name, chunks = line[1:].split()[0].decode(), []
            else:
                chunks.append(line.strip())
    if name is not None:
        yield name, b"".join(chunks)


def codes(seq):
    return LUT[np.frombuffer(seq, dtype=np.uint8)]


def revcomp(c):
    r = c[::-1].copy()
    ok = r < 4
    r[ok] = 3 - r[ok]
    return r


def kmers(c, m):
    """Codes of every m-mer of c (uint32, first base most significant) and a validity mask."""
    n = len(c) - m + 1
    if n <= 0:
        return np.zeros(0, np.uint32), np.zeros(0, bool)
    bad = np.concatenate([[0], np.cumsum(c == 4)])
    valid = (bad[m:] - bad[:n]) == 0
    code = np.zeros(n, np.uint32)
    cc = np.minimum(c, 3).astype(np.uint32)
    for j in range(m):
        code = (code << np.uint32(2)) | cc[j:j + n]
    return code, valid


files = sorted(glob.glob(os.path.join(a.data, "**", "*.fa"), recursive=True) +
               glob.glob(os.path.join(a.data, "**", "*.fa.gz"), recursive=True) +
               glob.glob(os.path.join(a.data, "**", "*.fasta"), recursive=True) +
               glob.glob(os.path.join(a.data, "**", "*.fasta.gz"), recursive=True))
heldout_path = os.path.normpath(os.path.join(a.data, a.heldout_file))
train, heldout = [], None
for f in files:
    if a.no_human and os.sep + "human" + os.sep in f:
        continue
    for name, seq in read_fasta(f):
        c = codes(seq)
        if os.path.normpath(f) == heldout_path and name == a.heldout_contig:
            heldout = c
            continue
        train.append(c)
        train.append(revcomp(c))
if heldout is None:
    sys.exit("held-out contig %s not found in %s" % (a.heldout_contig, heldout_path))
if a.heldout_max_bases > 0:
    heldout = heldout[:a.heldout_max_bases]
ntrain = sum(len(c) for c in train) // 2
print("# training: %d files, %d bases per strand (both strands counted); held out %s:%s, %d bases" %
      (len(files), ntrain, a.heldout_file, a.heldout_contig, len(heldout)), flush=True)

lo, _, hi = a.orders.partition("-")
orders = range(int(lo), int(hi or lo) + 1)
results = []
for k in orders:
    t0 = time.time()
    m = k + 1
    parts = []
    for c in train:
        code, valid = kmers(c, m)
        parts.append(code[valid])
    counts = np.bincount(np.concatenate(parts), minlength=4 ** m)  # one pass: 4^m can be large
    del parts
    ctx = counts.reshape(4 ** k, 4).sum(1)
    code, valid = kmers(heldout, m)
    code = code[valid]
    p_ = (counts[code] + 1.0) / (ctx[code >> np.uint32(2)] + 4.0)
    bits = float(-np.log2(p_).mean())
    results.append((k, bits, len(code)))
    print("order %2d  %.4f bits/base  (%d positions, %.1fs)" % (k, bits, len(code), time.time() - t0), flush=True)
best = min(results, key=lambda r: r[1])
print("best: order %d, %.4f bits/base" % (best[0], best[1]))
if a.tsv:
    with open(a.tsv, "w") as f:
        f.write("order\tbits_per_base\tpositions\n")
        for k, b, n in results:
            f.write("%d\t%.6f\t%d\n" % (k, b, n))
