#!/usr/bin/python3
"""Writes a randomly initialised Caduceus model (kuleshov-group/caduceus CaduceusForMaskedLM layout).

PS (--rcps, the default) or Ph (--ph); tied or untied fwd/rev in/out projections; add or
ew_multiply; F32 or BF16. Used for test models of other sizes/options and for benchmarks
(bench/caduceus_speed.sh: d_model 256, n_layer 16 like the released checkpoints). The weights follow
Mamba's initialisation (A_log = log(1..N), D = 1, dt bias = softplus^-1 of a log-uniform dt), so the
outputs are well-scaled, but the model knows nothing about DNA.

Usage: make_untrained_caduceus.py OUT_DIR [--ph] [--d-model 32] [--n-layer 2] [--d-state 16] [--d-conv 4]
       [--expand 2] [--dt-rank auto] [--vocab 12] [--pad-multiple 8] [--seed 0] [--dtype F32|BF16]
       [--untied] [--strategy add|ew_multiply] [--unidirectional] [--no-fused-add-norm] [--layernorm]
       [--bias] [--no-conv-bias] [--seq-len N]
"""
import argparse, json, math, os, struct
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--ph", action="store_true", help="post-hoc variant (rcps: false); default PS (rcps: true)")
p.add_argument("--d-model", type=int, default=32)
p.add_argument("--n-layer", type=int, default=2)
p.add_argument("--d-state", type=int, default=16)
p.add_argument("--d-conv", type=int, default=4)
p.add_argument("--expand", type=int, default=2)
p.add_argument("--dt-rank", default="auto")
p.add_argument("--vocab", type=int, default=12)
p.add_argument("--pad-multiple", type=int, default=8)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--dtype", default="F32", choices=["F32", "BF16"])
p.add_argument("--untied", action="store_true", help="bidirectional_weight_tie: false")
p.add_argument("--strategy", default="add", choices=["add", "ew_multiply"])
p.add_argument("--unidirectional", action="store_true", help="bidirectional: false")
p.add_argument("--no-fused-add-norm", action="store_true")
p.add_argument("--layernorm", action="store_true", help="rms_norm: false (LayerNorm with bias)")
p.add_argument("--bias", action="store_true", help="in_proj/out_proj bias")
p.add_argument("--no-conv-bias", action="store_true")
p.add_argument("--seq-len", type=int, default=0, help="write max_seq_len (the training length) into config.json")
a = p.parse_args()

rng = np.random.default_rng(a.seed)
D, L, N, K = a.d_model, a.n_layer, a.d_state, a.d_conv
E = a.expand * D
R = math.ceil(D / 16) if a.dt_rank == "auto" else int(a.dt_rank)
V = a.vocab
if V % a.pad_multiple:
    V += a.pad_multiple - V % a.pad_multiple
rcps = not a.ph
comp = {i: i for i in range(V)}
comp.update({7: 10, 8: 9, 9: 8, 10: 7})

t = {}
bb = "caduceus.backbone."
emb = rng.normal(0, 0.5 * math.sqrt(32 / D), (V, D))
if rcps:
    t[bb + "embeddings.word_embeddings.embedding.weight"] = emb
    t[bb + "embeddings.word_embeddings.complement_map"] = np.array([comp[i] for i in range(V)], dtype=np.int64)
    t["lm_head.complement_map"] = np.array([comp[i] for i in range(V)], dtype=np.int64)
else:
    t[bb + "embeddings.word_embeddings.weight"] = emb
    t["lm_head.weight"] = emb.copy()  # tied, saved as the released Ph checkpoints do


def mamba(prefix, with_proj):
    if with_proj:
        t[prefix + "in_proj.weight"] = rng.normal(0, 1 / math.sqrt(D), (2 * E, D))
        t[prefix + "out_proj.weight"] = rng.normal(0, 1 / math.sqrt(E), (D, E))
        if a.bias:
            t[prefix + "in_proj.bias"] = rng.normal(0, 0.1, 2 * E)
            t[prefix + "out_proj.bias"] = rng.normal(0, 0.1, D)
    t[prefix + "conv1d.weight"] = rng.normal(0, 1 / math.sqrt(K), (E, 1, K))
    if not a.no_conv_bias:
        t[prefix + "conv1d.bias"] = rng.normal(0, 0.1, E)
    t[prefix + "x_proj.weight"] = rng.normal(0, 1 / math.sqrt(E), (R + 2 * N, E))
    t[prefix + "dt_proj.weight"] = rng.normal(0, R ** -0.5, (E, R))
    dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), E))
    t[prefix + "dt_proj.bias"] = dt + np.log(-np.expm1(-dt))
    t[prefix + "A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))) + rng.normal(0, 0.05, (E, N))
    t[prefix + "D"] = 1 + rng.normal(0, 0.1, E)


for i in range(L):
    q = f"{bb}layers.{i}."
    t[q + "norm.weight"] = 1 + rng.normal(0, 0.1, D)
    if a.layernorm:
        t[q + "norm.bias"] = rng.normal(0, 0.1, D)
    m = q + ("mixer.submodule." if rcps else "mixer.")
    mamba(m + "mamba_fwd.", True)
    if not a.unidirectional:
        mamba(m + "mamba_rev.", a.untied)
t[bb + "norm_f.weight"] = 1 + rng.normal(0, 0.1, D)
if a.layernorm:
    t[bb + "norm_f.bias"] = rng.normal(0, 0.1, D)


def to_bytes(x):
    if x.dtype == np.int64:
        return "I64", x.tobytes()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if a.dtype == "F32":
        return "F32", x.tobytes()
    u = x.view(np.uint32).astype(np.uint64)
    return "BF16", ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


os.makedirs(a.out, exist_ok=True)
header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
for k in sorted(t):
    dt_, b = to_bytes(t[k])
    header[k] = {"dtype": dt_, "shape": list(np.shape(t[k])), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
hs = json.dumps(header).encode()
hs += b" " * ((8 - len(hs) % 8) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hs)) + hs + b"".join(blobs))
cfg = {
    "architectures": ["CaduceusForMaskedLM"], "model_type": "caduceus",
    "d_model": D, "n_layer": L, "vocab_size": a.vocab,
    "ssm_cfg": {"d_state": N, "d_conv": K, "expand": a.expand, "dt_rank": a.dt_rank if a.dt_rank == "auto" else R,
                "conv_bias": not a.no_conv_bias, "bias": a.bias},
    "rms_norm": not a.layernorm, "residual_in_fp32": False, "fused_add_norm": not a.no_fused_add_norm,
    "pad_vocab_size_multiple": a.pad_multiple, "norm_epsilon": 1e-5,
    "bidirectional": not a.unidirectional, "bidirectional_strategy": a.strategy,
    "bidirectional_weight_tie": not a.untied, "rcps": rcps,
    "complement_map": {str(k): v for k, v in comp.items()},
    "dnamba_note": "untrained: random Caduceus initialisation (seed %d) written by scripts/make_untrained_caduceus.py" % a.seed,
}
if a.seq_len:
    cfg["max_seq_len"] = a.seq_len
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
