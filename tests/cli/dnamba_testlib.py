"""Helpers shared by the CLI end-to-end tests (tests/cli/test_*.py): assertion bookkeeping, a
safetensors reader in numpy, and an independent numpy implementation of the Caduceus forward written
from the reference's definitions (RCPS embedding/blocks/head, BiMamba, fused add+norm swap)."""
import json, os, struct, sys
import numpy as np

failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg)
    if not cond:
        failures.append(msg)


def finish():
    """Prints the closing line and exits 1 when any check failed."""
    print(f"{len(failures)} failed" if failures else "all passed")
    sys.exit(1 if failures else 0)


def load_st(path):
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    out = {}
    for k, v in h.items():
        if k == "__metadata__":
            continue
        s, e = v["data_offsets"]
        raw = b[8 + n + s:8 + n + e]
        if v["dtype"] == "BF16":
            a = (np.frombuffer(raw, np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            a = np.frombuffer(raw, {"F32": np.float32, "F16": np.float16, "I64": np.int64}[v["dtype"]])
        out[k] = a.reshape(v["shape"]).astype(np.float64 if v["dtype"] != "I64" else np.int64)
    return out


def write_fasta_ids(path, ids, width=60):
    """FASTA of token rows (7..11 = A,C,G,T,N), one record seq<i> per row."""
    with open(path, "w") as f:
        for i, row in enumerate(ids):
            s = "".join("ACGTN"[t - 7] for t in row)
            f.write(f">seq{i}\n")
            for j in range(0, len(s), width):
                f.write(s[j:j + width] + "\n")


def log_softmax(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


# ---- independent numpy Caduceus forward, batched: ids [B, T] -> logits [B, T, V] (or hidden states)
def np_caduceus(model_dir, ids, hidden=False):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    w = load_st(os.path.join(model_dir, "model.safetensors"))
    D, s = cfg["d_model"], cfg["ssm_cfg"]
    N, K, E = s.get("d_state", 16), s.get("d_conv", 4), s.get("expand", 2) * D
    R = s.get("dt_rank", "auto")
    R = -(-D // 16) if R == "auto" else R
    eps, rms_norm = cfg.get("norm_epsilon", 1e-5), cfg.get("rms_norm", True)
    rcps, fused = cfg["rcps"], cfg.get("fused_add_norm", True)
    bidir, tie = cfg.get("bidirectional", True), cfg.get("bidirectional_weight_tie", True)
    strategy = cfg.get("bidirectional_strategy", "add")
    bb = "caduceus.backbone."

    def norm(x, p, rev=False):
        wt, bs = w[p + ".weight"], w.get(p + ".bias")
        if rev:
            wt = wt[::-1]
            bs = bs[::-1] if bs is not None else None
        if rms_norm:
            return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * wt
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * wt + bs

    def mamba(p, pp, x):  # x [B, T, D]; pp: where in/out projections live
        xz = x @ w[pp + "in_proj.weight"].T + w.get(pp + "in_proj.bias", 0)
        xi, z = xz[..., :E], xz[..., E:]
        cw = w[p + "conv1d.weight"][:, 0, :]
        T = x.shape[1]
        pad = np.concatenate([np.zeros((x.shape[0], K - 1, E)), xi], 1)
        xc = sum(cw[:, k] * pad[:, k:k + T] for k in range(K)) + w.get(p + "conv1d.bias", 0)
        xc = xc / (1 + np.exp(-xc))
        xd = xc @ w[p + "x_proj.weight"].T
        dt = xd[..., :R] @ w[p + "dt_proj.weight"].T + w[p + "dt_proj.bias"]
        dt = np.where(dt > 20, dt, np.log1p(np.exp(np.minimum(dt, 20))))
        Bm, Cm = xd[..., R:R + N], xd[..., R + N:]
        A = -np.exp(w[p + "A_log"])
        st = np.zeros((x.shape[0], E, N))
        y = np.zeros_like(xc)
        for t in range(T):
            st = np.exp(dt[:, t, :, None] * A) * st + (dt[:, t] * xc[:, t])[..., None] * Bm[:, t, None, :]
            y[:, t] = np.einsum("ben,bn->be", st, Cm[:, t])
        y = (y + xc * w[p + "D"]) * (z / (1 + np.exp(-z)))
        return y @ w[pp + "out_proj.weight"].T + w.get(pp + "out_proj.bias", 0)

    def bimamba(mp, x):
        out = mamba(mp + "mamba_fwd.", mp + "mamba_fwd.", x)
        if not bidir:
            return out
        rp = mp + "mamba_rev."
        rev = mamba(rp, mp + "mamba_fwd." if tie else rp, x[:, ::-1])[:, ::-1]
        return out + rev if strategy == "add" else out * rev

    rc = lambda x: x[:, ::-1, ::-1]  # flip length and channels
    if rcps:
        Em = w[bb + "embeddings.word_embeddings.embedding.weight"]
        cm = w[bb + "embeddings.word_embeddings.complement_map"]
        h = np.concatenate([Em[ids], rc(Em[cm[ids[:, ::-1]]])], -1)
    else:
        h = w[bb + "embeddings.word_embeddings.weight"][ids]
    res = None
    for i in range(cfg["n_layer"]):
        lp = f"{bb}layers.{i}."
        if rcps:
            H = D
            if fused:  # the fused path: forward half from the second channel half, RC half from the first
                rf = h[..., H:] + (res[..., H:] if res is not None else 0)
                rr = rc(h[..., :H]) + (rc(res[..., :H]) if res is not None else 0)
            else:
                rf = h[..., :H] + (res[..., :H] if res is not None else 0)
                rr = rc(h[..., H:]) + (rc(res[..., H:]) if res is not None else 0)
            res = np.concatenate([rf, rc(rr)], -1)
            hn = np.concatenate([norm(rf, lp + "norm"), rc(norm(rr, lp + "norm"))], -1)
            mp = lp + "mixer.submodule."
            h = np.concatenate([bimamba(mp, hn[..., :H]), rc(bimamba(mp, rc(hn[..., H:])))], -1)
        else:
            res = h if res is None else h + res
            h = bimamba(lp + "mixer.", norm(res, lp + "norm"))
    s = h + res
    if rcps:
        hid = np.concatenate([norm(s[..., :D], bb + "norm_f"), rc(norm(rc(s[..., D:]), bb + "norm_f"))], -1)
        if hidden:
            return hid
        W = w.get("lm_head.lm_head.weight", Em)
        cm2 = w["lm_head.complement_map"]
        return hid[..., :D] @ W.T + hid[..., D:][..., ::-1] @ W[cm2].T
    hid = norm(s, bb + "norm_f")
    if hidden:
        return hid
    return hid @ w.get("lm_head.weight", w[bb + "embeddings.word_embeddings.weight"]).T
