#!/usr/bin/python3
"""End-to-end: `dnamba track` and `dnamba info` on Caduceus (masked-LM) models, against values computed
outside dnamba.

1. Golden folders caduceus_ps_tiny / caduceus_ph_tiny: FASTA written from golden input_ids; `--mask none`
   loglik must equal log_softmax(golden logits) at the reference token, every base written.
2. `--mask each` on a region: against an independent numpy implementation of the Caduceus forward
   (written from the reference's definitions: RCPS embedding/blocks/head, BiMamba, fused add+norm swap).
3. Models of other options (scripts/make_untrained_caduceus.py: untied, ew_multiply, LayerNorm + biases,
   unfused, unidirectional, BF16): `--mask none` against the numpy forward.
4. Windows: --window/--overlap output stays within the measured tolerance of the single-window result.
"""
import gzip, os, subprocess, sys, tempfile
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dnamba_testlib import check, finish, load_st, log_softmax, np_caduceus, write_fasta_ids as write_fasta

DNAMBA = os.environ["DNAMBA"]
GOLDEN = os.environ["DNAMBA_GOLDEN_DIR"]
SRC = os.environ["DNAMBA_SOURCE_DIR"]


def run_track(model, fa, out, *extra):
    cmd = [DNAMBA, "track", "--model", model, "--ref", fa, "--device", "cpu", "-o", out, "-q", "--threads", "2", *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
    check(r.returncode == 0, "exit 0: " + " ".join(cmd[1:]))
    op = gzip.open if out.endswith(".gz") else open
    return [l.rstrip("\n").split("\t") for l in op(out, "rt")] if r.returncode == 0 else []


def values(rows, B, L, offset=0):
    v = np.full((B, L), np.nan)
    for c, s, e, x in rows:
        v[int(c[3:]), int(s) - offset] = float(x)
    return v


def compare(rows, want, what, tol=1e-4):
    B, L = want.shape
    check(len(rows) == B * L, f"{what}: {len(rows)} lines, expected {B * L} (every base)")
    got = values(rows, B, L)
    err = np.nanmax(np.abs(got - want)) if len(rows) else np.inf
    check(bool(err < tol) and not np.isnan(got).any(), f"{what}: max abs error {err:.2e} < {tol}")
    return got


tmp = tempfile.mkdtemp(prefix="dnamba_cad_track_")
rng = np.random.default_rng(11)

# ---- 1. golden folders, --mask none; 2. --mask each on a region against numpy
for name in ["caduceus_ps_tiny", "caduceus_ph_tiny"]:
    d = os.path.join(GOLDEN, name)
    if not os.path.isdir(d):
        print("skip: no", d)
        continue
    g = load_st(os.path.join(d, "golden.safetensors"))
    ids, logits = g["input_ids"], g["logits"]
    B, L = ids.shape
    fa = os.path.join(tmp, name + ".fa")
    write_fasta(fa, ids)
    lsm = log_softmax(logits)
    want = np.take_along_axis(lsm, ids[..., None], -1)[..., 0]
    full = compare(run_track(d, fa, os.path.join(tmp, name + ".bedgraph")), want, f"{name} --mask none vs golden")
    compare(run_track(d, fa, os.path.join(tmp, name + ".c.bedgraph.gz"), "--chunk", "500"), want,
            f"{name} --mask none --chunk 500 (batch 1) vs golden")
    # numpy reference agrees with golden (checks the reference itself)
    mine = np_caduceus(d, ids[:1])
    check(np.linalg.norm(mine - logits[:1]) / np.linalg.norm(logits[:1]) < 1e-5, f"{name}: numpy reference reproduces golden logits")

    # --mask each on seq0:101-148 (the region is the whole context)
    beg, n = 100, 48
    reg = ids[0, beg:beg + n]
    masked = np.repeat(reg[None], n, 0)
    masked[np.arange(n), np.arange(n)] = 3
    lm = log_softmax(np_caduceus(d, masked))
    want_each = lm[np.arange(n), np.arange(n), reg][None]
    rows = run_track(d, fa, os.path.join(tmp, name + ".each.bedgraph"), "--mask", "each", "--region", f"seq0:{beg + 1}-{beg + n}",
                     "--chunk", str(n * 7))
    got = values(rows, 1, n, offset=beg)
    err = np.nanmax(np.abs(got - want_each)) if rows else np.inf
    check(len(rows) == n and err < 1e-4, f"{name} --mask each (batched, 7 copies per call) vs numpy: {len(rows)} lines, max abs error {err:.2e}")

    # ---- 4. windows: kept centres agree with the single-window result within the measured tolerance
    rows = run_track(d, fa, os.path.join(tmp, name + ".win.bedgraph"), "--window", "400", "--overlap", "160")
    got = values(rows, B, L)
    err = np.nanmax(np.abs(got - want)) if rows else np.inf
    check(len(rows) == B * L and err < 2e-3, f"{name} --window 400 --overlap 160: max abs difference {err:.2e} from one window (< 2e-3)")

# ---- 3. other options against numpy
variants = [
    ["--d-model", "24", "--n-layer", "3", "--untied", "--strategy", "ew_multiply", "--d-state", "8", "--seed", "1"],
    ["--ph", "--d-model", "40", "--n-layer", "2", "--untied", "--layernorm", "--bias", "--d-conv", "3", "--seed", "2"],
    ["--d-model", "16", "--n-layer", "3", "--no-fused-add-norm", "--no-conv-bias", "--dt-rank", "3", "--seed", "3"],
    ["--d-model", "16", "--n-layer", "2", "--unidirectional", "--seed", "4"],
    ["--ph", "--d-model", "32", "--n-layer", "2", "--strategy", "ew_multiply", "--dtype", "BF16", "--seed", "5"],
    ["--d-model", "32", "--n-layer", "2", "--dtype", "BF16", "--bias", "--seed", "6"],
]
for vi, args in enumerate(variants):
    md = os.path.join(tmp, f"model{vi}")
    subprocess.run(["/usr/bin/python3", os.path.join(SRC, "scripts/make_untrained_caduceus.py"), md, *args], check=True)
    L = 150 + 17 * vi
    ids = rng.integers(7, 12, size=(2, L))
    ids[0, 30:36] = 11
    fa = os.path.join(tmp, f"v{vi}.fa")
    write_fasta(fa, ids, width=50)
    lsm = log_softmax(np_caduceus(md, ids))
    want = np.take_along_axis(lsm, ids[..., None], -1)[..., 0]
    compare(run_track(md, fa, os.path.join(tmp, f"v{vi}.bedgraph")), want, f"variant {vi} ({' '.join(args)}) vs numpy")

# ---- info and bad inputs
if os.path.isdir(os.path.join(GOLDEN, "caduceus_ps_tiny")):
    r = subprocess.run([DNAMBA, "info", "--model", os.path.join(GOLDEN, "caduceus_ps_tiny")], capture_output=True, text=True)
    info = dict(l.split("\t", 1) for l in r.stdout.strip().split("\n") if "\t" in l)
    check(r.returncode == 0 and info.get("parameters") == "28000" and info.get("dtype") == "F32" and info.get("hidden_size") == "64",
          f"info on PS: parameters 28000, dtype F32, hidden_size 64 (got {info.get('parameters')}, {info.get('dtype')}, {info.get('hidden_size')})")
else:
    print("skip: no", os.path.join(GOLDEN, "caduceus_ps_tiny"), "(info check)")
md = os.path.join(tmp, "model0")
for bad, expect in [(["--mask", "sometimes"], "--mask"), (["--window", "100", "--overlap", "100"], "--overlap")]:
    out = os.path.join(tmp, "bad.bedgraph")
    r = subprocess.run([DNAMBA, "track", "--model", md, "--ref", os.path.join(tmp, "v0.fa"), *bad, "-o", out, "--device", "cpu"],
                       capture_output=True, text=True)
    check(r.returncode != 0 and expect in r.stderr and not os.path.exists(out), f"bad {bad} fails naming '{expect}': {r.stderr.strip()}")

finish()
