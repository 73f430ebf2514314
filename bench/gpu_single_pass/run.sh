#!/usr/bin/env bash
# Single-pass scan round (issue 17) on the GPU machine, one call: the anchor (mamba_ssm) built in the
# background, GPU tests, compute-sanitizer on the new kernel's tests, the scan benchmark (chunked and
# single pass side by side), score on the whole yeast VCF with both designs, Caduceus PS/Ph track,
# and mamba_ssm's scan at the same shapes. Logs under $OUT.
#   device run: carry [".gpu", ".anchor"], command "bash bench/gpu_single_pass/run.sh"
set -u
R=$PWD
G=/tmp/dnamba-gpu; mkdir -p $G && xz -dc $R/.gpu/bundle.tar.xz | tar -C $G -xf -
export LD_LIBRARY_PATH=/usr/local/cuda/lib64 DNAMBA_GOLDEN_DIR=$G/golden DNAMBA_BIN=$G/dnamba
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
nvidia-smi --query-gpu=name,driver_version,clocks.sm --format=csv,noheader
T0=$(date +%s)
if [ -d $R/.anchor ] && [ "${ANCHOR:-1}" = 1 ]; then
  (cd $R/.anchor && MAX_JOBS=12 nice python3 build_ext.py > $OUT/anchor_build.log 2>&1; echo "anchor build rc=$?" >> $OUT/anchor_build.log) &
  AP=$!
fi
M=/tmp/m256
python3 $G/make_untrained_model.py $M --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 > /dev/null
timeout ${TEST_TIMEOUT:-300} $G/dnamba_gpu_tests ${GTEST_FILTER:+--gtest_filter=$GTEST_FILTER} > $OUT/gpu_tests.log 2>&1; echo "gpu tests rc=$? ($(( $(date +%s) - T0 )) s)"
grep -E '^\[  (PASSED|FAILED|SKIPPED) |FAILED  \]|Failure|Expected|Which is|error' $OUT/gpu_tests.log | head -30
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --error-exitcode 99 $G/dnamba_gpu_tests --gtest_filter='CudaScanSingle.Bf16*' > $OUT/san_$tool.log 2>&1
  echo "$tool rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san_$tool.log | tail -1) $(grep -E '^\[  PASSED' $OUT/san_$tool.log)"
done
timeout 150 $G/dnamba_bench_scan --repeats 20 --first > $OUT/scan.log 2>&1; echo "bench_scan rc=$?"; grep -E '^scan' $OUT/scan.log
if [ -d $G/data/yeast ] && [ "${SCORE:-1}" = 1 ]; then
  for mode in chunked auto; do
    T1=$(date +%s%N)
    DNAMBA_SCAN=$mode timeout 120 $G/dnamba score -q --ref $G/data/yeast/yeast_r64.fa.gz --vcf $G/data/yeast/yeast_variants.vcf.gz \
      --model $M --threads 8 -o /tmp/score_$mode.vcf.gz 2> $OUT/score_$mode.err
    echo "score yeast VCF d256x16 DNAMBA_SCAN=$mode rc=$? $(( ($(date +%s%N) - T1) / 1000000 )) ms"
  done
  python3 - <<'PY'
import gzip, re
def vals(p):
    out = []
    for l in gzip.open(p, "rt"):
        if l[0] == "#": continue
        m = re.search(r"DNAMBA_LLR=([^;\t]+)", l)
        out.append(m.group(1) if m else None)
    return out
a, b = vals("/tmp/score_chunked.vcf.gz"), vals("/tmp/score_auto.vcf.gz")
d = [abs(float(x) - float(y)) for x, y in zip(a, b) if x and y and x != "." and y != "."]
print(f"score chunked vs auto: {len(a)} / {len(b)} records, max |dLLR| {max(d):.3g}, mean {sum(d)/len(d):.3g}")
PY
fi
if [ "${ANCHOR:-1}" = 1 ] && [ -n "${AP:-}" ]; then
  wait $AP; tail -2 $OUT/anchor_build.log
  (cd $R/.anchor && timeout 120 python3 bench_anchor.py scan > $OUT/anchor_scan.log 2>&1; echo "anchor scan rc=$?"; tail -12 $OUT/anchor_scan.log)
fi
echo "wall $(( $(date +%s) - T0 )) s"
