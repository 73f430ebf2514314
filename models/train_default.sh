#!/bin/bash
# Trains the embedded default model (models/default) with `dnamba train`, exactly as shipped.
#
# Data: every FASTA of ../shared/data (E. coli, yeast, human gene regions, HG002 HiFi reads, BRCA2
# region, SARS-CoV-2, lambda) with yeast chromosome XVI held out: it is never drawn for training and
# is the validation set (bits per base on the whole chromosome).
# Model: models/default.config.json (Mamba-1, d_model 128, 6 layers, d_state 16, expand 2, tied
# embeddings; ~0.7 M parameters, ~2.8 MB in fp32) -- small enough for a useful speed on a 2-core CPU.
# Budget: one H200, at most 10 minutes of training. STEPS is chosen from the measured tokens/s so
# that the cosine schedule ends inside the budget; --time-limit is the hard stop (a run stopped
# by it leaves a checkpoint that --resume continues).
# The shipped model (2026-11-28): scripts/gpu-train-default.sh with BUDGET_S=170 measured 996,751
# tokens/s in a 25-step probe and ran `DEVICE=cuda STEPS=1292 BATCH=32 SEQ_LEN=4096
# models/train_default.sh /tmp/run` (171 s wall, 169 M tokens) on one H200.
#
# Usage: models/train_default.sh [RUN_DIR]      (env: DNAMBA, DEVICE, STEPS, BATCH, SEQ_LEN, INSTALL=1)
# With INSTALL=1 the trained config.json + model.safetensors (and the training log) are copied into
# models/default; the optimizer state stays in RUN_DIR.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
src="$(dirname "$here")"
data="${DATA:-$src/../shared/data}"
run="${1:-$src/build/default_model_run}"
dnamba="${DNAMBA:-$src/build/dnamba}"
device="${DEVICE:-cuda}"
steps="${STEPS:-4000}"
batch="${BATCH:-32}"
seq_len="${SEQ_LEN:-4096}"

args=(
  --ref "$data/ecoli/ecoli_k12_mg1655.fa.gz"
  --ref "$data/yeast/yeast_r64.fa.gz"
  --ref "$data/human/grch38_gene_regions.fa.gz"
  --ref "$data/human/hg002_chr20_hifi_reads.fa.gz"
  --ref "$data/human/brca2_region.fa"
  --ref "$data/sarscov2/MN908947.3.fa"
  --ref "$data/lambda/lambda_virus.fa"
  --val-region XVI
  --config "$here/default.config.json"
  --device "$device"
  --seq-len "$seq_len" --batch "$batch" --steps "$steps"
  --lr 2e-3 --warmup 200 --min-lr-ratio 0.1 --weight-decay 0.1 --clip 1.0
  --recompute-chunk 64 --seed 1
  --val-every 1000 --val-max-bases 100000 --save-every 1000 --time-limit 590
  -o "$run"
)
if [ -f "$run/trainer_state.json" ]; then
  "$dnamba" train --resume -o "$run" --device "$device" --val-every 1000 --val-max-bases 100000 --save-every 1000 --time-limit 590
else
  "$dnamba" train "${args[@]}"
fi
tail -n 3 "$run/train_log.tsv"
if [ "${INSTALL:-0}" = 1 ]; then
  mkdir -p "$src/models/default"
  cp "$run/config.json" "$run/model.safetensors" "$src/models/default/"
  cp "$run/train_log.tsv" "$src/models/default/train_log.tsv"
  echo "installed into $src/models/default"
fi
