#!/usr/bin/python3
"""End-to-end: `dnamba train` on the CPU with a tiny model.

1. A run stopped after step 9 and continued with --resume gives the same per-step losses and
   gradient norms, and the same final model bytes, as an uninterrupted run.
2. The output directory is a normal model directory: `dnamba info` and `dnamba track` load it.
3. Validation bits/base is logged; --init continues from a trained model; bad invocations are
   errors with a message (no traceback, non-zero exit).
"""
import json, math, os, subprocess, sys, tempfile

DNAMBA = os.environ["DNAMBA"]
SRC = os.environ.get("DNAMBA_SOURCE_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "../.."))
FA = os.path.join(SRC, "testdata/lambda_virus.fa")
CONTIG = "gi|9626243|ref|NC_001416.1|"
failures = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        failures.append(msg)


def run(args, expect_ok=True):
    p = subprocess.run([DNAMBA] + args, capture_output=True, text=True)
    if expect_ok and p.returncode != 0:
        print(p.stderr)
    return p


def log(d):
    rows = [l.rstrip("\n").split("\t") for l in open(os.path.join(d, "train_log.tsv"))]
    hdr = rows[0]
    return [dict(zip(hdr, r)) for r in rows[1:]]


with tempfile.TemporaryDirectory() as tmp:
    cfg = os.path.join(tmp, "tiny.json")
    with open(cfg, "w") as f:
        json.dump({"model_type": "mamba", "hidden_size": 16, "num_hidden_layers": 2, "state_size": 4,
                   "conv_kernel": 4, "expand": 2, "vocab_size": 16, "tie_word_embeddings": True}, f)
    common = ["--ref", FA, "--seq-len", "48", "--batch", "3", "--steps", "20", "--warmup", "3", "--lr", "3e-3",
              "--val-region", CONTIG + ":40001-48502", "--val-every", "10", "--val-max-bases", "3000",
              "--threads", "2", "--seed", "7", "-q"]
    a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
    p = run(["train", "--config", cfg, "-o", a] + common)
    check(p.returncode == 0, "uninterrupted run")
    p = run(["train", "--config", cfg, "-o", b, "--stop-at", "9", "--save-every", "4"] + common)
    check(p.returncode == 0, "run stopped at step 9")
    check(len(log(b)) == 9, "stopped run logged 9 steps")
    st = json.load(open(os.path.join(b, "trainer_state.json")))
    check(st["step"] == 9, "checkpoint at step 9")
    p = run(["train", "--resume", "-o", b, "--threads", "2", "--val-every", "10", "--val-max-bases", "3000", "-q"])
    check(p.returncode == 0, "resumed run")
    la, lb = log(a), log(b)
    check(len(la) == 20 and len(lb) == 20, "both logs have 20 steps")
    same = all(x["loss_nats"] == y["loss_nats"] and x["grad_norm"] == y["grad_norm"] and
               x["val_bits_per_base"] == y["val_bits_per_base"] for x, y in zip(la, lb))
    check(same, "resumed run repeats the uninterrupted loss curve exactly")
    check(open(os.path.join(a, "model.safetensors"), "rb").read() == open(os.path.join(b, "model.safetensors"), "rb").read(),
          "resumed run ends with the same model bytes")
    vals = [float(r["val_bits_per_base"]) for r in la if r["val_bits_per_base"]]
    check(len(vals) == 2 and all(0.5 < v < 4.0 for v in vals), "validation bits/base logged at steps 10 and 20: %s" % vals)
    check(float(la[-1]["loss_nats"]) < float(la[0]["loss_nats"]), "the loss goes down")

    # A normal model directory.
    p = run(["info", "--model", a])
    check(p.returncode == 0 and "parameters" in p.stdout, "dnamba info loads the trained model")
    bg = os.path.join(tmp, "t.bedgraph")
    p = run(["track", "--ref", FA, "--region", CONTIG + ":1-500", "--model", a, "--device", "cpu", "-o", bg, "-q"])
    lines = open(bg).read().split("\n") if p.returncode == 0 else []
    lines = [l for l in lines if l and not l.startswith("track")]
    check(p.returncode == 0 and len(lines) == 499 and all(math.isfinite(float(l.split("\t")[3])) for l in lines),
          "dnamba track runs the trained model (%d lines)" % len(lines))

    # --init continues from trained weights (a fresh optimiser).
    c = os.path.join(tmp, "c")
    p = run(["train", "--init", a, "-o", c, "--ref", FA, "--seq-len", "32", "--batch", "2", "--steps", "2", "-q"])
    check(p.returncode == 0 and os.path.exists(os.path.join(c, "model.safetensors")), "--init from a trained model")

    # Errors.
    p = run(["train", "--resume", "-o", b, "--lr", "0.1", "-q"], expect_ok=False)
    check(p.returncode != 0 and "differs from the checkpoint" in p.stderr, "changing the recipe on --resume is an error")
    p = run(["train", "--config", cfg, "-o", a, "--ref", FA, "-q"], expect_ok=False)
    check(p.returncode != 0 and "--resume" in p.stderr, "refuses to overwrite a training run")
    p = run(["train", "--config", cfg, "--init", a, "-o", os.path.join(tmp, "d"), "--ref", FA, "-q"], expect_ok=False)
    check(p.returncode != 0 and "exactly one" in p.stderr, "--config and --init together is an error")
    p = run(["train", "--config", cfg, "-o", os.path.join(tmp, "e"), "--ref", FA, "--val-region", "chrZ:1-10", "-q"],
            expect_ok=False)
    check(p.returncode != 0 and "chrZ" in p.stderr, "unknown --val-region contig is an error")

if failures:
    print("%d failure(s)" % len(failures))
    sys.exit(1)
print("all passed")
