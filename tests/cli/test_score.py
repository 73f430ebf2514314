#!/usr/bin/python3
"""End-to-end: `dnamba score` on a tiny model (testdata/score/tiny_model).

1. fast == naive within 1e-4 on SNVs, MNPs, indels, multi-allelic records, contig starts and ends,
   segment boundaries (small --segment/--context) and chunk boundaries (--chunk 37);
2. scores equal an independent numpy computation of the definition (score/variant_score.h);
3. every record comes out in input order with CHROM/POS/REF/ALT unchanged; flags for bad alleles;
4. output types (-O z/b/u/v, suffix, stdin/stdout), indexes answering region queries (bcftools);
5. bad inputs (unsorted, malformed line, unindexed FASTA) fail naming the problem, leaving no output.
"""
import json, os, random, subprocess, sys, tempfile
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish, load_st

DNAMBA = os.environ["DNAMBA"]
SRC = os.environ["DNAMBA_SOURCE_DIR"]
MODEL = os.path.join(SRC, "testdata/score/tiny_model")


tmp = tempfile.mkdtemp(prefix="dnamba_score_")
rng = random.Random(4)
H, S, C = 30, 500, 120

# ---- reference: two contigs with uneven line widths handled by our own .fai
contigs = {"chrA": "".join(rng.choice("ACGT") for _ in range(1700)),
           "chrB": "".join(rng.choice("ACGT") for _ in range(900))}
contigs["chrB"] = contigs["chrB"][:600] + "NNNNN" + contigs["chrB"][605:]
contigs["chrA"] = contigs["chrA"][:300] + contigs["chrA"][300:340].lower() + contigs["chrA"][340:]  # soft-masked
fa = os.path.join(tmp, "ref.fa")
with open(fa, "w") as f, open(fa + ".fai", "w") as fai:
    off = 0
    for name, seq in contigs.items():
        hdr = f">{name} test\n"
        f.write(hdr)
        off += len(hdr)
        fai.write(f"{name}\t{len(seq)}\t{off}\t60\t61\n")
        for i in range(0, len(seq), 60):
            f.write(seq[i:i + 60] + "\n")
            off += len(seq[i:i + 60]) + 1


def G(c, p, n=1):
    return contigs[c][p:p + n].upper()


def other(b, k=1):
    return "ACGT"[("ACGT".index(b) + k) % 4]


# ---- variants (0-based p); expected flag per ALT (None = scored)
recs = []  # (contig, p, ref, [alts], [flags])
def add(c, p, lr, alts, flags=None):
    recs.append((c, p, G(c, p, lr) if lr > 0 else None, alts, flags or [None] * len(alts)))

for c, L in (("chrA", 1700), ("chrB", 900)):
    for p in sorted({0, 1, 3, S - 2, S - 1, S, S + 1, 2 * S - 1, 2 * S + 3, 3 * S, L - 35, L - 4, L - 1}):
        if p >= L or (c == "chrB" and 560 <= p <= 640):
            continue
        b = G(c, p)
        add(c, p, 1, [other(b)])                                   # SNV
        add(c, p, 1, [other(b, 2), b + "GATT", other(b, 3) + "C"])  # multi-allelic: SNV, insertion, complex
        if p + 4 <= L:
            add(c, p, 4, [b])                                      # deletion
            add(c, p, 2, [other(b) + other(G(c, p + 1))])          # MNP
        if p + 12 <= L:
            add(c, p, 12, [b + "T"])                               # longer deletion + insertion
add("chrB", 880, 20, [G("chrB", 880)])                              # deletion to the contig end
# flagged records
add("chrB", 620, 1, [other(G("chrB", 620))], ["N_IN_WINDOW"])       # 15 bases after the N run
add("chrB", 650, 1, ["<DEL>", "*", "G]chrA:5]", other(G("chrB", 650))], ["SYMBOLIC", "SPANNING_DELETION", "BREAKEND", None])
recs.append(("chrB", 700, "A" if G("chrB", 700) != "A" else "C", ["G"], ["REF_MISMATCH"]))
add("chrB", 710, 1, [], [])                                          # no ALT
recs.append(("chrZ", 10, "A", ["C"], ["CONTIG_MISSING"]))
recs.sort(key=lambda r: (r[0], r[1]))  # chrA, chrB, chrZ; stable within a position

vcf = os.path.join(tmp, "in.vcf")
def write_vcf(path, records, extra_header=""):
    with open(path, "w") as f:
        f.write("##fileformat=VCFv4.2\n")
        for name, seq in contigs.items():
            f.write(f"##contig=<ID={name},length={len(seq)}>\n")
        f.write("##contig=<ID=chrZ,length=100>\n##INFO=<ID=X,Number=1,Type=Integer,Description=\"x\">\n" + extra_header)
        f.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for i, (c, p, ref, alts, _) in enumerate(records):
            f.write(f"{c}\t{p + 1}\tv{i}\t{ref}\t{','.join(alts) or '.'}\t.\t.\tX={i}\n")
write_vcf(vcf, recs)


def run(*args, stdin=None):
    return subprocess.run([DNAMBA, "score", "--model", MODEL, "--device", "cpu", "-t", "2", "-q", *args],
                          capture_output=True, text=True, input=stdin, env=dict(os.environ, OMP_WAIT_POLICY="passive"))


def parse(text):
    out = []
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        info = dict(kv.split("=", 1) if "=" in kv else (kv, True) for kv in f[7].split(";"))
        out.append((f[0], int(f[1]) - 1, f[3], f[4], info))
    return out


def vals(info, key, n):
    if key not in info:
        return [None] * n
    return [None if v == "." else float(v) for v in info[key].split(",")]


def read_out(path):
    r = subprocess.run(["bcftools", "view", path], capture_output=True, text=True)
    check(r.returncode == 0, f"bcftools view {os.path.basename(path)} accepts the output: {r.stderr.strip()[:200]}")
    return r.stdout


params = ["--ref", fa, "--horizon", str(H), "--segment", str(S), "--context", str(C)]
outs = {}
for name, extra in [("fast", []), ("fast_chunk", ["--chunk", "37", "--batch", "3", "--snapshot-gap", "7"]),
                    # lockstep: every (segment, strand) run of the file in one batch, as on a GPU
                    ("fast_lockstep", ["--ref-batch", "64", "--snapshot-gap", "16", "--batch", "5", "--batch-tokens", "300"]),
                    ("naive", ["--method", "naive"])]:
    o = os.path.join(tmp, name + ".vcf")
    r = run(*params, "--vcf", vcf, "-o", o, *extra)
    check(r.returncode == 0, f"{name}: exit 0 {r.stderr.strip()[:300]}")
    outs[name] = parse(read_out(o)) if r.returncode == 0 else []

# ---- 3. same records, same order, flags
want_rows = [(c, p, ref, ",".join(a) or ".") for c, p, ref, a, _ in recs]
for name, rows in outs.items():
    check([r[:4] for r in rows] == want_rows, f"{name}: {len(rows)} records with CHROM/POS/REF/ALT of the input, in order")
fast = outs["fast"]
flag_ok = True
n_scored = 0
for (c, p, ref, alts, flags), row in zip(recs, fast):
    info = row[4]
    if not alts:
        flag_ok &= info.get("DNAMBA_FLAG") == "NO_ALT"
        continue
    got_flags = info.get("DNAMBA_FLAG", ",".join("." for _ in alts)).split(",")
    llr = vals(info, "DNAMBA_LLR", len(alts))
    for a, fl, gf, v in zip(alts, flags, got_flags, llr):
        ok = (gf == (fl or ".")) and ((v is None) == (fl is not None))
        if not ok:
            print(f"  flag mismatch at {c}:{p + 1} {ref}>{a}: want {fl}, got {gf}, llr {v}")
        flag_ok &= ok
        n_scored += v is not None
check(flag_ok, f"flags as expected (REF_MISMATCH, SYMBOLIC, BREAKEND, SPANNING_DELETION, N_IN_WINDOW, CONTIG_MISSING, NO_ALT); {n_scored} alleles scored")

# ---- 1. fast == naive (and chunked fast)
for other_name in ("naive", "fast_chunk", "fast_lockstep"):
    err, spread = 0.0, 0.0
    for a, b in zip(fast, outs[other_name]):
        for key in ("DNAMBA_LLR", "DNAMBA_LLR_FWD", "DNAMBA_LLR_REV"):
            n = len(a[3].split(","))
            for x, y in zip(vals(a[4], key, n), vals(b[4], key, n)):
                if x is not None and y is not None:
                    err = max(err, abs(x - y) - 2e-6 * abs(x))  # the VCF holds 6 significant digits
                    spread = max(spread, abs(x))
                elif (x is None) != (y is None):
                    err = float("inf")
    check(err < 1e-4 and spread > 0.5, f"fast vs {other_name}: max |diff| - 2e-6 |LLR| {err:.2e} < 1e-4 (max |LLR| {spread:.2f})")
# The average is the mean of the strands
mean_err = 0.0
for row in fast:
    n = len(row[3].split(","))
    for l, f_, r_ in zip(vals(row[4], "DNAMBA_LLR", n), vals(row[4], "DNAMBA_LLR_FWD", n), vals(row[4], "DNAMBA_LLR_REV", n)):
        if l is not None:
            mean_err = max(mean_err, abs(l - (f_ + r_) / 2))
check(mean_err < 1e-4, f"DNAMBA_LLR = mean of DNAMBA_LLR_FWD and DNAMBA_LLR_REV ({mean_err:.1e})")


# ---- 2. independent numpy computation of the definition
cfg = json.load(open(os.path.join(MODEL, "config.json")))
W = load_st(os.path.join(MODEL, "model.safetensors"))
D, NL, N, K, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["state_size"], cfg["conv_kernel"], cfg["intermediate_size"]
R = -(-D // 16)


def np_loglik(seq):
    """ln P(seq[t] | seq[<t]) for t >= 1 (index 0: nan), plain float64 Mamba forward."""
    ids = np.array(["ACGTN".index(ch) + 7 for ch in seq])
    def rms(x, w):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-5) * w
    h = W["backbone.embeddings.weight"][ids]
    res = None
    for i in range(NL):
        m = f"backbone.layers.{i}.mixer."
        res = h if res is None else h + res
        x = rms(res, W[f"backbone.layers.{i}.norm.weight"])
        xz = x @ W[m + "in_proj.weight"].T
        xi, z = xz[:, :E], xz[:, E:]
        cw = W[m + "conv1d.weight"][:, 0, :]
        pad = np.vstack([np.zeros((K - 1, E)), xi])
        xc = sum(cw[:, k] * pad[k:k + len(xi)] for k in range(K)) + W[m + "conv1d.bias"]
        xc = xc / (1 + np.exp(-xc))
        xd = xc @ W[m + "x_proj.weight"].T
        dt = xd[:, :R] @ W[m + "dt_proj.weight"].T + W[m + "dt_proj.bias"]
        dt = np.where(dt > 20, dt, np.log1p(np.exp(np.minimum(dt, 20))))
        Bm, Cm = xd[:, R:R + N], xd[:, R + N:]
        A = -np.exp(W[m + "A_log"])
        st = np.zeros((E, N))
        y = np.zeros_like(xc)
        for t in range(len(xc)):
            st = np.exp(dt[t][:, None] * A) * st + (dt[t] * xc[t])[:, None] * Bm[t][None, :]
            y[t] = st @ Cm[t]
        y = (y + xc * W[m + "D"]) * (z / (1 + np.exp(-z)))
        h = y @ W[m + "out_proj.weight"].T
    hf = rms(h + res, W["backbone.norm_f.weight"])
    logits = hf @ W["lm_head.weight"].T
    mx = logits.max(-1, keepdims=True)
    lsm = logits - mx - np.log(np.exp(logits - mx).sum(-1, keepdims=True))
    out = np.full(len(ids), np.nan)
    out[1:] = lsm[np.arange(len(ids) - 1), ids[1:]]
    return out


def revcomp(s):
    return s[::-1].translate(str.maketrans("ACGTN", "TGCAN"))


def llr_forward(g, p, ref, alt, seg_index):
    """The definition on one strand: g is the strand's sequence, p the REF start on it."""
    L = len(g)
    k = 0
    while k < min(len(ref), len(alt)) and ref[k] == alt[k]:
        k += 1
    q, e = p + k, min(L, p + len(ref) + H)
    s = seg_index
    refhap = g[s:e]
    althap = g[s:p] + alt + g[p + len(ref):e]
    lr, la = np_loglik(refhap), np_loglik(althap)
    return np.nansum(la[q - s:]) - np.nansum(lr[q - s:])


np_err, n_np = 0.0, 0
picked = [r for r in recs if r[4] == [None] * len(r[3]) and r[3]][::6]
for c, p, ref, alts, _ in picked:
    g = contigs[c].upper()
    L = len(g)
    row = next(r for r in fast if r[0] == c and r[1] == p and r[2] == ref and r[3] == ",".join(alts))
    for ai, alt in enumerate(alts):
        fwd = llr_forward(g, p, ref, alt, max(0, (p // S) * S - C))
        j = (p + len(ref) - 1) // S
        rev = llr_forward(revcomp(g), L - p - len(ref), revcomp(ref), revcomp(alt), L - min(L, (j + 1) * S + C))
        got_f = vals(row[4], "DNAMBA_LLR_FWD", len(alts))[ai]
        got_r = vals(row[4], "DNAMBA_LLR_REV", len(alts))[ai]
        np_err = max(np_err, abs(got_f - fwd), abs(got_r - rev))
        n_np += 1
check(n_np >= 10 and np_err < 5e-4, f"{n_np} alleles vs numpy float64 definition: max |diff| {np_err:.2e} < 5e-4")

# ---- --no-rc: forward strand only
o = os.path.join(tmp, "norc.vcf")
r = run(*params, "--vcf", vcf, "-o", o, "--no-rc")
rows = parse(read_out(o)) if r.returncode == 0 else []
e = 0.0
for a, b in zip(fast, rows):
    n = len(a[3].split(","))
    for x, y in zip(vals(a[4], "DNAMBA_LLR_FWD", n), vals(b[4], "DNAMBA_LLR", n)):
        if x is not None:
            e = max(e, abs(x - y))
check(r.returncode == 0 and len(rows) == len(recs) and e < 1e-4 and not any("DNAMBA_LLR_REV" in x[4] for x in rows),
      f"--no-rc: DNAMBA_LLR = forward part of the rc run ({e:.1e}), no DNAMBA_LLR_REV")

# ---- 4. output types, indexes, stdin/stdout
hdr_text = open(os.path.join(tmp, "fast.vcf")).read()
check("##INFO=<ID=DNAMBA_LLR,Number=A,Type=Float" in hdr_text and "##dnamba_scoreParameters=horizon=30;context=120;segment=500" in hdr_text
      and "##dnamba_scoreModel=" in hdr_text and "##INFO=<ID=DNAMBA_FLAG,Number=.,Type=String" in hdr_text,
      "header records INFO definitions, model and parameters")
for out_name, extra, idx in [("o.vcf.gz", [], ".tbi"), ("o.bcf", [], ".csi"), ("o_u.bcf", ["-O", "u"], None),
                             ("o_z.anything", ["-O", "z"], ".tbi")]:
    o = os.path.join(tmp, out_name)
    r = run(*params, "--vcf", vcf, "-o", o, *extra)
    ok = r.returncode == 0 and (os.path.exists(o + idx) if idx else not any(os.path.exists(o + x) for x in (".csi", ".tbi")))
    rows = parse(read_out(o)) if ok else []
    if idx is None:  # uncompressed BCF cannot be indexed: query after bcftools index would need BGZF
        check(ok and [x[:4] for x in rows] == want_rows, f"{out_name} -O u: valid uncompressed BCF, no index")
        continue
    q = subprocess.run(["bcftools", "view", "-H", o, "chrA:498-502"], capture_output=True, text=True)
    want_q = sum(1 for c, p, ref, a, _ in recs if c == "chrA" and p + len(ref) > 497 and p < 502)
    got_q = len(q.stdout.strip().splitlines()) if q.returncode == 0 else -1
    check(ok and [x[:4] for x in rows] == want_rows and got_q == want_q,
          f"{out_name} {' '.join(extra)}: valid, {idx} index answers chrA:498-502 with {got_q} records (want {want_q}) {r.stderr.strip()[:200]}")
r = run(*params, "--vcf", "-", "-o", "-", stdin=open(vcf).read())
check(r.returncode == 0 and [x[:4] for x in parse(r.stdout)] == want_rows, "stdin to stdout (-)")
r = run(*params, "--vcf", vcf, "-o", "-", "--no-index")
check(r.returncode == 0 and r.stdout.startswith("##fileformat"), "--no-index to stdout")

# ---- 5. bad inputs
bad = os.path.join(tmp, "bad.vcf.gz")
unsorted = recs[:12] + [recs[1]] + recs[12:15]
write_vcf(os.path.join(tmp, "unsorted.vcf"), unsorted)
r = run(*params, "--vcf", os.path.join(tmp, "unsorted.vcf"), "-o", bad)
check(r.returncode != 0 and "unsorted" in r.stderr and "record 13" in r.stderr and not os.path.exists(bad),
      f"unsorted input: error naming the record, no output: {r.stderr.strip()}")
txt = open(vcf).read().splitlines()
nh = sum(1 for l in txt if l.startswith("#"))
txt[nh + 3] = "chrA\tnotanumber\tx\tA\tC\t.\t.\t."
open(os.path.join(tmp, "malformed.vcf"), "w").write("\n".join(txt) + "\n")
r = run(*params, "--vcf", os.path.join(tmp, "malformed.vcf"), "-o", bad)
check(r.returncode != 0 and "malformed.vcf" in r.stderr and f"record 4 (line {nh + 4})" in r.stderr and not os.path.exists(bad),
      f"malformed line: error naming file and line: {r.stderr.strip()[-300:]}")
noidx = os.path.join(tmp, "noidx.fa")
open(noidx, "w").write(open(fa).read())
r = run("--ref", noidx, "--vcf", vcf, "-o", bad)
check(r.returncode != 0 and "indexed" in r.stderr and not os.path.exists(bad), f"unindexed FASTA: {r.stderr.strip()}")

finish()
