#!/usr/bin/python3
"""Writes a small randomly initialised Mamba model (HF transformers layout) to a directory.

Used for the embedded placeholder model and for test models of other sizes/options. The
initialisation follows Mamba's (A_log = log(1..N), D = 1, dt bias = softplus^-1 of a log-uniform dt),
so the model's outputs are well-scaled but it knows nothing about DNA.
Usage: make_untrained_model.py OUT_DIR [--d-model 64] [--n-layer 4] [--d-state 16] [--d-conv 4]
       [--expand 2] [--dt-rank auto] [--vocab 16] [--seed 0] [--dtype F32|BF16|F16] [--bias] [--no-conv-bias]
       [--untied] [--layout hf|mamba_ssm] [--layernorm]
"""
import argparse, json, math, os, struct
import numpy as np

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--d-model", type=int, default=64)
p.add_argument("--n-layer", type=int, default=4)
p.add_argument("--d-state", type=int, default=16)
p.add_argument("--d-conv", type=int, default=4)
p.add_argument("--expand", type=int, default=2)
p.add_argument("--dt-rank", default="auto")
p.add_argument("--vocab", type=int, default=16)
p.add_argument("--pad-multiple", type=int, default=8)
p.add_argument("--seed", type=int, default=0)
p.add_argument("--dtype", default="F32", choices=["F32", "BF16", "F16"])
p.add_argument("--bias", action="store_true")
p.add_argument("--no-conv-bias", action="store_true")
p.add_argument("--untied", action="store_true")
p.add_argument("--layernorm", action="store_true", help="mamba_ssm layout only: rms_norm=false")
p.add_argument("--layout", default="hf", choices=["hf", "mamba_ssm"])
a = p.parse_args()

rng = np.random.default_rng(a.seed)
D, L, N, K = a.d_model, a.n_layer, a.d_state, a.d_conv
E = a.expand * D
R = math.ceil(D / 16) if a.dt_rank == "auto" else int(a.dt_rank)
V = a.vocab
if a.layout == "mamba_ssm" and V % a.pad_multiple:
    V += a.pad_multiple - V % a.pad_multiple
t = {}
emb = "backbone.embeddings.weight" if a.layout == "hf" else "backbone.embedding.weight"
t[emb] = rng.normal(0, 0.02 * math.sqrt(64 / D) * 4, (V, D))
for i in range(L):
    q = f"backbone.layers.{i}."
    t[q + "norm.weight"] = 1 + rng.normal(0, 0.1, D)
    if a.layernorm:
        t[q + "norm.bias"] = rng.normal(0, 0.1, D)
    m = q + "mixer."
    t[m + "in_proj.weight"] = rng.normal(0, 1 / math.sqrt(D), (2 * E, D))
    if a.bias:
        t[m + "in_proj.bias"] = rng.normal(0, 0.1, 2 * E)
        t[m + "out_proj.bias"] = rng.normal(0, 0.1, D)
    t[m + "conv1d.weight"] = rng.normal(0, 1 / math.sqrt(K), (E, 1, K))
    if not a.no_conv_bias:
        t[m + "conv1d.bias"] = rng.normal(0, 0.1, E)
    t[m + "x_proj.weight"] = rng.normal(0, 1 / math.sqrt(E), (R + 2 * N, E))
    t[m + "dt_proj.weight"] = rng.normal(0, R ** -0.5, (E, R))
    dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), E))
    t[m + "dt_proj.bias"] = dt + np.log(-np.expm1(-dt))
    t[m + "A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1))) + rng.normal(0, 0.05, (E, N))
    t[m + "D"] = 1 + rng.normal(0, 0.1, E)
    t[m + "out_proj.weight"] = rng.normal(0, 1 / math.sqrt(E), (D, E))
t["backbone.norm_f.weight"] = 1 + rng.normal(0, 0.1, D)
if a.layernorm:
    t["backbone.norm_f.bias"] = rng.normal(0, 0.1, D)
if a.untied:
    t["lm_head.weight"] = rng.normal(0, 0.5, (V, D))

def to_bytes(x):
    x = np.ascontiguousarray(x, dtype=np.float32)
    if a.dtype == "F32":
        return x.tobytes()
    if a.dtype == "F16":
        return x.astype(np.float16).tobytes()
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return u.tobytes()

os.makedirs(a.out, exist_ok=True)
header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
for k in sorted(t):
    b = to_bytes(t[k])
    header[k] = {"dtype": a.dtype, "shape": list(np.shape(t[k])), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
hs = json.dumps(header).encode()
hs += b" " * ((8 - len(hs) % 8) % 8)
with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
    f.write(struct.pack("<Q", len(hs)) + hs + b"".join(blobs))
if a.layout == "hf":
    cfg = {"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": D, "num_hidden_layers": L,
           "state_size": N, "conv_kernel": K, "expand": a.expand, "intermediate_size": E,
           "time_step_rank": R if a.dt_rank != "auto" else "auto", "vocab_size": V, "use_bias": a.bias,
           "use_conv_bias": not a.no_conv_bias, "residual_in_fp32": True, "tie_word_embeddings": not a.untied,
           "layer_norm_epsilon": 1e-5, "hidden_act": "silu", "pad_token_id": 4, "bos_token_id": 2, "eos_token_id": 1}
else:
    cfg = {"d_model": D, "d_intermediate": 0, "n_layer": L, "vocab_size": a.vocab,
           "ssm_cfg": {"layer": "Mamba1", "d_state": N, "d_conv": K, "expand": a.expand, "dt_rank": a.dt_rank if a.dt_rank == "auto" else R,
                       "bias": a.bias, "conv_bias": not a.no_conv_bias},
           "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": not a.layernorm, "residual_in_fp32": True, "fused_add_norm": True,
           "pad_vocab_size_multiple": a.pad_multiple, "tie_embeddings": not a.untied}
cfg["dnamba_note"] = "untrained: random Mamba initialisation (seed %d) written by scripts/make_untrained_model.py" % a.seed
with open(os.path.join(a.out, "config.json"), "w") as f:
    json.dump(cfg, f, indent=2)
