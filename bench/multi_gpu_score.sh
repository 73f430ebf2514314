#!/usr/bin/env bash
# Issue 8 item 3: `dnamba score` on one GPU and on two GPUs in one process (--device cuda:0,1), the
# whole yeast VCF (263,007 records) against the yeast genome, with a d_model 256 / n_layer 16 causal model
# (random weights: speed does not depend on them), bf16, GPU defaults. Wall clock of whole commands
# (reading, scoring, writing bgzip VCF + .tbi). Prints the speed-up and checks that both outputs hold
# identical VCF text except the two header lines naming the device and the command line.
#
# On the 2-GPU device (nvidia-h200-x2), with a bundle staged here by
#   GPU_DIR=$PWD/build-mgpu-dev YEAST=1 TARGETS="dnamba dnamba_gpu_tests" scripts/build-gpu.sh
# run(kind="nvidia-h200-x2", carry=["build-mgpu-dev"],
#     command="GPU_DIR=build-mgpu-dev bash bench/multi_gpu_score.sh")       (about 2 minutes)
# With the default .gpu bundle (scripts/build-gpu.sh with YEAST=1): carry [".gpu"], no GPU_DIR.
# Elsewhere: DNAMBA=/path/to/dnamba YEAST_DIR=/path/to/yeast bash bench/multi_gpu_score.sh
# Two settings are measured, each on one GPU and on two (same options, so the records must be identical):
#   default          the GPU defaults (--ref-batch 256): yeast has 388 (segment, strand) reference runs,
#                    so one GPU runs 2 lockstep batches of 256 and 132 runs - two GPUs get one each, unequal;
#   --ref-batch 194  two equal batches of 194 (the same number of batches, so one GPU is as fast).
# Env: SETTINGS (';'-separated score options per setting, "default" = none; default "default;--ref-batch 194"),
#      DEVICES (cuda:0,1), ONE (cuda:0), DTYPE (bf16), THREADS (8), EXTRA (options for every run),
#      REPEATS (1: timed runs of each), N (0 = all records; else the first N), WORK (temp dir).
# Needs python3 (model, record comparison); no bcftools, samtools or bc.
set -euo pipefail
cd "$(dirname "$0")/.."
G=${GPU_DIR:-$PWD/.gpu}
if [ -z "${DNAMBA:-}" ] && [ -f "$G/bundle.tar.xz" ]; then
  mkdir -p /tmp/dnamba-mgpu && xz -dc "$G/bundle.tar.xz" | tar -C /tmp/dnamba-mgpu -xf -
  G=/tmp/dnamba-mgpu
fi
DNAMBA=${DNAMBA:-$G/dnamba}
if [ -z "${YEAST_DIR:-}" ]; then
  for d in "$G/data/yeast" "$PWD/../shared/data/yeast"; do
    if [ -f "$d/yeast_variants.vcf.gz" ]; then YEAST_DIR=$d; break; fi
  done
fi
[ -n "${YEAST_DIR:-}" ] || { echo "no yeast data: set YEAST_DIR or stage the bundle with YEAST=1" >&2; exit 2; }
FA=$YEAST_DIR/yeast_r64.fa.gz
VCF=$YEAST_DIR/yeast_variants.vcf.gz
DEVICES=${DEVICES:-cuda:0,1}
ONE=${ONE:-cuda:0}
DTYPE=${DTYPE:-bf16}
THREADS=${THREADS:-8}
EXTRA=${EXTRA:-}
REPEATS=${REPEATS:-1}
SETTINGS=${SETTINGS:-default;--ref-batch 194}
N=${N:-0}
WORK=${WORK:-$(mktemp -d /tmp/mgpu_score.XXXXXX)}
MODEL=${MODEL:-/tmp/m256}
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$WORK"

if [ ! -f "$MODEL/config.json" ]; then
  MK=$G/make_untrained_model.py
  [ -f "$MK" ] || MK=$PWD/scripts/make_untrained_model.py
  python3 "$MK" "$MODEL" --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 >/dev/null
fi

cat > "$WORK/vcftool.py" <<'PY'
import gzip, sys
def lines(path):
    op = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with op(path, "rt") as f:
        for line in f:
            yield line
cmd = sys.argv[1]
if cmd == "head":  # header + first N records, plain VCF
    n, k = int(sys.argv[3]), 0
    with open(sys.argv[4], "w") as o:
        for line in lines(sys.argv[2]):
            if not line.startswith("#"):
                if k == n:
                    break
                k += 1
            o.write(line)
elif cmd == "compare":  # identical text but for the lines naming the device and the command
    skip = ("##dnamba_scoreCommand=", "##dnamba_scoreModel=")
    a = [l for l in lines(sys.argv[2]) if not l.startswith(skip)]
    b = [l for l in lines(sys.argv[3]) if not l.startswith(skip)]
    recs = sum(1 for l in a if not l.startswith("#"))
    if a == b:
        print(f"IDENTICAL: {recs} records, {len(a)} lines")
        sys.exit(0)
    diff = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    print(f"DIFFERENT: {len(a)} vs {len(b)} lines; first difference at line {diff + 1}:")
    print("  one: " + (a[diff].rstrip()[:300] if diff < len(a) else "<end>"))
    print("  two: " + (b[diff].rstrip()[:300] if diff < len(b) else "<end>"))
    sys.exit(1)
PY

IN=$VCF
if [ "$N" != 0 ]; then
  python3 "$WORK/vcftool.py" head "$VCF" "$N" "$WORK/sub.vcf"
  IN=$WORK/sub.vcf
fi

now() { date +%s.%N; }
score() {  # label device input [options]: runs dnamba score, prints the wall seconds
  local label=$1 dev=$2 in=$3 t0 t1
  shift 3
  t0=$(now)
  "$DNAMBA" score --ref "$FA" --vcf "$in" -o "$WORK/$label.vcf.gz" --model "$MODEL" --device "$dev" --dtype "$DTYPE" \
    --threads "$THREADS" $EXTRA "$@" 2> "$WORK/$label.err" || { echo "FAILED: $label ($dev)" >&2; cat "$WORK/$label.err" >&2; return 1; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }'
}
summary() { grep -h 'records' "$WORK/$1.err" | tail -1 | sed 's/^dnamba score: //'; }

echo "dnamba: $DNAMBA; input: $IN; model: $MODEL; $DTYPE; one: $ONE, several: $DEVICES${EXTRA:+; extra: $EXTRA}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,name,memory.used --format=csv,noheader || true

# Warm-up: both GPUs' contexts, the model and the inputs in the page cache (first WARM_N=20000 records).
python3 "$WORK/vcftool.py" head "$VCF" "${WARM_N:-20000}" "$WORK/warm.vcf"
echo "warm-up ($DEVICES, first ${WARM_N:-20000} records): $(score warm "$DEVICES" "$WORK/warm.vcf") s"

ok=1
IFS=';' read -r -a settings <<< "$SETTINGS"
k=0
for setting in "${settings[@]}"; do
  k=$((k + 1))
  opts=()
  [ "$setting" = default ] || read -r -a opts <<< "$setting"
  best1= best2=
  for r in $(seq 1 "$REPEATS"); do
    t1=$(score "one$k" "$ONE" "$IN" "${opts[@]}")
    echo "[$setting] run $r: $ONE:   $t1 s   ($(summary "one$k"))"
    t2=$(score "two$k" "$DEVICES" "$IN" "${opts[@]}")
    echo "[$setting] run $r: $DEVICES: $t2 s   ($(summary "two$k"))"
    best1=$(awk -v a="$t1" -v b="${best1:-1e30}" 'BEGIN { print (a < b ? a : b) }')
    best2=$(awk -v a="$t2" -v b="${best2:-1e30}" 'BEGIN { print (a < b ? a : b) }')
  done
  awk -v a="$best1" -v b="$best2" -v one="$ONE" -v two="$DEVICES" -v s="$setting" \
    'BEGIN { printf "RESULT [%s] wall %s %.2f s, %s %.2f s: speed-up %.2fx\n", s, one, a, two, b, a / b }'
  [ -f "$WORK/two$k.vcf.gz.tbi" ] || { echo "FAIL: no .tbi beside the multi-GPU output"; ok=0; }
  echo -n "[$setting] records, $ONE vs $DEVICES: "
  python3 "$WORK/vcftool.py" compare "$WORK/one$k.vcf.gz" "$WORK/two$k.vcf.gz" || ok=0
done
[ $ok = 1 ]
