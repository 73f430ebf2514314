#!/usr/bin/env bash
# End to end: workflows/Snakefile with Debian's Snakemake 7.21 on a slice of the yeast data with a small
# untrained model on the CPU,
#   (a) with the local profile, scattered into 3 shards (dnamba --shard i/3),
#   (b) through a real single-node SLURM cluster that this test starts (scripts/slurm-test-cluster.sh:
#       munged + slurmctld + slurmd on this host) and stops, scattered by contig, every job via sbatch.
# In both, the gathered outputs must equal one unsharded dnamba run over the whole input:
#   score.vcf.gz: the same records and INFO (scores included) as `bcftools query` prints them, + .tbi;
#   track.bedgraph.gz: the same lines (and track.bw exists); embed.zarr: the same arrays, exactly.
# Env: DNAMBA, DNAMBA_SOURCE_DIR (set by ctest). Data: testdata/yeast_slice (the first 20 kb of yeast
# I, II, III and 2 kb of Mito from ../shared/data/yeast, with their variants), so the test stands alone. KEEP=1 keeps the work directory.
set -euo pipefail
: "${DNAMBA:?}" "${DNAMBA_SOURCE_DIR:?}"
SRC=$DNAMBA_SOURCE_DIR
YEAST=$DNAMBA_SOURCE_DIR/testdata/yeast_slice
PY=/usr/bin/python3
failures=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { local msg=$1; shift; if "$@"; then ok "$msg"; else fail "$msg"; fi; }

for t in snakemake bcftools samtools bgzip tabix sbatch slurmctld slurmd munged; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || { echo "FAIL: $t is not installed (scripts/install-deps.sh)"; exit 1; }
done
[ -f "$YEAST/yeast_r64_slice.fa.gz" ] || { echo "FAIL: no $YEAST/yeast_r64_slice.fa.gz"; exit 1; }

W=$(mktemp -d /tmp/dnamba_workflow.XXXXXX)
CLUSTER=$W/slurm-cluster
cleanup() {
  bash "$SRC/scripts/slurm-test-cluster.sh" stop "$CLUSTER" || true
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
t0=$(date +%s)
export USER=${USER:-$(id -un)}  # Snakemake's SLURM executor reads $USER (sacct -u)

# ---- inputs: 3 chromosome starts (20 kb each, names and coordinates kept), their variants, a small model
REGS="I:1-20000 II:1-20000 III:1-20000"
samtools faidx "$YEAST/yeast_r64_slice.fa.gz" $REGS | sed 's/^>\([^:]*\):.*/>\1/' | bgzip > "$W/ref.fa.gz"
samtools faidx "$W/ref.fa.gz"
bcftools view -Oz -o "$W/raw.vcf.gz" -r "$(echo $REGS | tr ' ' ,)" "$YEAST/yeast_variants_slice.vcf.gz"
bcftools reheader -f "$W/ref.fa.gz.fai" -o "$W/in.vcf.gz" "$W/raw.vcf.gz"
tabix -p vcf "$W/in.vcf.gz"
n_in=$(bcftools view -H "$W/in.vcf.gz" | wc -l)
$PY "$SRC/scripts/make_untrained_model.py" "$W/model" --d-model 32 --n-layer 2 --d-state 8 --seed 5 >/dev/null
echo "inputs: $n_in variants on I, II, III (20 kb each)"
[ "$n_in" -gt 1000 ] || { echo "FAIL: only $n_in variants in the slice"; exit 1; }

# Options shared by the reference runs and the workflow (same threads: CPU sums are thread-order dependent).
SCORE_EXTRA="--horizon 32 --context 1000 --segment 4000"
COMMON=(--model "$W/model" --device cpu --dtype auto --threads 1)

# ---- the unsharded reference outputs
"$DNAMBA" score --ref "$W/ref.fa.gz" --vcf "$W/in.vcf.gz" -o "$W/want.vcf.gz" -O z "${COMMON[@]}" $SCORE_EXTRA 2> "$W/want.score.log"
"$DNAMBA" track --ref "$W/ref.fa.gz" -o "$W/want.bedgraph.gz" "${COMMON[@]}" --what loglik -q
"$DNAMBA" embed --ref "$W/ref.fa.gz" -o "$W/want.zarr" "${COMMON[@]}" --layer last --pool window:500 -q
Q='%CHROM\t%POS\t%ID\t%REF\t%ALT\t%QUAL\t%FILTER\t%INFO\n'
bcftools query -f "$Q" "$W/want.vcf.gz" > "$W/want.score.txt"
n_scored=$(grep -c 'DNAMBA_LLR=' "$W/want.score.txt" || true)
echo "reference runs done in $(( $(date +%s) - t0 ))s: $n_scored records with DNAMBA_LLR"
[ "$n_scored" -gt 1000 ] || { echo "FAIL: the reference score run scored only $n_scored records"; exit 1; }

write_config() {  # write_config FILE SCATTER
  cat > "$1" <<EOF
dnamba: $DNAMBA
reference: $W/ref.fa.gz
vcf: $W/in.vcf.gz
model: $W/model
outdir: results
outputs: [score, track, embed]
scatter: $2
shards: 3
device: cpu
dtype: auto
score: {extra: "$SCORE_EXTRA"}
track: {what: loglik, bigwig: true, extra: ""}
embed: {layer: last, pool: "window:500", extra: ""}
threads: 1
mem_mb: 1000
runtime: 20
slurm: {account: "", partition: ""}
EOF
}

compare_outputs() {  # compare_outputs LABEL RESULTS_DIR
  local label=$1 r=$2
  check "$label: score.vcf.gz and its .tbi exist" test -s "$r/score.vcf.gz" -a -s "$r/score.vcf.gz.tbi"
  bcftools query -f "$Q" "$r/score.vcf.gz" > "$r/got.score.txt" 2>/dev/null || true
  check "$label: gathered VCF has the records and scores of one dnamba score run ($(wc -l < "$r/got.score.txt") records)" \
    cmp -s "$W/want.score.txt" "$r/got.score.txt"
  check "$label: the .tbi index works (bcftools view -r II)" \
    test "$(bcftools view -H -r II "$r/score.vcf.gz" | wc -l)" = "$(grep -c '^II	' "$W/want.score.txt")"
  check "$label: gathered bedGraph equals one dnamba track run" \
    cmp -s <(zcat "$W/want.bedgraph.gz") <(zcat "$r/track.bedgraph.gz")
  check "$label: track.bw written" test -s "$r/track.bw"
  check "$label: gathered Zarr equals one dnamba embed run" $PY - "$W/want.zarr" "$r/embed.zarr" <<'EOF'
import sys, numpy as np, zarr
a, b = (zarr.open_group(p, mode="r") for p in sys.argv[1:3])
ka, kb = sorted(a.array_keys()), sorted(b.array_keys())
if ka != kb:
    sys.exit(f"arrays {ka} != {kb}")
for k in ka:
    if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype or not np.array_equal(a[k][:], b[k][:]):
        sys.exit(f"array {k} differs: {a[k].shape} vs {b[k].shape}")
if a.attrs.get("contigs") != b.attrs.get("contigs") or a.attrs.get("rows") != b.attrs.get("rows"):
    sys.exit("attributes contigs/rows differ")
EOF
}

# ---- (a) local profile, 3 shards
mkdir -p "$W/local"
write_config "$W/local/config.yaml" shards
t1=$(date +%s)
if snakemake -s "$SRC/workflows/Snakefile" --profile "$SRC/workflows/profiles/local" --directory "$W/local" \
     --configfile "$W/local/config.yaml" --cores 2 > "$W/local/snakemake.log" 2>&1; then
  ok "local profile: snakemake finished ($(( $(date +%s) - t1 ))s)"
else
  fail "local profile: snakemake failed"; tail -n 40 "$W/local/snakemake.log"
fi
check "local profile: 3 score parts made with --shard" \
  test "$(grep -c -- '--shard [123]/3 --vcf' "$W/local/snakemake.log")" = 3
compare_outputs "local profile" "$W/local/results"

# ---- (b) SLURM profile on a single-node cluster started here, scattered by contig
t2=$(date +%s)
eval "$(bash "$SRC/scripts/slurm-test-cluster.sh" start "$CLUSTER")"
ok "SLURM test cluster up in $(( $(date +%s) - t2 ))s ($(sinfo -h -o '%P %D %c CPUs %m MB %T'))"
mkdir -p "$W/slurm"
write_config "$W/slurm/config.yaml" contig
t3=$(date +%s)
if snakemake -s "$SRC/workflows/Snakefile" --profile "$SRC/workflows/profiles/slurm" --directory "$W/slurm" \
     --configfile "$W/slurm/config.yaml" > "$W/slurm/snakemake.log" 2>&1; then
  ok "slurm profile: snakemake finished ($(( $(date +%s) - t3 ))s)"
else
  fail "slurm profile: snakemake failed"; tail -n 60 "$W/slurm/snakemake.log"
  for f in "$W"/slurm/.snakemake/slurm_logs/*/*.log; do [ -f "$f" ] && { echo "== $f"; tail -n 20 "$f"; }; done
  tail -n 20 "$CLUSTER/log/slurmctld.log" "$CLUSTER/log/slurmd.log" || true
fi
compare_outputs "slurm profile" "$W/slurm/results"
# Proof that the jobs went through SLURM: job ids from sbatch, their states from slurmctld, their logs.
submitted=$(grep -c 'has been submitted with SLURM jobid' "$W/slurm/snakemake.log" || true)
scontrol show job -o > "$W/slurm/jobs.txt" 2>/dev/null || true
completed=$(grep -c 'JobState=COMPLETED' "$W/slurm/jobs.txt" || true)
# 3 contigs x (score, track, embed) + 3 gathers + bigWig = 13 jobs (unit BED files are local rules).
check "slurm profile: 13 jobs submitted with sbatch (got $submitted)" test "$submitted" = 13
check "slurm profile: slurmctld reports 13 COMPLETED jobs (got $completed)" test "$completed" = 13
check "slurm profile: a score job ran on node $(hostname -s) under SLURM" \
  grep -q "JobName=snakejob_score_part.*JobState=COMPLETED.*NodeList=$(hostname -s)" "$W/slurm/jobs.txt"
check "slurm profile: per-job SLURM logs written" \
  test "$(find "$W/slurm/.snakemake/slurm_logs" -name '*.log' | wc -l)" = 13
check "slurm profile: score parts read per contig through bcftools view -R" \
  test "$(grep -c 'bcftools view -Ou -R results/parts/part000[123].bed' "$W/slurm/snakemake.log")" = 3
bash "$SRC/scripts/slurm-test-cluster.sh" stop "$CLUSTER"
check "SLURM test cluster stopped" test ! -e "$CLUSTER/slurmctld.pid" -a ! -e "$CLUSTER/slurmd.pid" -a ! -e "$CLUSTER/munge/munged.pid"

# ---- a failing job fails the workflow with no gathered output (exit codes Snakemake acts on)
mkdir -p "$W/bad"
write_config "$W/bad/config.yaml" shards
sed -i 's|^model: .*|model: '"$W"'/no-such-model|; s|^outputs: .*|outputs: [score]|' "$W/bad/config.yaml"
if snakemake -s "$SRC/workflows/Snakefile" --profile "$SRC/workflows/profiles/local" --directory "$W/bad" \
     --configfile "$W/bad/config.yaml" --cores 2 > "$W/bad/snakemake.log" 2>&1; then
  fail "a bad model fails the workflow"
else
  check "a bad model fails the workflow and leaves no score parts or gathered VCF" \
    test -z "$(find "$W/bad/results" -name '*.vcf.gz' 2>/dev/null)"
fi

echo "workflow test: $(( $(date +%s) - t0 ))s"
if [ "$failures" -gt 0 ]; then echo "$failures failed"; exit 1; fi
echo "all passed"
