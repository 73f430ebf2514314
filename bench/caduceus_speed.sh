#!/bin/bash
# Caduceus speed (issue 7, item 5): random-weight Caduceus PS and Ph models with the released shapes
# (d_model 256, n_layer 16, tied fwd/rev projections) and, on the given device/dtype:
#   - `dnamba track --mask none` over yeast (or a 1.05 Mbp slice of it with QUICK=1): Mbp/s
#   - one 131,072-base window (`--window 131072`, --chunk 131072: batch 1), the reference's unit
#   - `dnamba score` on the first SCORE_N (default 300) records of the yeast VCF: variants/s
# The GPU path runs with bf16 activations (like the causal model); DNAMBA_CUDA_F32_ACTIVATIONS=1 gives
# the fp32-activation data flow for comparison, DNAMBA_CUDA_PROFILE=1 the time per op (stderr).
# Reference (Caduceus PyTorch code, bf16, mamba_ssm scan, one 131,072-base window on the H200):
#   PS 0.69 Mbp/s, Ph 1.47 Mbp/s. Target >= 5x.
# Usage: bench/caduceus_speed.sh [BUILD_DIR] [DEVICE] [DTYPE]     (defaults: build, cuda, bf16)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-$SRC/build}
DEVICE=${2:-cuda}
DTYPE=${3:-bf16}
DNAMBA=$BUILD/dnamba
DATA=${DNAMBA_DATA_DIR:-$SRC/../shared/data}
FA=$DATA/yeast/yeast_r64.fa.gz
VCF=$DATA/yeast/yeast_variants.vcf.gz
TMP=$(mktemp -d /tmp/dnamba_cad_bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

# A Python with numpy (the device's is `python3` on PATH, this build machine's /usr/bin/python3).
if [ -z "${PYTHON:-}" ]; then
  for p in python3 /usr/bin/python3; do "$p" -c 'import numpy' 2>/dev/null && { PYTHON=$p; break; }; done
fi
for v in ps ph; do
  flag=""; [ $v = ph ] && flag="--ph"
  ${PYTHON:-python3} "$SRC/scripts/make_untrained_caduceus.py" "$TMP/$v" $flag --d-model 256 --n-layer 16 \
    --vocab 12 --seq-len 131072 --seed 1 --dtype BF16
done

total_bp=$(awk '{s+=$2} END {print s}' "$FA.fai")
now() { date +%s.%N; }
rate() { awk -v bp="$1" -v t="$2" 'BEGIN { printf "%.3f", bp / t / 1e6 }'; }

echo "device $DEVICE, dtype $DTYPE, yeast $total_bp bp"
for v in ps ph; do
  M="$TMP/$v"
  # warm-up (model load, allocations)
  "$DNAMBA" track -m "$M" --ref "$FA" --region I:1-131072 -o "$TMP/w.bg" --device "$DEVICE" --dtype "$DTYPE" -q
  # one 131,072-base window, batch 1 (the reference's unit of work)
  t0=$(now)
  "$DNAMBA" track -m "$M" --ref "$FA" --region IV:1-131072 -o "$TMP/one.bg" --device "$DEVICE" --dtype "$DTYPE" -q
  t1=$(now)
  echo "$v  one 131072-base window (incl. load + bedGraph):  $(rate 131072 "$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')") Mbp/s"
  # whole genome (or QUICK slice), windows of 131072 overlapping by 32768, batched (--chunk tokens per call)
  region=(); bp=$total_bp
  if [ "${QUICK:-0}" = 1 ]; then region=(--region IV:1-1048576); bp=1048576; fi
  t0=$(now)
  "$DNAMBA" track -m "$M" --ref "$FA" "${region[@]}" -o "$TMP/all.bg.gz" --device "$DEVICE" --dtype "$DTYPE" \
    --chunk $((131072 * 8)) -q --output-threads 4
  t1=$(now)
  echo "$v  track --mask none, $bp bp (windows 131072/overlap 32768, 1.33x work): $(rate "$bp" "$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')") Mbp/s"
  # score: one masked 131,072-base window per variant position (two for Ph: both strands), batched
  # (--chunk tokens per call). The whole yeast VCF is ~263k variants, hours of windows: the first
  # SCORE_N records (default 300) are timed and the rate reported (SCORE_WINDOW overrides --window).
  nvar=${SCORE_N:-300}
  { zcat "$VCF" | grep '^#'; zcat "$VCF" | grep -v '^#' | head -n "$nvar"; } > "$TMP/sub.vcf" || true
  nvar=$(grep -vc '^#' "$TMP/sub.vcf" || true)
  win=(); [ -n "${SCORE_WINDOW:-}" ] && win=(--window "$SCORE_WINDOW")
  t0=$(now)
  if "$DNAMBA" score -m "$M" --ref "$FA" --vcf "$TMP/sub.vcf" -o "$TMP/s.vcf.gz" --device "$DEVICE" --dtype "$DTYPE" \
      "${win[@]}" --chunk $((131072 * 8)) 2> "$TMP/score.err"; then
    t1=$(now)
    echo "$v  score: first $nvar yeast variants, window ${SCORE_WINDOW:-131072}: $(awk -v n="$nvar" -v t="$(awk -v a="$t1" -v b="$t0" 'BEGIN { print a - b }')" 'BEGIN { printf "%.1f", n / t }') variants/s (incl. load)"
    grep '^dnamba score:' "$TMP/score.err" | sed "s/^/$v    /"
  else
    echo "$v  score: failed: $(head -c 300 "$TMP/score.err")"
  fi
done
