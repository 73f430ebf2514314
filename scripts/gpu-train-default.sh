#!/usr/bin/env bash
# On the GPU machine: trains the embedded default model with models/train_default.sh (issue 6, item 3),
# then measures it: bits/base on the whole of yeast chromosome XVI and the zero-shot codon check of
# item 5 (every SNV in XVI's coding sequences scored with `dnamba score`). The model, the logs and a
# short table come back under $OUT.
#   here:   scripts/build-gpu.sh && scripts/gpu-train-default.sh --stage     (stages data into .gpu/train)
#   device: run(carry=[".gpu"], command="bash scripts/gpu-train-default.sh")
# env: BUDGET_S (training seconds, default 540), PROBE_STEPS (default 30), BATCH, SEQ_LEN.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage" ]; then
  S=${SHARED:-$PWD/../shared}/data
  D=.gpu/train
  mkdir -p $D
  for d in ecoli yeast human sarscov2 lambda; do mkdir -p $D/$d; done
  cp "$S"/ecoli/ecoli_k12_mg1655.fa.gz* $D/ecoli/
  cp "$S"/yeast/yeast_r64.fa.gz* "$S"/yeast/yeast_r64.gff.gz $D/yeast/
  cp "$S"/human/grch38_gene_regions.fa.gz* "$S"/human/hg002_chr20_hifi_reads.fa.gz* "$S"/human/brca2_region.fa* $D/human/
  cp "$S"/sarscov2/MN908947.3.fa* $D/sarscov2/
  cp "$S"/lambda/lambda_virus.fa* $D/lambda/
  du -sh $D
  exit 0
fi
G=/tmp/dnamba-gpu
mkdir -p $G && xz -dc .gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
D=$PWD/.gpu/train
S=$OUT/summary.txt
: > "$S"
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$S"; }
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee -a "$S"
BATCH=${BATCH:-32} SEQ_LEN=${SEQ_LEN:-4096}

# 1. A short probe run for tokens/s, so that the cosine schedule ends inside the budget.
rm -rf /tmp/probe
DATA=$D DNAMBA=$G/dnamba DEVICE=cuda STEPS=${PROBE_STEPS:-30} BATCH=$BATCH SEQ_LEN=$SEQ_LEN \
  bash models/train_default.sh /tmp/probe > "$OUT/probe.log" 2>&1
tps=$(awk -F'\t' 'NR > 6 && $6 > 0 {s += $6; n++} END {if (n) printf "%d", s / n}' /tmp/probe/train_log.tsv)
row "probe: tokens/s (steps 6..)" "$tps"
[ -n "$tps" ] && [ "$tps" -gt 0 ] || { echo "probe failed"; tail -20 "$OUT/probe.log"; exit 1; }
steps=$(( ${BUDGET_S:-540} * tps / (BATCH * SEQ_LEN) ))
row "training steps for ${BUDGET_S:-540} s" "$steps (batch $BATCH x $SEQ_LEN)"

# 2. The training run itself (wall clock measured).
rm -rf /tmp/run
t0=$(date +%s)
DATA=$D DNAMBA=$G/dnamba DEVICE=cuda STEPS=$steps BATCH=$BATCH SEQ_LEN=$SEQ_LEN \
  bash models/train_default.sh /tmp/run > "$OUT/train.log" 2>&1
rc=$?
t1=$(date +%s)
row "training run" "rc=$rc, $((t1 - t0)) s wall (incl. start-up and validation)"
mkdir -p "$OUT/default"
cp /tmp/run/config.json /tmp/run/model.safetensors /tmp/run/train_log.tsv /tmp/run/trainer_state.json "$OUT/default/" 2>/dev/null
tail -3 /tmp/run/train_log.tsv | tee -a "$S"

# 3. Bits per base on the whole of yeast XVI (fp32 on the GPU).
$G/dnamba track -q --model /tmp/run --ref $D/yeast/yeast_r64.fa.gz --region XVI --what loglik --device cuda --dtype fp32 \
  -o /tmp/xvi.bedgraph > "$OUT/xvi.log" 2>&1
row "bits/base on yeast XVI (whole, fp32 GPU)" "$(awk '{n += $3 - $2; s += ($3 - $2) * $4} END {printf "%.4f over %d bases", -s / n / log(2), n}' /tmp/xvi.bedgraph)"

# 4. Zero-shot: every SNV in the CDS of XVI, mean score by codon position.
python3 scripts/codon_snv_sanity.py make --gff $D/yeast/yeast_r64.gff.gz --ref $D/yeast/yeast_r64.fa.gz --chrom XVI \
  -o /tmp/cds_snvs.vcf 2>&1 | tee -a "$OUT/codon.log"
t0=$(date +%s)
$G/dnamba score -q --model /tmp/run --ref $D/yeast/yeast_r64.fa.gz --vcf /tmp/cds_snvs.vcf -o /tmp/cds_snvs.scored.vcf.gz \
  --device cuda --dtype fp32 --threads 8 >> "$OUT/codon.log" 2>&1
row "score all CDS SNVs of XVI (fp32 GPU)" "rc=$?, $(( $(date +%s) - t0 )) s"
python3 scripts/codon_snv_sanity.py summarize /tmp/cds_snvs.scored.vcf.gz 2>&1 | tee "$OUT/codon_table.md" | tee -a "$S"
echo
echo "==== summary"
cat "$S"
