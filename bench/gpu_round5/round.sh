#!/usr/bin/env bash
# iteration run: scan tests, scan bench (fast vs general), model bench, ncu of the fast kernels
set -u
R=$PWD; P=$R/build-prof
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
cp $G/lib/* $P/lib/ 2>/dev/null
timeout 200 $G/dnamba_gpu_tests --gtest_filter='CudaOps.SelectiveScan*:CudaScanKernel.*:CudaScanHuge.*:*GpuGolden*:*GpuTrack*' > $OUT/tests.log 2>&1; echo "tests rc=$?"
grep -E '^\[  (PASSED|FAILED) |FAILED  \]|Failure' $OUT/tests.log | head -20
timeout 120 $G/dnamba_bench_scan --repeats 20 > $OUT/scan.log 2>&1; grep -E '^scan|^bench' $OUT/scan.log
timeout 60 $P/bench_scan_m6 --repeats 20 --first 2>&1 | grep -E '^scan'
M=/tmp/m256
python3 $G/make_untrained_model.py $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
for v in 0 1; do DNAMBA_SCAN_GENERAL=$v timeout 120 $G/dnamba_bench_model $M --len 4194304 --chunk 1048576 --dtype bf16 --repeats 5 > $OUT/model$v.log 2>&1; echo "general=$v $(grep RESULT $OUT/model$v.log)"; done
DNAMBA_CUDA_PROFILE=1 timeout 120 $G/dnamba_bench_model $M --len 2097152 --chunk 1048576 --dtype bf16 --repeats 1 > $OUT/profile.log 2>&1
grep -E '^  [a-z_]+ ' $OUT/profile.log | head -20
cd $P && timeout 150 ncu --clock-control none -k regex:scan --launch-count 3 --set full -o $OUT/fast $G/dnamba_bench_scan --repeats 1 --first > $OUT/ncu_run.log 2>&1; echo "ncu rc=$?"
ncu --import $OUT/fast.ncu-rep --page details > $OUT/details.txt 2>&1
ncu --import $OUT/fast.ncu-rep --page source --print-source sass --csv > $OUT/source.csv 2>&1
cuobjdump -sass $G/dnamba_bench_scan | awk '/Function : .*scan_fast_kernel/{p=1} /Function : /&&!/scan_fast_kernel/{p=0} p' > $OUT/fast.sass
cd $OUT && tar czf prof.tgz details.txt source.csv fast.sass tests.log scan.log profile.log model0.log model1.log ncu_run.log && rm -f source.csv fast.sass details.txt fast.ncu-rep
