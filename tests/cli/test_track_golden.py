#!/usr/bin/python3
"""End-to-end: `dnamba track` against values computed outside dnamba.

1. Golden folders (HF transformers and mamba_ssm layouts): FASTA written from golden input_ids,
   loglik must equal log_softmax(golden logits) within 1e-4 absolute, with and without --chunk 777;
   entropy over A,C,G,T from the same logits.
2. Models of other sizes and options (written by scripts/make_untrained_model.py): dnamba's loglik
   must equal an independent numpy implementation of the Mamba forward.
"""
import gzip, json, os, subprocess, sys, tempfile
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish, load_st, log_softmax, write_fasta_ids as write_fasta

DNAMBA = os.environ["DNAMBA"]
GOLDEN = os.environ["DNAMBA_GOLDEN_DIR"]
SRC = os.environ["DNAMBA_SOURCE_DIR"]


def run_track(model, fa, out, *extra):
    cmd = [DNAMBA, "track", "--model", model, "--ref", fa, "--device", "cpu", "-o", out, "-q", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
    check(r.returncode == 0, "exit 0: " + " ".join(cmd[1:]))
    op = gzip.open if out.endswith(".gz") else open
    rows = [l.rstrip("\n").split("\t") for l in op(out, "rt")]
    return rows


def compare(rows, lsm_next, ids, what):
    """rows: bedGraph; lsm_next[b, p] = expected value at position p (p >= 1)."""
    n_expect = ids.shape[0] * (ids.shape[1] - 1)
    check(len(rows) == n_expect, f"{what}: {len(rows)} lines, expected {n_expect}")
    err = 0.0
    for c, s, e, v in rows:
        b, p = int(c[3:]), int(s)
        assert int(e) == p + 1
        err = max(err, abs(lsm_next[b, p] - float(v)))
    check(err < 1e-4, f"{what}: max abs error {err:.2e} < 1e-4")


tmp = tempfile.mkdtemp(prefix="dnamba_track_")

# ---- 1. golden folders
for name in ["hf_mamba_tiny", "mamba_ssm_tiny"]:
    d = os.path.join(GOLDEN, name)
    if not os.path.isdir(d):
        print("skip: no", d)
        continue
    g = load_st(os.path.join(d, "golden.safetensors"))
    ids, logits = g["input_ids"], g["logits"]
    fa = os.path.join(tmp, name + ".fa")
    write_fasta(fa, ids)
    lsm = log_softmax(logits)
    B, L = ids.shape
    want = np.full((B, L), np.nan)
    ent = np.full((B, L), np.nan)
    for b in range(B):
        for p in range(1, L):
            want[b, p] = lsm[b, p - 1, ids[b, p]]
            q = np.exp(lsm[b, p - 1, 7:11])
            q /= q.sum()
            ent[b, p] = -(q * np.log(q)).sum()
    compare(run_track(d, fa, os.path.join(tmp, name + ".bedgraph")), want, ids, f"{name} loglik")
    compare(run_track(d, fa, os.path.join(tmp, name + ".777.bedgraph"), "--chunk", "777"), want, ids,
            f"{name} loglik --chunk 777")
    compare(run_track(d, fa, os.path.join(tmp, name + ".ent.bedgraph.gz"), "--what", "entropy", "--chunk", "1000"),
            ent, ids, f"{name} entropy (bgzip output)")

# golden_long: 20,000 tokens
d = os.path.join(GOLDEN, "hf_mamba_tiny")
if os.path.exists(os.path.join(d, "golden_long.safetensors")):
    g = load_st(os.path.join(d, "golden_long.safetensors"))
    ids, lsm = g["input_ids"], log_softmax(g["logits"])
    fa = os.path.join(tmp, "long.fa")
    write_fasta(fa, ids, width=80)
    want = np.full(ids.shape, np.nan)
    want[0, 1:] = lsm[0, np.arange(ids.shape[1] - 1), ids[0, 1:]]
    compare(run_track(d, fa, os.path.join(tmp, "long.bedgraph"), "--chunk", "4096"), want, ids, "golden_long --chunk 4096")


# ---- 2. independent numpy forward on models of other sizes and options
def np_forward(model_dir, ids):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_st(os.path.join(model_dir, "model.safetensors"))
    hf = "hidden_size" in cfg
    if hf:
        D, nl = cfg["hidden_size"], cfg["num_hidden_layers"]
        N, K, E = cfg["state_size"], cfg["conv_kernel"], cfg["intermediate_size"]
        R = cfg["time_step_rank"]
        eps, tied, rms = cfg["layer_norm_epsilon"], cfg["tie_word_embeddings"], True
    else:
        D, nl, s = cfg["d_model"], cfg["n_layer"], cfg["ssm_cfg"]
        N, K, E = s.get("d_state", 16), s.get("d_conv", 4), s.get("expand", 2) * D
        R = s.get("dt_rank", "auto")
        eps, tied, rms = 1e-5, cfg["tie_embeddings"], cfg["rms_norm"]
    if R == "auto":
        R = -(-D // 16)
    emb = w.get("backbone.embeddings.weight", w.get("backbone.embedding.weight"))
    lm = w["lm_head.weight"] if not tied else emb

    def norm(x, p):
        if rms:
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w[p + ".weight"]
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

    h = emb[ids]
    res = None
    for i in range(nl):
        q = f"backbone.layers.{i}."
        res = h if res is None else h + res
        x = norm(res, q + "norm")
        m = q + "mixer."
        xz = x @ w[m + "in_proj.weight"].T + w.get(m + "in_proj.bias", 0)
        xi, z = xz[:, :E], xz[:, E:]
        cw = w[m + "conv1d.weight"][:, 0, :]
        pad = np.vstack([np.zeros((K - 1, E)), xi])
        xc = sum(cw[:, k] * pad[k:k + len(xi)] for k in range(K)) + w.get(m + "conv1d.bias", 0)
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
        h = y @ w[m + "out_proj.weight"].T + w.get(m + "out_proj.bias", 0)
    hf_ = norm(h + res, "backbone.norm_f")
    return log_softmax(hf_ @ lm.T)


rng = np.random.default_rng(7)
variants = [
    ["--d-model", "48", "--n-layer", "3", "--d-state", "8", "--d-conv", "3", "--expand", "3", "--dt-rank", "5", "--bias", "--untied"],
    ["--layout", "mamba_ssm", "--d-model", "40", "--n-layer", "2", "--vocab", "12", "--layernorm", "--no-conv-bias", "--dtype", "BF16"],
    ["--d-model", "32", "--n-layer", "1", "--d-state", "4", "--d-conv", "2", "--dtype", "F16", "--vocab", "20"],
]
for vi, args in enumerate(variants):
    md = os.path.join(tmp, f"model{vi}")
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "scripts/make_untrained_model.py"), md, "--seed", str(vi + 3), *args], check=True)
    L = 300 + 37 * vi
    ids = rng.integers(7, 12, size=(1, L))
    ids[0, 50:60] = 11
    fa = os.path.join(tmp, f"v{vi}.fa")
    write_fasta(fa, ids, width=50)
    lsm = np_forward(md, ids[0])
    want = np.full(ids.shape, np.nan)
    want[0, 1:] = lsm[np.arange(L - 1), ids[0, 1:]]
    compare(run_track(md, fa, os.path.join(tmp, f"v{vi}.bedgraph"), "--chunk", "77"), want, ids,
            f"variant {vi} ({' '.join(args)}) vs numpy")

# ---- 3. stdout and bad inputs (with section 2's first model, so they run without the golden folders)
model0 = os.path.join(tmp, "model0")
r = subprocess.run([DNAMBA, "track", "--model", model0, "--ref", os.path.join(tmp, "v0.fa"),
                    "--region", "seq0:10-20", "-o", "-", "-q"], capture_output=True, text=True)
lines = r.stdout.strip().split("\n")
check(r.returncode == 0 and len(lines) == 10 and lines[0].split("\t")[1] == "10",
      f"--region seq0:10-20 to stdout gives 10 lines starting at 0-based 10 (got {len(lines)})")
for bad, expect in [(["--region", "nope:1-5"], "nope"), (["--region", "seq0:1-100000"], "seq0")]:
    r = subprocess.run([DNAMBA, "track", "--model", model0, "--ref", os.path.join(tmp, "v0.fa"),
                        *bad, "-o", os.path.join(tmp, "bad.bedgraph")], capture_output=True, text=True)
    check(r.returncode != 0 and expect in r.stderr and not os.path.exists(os.path.join(tmp, "bad.bedgraph")),
          f"bad input {bad} fails naming '{expect}' and leaves no output: {r.stderr.strip()}")

# Option errors: one line naming the option, non-zero exit, no output file.
fa0, bad_out = os.path.join(tmp, "v0.fa"), os.path.join(tmp, "bad_opt.bedgraph")
for bad, expect in [(["--what", "gc"], "--what"), (["--chunk=-3"], "--chunk"), (["--dtype", "fp8"], "--dtype"),
                    (["--device", "tpu"], "--device"), (["--device", "cpu", "--dtype", "bf16"], "--dtype"),
                    (["--threads", "-1"], "--threads"), (["--bogus"], "bogus")]:
    r = subprocess.run([DNAMBA, "track", "--model", model0, "--ref", fa0, *bad,
                        "-o", bad_out], capture_output=True, text=True)
    err = r.stderr.strip()
    check(r.returncode != 0 and expect in err and len(err.splitlines()) == 1 and not os.path.exists(bad_out),
          f"bad option {bad} fails in one line naming '{expect}': {err}")

finish()
