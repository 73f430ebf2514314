#!/usr/bin/env bash
set -u
R=$PWD
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
M=/tmp/m256
python3 $G/make_untrained_model.py $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
python3 - <<'PY' &
import numpy as np
n, name = 100_000_000, "/tmp/r100m.fa"
rng = np.random.default_rng(n)
s = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)]
w = 80
body = np.concatenate([s[: n // w * w].reshape(-1, w), np.full((n // w, 1), 10, np.uint8)], axis=1).tobytes()
with open(name, "wb") as f:
    f.write(b">chrR\n"); f.write(body)
PY
timeout 150 $G/dnamba_gpu_tests --gtest_filter='CudaConvKernel.*:CudaOps.Conv1d*:*GpuGolden*:GpuTrack.*:*GpuCaduceus*' > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure' $OUT/tests.log | head -12
timeout 60 compute-sanitizer --tool memcheck --error-exitcode 99 $G/dnamba_gpu_tests --gtest_filter='CudaConvKernel.*' > $OUT/san.log 2>&1; echo "memcheck rc=$? $(grep 'ERROR SUMMARY' $OUT/san.log | tail -1)"
timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk 1048576 --dtype bf16 --repeats 5 > $OUT/model.log 2>&1; echo "model $(grep RESULT $OUT/model.log)"
DNAMBA_CUDA_PROFILE=1 timeout 120 $G/dnamba_bench_model $M --len 2097152 --chunk 1048576 --dtype bf16 --repeats 1 > $OUT/profile.log 2>&1; grep -E '^  [a-z_0-9]+ ' $OUT/profile.log
wait
for i in 1 2; do
  t0=$(date +%s%N); timeout 200 $G/dnamba track -q --what loglik --ref /tmp/r100m.fa --model $M -o /tmp/t.bedgraph 2> $OUT/track.err; rc=$?; t1=$(date +%s%N)
  ms=$(( (t1 - t0) / 1000000 )); n=$(wc -l < /tmp/t.bedgraph); rm -f /tmp/t.bedgraph
  echo "track 100 Mbp run $i rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}')"
done
