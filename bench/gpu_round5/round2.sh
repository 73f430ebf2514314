#!/usr/bin/env bash
set -u
R=$PWD; P=$R/build-prof
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
timeout 200 $G/dnamba_gpu_tests --gtest_filter='CudaOps.SelectiveScan*:CudaScanKernel.*:CudaScanHuge.*:*GpuGolden*:*GpuTrack*' > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E '^\[  (PASSED|FAILED) |FAILED  \]|Failure' $OUT/tests.log | head -20
timeout 120 $G/dnamba_bench_scan --repeats 20 > $OUT/scan.log 2>&1; grep -E '^scan' $OUT/scan.log
for m in 4 6; do timeout 60 $P/bench_scan_m$m --repeats 20 --first > $OUT/scan_m$m.log 2>&1; echo "m$m rc=$?"; grep -E '^scan|rror' $OUT/scan_m$m.log; done
M=/tmp/m256
python3 $G/make_untrained_model.py $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
for ch in 1048576 2097152 4194304; do timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk $ch --dtype bf16 --repeats 3 > $OUT/model_$ch.log 2>&1; echo "chunk $ch $(grep RESULT $OUT/model_$ch.log)"; done
DNAMBA_SCAN_GENERAL=1 timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk 1048576 --dtype bf16 --repeats 3 > $OUT/model_gen.log 2>&1; echo "general chunk 2^20 $(grep RESULT $OUT/model_gen.log)"
python3 - <<'PY'
import numpy as np
for n, name in ((10_000_000, "/tmp/r10m.fa"), (100_000_000, "/tmp/r100m.fa")):
    rng = np.random.default_rng(n)
    s = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, n)]
    w = 80
    body = np.concatenate([s[: n // w * w].reshape(-1, w), np.full((n // w, 1), 10, np.uint8)], axis=1).tobytes()
    with open(name, "wb") as f:
        f.write(b">chrR\n"); f.write(body)
PY
track() {  # label, extra args
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt 2>/dev/null &
  local mp=$!; local t0=$(date +%s%N)
  timeout 200 $G/dnamba track -q --what loglik --ref $2 --model $M -o /tmp/t.bedgraph ${3:-} > $OUT/track.log 2>&1
  local rc=$? t1=$(date +%s%N); kill $mp; wait $mp 2>/dev/null
  local n=$(wc -l < /tmp/t.bedgraph); local ms=$(( (t1 - t0) / 1000000 ))
  echo "$1 rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}') peak $(sort -n /tmp/mem.txt | tail -1) MiB"
}
track "track 10 Mbp" /tmp/r10m.fa
track "track 100 Mbp" /tmp/r100m.fa
track "track 100 Mbp --chunk 2^21" /tmp/r100m.fa "--chunk 2097152"
t0=$(date +%s%N); $G/dnamba track -q --what loglik --ref /tmp/r10m.fa --model $M -o /tmp/t1.bedgraph --region chrR:1-1000 > /dev/null 2>&1; echo "startup (1 kb) $(( ($(date +%s%N) - t0) / 1000000 )) ms"
