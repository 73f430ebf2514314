#!/usr/bin/env bash
# On the GPU machine: the real-data runs of issue 5 (embed the E. coli reads and genome, loglik bigWig)
# and the Caduceus speed runs of issue 7, from the bundle staged by scripts/build-gpu.sh plus
# .gpu/extra (ecoli_ont_reads.bam(.bai), yeast_r64.fa.gz(.fai,.gzi), yeast_variants.vcf.gz(.tbi)),
# staged by `scripts/gpu-extra.sh --stage` here. Logs under $OUT; a short table last.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--stage" ]; then  # here: stage the extra data into ${GPU_DIR:-.gpu}/extra
  S=${SHARED:-$PWD/../shared}/data
  GD=${GPU_DIR:-.gpu}; mkdir -p $GD/extra/ecoli $GD/extra/yeast
  cp "$S"/ecoli/ecoli_ont_reads.bam* "$S"/ecoli/ecoli_k12_mg1655.fa.gz* $GD/extra/ecoli/
  cp "$S"/yeast/yeast_r64.fa.gz* "$S"/yeast/yeast_variants.vcf.gz* $GD/extra/yeast/
  du -sh $GD
  exit 0
fi
GD=${GPU_DIR:-.gpu}
G=/tmp/dnamba-gpu
mkdir -p $G && xz -dc $GD/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.used --format=csv,noheader
echo "== embed real data (issue 5)"
OUT=$(mktemp -d) DEVICE=cuda DATA=$PWD/$GD/extra/ecoli timeout ${EMBED_TIMEOUT:-240} bash bench/embed_real_data.sh $G/dnamba 2>&1 | tee "$OUT/embed_real_data.log"
echo "== caduceus speed (issue 7)"
DNAMBA_DATA_DIR=$PWD/$GD/extra timeout ${CAD_TIMEOUT:-240} bash bench/caduceus_speed.sh $G cuda bf16 2>&1 | tee "$OUT/caduceus_speed.log"
