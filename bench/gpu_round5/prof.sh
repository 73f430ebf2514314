#!/usr/bin/env bash
# ncu on the scan kernels of the reference shape + SASS of the scan kernels
set -u
B=$(cd "$(dirname "$0")" && pwd)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64
cd $B
nvidia-smi --query-gpu=name,clocks.sm --format=csv,noheader
./dnamba_bench_scan --repeats 10 --first 2>&1 | tail -4
which ncu cuobjdump
timeout 240 ncu --clock-control none -k regex:scan --launch-count 3 --set full -o $OUT/scan ./dnamba_bench_scan --repeats 1 --first > $OUT/ncu_run.log 2>&1; echo "ncu rc=$?"; tail -5 $OUT/ncu_run.log
ncu --import $OUT/scan.ncu-rep --page details > $OUT/details.txt 2>&1; echo "details rc=$?"
ncu --import $OUT/scan.ncu-rep --page source --print-source sass --csv > $OUT/source.csv 2>&1; echo "source rc=$? $(wc -c < $OUT/source.csv)"
cuobjdump -sass ./dnamba_bench_scan | awk '/Function : .*scan_chunk_kernel/{p=1} /Function : /&&!/scan_chunk_kernel/{p=0} p' > $OUT/scan.sass 2>&1; echo "sass $(wc -l < $OUT/scan.sass)"
cd $OUT && tar czf prof.tgz details.txt source.csv scan.sass ncu_run.log && rm -f source.csv scan.sass
ls -la $OUT
