#!/usr/bin/env bash
# On the GPU machine, from the repository root, with .gpu/ staged by scripts/build-gpu.sh:
# GPU tests, compute-sanitizer (memcheck, racecheck) on the kernel tests, the scan and model
# benchmarks, and `dnamba track` end to end; a short table last. Logs go to $OUT (or ./gpu-out).
#   device run: carry [".gpu"], command "bash scripts/gpu-test.sh"   (QUICK=1: tests only)
set -uo pipefail
cd "$(dirname "$0")/.."
G=$PWD/.gpu
if [ -f "$G/bundle.tar.xz" ]; then  # staged by scripts/build-gpu.sh
  mkdir -p /tmp/dnamba-gpu && xz -dc "$G/bundle.tar.xz" | tar -C /tmp/dnamba-gpu -xf - && G=/tmp/dnamba-gpu
fi
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
S=$OUT/summary.txt
: > "$S"
row() { printf '%-44s %s\n' "$1" "$2" | tee -a "$S"; }
T0=$(date +%s)
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.used --format=csv,noheader > "$OUT/bench.log" 2>&1
cat "$OUT/bench.log"

# 1. GPU tests (all of them).
timeout 420 "$G/dnamba_gpu_tests" > "$OUT/gpu_tests.log" 2>&1
rc=$?
grep -E '^\[  (PASSED|FAILED|  OK) |^\[  SKIPPED|FAILED  \]|Failure|error' "$OUT/gpu_tests.log" | head -60
row "gpu tests (dnamba_gpu_tests)" "rc=$rc $(grep -E '^\[  PASSED' "$OUT/gpu_tests.log" | head -1) $(grep -E '^\[  FAILED  \] [0-9]+ test' "$OUT/gpu_tests.log" | head -1)"

# compute-sanitizer on the scan tests (the 4M-token test is too long under the tools): QUICK=1 here, else last.
F=${SANITIZE_FILTER:-'CudaOps.SelectiveScan*:CudaScanKernel.*'}  # the scan tests (AllocFailureIsAClearError fails cudaMalloc on purpose)
if [ "${QUICK:-0}" = 1 ]; then
if { [ "${QUICK:-0}" = 0 ] && [ "${SANITIZE:-1}" = 1 ]; } || [ "${SANITIZE:-0}" = 1 ]; then  # SANITIZE=0 skips
  for tool in memcheck racecheck; do
    timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool $tool --error-exitcode 99 "$G/dnamba_gpu_tests" --gtest_filter="$F" \
      > "$OUT/sanitizer_$tool.log" 2>&1
    src=$?
    row "compute-sanitizer $tool ($F)" "rc=$src $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
  done
fi
  echo; cat "$S"; exit 0
fi

# 3. Scan benchmark.
[ "${BENCH:-1}" = 1 ] && timeout 180 "$G/dnamba_bench_scan" --repeats 20 >> "$OUT/bench.log" 2>&1
grep -E '^scan ' "$OUT/bench.log" | while read -r l; do row "$(echo "$l" | cut -c1-52)" "$(echo "$l" | cut -c53-)"; done

# 4. Model forward (d_model 256, 16 layers, d_state 16, expand 2, random weights), no I/O.
M=/tmp/m256
python3 "$G/make_untrained_model.py" $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
for dt in ${MODEL_DTYPES:-bf16 fp32}; do
  [ "${BENCH:-1}" = 1 ] || break
  timeout 120 "$G/dnamba_bench_model" $M --len 4194304 --chunk 1048576 --dtype $dt --repeats 5 >> "$OUT/bench.log" 2>&1
  row "model forward+logprobs $dt, 4 Mbp (Mbp/s)" "$(grep 'RESULT model_mbps' "$OUT/bench.log" | tail -1 | awk '{print $3}')"
done
# The same with the general scan kernel (DNAMBA_SCAN_GENERAL=1: the baseline before scan_fast_kernel).
if [ "${BENCH:-1}" = 1 ]; then
  DNAMBA_SCAN_GENERAL=1 timeout 120 "$G/dnamba_bench_model" $M --len 4194304 --chunk 1048576 --dtype bf16 --repeats 5 >> "$OUT/bench.log" 2>&1
  row "model forward+logprobs bf16, general scan kernel" "$(grep 'RESULT model_mbps' "$OUT/bench.log" | tail -1 | awk '{print $3}')"
fi

# Where the model's GPU time goes: events around every op (one run of 2 Mbp, 1 Mbp chunks).
DNAMBA_CUDA_PROFILE=1 timeout 120 "$G/dnamba_bench_model" $M --len 2097152 --chunk 1048576 --dtype bf16 --repeats 1 \
  > "$OUT/profile.log" 2>&1
grep -E '^  [a-z_]+ ' "$OUT/profile.log" | while read -r op ms unit pct rest; do row "  bf16 model op time: $op" "$ms ms $pct"; done

# Instruction mix of the scan's inner loops (MUFU = special-function unit: the exps).
CUOBJ=$(command -v cuobjdump || echo /usr/local/cuda/bin/cuobjdump)
"$CUOBJ" -sass "$G/dnamba_bench_scan" 2>/dev/null | awk '/Function :/ {f=$3} f ~ /scan_(chunk|fast)_kernel/ && /MUFU|FFMA|FMUL|LDS|LDG|SHFL|F2F|PRMT|IMAD/ {split($2,a,"."); n[f" "a[1]]++} END {for (k in n) print k, n[k]}' \
  | sort >> "$OUT/profile.log"

# 5. dnamba track end to end (FASTA read, model, bedGraph written), bf16, peak GPU memory sampled.
python3 - <<'PY'
import numpy as np
for n, name in ((10_000_000, "/tmp/r10m.fa"), (100_000_000, "/tmp/r100m.fa")):
    rng = np.random.default_rng(n)
    s = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)]
    with open(name, "wb") as f:
        f.write(b">chrR\n")
        w = 80
        lines = s[: n // w * w].reshape(-1, w)
        f.write(b"\n".join(bytes(l) for l in lines) + b"\n")
PY
track() {  # label, ref, model, out
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt 2>/dev/null &
  local mp=$!
  local t0=$(date +%s%N)
  timeout 240 "$G/dnamba" track -q --what loglik --ref "$2" --model "$3" -o "$4" >> "$OUT/bench.log" 2>&1
  local rc=$? t1=$(date +%s%N)
  kill $mp 2>/dev/null; wait $mp 2>/dev/null
  local n=$(wc -l < "$4" 2>/dev/null || echo 0)
  local peak=$(sort -n /tmp/mem.txt | tail -1)
  local ms=$(( (t1 - t0) / 1000000 ))
  row "$1" "rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}'), peak GPU mem ${peak} MiB"
}
track "track loglik 10 Mbp bf16 (d256 x16)" /tmp/r10m.fa $M /tmp/t10.bedgraph
track "track loglik 10 Mbp bf16 (d256 x16) again" /tmp/r10m.fa $M /tmp/t10.bedgraph
if [ $(( $(date +%s) - T0 )) -lt ${T100_BEFORE:-330} ]; then  # only when the run has time left
  track "track loglik 100 Mbp bf16 (d256 x16)" /tmp/r100m.fa $M /tmp/t100.bedgraph
fi
E=$(ls "$G"/data/*.fa.gz 2>/dev/null | head -1)
[ "${ECOLI:-1}" = 1 ] || E=
[ -n "$E" ] && track "track loglik E. coli bf16 (d256 x16)" "$E" $M /tmp/ecoli.bedgraph
[ -n "$E" ] && track "track loglik E. coli bf16 (default model)" "$E" "$G/models/default" /tmp/ecoli_def.bedgraph
head -3 /tmp/ecoli.bedgraph >> "$OUT/bench.log" 2>/dev/null
if { [ "${QUICK:-0}" = 0 ] && [ "${SANITIZE:-1}" = 1 ]; } || [ "${SANITIZE:-0}" = 1 ]; then  # SANITIZE=0 skips
  for tool in memcheck racecheck; do
    timeout ${SANITIZE_TIMEOUT:-240} compute-sanitizer --tool $tool --error-exitcode 99 "$G/dnamba_gpu_tests" --gtest_filter="$F" \
      > "$OUT/sanitizer_$tool.log" 2>&1
    src=$?
    row "compute-sanitizer $tool ($F)" "rc=$src $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
  done
fi
row "wall time of this script" "$(( $(date +%s) - T0 )) s"
echo
echo "==== summary"
cat "$S"
