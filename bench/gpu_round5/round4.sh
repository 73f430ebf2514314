#!/usr/bin/env bash
set -u
R=$PWD
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
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
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --error-exitcode 99 $G/dnamba_gpu_tests --gtest_filter='CudaScanKernel.*:GpuTrack.*' > $OUT/san_$tool.log 2>&1
  echo "sanitizer $tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san_$tool.log | tail -1) $(grep -E '^\[  PASSED' $OUT/san_$tool.log)"
done
timeout 120 $G/dnamba_bench_scan --repeats 20 > $OUT/scan.log 2>&1; grep -E '^scan' $OUT/scan.log
wait
for v in "" "DNAMBA_SCAN_SOFTPLUS_FMA=1" "DNAMBA_SCAN_GENERAL=1"; do
  env $v timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk 1048576 --dtype bf16 --repeats 3 > $OUT/model.log 2>&1; echo "model [$v] $(grep RESULT $OUT/model.log)"
done
track() {  # label, fasta, out, env
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt 2>/dev/null &
  local mp=$!; local t0=$(date +%s%N)
  env $4 timeout 200 $G/dnamba track -q --what loglik --ref $2 --model $M -o $3 2> $OUT/track.err
  local rc=$? t1=$(date +%s%N); kill $mp; wait $mp 2>/dev/null
  local ms=$(( (t1 - t0) / 1000000 )); local n=$(wc -l < $3)
  echo "$1 rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}') peak $(sort -n /tmp/mem.txt | tail -1) MiB"
  rm -f $3
}
track "track 10 Mbp, /tmp" /tmp/r10m.fa /tmp/t.bedgraph ""
track "track 100 Mbp, /tmp" /tmp/r100m.fa /tmp/t.bedgraph ""
track "track 100 Mbp, /dev/shm" /tmp/r100m.fa /dev/shm/t.bedgraph ""
track "track 100 Mbp, /tmp, sp-fma" /tmp/r100m.fa /tmp/t.bedgraph "DNAMBA_SCAN_SOFTPLUS_FMA=1"
df -h /tmp /dev/shm | tail -2; mount | grep -E ' / | /tmp ' | head -3
dd if=/dev/zero of=/tmp/ddtest bs=26M count=100 2>&1 | tail -1; rm -f /tmp/ddtest
t0=$(date +%s%N); $G/dnamba track -q --what loglik --ref /tmp/r10m.fa --model $M -o /tmp/t1.bedgraph --region chrR:1-1000 > /dev/null 2>&1; echo "startup (1 kb) $(( ($(date +%s%N) - t0) / 1000000 )) ms"
cd $R && DNAMBA_DATA_DIR=$G/data timeout 200 bash bench/caduceus_speed.sh $G cuda bf16 > $OUT/cad.log 2>&1; echo "caduceus rc=$?"; grep -E "Mbp/s|variants/s" $OUT/cad.log
