#!/usr/bin/env bash
# `dnamba score` on real data (issue 4, item 8): every variant of the yeast VCF against the yeast
# genome with a d_model 256 / n_layer 16 causal model (random weights: speed does not depend on
# them), on the GPU in bf16.
#   bench/score_yeast.sh DNAMBA MODEL_DIR
# Makes MODEL_DIR with scripts/make_untrained_model.py when it has no config.json. Times, wall clock,
# whole commands (reading, scoring, writing, indexing):
#   fast:  the full VCF, --method fast (lockstep reference runs + batched alleles);
#   naive: the first NAIVE_N records (default 2000), --method naive (both haplotypes from the segment
#          start), and the fast path on the same records (scores compared);
# and prints variants/s of both and their ratio. Checks that every output has as many records as its
# input. Needs only python3 besides dnamba (no bcftools, no pysam).
# Env: YEAST_DIR (default ../shared/data/yeast beside the repository), NAIVE_N, DEVICE (cuda),
#      DTYPE (bf16), THREADS (8), EXTRA (more score options, e.g. "--ref-batch 128"), WORK (temp dir),
#      TIMEOUT (seconds per dnamba command; 0 = none).
set -euo pipefail
DNAMBA=${1:?usage: bench/score_yeast.sh DNAMBA MODEL_DIR}
MODEL=${2:?usage: bench/score_yeast.sh DNAMBA MODEL_DIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
YEAST_DIR=${YEAST_DIR:-$HERE/../shared/data/yeast}
FA=$YEAST_DIR/yeast_r64.fa.gz
VCF=$YEAST_DIR/yeast_variants.vcf.gz
NAIVE_N=${NAIVE_N:-2000}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bf16}
THREADS=${THREADS:-8}
EXTRA=${EXTRA:-}
WORK=${WORK:-$(mktemp -d /tmp/score_yeast.XXXXXX)}
mkdir -p "$WORK"
PY=python3

if [ ! -f "$MODEL/config.json" ]; then
  $PY "$HERE/scripts/make_untrained_model.py" "$MODEL" --d-model 256 --n-layer 16 --d-state 16 --expand 2 --seed 3 >/dev/null
fi

# Records of a VCF (plain or gzip/bgzip) and the DNAMBA_LLR values of each record.
cat > "$WORK/vcfstat.py" <<'EOF'
import gzip, sys
def records(path):
    op = gzip.open if open(path, "rb").read(2) == b"\x1f\x8b" else open
    with op(path, "rt") as f:
        for line in f:
            if not line.startswith("#"):
                yield line.rstrip("\n").split("\t")
def llr(rec):
    for kv in rec[7].split(";"):
        if kv.startswith("DNAMBA_LLR="):
            return kv[len("DNAMBA_LLR="):].split(",")
    return None
cmd = sys.argv[1]
if cmd == "count":
    print(sum(1 for _ in records(sys.argv[2])))
elif cmd == "head":  # header + first N records, plain VCF
    src, n, dst = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    op = gzip.open if open(src, "rb").read(2) == b"\x1f\x8b" else open
    k = 0
    with op(src, "rt") as f, open(dst, "w") as o:
        for line in f:
            if not line.startswith("#"):
                if k == n:
                    break
                k += 1
            o.write(line)
elif cmd == "compare":  # same records in the same order; |fast - naive| of DNAMBA_LLR
    a, b = list(records(sys.argv[2])), list(records(sys.argv[3]))
    assert len(a) == len(b), (len(a), len(b))
    diffs, n = [], 0
    for x, y in zip(a, b):
        assert x[:5] == y[:5], (x[:5], y[:5])
        lx, ly = llr(x), llr(y)
        if lx is None or ly is None:
            continue
        for u, v in zip(lx, ly):
            if u != "." and v != ".":
                diffs.append(abs(float(u) - float(v)))
                n += 1
    diffs.sort()
    med = diffs[len(diffs) // 2] if diffs else float("nan")
    print(f"{n} alleles compared: max |fast - naive| {max(diffs) if diffs else float('nan'):.4g}, median {med:.3g}")
EOF

now() { date +%s.%N; }
run_timed() {  # label, output, input, options...: prints the wall seconds
  local label=$1 out=$2 in=$3
  shift 3
  local t0 t1
  t0=$(now)
  timeout "${TIMEOUT:-0}" "$DNAMBA" score --ref "$FA" --vcf "$in" -o "$out" --model "$MODEL" --device "$DEVICE" --dtype "$DTYPE" \
    --threads "$THREADS" "$@" $EXTRA 2> "$WORK/$label.err" || { cat "$WORK/$label.err" >&2; return 1; }
  t1=$(now)
  echo "$t0 $t1" | awk '{printf "%.3f", $2 - $1}'
}

n_in=$($PY "$WORK/vcfstat.py" count "$VCF")
$PY "$WORK/vcfstat.py" head "$VCF" "$NAIVE_N" "$WORK/sub.vcf"
n_sub=$($PY "$WORK/vcfstat.py" count "$WORK/sub.vcf")
echo "input: $VCF ($n_in records), subset: first $n_sub records; model $MODEL; $DEVICE $DTYPE"
"$DNAMBA" --version 2>/dev/null | head -1 || true
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name --format=csv,noheader | head -1 || true

t_fast=$(run_timed fast "$WORK/fast.vcf.gz" "$VCF" --method fast)
n_out=$($PY "$WORK/vcfstat.py" count "$WORK/fast.vcf.gz")
t_fsub=$(run_timed fast_sub "$WORK/fast_sub.vcf.gz" "$WORK/sub.vcf" --method fast)
t_naive=$(run_timed naive "$WORK/naive_sub.vcf.gz" "$WORK/sub.vcf" --method naive)
n_nout=$($PY "$WORK/vcfstat.py" count "$WORK/naive_sub.vcf.gz")

ok=1
[ "$n_out" = "$n_in" ] || { echo "FAIL: fast output has $n_out records, input $n_in"; ok=0; }
[ "$n_nout" = "$n_sub" ] || { echo "FAIL: naive output has $n_nout records, input $n_sub"; ok=0; }
[ -f "$WORK/fast.vcf.gz.tbi" ] || { echo "FAIL: no index written"; ok=0; }
awk -v nf="$n_in" -v tf="$t_fast" -v ns="$n_sub" -v ts="$t_fsub" -v tn="$t_naive" 'BEGIN {
  vf = nf / tf; vs = ns / ts; vn = ns / tn;
  printf "fast,  full VCF:        %d variants in %.2f s wall = %.0f variants/s\n", nf, tf, vf;
  printf "fast,  first %d:      %.2f s wall = %.0f variants/s\n", ns, ts, vs;
  printf "naive, first %d:      %.2f s wall = %.1f variants/s\n", ns, tn, vn;
  printf "RATIO fast (full VCF) / naive (subset) variants/s: %.1fx\n", vf / vn }'
echo "fast summary:  $(grep -h 'records' "$WORK/fast.err" | tail -1)"
echo "naive summary: $(grep -h 'records' "$WORK/naive.err" | tail -1)"
echo "scores on the subset, fast vs naive: $($PY "$WORK/vcfstat.py" compare "$WORK/fast_sub.vcf.gz" "$WORK/naive_sub.vcf.gz")"
echo "records: input $n_in, output $n_out ($( [ $ok = 1 ] && echo OK || echo MISMATCH))"
[ $ok = 1 ]
