#!/usr/bin/python3
"""End-to-end: `dnamba score` and `dnamba embed` on Caduceus (masked-LM) models, against values computed
outside dnamba (an independent numpy Caduceus forward, copied from test_caduceus_track.py with the last
hidden state exposed).

score: golden caduceus_ps_tiny / caduceus_ph_tiny on a FASTA + VCF written here (SNVs, multi-allelic, an
MNP, an indel, REF mismatch, symbolic, N in the window, a missing contig, a contig shorter than the
window, records out of order): DNAMBA_LLR (Ph: also _FWD/_REV) against numpy within 1e-4; flags; record
order; header; PS reverse-complement equivariance (the reverse-complemented genome and VCF give the same
LLRs); batch size does not matter; bad options fail.
embed: per-base embeddings (rc-averaged and not, one window and several) against numpy within 1e-4;
pooling; Zarr coordinates; reads from a SAM file; bad options fail and leave no output.
"""
import gzip, json, os, subprocess, sys, tempfile
import numpy as np
import zarr
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish, log_softmax, np_caduceus

DNAMBA = os.environ["DNAMBA"]
GOLDEN = os.environ["DNAMBA_GOLDEN_DIR"]


COMP = {7: 10, 8: 9, 9: 8, 10: 7, 11: 11}
BASE_TOK = {c: i + 7 for i, c in enumerate("ACGT")}
RCB = {"A": "T", "C": "G", "G": "C", "T": "A", "N": "N", "a": "t", "c": "g", "g": "c", "t": "a", "n": "n"}


def toks(s):
    return np.array([BASE_TOK.get(c.upper(), 11) for c in s])


def rc_ids(ids):
    return np.array([COMP[int(t)] for t in ids[::-1]])


def rc_str(s):
    return "".join(RCB[c] for c in reversed(s))


def write_fasta(path, contigs, width=60):
    """FASTA with its .fai written here (no samtools needed)."""
    off, fai = 0, []
    with open(path, "w") as f:
        for name, s in contigs.items():
            h = f">{name}\n"
            f.write(h)
            off += len(h)
            fai.append(f"{name}\t{len(s)}\t{off}\t{width}\t{width + 1}\n")
            for j in range(0, len(s), width):
                line = s[j:j + width] + "\n"
                f.write(line)
                off += len(line)
    open(path + ".fai", "w").write("".join(fai))


def dn(*args):
    r = subprocess.run([DNAMBA, *args], capture_output=True, text=True)
    return r


def read_vcf(path):
    op = gzip.open if path.endswith(".gz") else open
    hdr, recs = [], []
    for l in op(path, "rt"):
        if l.startswith("#"):
            hdr.append(l.rstrip("\n"))
            continue
        c = l.rstrip("\n").split("\t")
        info = {}
        if c[7] != ".":
            for kv in c[7].split(";"):
                k, _, v = kv.partition("=")
                info[k] = v
        recs.append((c[0], int(c[1]), c[3], c[4], info))
    return hdr, recs


def floats(v):
    return [np.nan if x == "." else float(x) for x in v.split(",")]


if not all(os.path.isdir(os.path.join(GOLDEN, n)) for n in ["caduceus_ps_tiny", "caduceus_ph_tiny"]):
    print("skip: no golden Caduceus models in", GOLDEN)
    sys.exit(0)
tmp = tempfile.mkdtemp(prefix="dnamba_cad_score_embed_")
rng = np.random.default_rng(7)
rand = lambda n: "".join("ACGT"[i] for i in rng.integers(0, 4, n))
genome = {"chr1": rand(300), "chr2": rand(60) + "NN" + rand(78), "chr3": rand(70), "chr4": rand(40) + rand(60).lower() + rand(50)}
fa = os.path.join(tmp, "ref.fa")
write_fasta(fa, genome)
W = 101  # odd: the window is centred exactly, so the reverse-complemented genome gives the mirrored window
other = lambda b, k=1: "ACGT"[("ACGT".index(b.upper()) + k) % 4]
g1, g3, g4 = genome["chr1"], genome["chr3"], genome["chr4"]
# (chrom, POS 1-based, REF, ALT list); the expected flag per ALT ('.' = scored)
records = [
    ("chr3", 35, g3[34], [other(g3[34])], ["."]),                        # contig shorter than the window
    ("chr1", 150, g1[149], [other(g1[149], 1), other(g1[149], 2), other(g1[149], 3)], [".", ".", "."]),
    ("chr1", 40, g1[39], [other(g1[39])], ["."]),                        # out of order
    ("chr1", 1, g1[0], [other(g1[0], 2)], ["."]),                         # contig start
    ("chr1", 160, g1[159:162], [other(g1[159]) + g1[160] + other(g1[161], 2), g1[159:162] + "A"], [".", "MLM_INDEL"]),
    ("chr1", 200, g1[199] + g1[200:205], [g1[199]], ["MLM_INDEL"]),
    ("chr1", 220, other(g1[219]), [g1[219]], ["REF_MISMATCH"]),
    ("chr1", 230, g1[229], ["<DEL>", other(g1[229])], ["SYMBOLIC", "."]),
    ("chr1", 240, g1[239], ["*", "N"], ["SPANNING_DELETION", "N_IN_WINDOW"]),
    ("chr1", 300, g1[299], [other(g1[299])], ["."]),                      # contig end
    ("chr1", 250, g1[249], ["."], []),                                    # no ALT
    ("chr2", 20, genome["chr2"][19], [other(genome["chr2"][19])], ["N_IN_WINDOW"]),
    ("chr4", 75, g4[74].upper(), [other(g4[74])], ["."]),                # soft-masked reference
    ("chrX", 10, "A", ["C"], ["CONTIG_MISSING"]),
]


def write_vcf(path, recs, contigs):
    with open(path, "w") as f:
        f.write("##fileformat=VCFv4.2\n")
        for n, s in contigs.items():
            f.write(f"##contig=<ID={n},length={len(s)}>\n")
        f.write("##contig=<ID=chrX,length=1000>\n")
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for c, p, r, alts, _ in recs:
            f.write(f"{c}\t{p}\t.\t{r}\t{','.join(alts)}\t.\t.\t.\n")


vcf = os.path.join(tmp, "in.vcf")
write_vcf(vcf, records, genome)


def expected_llr(model, genome, records, W):
    """numpy: {(rec index, alt index): (fwd, rev)} for the alleles expected to be scored."""
    queries, owners = [], []  # (window ids, masked pos), (key, site sign)
    for ri, (c, p1, r, alts, flags) in enumerate(records):
        for ai, f in enumerate(flags):
            if f != ".":
                continue
            s = genome[c]
            L, p, lr = len(s), p1 - 1, len(r)
            Wp = min(W, L)
            b = min(max(p + lr // 2 - W // 2, 0), L - Wp)
            ids = toks(s[b:b + Wp])
            for i in range(lr):
                if r[i].upper() != alts[ai][i].upper():
                    queries.append((ids, p + i - b, BASE_TOK[r[i].upper()], BASE_TOK[alts[ai][i].upper()]))
                    owners.append((ri, ai))
    out = {}
    by_len = {}
    for qi, q in enumerate(queries):
        by_len.setdefault(len(q[0]), []).append(qi)
    for n, qis in by_len.items():
        fw = np.stack([queries[q][0] for q in qis])
        rv = np.stack([rc_ids(queries[q][0]) for q in qis])
        for k, q in enumerate(qis):
            fw[k, queries[q][1]] = 3
            rv[k, n - 1 - queries[q][1]] = 3
        lf = log_softmax(np_caduceus(model, fw))
        lr_ = log_softmax(np_caduceus(model, rv))
        for k, q in enumerate(qis):
            ids, x, rt, at = queries[q]
            a = lf[k, x]
            bq = lr_[k, n - 1 - x]
            f = a[at] - a[rt]
            rr = bq[COMP[at]] - bq[COMP[rt]]
            o = out.setdefault(owners[q], [0.0, 0.0])
            o[0] += f
            o[1] += rr
    return out


def check_scores(name, path, recs, want, two, tol=1e-4):
    hdr, got = read_vcf(path)
    check([(c, p) for c, p, *_ in got] == [(c, p) for c, p, *_ in recs], f"{name}: every record, in input order")
    err, nscored, flag_ok = 0.0, 0, True
    for ri, ((c, p, r, alts, flags), g) in enumerate(zip(recs, got)):
        info = g[4]
        if not flags:
            flag_ok &= info.get("DNAMBA_FLAG") == "NO_ALT" and "DNAMBA_LLR" not in info
            continue
        want_flag = ",".join(flags) if any(f != "." for f in flags) else None
        if info.get("DNAMBA_FLAG") != want_flag:
            print(f"  {c}:{p} flag {info.get('DNAMBA_FLAG')} expected {want_flag}")
            flag_ok = False
        if all(f != "." for f in flags):
            flag_ok &= "DNAMBA_LLR" not in info
            continue
        llr = floats(info["DNAMBA_LLR"])
        fwd = floats(info["DNAMBA_LLR_FWD"]) if two else None
        rev = floats(info["DNAMBA_LLR_REV"]) if two else None
        if not two:
            flag_ok &= "DNAMBA_LLR_FWD" not in info
        for ai, f in enumerate(flags):
            if f != ".":
                flag_ok &= np.isnan(llr[ai])
                continue
            wf, wr = want[(ri, ai)]
            nscored += 1
            if two:
                err = max(err, abs(llr[ai] - 0.5 * (wf + wr)), abs(fwd[ai] - wf), abs(rev[ai] - wr))
            else:
                err = max(err, abs(llr[ai] - wf))
    check(flag_ok, f"{name}: flags (MLM_INDEL, REF_MISMATCH, SYMBOLIC, N_IN_WINDOW, CONTIG_MISSING, NO_ALT, ...) as expected")
    check(nscored >= 9 and err < tol, f"{name}: {nscored} scored alleles equal numpy (max abs error {err:.2e} < {tol})")
    return hdr, got


# ---------------------------------------------------------------- score
for name in ["caduceus_ps_tiny", "caduceus_ph_tiny"]:
    d = os.path.join(GOLDEN, name)
    if not os.path.isdir(d):
        print("skip: no", d)
        continue
    ps = name.startswith("caduceus_ps")
    want = expected_llr(d, genome, records, W)
    # records out of order: fine (random access to the reference), written in input order (not indexable)
    out = os.path.join(tmp, name + ".vcf.gz")
    r = dn("score", "--model", d, "--ref", fa, "--vcf", vcf, "-o", out, "--no-index", "--window", str(W), "--device", "cpu", "--threads", "2")
    check(r.returncode == 0, f"{name}: score exits 0 {r.stderr.strip()[-300:]}")
    if r.returncode != 0:
        continue
    # sorted input to an indexed bgzip VCF
    order = sorted(range(len(records)), key=lambda i: (records[i][0], records[i][1]))
    svcf, sout = os.path.join(tmp, "sorted.vcf"), os.path.join(tmp, name + ".sorted.vcf.gz")
    write_vcf(svcf, [records[i] for i in order], genome)
    r2 = dn("score", "--model", d, "--ref", fa, "--vcf", svcf, "-o", sout, "--window", str(W), "--device", "cpu", "-q")
    if r2.returncode == 0:
        check_scores(name + " sorted", sout, [records[i] for i in order],
                     {(order.index(ri), ai): v for (ri, ai), v in want.items()}, two=not ps)
    check(r2.returncode == 0 and os.path.exists(sout + ".tbi"), f"{name}: sorted input: .tbi index written beside the bgzip VCF {r2.stderr.strip()[-200:]}")
    check("MLM_INDEL 2" in r.stderr and "scored" in r.stderr, f"{name}: summary on stderr: {r.stderr.strip()[:200]}")
    hdr, got = check_scores(name, out, records, want, two=not ps)
    hd = "\n".join(hdr)
    check(f"##dnamba_scoreModel={d}" in hd and f"window={W}" in hd and ("rc=equivariant" if ps else "rc=yes") in hd
          and "##dnamba_scoreCommand=" in hd and "MLM_INDEL" in hd, f"{name}: header records the model and parameters")
    check(("ID=DNAMBA_LLR_FWD" in hd) == (not ps), f"{name}: DNAMBA_LLR_FWD/_REV defined only for Ph")
    # batch size does not change results (one window per model call)
    out1 = os.path.join(tmp, name + ".b1.vcf")
    r = dn("score", "--model", d, "--ref", fa, "--vcf", vcf, "-o", out1, "--window", str(W), "--chunk", str(W), "--device", "cpu", "-q")
    _, got1 = read_vcf(out1) if r.returncode == 0 else ([], [])
    same = r.returncode == 0 and all(
        np.allclose(floats(a[4].get("DNAMBA_LLR", "nan")), floats(b[4].get("DNAMBA_LLR", "nan")), atol=1e-5, equal_nan=True)
        for a, b in zip(got, got1))
    check(same, f"{name}: --chunk {W} (one window per call) gives the same values")
    if not ps:
        outf = os.path.join(tmp, name + ".norc.vcf")
        r = dn("score", "--model", d, "--ref", fa, "--vcf", vcf, "-o", outf, "--window", str(W), "--no-rc", "--device", "cpu", "-q")
        if r.returncode == 0:
            check_scores(name + " --no-rc", outf, records, {k: (v[0], 0.0) for k, v in want.items()}, two=False)
        else:
            check(False, f"{name} --no-rc exits 0: {r.stderr}")

    # reverse-complemented genome and VCF: PS gives the same LLRs (equivariance), Ph swaps FWD and REV
    rgen = {c: rc_str(s) for c, s in genome.items()}
    rrecs = []
    for c, p, rf, alts, flags in records:
        if not flags or any(f != "." for f in flags) or len(rf) % 2 == 0:
            continue
        L = len(genome[c])
        rrecs.append((c, L - (p - 1) - len(rf) + 1, rc_str(rf), [rc_str(a) for a in alts], flags))
    rfa, rvcf = os.path.join(tmp, "rc.fa"), os.path.join(tmp, "rc.vcf")
    write_fasta(rfa, rgen)
    write_vcf(rvcf, rrecs, rgen)
    rout = os.path.join(tmp, name + ".rc.vcf")
    r = dn("score", "--model", d, "--ref", rfa, "--vcf", rvcf, "-o", rout, "--window", str(W), "--device", "cpu", "-q")
    fwd_by_pos = {}
    for (c, p, rf, alts, flags), g in zip(records, got):
        if c in genome:
            fwd_by_pos[(c, len(genome[c]) - (p - 1) - len(rf) + 1)] = g[4]
    if r.returncode == 0:
        _, rgot = read_vcf(rout)
        err = 0.0
        for c, p, rf, alts, info in rgot:
            f = fwd_by_pos[(c, p)]
            err = max(err, np.max(np.abs(np.array(floats(info["DNAMBA_LLR"])) - floats(f["DNAMBA_LLR"]))))
            if not ps:
                err = max(err, np.max(np.abs(np.array(floats(info["DNAMBA_LLR_FWD"])) - floats(f["DNAMBA_LLR_REV"]))))
        what = "PS equivariance: the same LLRs" if ps else "Ph: DNAMBA_LLR_FWD there = DNAMBA_LLR_REV here, same mean"
        check(len(rgot) == len(rrecs) and len(rgot) >= 6 and err < 1e-4,
              f"{name}: reverse-complemented genome + VCF ({len(rgot)} records): {what} (max abs diff {err:.2e})")
    else:
        check(False, f"{name}: score on the reverse-complemented genome exits 0: {r.stderr}")

# bad options
d = os.path.join(GOLDEN, "caduceus_ps_tiny")
for bad, expect in [(["--model", d, "--horizon", "5"], "--horizon"), (["--model", d, "--window", "0"], "--window"),
                    (["--window", "50"], "--window")]:
    out = os.path.join(tmp, "bad.vcf")
    r = dn("score", "--ref", fa, "--vcf", vcf, "-o", out, "--device", "cpu", *bad)
    check(r.returncode != 0 and expect in r.stderr and not os.path.exists(out),
          f"score {' '.join(bad[-2:])} fails naming '{expect}': {r.stderr.strip()[:160]}")


# ---------------------------------------------------------------- embed
def plan_windows(n, w, o):
    if n <= w:
        return [(0, n, 0, n)]
    st = list(range(0, n - w, w - o)) + [n - w]
    out, kb = [], 0
    for k, s in enumerate(st):
        ke = n if k + 1 == len(st) else (st[k + 1] + s + w) // 2
        out.append((s, w, kb, ke))
        kb = ke
    return out


def np_embed(model, ps, ids, rc_avg, D):
    """Per-base embeddings of one window [len, D]."""
    h = np_caduceus(model, ids[None], hidden=True)[0]
    if ps:
        return 0.5 * (h[:, :D] + h[:, D:][:, ::-1]) if rc_avg else h[:, :D]
    if not rc_avg:
        return h
    return 0.5 * (h + np_caduceus(model, rc_ids(ids)[None], hidden=True)[0][::-1])


def np_embed_seq(model, ps, ids, rc_avg, D, w=None, o=None):
    if w is None:
        return np_embed(model, ps, ids, rc_avg, D)
    rows = []
    for s, n, kb, ke in plan_windows(len(ids), w, o):
        rows.append(np_embed(model, ps, ids[s:s + n], rc_avg, D)[kb - s:ke - s])
    return np.concatenate(rows)


emb_contigs = ["chr1", "chr2", "chr3"]
reads = {"r1": rand(40), "r2": rand(90), "r3": rand(130), "r4": rand(40), "r5": rand(40), "r6": rand(40)}  # r4-r6 batch
sam = os.path.join(tmp, "reads.sam")
with open(sam, "w") as f:
    f.write("@HD\tVN:1.6\tSO:unknown\n")
    for n, s in reads.items():
        f.write(f"{n}\t4\t*\t0\t0\t*\t*\t0\t0\t{s}\t*\n")

for name in ["caduceus_ps_tiny", "caduceus_ph_tiny"]:
    d = os.path.join(GOLDEN, name)
    if not os.path.isdir(d):
        continue
    ps = name.startswith("caduceus_ps")
    D = json.load(open(os.path.join(d, "config.json")))["d_model"]
    regs = sum((["--region", c] for c in emb_contigs), [])
    base = ["embed", "--model", d, "--ref", fa, *regs, "--device", "cpu", "-q"]
    # one window per contig (--window 400), rc-averaged (default) and not
    for rc_avg in [True, False]:
        out = os.path.join(tmp, f"{name}.{rc_avg}.npy")
        r = dn(*base, "-o", out, "--window", "400", *([] if rc_avg else ["--no-rc-average"]))
        check(r.returncode == 0, f"{name}: embed exits 0 {r.stderr.strip()[-200:]}")
        if r.returncode:
            continue
        got = np.load(out)
        want = np.concatenate([np_embed_seq(d, ps, toks(genome[c]), rc_avg, D) for c in emb_contigs])
        err = np.abs(got - want).max() if got.shape == want.shape else np.inf
        check(err < 1e-4, f"{name} embed {'--rc-average' if rc_avg else '--no-rc-average'}: {got.shape} equals numpy (max abs error {err:.2e})")
    # windows (--window 100 --overlap 40: chr1 and chr2 need several) to Zarr, against numpy on the same windows
    out = os.path.join(tmp, f"{name}.win.zarr")
    r = dn(*base, "-o", out, "--window", "100", "--overlap", "40")
    check(r.returncode == 0, f"{name}: embed --window 100 --overlap 40 exits 0 {r.stderr.strip()[-200:]}")
    if r.returncode == 0:
        z = zarr.open(out, "r")
        got = z["embedding"][:]
        per = [np_embed_seq(d, ps, toks(genome[c]), True, D, 100, 40) for c in emb_contigs]
        want = np.concatenate(per)
        err = np.abs(got - want).max() if got.shape == want.shape else np.inf
        check(err < 1e-4, f"{name} embed windows 100/40: kept centres equal numpy (max abs error {err:.2e})")
        wc = np.concatenate([np.full(len(genome[c]), i) for i, c in enumerate(emb_contigs)])
        ws = np.concatenate([np.arange(len(genome[c])) for c in emb_contigs])
        check(list(z.attrs["contigs"])[:3] == emb_contigs and (z["contig"][:] == wc).all() and (z["start"][:] == ws).all()
              and (z["end"][:] == ws + 1).all() and z.attrs["rc_average"] is True and z.attrs["window"] == 100
              and z.attrs["overlap"] == 40 and z.attrs["model_type"] == ("caduceus_ps" if ps else "caduceus_ph"),
              f"{name}: Zarr coordinates and attributes (contig, start, end, rc_average, window, overlap, model_type)")
        # pooling: mean and window:50:30, against numpy pooling of the per-base rows
        for pool in ["mean", "window:50:30"]:
            po = os.path.join(tmp, f"{name}.{pool.replace(':', '_')}.zarr")
            r = dn(*base, "-o", po, "--window", "100", "--overlap", "40", "--pool", pool)
            if r.returncode:
                check(False, f"{name} --pool {pool} exits 0: {r.stderr}")
                continue
            zp = zarr.open(po, "r")
            rows, starts = [], []
            for e in per:
                if pool == "mean":
                    rows.append(e.mean(0))
                    starts.append(0)
                else:
                    for s in range(0, len(e), 30):
                        rows.append(e[s:s + 50].mean(0))
                        starts.append(s)
            gp = zp["embedding"][:]
            err = np.abs(gp - np.array(rows)).max() if gp.shape == np.array(rows).shape else np.inf
            check(err < 1e-4 and list(zp["start"][:]) == starts, f"{name} --pool {pool}: {gp.shape[0]} rows equal numpy pooling (max abs error {err:.2e})")
    # reads (one longer than the window)
    out = os.path.join(tmp, f"{name}.reads.zarr")
    r = dn("embed", "--model", d, "--reads", sam, "-o", out, "--window", "100", "--overlap", "40", "--device", "cpu", "-q", "--batch", "2")
    check(r.returncode == 0, f"{name}: embed --reads exits 0 {r.stderr.strip()[-200:]}")
    if r.returncode == 0:
        z = zarr.open(out, "r")
        want = np.concatenate([np_embed_seq(d, ps, toks(s), True, D, 100, 40) for s in reads.values()])
        got = z["embedding"][:]
        err = np.abs(got - want).max() if got.shape == want.shape else np.inf
        check(err < 1e-4 and list(z["read_length"][:]) == [len(s) for s in reads.values()] and
              [x.decode() for x in z["read_name"][:]] == list(reads),
              f"{name} embed --reads (6 reads: one windowed, equal lengths batched by 2): equals numpy (max abs error {err:.2e}), read arrays")

# bad embed options
d = os.path.join(GOLDEN, "caduceus_ps_tiny")
for bad, expect in [(["--model", d, "--layer", "1"], "--layer"), (["--model", d, "--window", "100", "--overlap", "100"], "--overlap"),
                    (["--no-rc-average"], "--rc-average"), (["--model", d, "--rc-average", "--no-rc-average"], "--no-rc-average")]:
    out = os.path.join(tmp, "bad.npy")
    r = dn("embed", "--ref", fa, "-o", out, "--device", "cpu", *bad)
    check(r.returncode != 0 and expect in r.stderr and not os.path.exists(out),
          f"embed {' '.join(bad[2:] if bad[0] == '--model' else bad)} fails naming '{expect}': {r.stderr.strip()[:160]}")

finish()
