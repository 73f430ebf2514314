#!/usr/bin/env bash
# Real-data runs of issue 5, item 4: embed all 84 E. coli ONT reads, embed the whole E. coli genome in
# 1-kb windows, and write the whole-genome loglik track as bigWig. Prints wall time, Mbp/s and output
# sizes for each run, as lines to paste into bench/RESULTS.md.
#
# Usage: bench/embed_real_data.sh [DNAMBA_BINARY]   (default: build/dnamba)
# Environment:
#   DEVICE   cpu | cuda | cuda:N (default: cuda)      MODEL   model directory (default: the embedded model)
#   OUT      output directory (default: a new temporary directory, removed at the end unless KEEP=1)
#   DATA     folder with ecoli_ont_reads.bam and ecoli_k12_mg1655.fa.gz (default: ../shared/data/ecoli)
#   REGION   restrict the genome runs to a region (e.g. NC_000913.3:1-100000) for a quick CPU check
#   READS    another BAM/CRAM to embed instead of ecoli_ont_reads.bam (e.g. a subset)
#   EXTRA    extra options for every dnamba command (e.g. "--chunk 262144 --batch 16")
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
DNAMBA="${1:-$here/build/dnamba}"
DEVICE="${DEVICE:-cuda}"
DATA="${DATA:-$here/../shared/data/ecoli}"
READS="${READS:-$DATA/ecoli_ont_reads.bam}"
FASTA="$DATA/ecoli_k12_mg1655.fa.gz"
OUT="${OUT:-$(mktemp -d /tmp/dnamba_embed_bench.XXXXXX)}"
mkdir -p "$OUT"
common=(--device "$DEVICE" -q ${MODEL:+--model "$MODEL"} ${EXTRA:-})
region=(${REGION:+--region "$REGION"})

if [ -n "${REGION:-}" ]; then
  genome_bp=$(( $(echo "$REGION" | sed 's/.*://; s/,//g' | awk -F- '{print $2 - $1 + 1}') ))
else
  genome_bp=$(awk '{s += $2} END {print s}' "$FASTA.fai")
fi
# Bases of the reads that each selection embeds (the read lengths as stored: SEQ).
read_bp() { samtools view "$@" "$READS" | awk '{ s += length($10) } END { print s + 0 }'; }
# Machines without samtools (the GPU machine) pass the counts in: ALL_READS ALL_BP PRIM_READS PRIM_BP.
all_reads=${ALL_READS:-$(samtools view -c "$READS")}
all_bp=${ALL_BP:-$(read_bp)}
prim_reads=${PRIM_READS:-$(samtools view -c -F 0x900 "$READS")}
prim_bp=${PRIM_BP:-$(read_bp -F 0x900)}

echo "dnamba embed/track real-data benchmark: $("$DNAMBA" --version), device $DEVICE, $(nproc) CPU cores"
[ "$DEVICE" != cpu ] && command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1
echo "| run | input | wall s | Mbp/s | output | size |"
echo "|---|---|---|---|---|---|"
bench() {  # name, bases, output, command...
  local name=$1 bp=$2 out=$3
  shift 3
  local t0 t1
  t0=$(date +%s.%N)
  "$@"
  t1=$(date +%s.%N)
  local secs size
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
  size=$(du -sh "$out" | cut -f1)
  echo "| $name | $(awk -v n="$bp" 'BEGIN { printf "%.3f Mbp", n / 1e6 }') | $secs | $(awk -v n="$bp" -v s="$secs" 'BEGIN { printf "%.3f", n / 1e6 / s }') | $(basename "$out") | $size |"
}

bench "embed all $all_reads reads, per base, float16 (-F 0: incl. supplementary)" "$all_bp" "$OUT/reads_all.zarr" \
  "$DNAMBA" embed --reads "$READS" --exclude-flags 0 --pool none --out-dtype float16 -o "$OUT/reads_all.zarr" "${common[@]}"
bench "embed $prim_reads primary reads, mean per read" "$prim_bp" "$OUT/reads_mean.zarr" \
  "$DNAMBA" embed --reads "$READS" --pool mean -o "$OUT/reads_mean.zarr" "${common[@]}"
bench "embed genome, 1-kb windows (window:1000)" "$genome_bp" "$OUT/genome_1kb.zarr" \
  "$DNAMBA" embed --ref "$FASTA" "${region[@]}" --pool window:1000 -o "$OUT/genome_1kb.zarr" "${common[@]}"
bench "track loglik, bigWig" "$genome_bp" "$OUT/ecoli_loglik.bw" \
  "$DNAMBA" track --ref "$FASTA" "${region[@]}" -o "$OUT/ecoli_loglik.bw" "${common[@]}"

if [ "${KEEP:-0}" = 1 ]; then echo "outputs kept in $OUT"; else rm -rf "$OUT"; fi
