#!/usr/bin/python3
"""End-to-end: `dnamba track -o X.bw` read back with pyBigWig against the bedGraph of the same run.

Chromosome sizes from the FASTA index, chromosomes in name order, first base of each contig/region
without a value, regions given out of order, zoom-level summaries as pyBigWig's own writer makes
them; an unindexed FASTA and overlapping regions fail clearly and leave no file.
"""
import os, shutil, subprocess, sys, tempfile
import numpy as np
import pyBigWig
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish

DNAMBA = os.environ["DNAMBA"]
SRC = os.environ["DNAMBA_SOURCE_DIR"]


def track(*args, ok=True):
    r = subprocess.run([DNAMBA, "track", "--device", "cpu", "-q", "--model", MODEL, *args], capture_output=True, text=True)
    if ok:
        if r.returncode != 0:
            print(r.stderr)
        check(r.returncode == 0, "exit 0: track " + " ".join(args))
    return r


def bedgraph(path):
    d = {}
    for line in open(path):
        c, s, e, v = line.split("\t")
        assert int(e) == int(s) + 1
        d.setdefault(c, {})[int(s)] = float(v)
    return d


tmp = tempfile.mkdtemp(prefix="dnamba_bigwig_")
MODEL = os.path.join(tmp, "model")
subprocess.run(["/usr/bin/python3", os.path.join(SRC, "scripts/make_untrained_model.py"), MODEL, "--d-model", "16",
                "--n-layer", "1", "--d-state", "4", "--seed", "5"], check=True)
rng = np.random.default_rng(9)
sizes = {"chrB": 9000, "chr10": 700, "chrA": 1500}  # file order is not name order
fa = os.path.join(tmp, "ref.fa")
with open(fa, "w") as f:
    for name, L in sizes.items():
        s = "".join(rng.choice(list("ACGTacgN"), L))
        f.write(f">{name}\n" + "\n".join(s[i:i + 70] for i in range(0, L, 70)) + "\n")
subprocess.run(["samtools", "faidx", fa], check=True)

for what in ["loglik", "entropy"]:
    bw_path, bg_path = os.path.join(tmp, f"{what}.bw"), os.path.join(tmp, f"{what}.bedgraph")
    track("--ref", fa, "-o", bw_path, "--what", what, "--chunk", "777")
    track("--ref", fa, "-o", bg_path, "--what", what, "--chunk", "1000")
    bw = pyBigWig.open(bw_path)
    check(bw.isBigWig() and bw.chroms() == sizes, f"{what}: chromosome sizes from the index {bw.chroms()}")
    want = bedgraph(bg_path)
    err, nan_first, count = 0.0, True, 0
    for c, L in sizes.items():
        v = np.array(bw.values(c, 0, L))
        nan_first &= bool(np.isnan(v[0])) and not np.isnan(v[1:]).any()
        idx = np.array(sorted(want[c]))
        err = max(err, float(np.abs(v[idx] - np.array([want[c][i] for i in idx])).max()))
        count += len(bw.intervals(c))
    check(err < 1e-5 * 10 and nan_first and count == sum(sizes.values()) - 3,
          f"{what}: every base equals the bedGraph (max diff {err:.1e}), first base of each contig empty")
    ex = bw.stats("chrB", 0, 9000, exact=True)[0]
    check(abs(ex - np.mean(list(want["chrB"].values()))) < 1e-4, f"{what}: exact mean over chrB")
    # Zoom levels: the same summaries as pyBigWig's own writer gives for the same values.
    ref_path = os.path.join(tmp, "py.bw")
    o = pyBigWig.open(ref_path, "w")
    o.addHeader(sorted(sizes.items()), maxZooms=10)
    for c, L in sorted(sizes.items()):
        o.addEntries(c, 1, values=np.array(bw.values(c, 1, L), dtype=np.float64), span=1, step=1)
    o.close()
    p = pyBigWig.open(ref_path)
    zoom_same = all(np.allclose(bw.stats(c, 0, L, nBins=n), p.stats(c, 0, L, nBins=n), equal_nan=True)
                    for c, L in sizes.items() for n in (1, 7, 50))
    check(zoom_same and bw.header()["nLevels"] == p.header()["nLevels"], f"{what}: zoom-level summaries as pyBigWig writes them")

# Regions given out of order (and from a BED file): values only inside them, each from its own start.
bed = os.path.join(tmp, "r.bed")
open(bed, "w").write("chrA\t100\t400\n")
out = os.path.join(tmp, "reg.bw")
track("--ref", fa, "-o", out, "--region", "chrB:5001-6000", "--region", "chrB:1-100", "--regions-file", bed, "--chunk", "300")
bgo = os.path.join(tmp, "reg.bedgraph")
track("--ref", fa, "-o", bgo, "--region", "chrB:5001-6000", "--region", "chrB:1-100", "--regions-file", bed)
bw = pyBigWig.open(out)
want = bedgraph(bgo)
got = {c: {int(s): v for s, e, v in (bw.intervals(c) or [])} for c in sizes}
same = all(abs(got[c].get(s, np.inf) - v) < 1e-4 for c in want for s, v in want[c].items())
check(same and sum(len(v) for v in got.values()) == 999 + 99 + 299, "regions out of order: sorted, values equal the bedGraph")

# Bad inputs
unidx = os.path.join(tmp, "noindex.fa")
shutil.copy(fa, unidx)
bad = os.path.join(tmp, "bad.bw")
r = track("--ref", unidx, "-o", bad, ok=False)
check(r.returncode != 0 and "samtools faidx" in r.stderr and not os.path.exists(bad),
      f"FASTA without index: clear error, no output: {r.stderr.strip()}")
r = track("--ref", fa, "-o", bad, "--region", "chrB:1-100", "--region", "chrB:50-200", ok=False)
check(r.returncode != 0 and "overlapping" in r.stderr and not os.path.exists(bad),
      f"overlapping regions: clear error, no output: {r.stderr.strip()}")
r = track("--ref", fa, "-o", bad, "--region", "chrA:1-99999", ok=False)
check(r.returncode != 0 and "chrA" in r.stderr and not os.path.exists(bad), f"region past contig end: {r.stderr.strip()}")

shutil.rmtree(tmp)
finish()
