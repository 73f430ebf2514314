#!/usr/bin/python3
"""End-to-end: `dnamba embed`, outputs read back with independent readers.

Zarr through Python zarr + numcodecs, npy through numpy, read selection against samtools. Values must
equal an independent numpy Mamba forward (hidden states of every layer, Hugging Face numbering);
pooling must equal a plain numpy computation over the per-base rows; bad inputs must fail with a clear
message and leave no output behind.
"""
import json, os, shutil, subprocess, sys, tempfile
import numpy as np
import zarr
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish, load_st

DNAMBA = os.environ["DNAMBA"]
SRC = os.environ["DNAMBA_SOURCE_DIR"]


def np_hidden_states(model_dir, seq):
    """Hidden states of every layer for one sequence: [n_layer + 1] arrays [L, D] (HF numbering)."""
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_st(os.path.join(model_dir, "model.safetensors"))
    D, nl = cfg["hidden_size"], cfg["num_hidden_layers"]
    N, K, E = cfg["state_size"], cfg["conv_kernel"], cfg["intermediate_size"]
    R = cfg["time_step_rank"]
    R = -(-D // 16) if R == "auto" else R
    eps = cfg["layer_norm_epsilon"]
    ids = np.array(["ACGTN".index(c) + 7 if c in "ACGTN" else 11 for c in seq.upper()])
    norm = lambda x, p: x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w[p + ".weight"]
    h = w["backbone.embeddings.weight"][ids]
    states, res = [h.copy()], None
    for i in range(nl):
        q = f"backbone.layers.{i}."
        res = h if res is None else h + res
        if i > 0:
            states.append(res.copy())
        x = norm(res, q + "norm")
        m = q + "mixer."
        xz = x @ w[m + "in_proj.weight"].T
        xi, z = xz[:, :E], xz[:, E:]
        cw = w[m + "conv1d.weight"][:, 0, :]
        pad = np.vstack([np.zeros((K - 1, E)), xi])
        xc = sum(cw[:, k] * pad[k:k + len(xi)] for k in range(K)) + w[m + "conv1d.bias"]
        xc = xc / (1 + np.exp(-xc))
        xd = xc @ w[m + "x_proj.weight"].T
        dt = xd[:, :R] @ w[m + "dt_proj.weight"].T + w[m + "dt_proj.bias"]
        dt = np.where(dt > 20, dt, np.log1p(np.exp(np.minimum(dt, 20))))
        Bm, Cm = xd[:, R:R + N], xd[:, R + N:]
        A = -np.exp(w[m + "A_log"])
        st = np.zeros((E, N))
        y = np.zeros_like(xc)
        for t in range(len(xc)):
            st = np.exp(dt[t][:, None] * A) * st + (dt[t] * xc[t])[:, None] * Bm[t][None, :]
            y[t] = st @ Cm[t]
        y = (y + xc * w[m + "D"]) * (z / (1 + np.exp(-z)))
        h = y @ w[m + "out_proj.weight"].T
    states.append(norm(h + res, "backbone.norm_f"))
    return states


def run(*args, ok=True, what=None):
    r = subprocess.run([DNAMBA, "embed", "--device", "cpu", "-q", "--model", MODEL, *args], capture_output=True, text=True)
    if ok:
        if r.returncode != 0:
            print(r.stderr)
        check(r.returncode == 0, what or ("exit 0: embed " + " ".join(args)))
    return r


def expect_error(args, needles, out, what):
    r = run(*args, ok=False)
    msg = r.stderr.strip()
    good = r.returncode != 0 and all(n in msg for n in needles) and not os.path.exists(out) and "terminate" not in msg
    check(good, f"{what}: fails naming {needles}, no output: {msg}")


def revcomp(s):
    return s[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


tmp = tempfile.mkdtemp(prefix="dnamba_embed_")
MODEL = os.path.join(tmp, "model")
subprocess.run(["/usr/bin/python3", os.path.join(SRC, "scripts/make_untrained_model.py"), MODEL, "--d-model", "24",
                "--n-layer", "2", "--d-state", "4", "--seed", "11"], check=True)
NL = 2
rng = np.random.default_rng(3)
contigs = {"chrB": "".join(rng.choice(list("ACGT"), 260)), "chrA": "".join(rng.choice(list("ACGTacgtN"), 90))}
fa = os.path.join(tmp, "ref.fa")
with open(fa, "w") as f:
    for name, s in contigs.items():
        f.write(f">{name} test\n" + "\n".join(s[i:i + 50] for i in range(0, len(s), 50)) + "\n")
subprocess.run(["samtools", "faidx", fa], check=True)
hs = {name: np_hidden_states(MODEL, s) for name, s in contigs.items()}
names = list(contigs)

# ---- 1. FASTA, per base, every layer, against numpy; Zarr layout and coordinates
out = os.path.join(tmp, "a.zarr")
run("--ref", fa, "-o", out, "--chunk", "97", "--chunk-rows", "64")
z = zarr.open(out, "r")
emb = z["embedding"][:]
check(z.attrs["contigs"] == names, f"contigs attribute {z.attrs['contigs']}")
check(emb.shape == (350, 24) and emb.dtype == np.float32, f"embedding shape {emb.shape} {emb.dtype}")
check(z["embedding"].compressor.codec_id == "zstd" and z["embedding"].chunks == (64, 24), "zstd chunks of 64 rows")
want = np.vstack([hs["chrB"][NL], hs["chrA"][NL]])
check(np.abs(emb - want).max() < 1e-4, f"last layer equals numpy (max err {np.abs(emb - want).max():.2e})")
ci, st, en, sd = z["contig"][:], z["start"][:], z["end"][:], z["strand"][:]
check((ci == np.r_[np.zeros(260), np.ones(90)]).all() and (st == np.r_[np.arange(260), np.arange(90)]).all()
      and (en == st + 1).all() and (sd == b"+").all(), "contig/start/end/strand coordinates")
check(z.attrs["layer"] == NL and z.attrs["pool"] == "none" and z.attrs["rows"] == 350, "store attributes")
for layer, k in [("0", 0), ("1", 1), ("-2", 1), ("last", 2)]:
    o = os.path.join(tmp, f"l{layer}.zarr")
    run("--ref", fa, "-o", o, "--layer", layer, "--region", "chrB")
    e = zarr.open(o, "r")["embedding"][:]
    err = np.abs(e - hs["chrB"][k]).max()
    check(err < 1e-4, f"--layer {layer} = numpy hidden state {k} (max err {err:.2e})")

# ---- 2. npy and float16
npy = os.path.join(tmp, "a.npy")
run("--ref", fa, "-o", npy, "--chunk", "1000")
a = np.load(npy)
check(a.dtype == np.float32 and np.abs(a - emb).max() < 1e-5, f"npy equals the Zarr embedding ({a.shape})")
o16 = os.path.join(tmp, "h.zarr")
run("--ref", fa, "-o", o16, "--out-dtype", "float16", "--chunk", "97")
e16 = zarr.open(o16, "r")["embedding"][:]
check(e16.dtype == np.float16 and np.array_equal(e16, emb.astype(np.float16)), "float16 = float32 rounded by numpy")
n16 = os.path.join(tmp, "h.npy")
run("--ref", fa, "-o", n16, "--out-dtype", "float16", "--chunk", "97")
check(np.array_equal(np.load(n16), e16), "float16 npy equals float16 Zarr")

# ---- 3. pooling against a plain computation over the per-base rows
def plain_windows(L, W, S):
    return [(s, min(s + W, L)) for s in range(0, L, S)]

for pool in ["mean", "window:50", "window:40:15", "window:7:30"]:
    o = os.path.join(tmp, f"p_{pool.replace(':', '_')}.zarr")
    run("--ref", fa, "-o", o, "--pool", pool, "--chunk", "33")
    zp = zarr.open(o, "r")
    rows, want_rows = zp["embedding"][:], []
    coords = []
    for c, name in enumerate(names):
        L = len(contigs[name])
        base = emb[ci == c]
        if pool == "mean":
            wins = [(0, L)]
        else:
            p = pool.split(":")
            W = int(p[1]); S = int(p[2]) if len(p) > 2 else W
            wins = plain_windows(L, W, S)
        for s, e in wins:
            want_rows.append(base[s:e].astype(np.float64).mean(0))
            coords.append((c, s, e))
    want_rows = np.array(want_rows)
    got = list(zip(zp["contig"][:], zp["start"][:], zp["end"][:]))
    ok = rows.shape == want_rows.shape and np.abs(rows - want_rows).max() < 1e-5 and got == coords
    check(ok, f"--pool {pool}: {rows.shape[0]} rows equal plain means of the per-base rows")

# ---- 4. regions: --region and --regions-file
bed = os.path.join(tmp, "r.bed")
open(bed, "w").write("chrA\t10\t40\nchrB\t0\t5\n")
o = os.path.join(tmp, "reg.zarr")
run("--ref", fa, "-o", o, "--region", "chrB:101-180", "--regions-file", bed, "--chunk", "21")
zr = zarr.open(o, "r")
want = np.vstack([np_hidden_states(MODEL, contigs["chrB"][100:180])[NL], np_hidden_states(MODEL, contigs["chrA"][10:40])[NL],
                  np_hidden_states(MODEL, contigs["chrB"][0:5])[NL]])
e = zr["embedding"][:]
check(e.shape == want.shape and np.abs(e - want).max() < 1e-4, "regions: each region read from its own start")
check(list(zr["start"][[0, 79, 80, 110]]) == [100, 179, 10, 0] and list(zr["contig"][[0, 80, 110]]) == [0, 1, 0],
      "regions: genomic coordinates")
o = os.path.join(tmp, "regmean.zarr")
run("--ref", fa, "-o", o, "--regions-file", bed, "--pool", "mean")
zm = zarr.open(o, "r")
check(list(zm["start"][:]) == [10, 0] and list(zm["end"][:]) == [40, 5], "--pool mean: one row per BED interval")

# ---- 5. bad inputs
bad = os.path.join(tmp, "bad.zarr")
expect_error(["--ref", fa, "--region", "chrA:50-1000", "-o", bad], ["chrA"], bad, "region outside contig")
expect_error(["--ref", fa, "--region", "chrZ:1-10", "-o", bad], ["chrZ"], bad, "unknown contig")
expect_error(["--ref", fa, "-o", os.path.join(tmp, "big.npy"), "--max-npy-rows", "100"], ["max-npy-rows", "350"],
             os.path.join(tmp, "big.npy"), "npy above --max-npy-rows")
expect_error(["--ref", fa, "-o", bad, "--layer", "3"], ["--layer"], bad, "layer out of range")
expect_error(["--ref", fa, "-o", bad, "--pool", "window:0"], ["--pool"], bad, "bad --pool")
expect_error(["--ref", fa, "-o", os.path.join(tmp, "x.txt")], [".zarr", ".npy"], os.path.join(tmp, "x.txt"), "unknown output type")

# ---- 6. reads: orientation, filters as samtools, batching, unaligned, CRAM
B = contigs["chrB"]
reads = [  # name, flag, pos (1-based), mapq, original read sequence (sequenced orientation)
    ("fwd1", 0, 11, 60, B[10:70]),
    ("rev1", 16, 31, 40, revcomp(B[30:75])),
    ("fwd2", 0, 101, 10, B[100:190]),
    ("unm", 4, 0, 0, "ACGTTGCANNGT" * 3),
    ("sec", 256, 51, 0, B[50:80]),
    ("sup", 2048, 121, 50, B[120:140]),
    ("dup", 1024, 141, 60, B[140:170]),
    ("rev2", 16, 5, 25, revcomp(B[4:12])),
]
sam = os.path.join(tmp, "r.sam")
with open(sam, "w") as f:
    f.write("@HD\tVN:1.6\n@SQ\tSN:chrB\tLN:260\n@SQ\tSN:chrA\tLN:90\n")
    for name, flag, pos, mq, seq in reads:
        stored = revcomp(seq) if flag & 16 else seq
        cigar = "*" if flag & 4 else f"{len(seq)}M"
        f.write(f"{name}\t{flag}\t{'*' if flag & 4 else 'chrB'}\t{pos}\t{mq}\t{cigar}\t*\t0\t0\t{stored}\t*\n")
bam = os.path.join(tmp, "r.bam")
subprocess.run(["samtools", "sort", "-o", bam, sam], check=True)
order = [l.split("\t")[0] for l in subprocess.run(["samtools", "view", bam], capture_output=True, text=True).stdout.splitlines()]
byname = {r[0]: r for r in reads}

o = os.path.join(tmp, "reads.zarr")
run("--reads", bam, "-o", o, "--chunk", "40", "--chunk-rows", "50")
zr = zarr.open(o, "r")
kept = [n for n in order if not byname[n][1] & 0x900]
rn = [x.decode() for x in zr["read_name"][:]]
check(rn == kept, f"default: primary records in file order {rn}")
want = np.vstack([np_hidden_states(MODEL, byname[n][4])[NL] for n in kept])
e = zr["embedding"][:]
check(e.shape == want.shape and np.abs(e - want).max() < 1e-4,
      "each read embedded in its sequenced orientation (flag 16 reverse-complemented back)")
lens = [len(byname[n][4]) for n in kept]
check(list(zr["read_length"][:]) == lens and list(zr["read_flag"][:]) == [byname[n][1] for n in kept], "read_length, read_flag")
ridx = zr["read"][:]
check(list(np.bincount(ridx)) == lens and list(zr["start"][:lens[0]]) == list(range(lens[0])), "per-base rows: read index and positions in the read")
strands = [b"." if byname[n][1] & 4 else (b"-" if byname[n][1] & 16 else b"+") for n in kept]
check([zr["strand"][int(np.argmax(ridx == i))] for i in range(len(kept))] == strands and
      [zr["contig"][int(np.argmax(ridx == i))] for i in range(len(kept))] == [-1 if byname[n][1] & 4 else 0 for n in kept],
      "strand and contig of each read's alignment")
refst = [byname[n][2] - 1 if not byname[n][1] & 4 else -1 for n in kept]
check(list(zr["read_ref_start"][:]) == refst, "read_ref_start")
ob = os.path.join(tmp, "reads_b3.zarr")
run("--reads", bam, "-o", ob, "--batch", "3")
check(np.abs(zarr.open(ob, "r")["embedding"][:] - e).max() < 1e-5, "--batch 3 gives the same numbers as one read at a time")

for args in [[], ["--min-mapq", "30"], ["--include-flags", "16"], ["--exclude-flags", "0x904"], ["--exclude-flags", "0"],
             ["--include-flags", "0x10", "--min-mapq", "30"], ["--exclude-flags", "SECONDARY,DUP,UNMAP"]]:
    sam_args = []
    fl = dict(zip(args[::2], args[1::2]))
    sam_args += ["-F", fl.get("--exclude-flags", "0x900"), "-f", fl.get("--include-flags", "0"), "-q", fl.get("--min-mapq", "0")]
    n_sam = int(subprocess.run(["samtools", "view", "-c", *sam_args, bam], capture_output=True, text=True).stdout)
    o = os.path.join(tmp, "sel.zarr")
    r = run("--reads", bam, "-o", o, "--pool", "mean", *args, ok=False)
    n = zarr.open(o, "r")["embedding"].shape[0] if r.returncode == 0 else 0
    check(r.returncode == 0 and n == n_sam, f"selection {args or 'default'}: {n} reads, samtools view -c {' '.join(sam_args)} = {n_sam}")

mean = zarr.open(os.path.join(tmp, "sel.zarr"), "r")
# pooled per read against the per-base rows
o = os.path.join(tmp, "rmean.zarr")
run("--reads", bam, "-o", o, "--pool", "mean")
pm = zarr.open(o, "r")["embedding"][:]
plain = np.array([e[ridx == i].astype(np.float64).mean(0) for i in range(len(kept))])
check(np.abs(pm - plain).max() < 1e-5, "reads --pool mean equals the plain mean of each read's rows")
o = os.path.join(tmp, "rwin.zarr")
run("--reads", bam, "-o", o, "--pool", "window:25:10")
zw = zarr.open(o, "r")
plain = [e[ridx == i][s:t].astype(np.float64).mean(0) for i in range(len(kept)) for s, t in plain_windows(lens[i], 25, 10)]
check(zw["embedding"].shape[0] == len(plain) and np.abs(zw["embedding"][:] - np.array(plain)).max() < 1e-5,
      "reads --pool window:25:10 equals plain window means")

# unaligned BAM (no @SQ, every record flag 4)
usam = os.path.join(tmp, "u.sam")
with open(usam, "w") as f:
    f.write("@HD\tVN:1.6\tSO:unknown\n")
    for i, (name, flag, pos, mq, seq) in enumerate(reads[:4]):
        f.write(f"u_{name}\t4\t*\t0\t0\t*\t*\t0\t0\t{seq}\t*\n")
ubam = os.path.join(tmp, "u.bam")
subprocess.run(["samtools", "view", "-b", "-o", ubam, usam], check=True)
o = os.path.join(tmp, "u.zarr")
run("--reads", ubam, "-o", o, "--pool", "mean")
zu = zarr.open(o, "r")
want = np.array([np_hidden_states(MODEL, r[4])[NL].mean(0) for r in reads[:4]])
check(zu["embedding"].shape[0] == 4 and np.abs(zu["embedding"][:] - want).max() < 1e-4 and (zu["contig"][:] == -1).all()
      and zu.attrs["contigs"] == [], "unaligned BAM: every read, contig -1")

# CRAM: needs the reference
cram = os.path.join(tmp, "r.cram")
subprocess.run(["samtools", "view", "-C", "-T", fa, "-o", cram, bam], check=True)
o = os.path.join(tmp, "cram.zarr")
expect_error(["--reads", cram, "-o", o], ["--ref", "CRAM"], o, "CRAM without reference")
run("--reads", cram, "--ref", fa, "-o", o)
ec = zarr.open(o, "r")["embedding"][:] if os.path.exists(o) else np.zeros(0)
check(ec.shape == e.shape and np.abs(ec - e).max() < 1e-5, "CRAM with --ref equals the BAM result")

# bad read files
nsam = os.path.join(tmp, "noseq.sam")
with open(nsam, "w") as f:
    f.write("@SQ\tSN:chrB\tLN:260\n")
    f.write(f"ok\t0\tchrB\t1\t60\t10M\t*\t0\t0\t{B[:10]}\t*\n")
    f.write("noseq\t0\tchrB\t5\t60\t10M\t*\t0\t0\t*\t*\n")
nbam = os.path.join(tmp, "noseq.bam")
subprocess.run(["samtools", "view", "-b", "-o", nbam, nsam], check=True)
o = os.path.join(tmp, "bad_reads.zarr")
expect_error(["--reads", nbam, "-o", o], ["noseq", "no sequence"], o, "BAM record without sequence")
ssam = os.path.join(tmp, "sec.sam")
with open(ssam, "w") as f:
    f.write("@SQ\tSN:chrB\tLN:260\n")
    for i in range(3):
        f.write(f"s{i}\t256\tchrB\t{i + 1}\t0\t10M\t*\t0\t0\t{B[i:i + 10]}\t*\n")
sbam = os.path.join(tmp, "sec.bam")
subprocess.run(["samtools", "view", "-b", "-o", sbam, ssam], check=True)
expect_error(["--reads", sbam, "-o", o], ["no reads", "secondary"], o, "secondary-only BAM")
expect_error(["--reads", fa, "-o", o], ["not a SAM, BAM or CRAM"], o, "FASTA given as --reads")
expect_error(["--reads", bam, "--region", "chrB", "-o", o], ["--reads"], o, "--region with --reads")
expect_error(["--reads", bam, "--exclude-flags", "NOPE", "-o", o], ["--exclude-flags"], o, "bad flag name")

shutil.rmtree(tmp)
finish()
