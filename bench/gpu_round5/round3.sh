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
grep -E '^\[  (PASSED|FAILED) |FAILED  \]|Failure|tests ran' $OUT/gpu_tests.log | head -20
wait
timeout 120 $G/dnamba_bench_model $M --len 8388608 --chunk 1048576 --dtype bf16 --repeats 3 > $OUT/model.log 2>&1; echo "model $(grep RESULT $OUT/model.log)"
track() {  # label, fasta, out
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > /tmp/mem.txt 2>/dev/null &
  local mp=$!; local t0=$(date +%s%N)
  if [ "$3" = - ]; then timeout 200 $G/dnamba track -q --what loglik --ref $2 --model $M -o - > /dev/null 2> $OUT/track.err; n=$(grep -c . /dev/null)
  else timeout 200 $G/dnamba track -q --what loglik --ref $2 --model $M -o $3 2> $OUT/track.err; fi
  local rc=$? t1=$(date +%s%N); kill $mp; wait $mp 2>/dev/null
  local ms=$(( (t1 - t0) / 1000000 ))
  local n=$( [ "$3" = - ] && echo 0 || wc -l < $3 )
  echo "$1 rc=$rc $(awk -v n=$n -v ms=$ms 'BEGIN{printf "%.2f s, %d lines, %.2f Mbp/s", ms/1000, n, n/ms/1000}') peak $(sort -n /tmp/mem.txt | tail -1) MiB"
}
track "track 10 Mbp" /tmp/r10m.fa /tmp/t.bedgraph
track "track 100 Mbp" /tmp/r100m.fa /tmp/t.bedgraph
md5sum /tmp/t.bedgraph | cut -c1-12
track "track 100 Mbp, -o - > /dev/null" /tmp/r100m.fa -
t0=$(date +%s%N); $G/dnamba track -q --what loglik --ref /tmp/r10m.fa --model $M -o /tmp/t1.bedgraph --region chrR:1-1000 > /dev/null 2>&1; echo "startup (1 kb) $(( ($(date +%s%N) - t0) / 1000000 )) ms"
cd $R && DNAMBA_DATA_DIR=$G/data timeout 240 bash bench/caduceus_speed.sh $G cuda bf16 > $OUT/cad.log 2>&1; echo "caduceus rc=$?"; tail -12 $OUT/cad.log
