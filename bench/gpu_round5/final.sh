#!/usr/bin/env bash
set -u
R=$PWD
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
M=/tmp/m256
python3 $G/make_untrained_model.py $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
python3 - <<'PY' &
import numpy as np
for n, name in ((10_000_000, "/tmp/r10m.fa"), (100_000_000, "/tmp/r100m.fa")):
    rng = np.random.default_rng(n)
    s = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)]
    w = 80
    body = np.concatenate([s[: n // w * w].reshape(-1, w), np.full((n // w, 1), 10, np.uint8)], axis=1).tobytes()
    with open(name, "wb") as f:
        f.write(b">chrR\n"); f.write(body)
PY
timeout 300 $G/dnamba_gpu_tests > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc=$?"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure' $OUT/gpu_tests.log | head -20
timeout 150 compute-sanitizer --tool racecheck --error-exitcode 99 $G/dnamba_gpu_tests --gtest_filter='CudaScanKernel.*:CudaOps.SelectiveScanOtherStateSizes' > $OUT/san_racecheck.log 2>&1
echo "racecheck rc=$? $(grep -E 'RACECHECK SUMMARY' $OUT/san_racecheck.log | tail -1) $(grep -E '^\[  PASSED' $OUT/san_racecheck.log)"
timeout 120 $G/dnamba_bench_scan --repeats 20 > $OUT/scan.log 2>&1; grep -E '^scan' $OUT/scan.log
wait
for v in "" "DNAMBA_SCAN_GENERAL=1"; do
  env $v timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk 1048576 --dtype bf16 --repeats 5 > $OUT/model.log 2>&1; echo "model [$v] $(grep RESULT $OUT/model.log)"
done
track() {  # label, fasta, out
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt 2>/dev/null &
  local mp=$!; local t0=$(date +%s%N)
  timeout 200 $G/dnamba track -q --what loglik --ref $2 --model $M -o $3 2> $OUT/track.err
  local rc=$? t1=$(date +%s%N); kill $mp; wait $mp 2>/dev/null
  local ms=$(( (t1 - t0) / 1000000 )); local n=$(wc -l < $3)
  echo "$1 rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}') peak $(sort -n /tmp/mem.txt | tail -1) MiB"
  rm -f $3
}
track "track 10 Mbp" /tmp/r10m.fa /tmp/t.bedgraph
for i in 1 2 3; do track "track 100 Mbp run $i" /tmp/r100m.fa /tmp/t.bedgraph; done
