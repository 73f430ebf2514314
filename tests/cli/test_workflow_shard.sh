#!/usr/bin/env bash
# `--shard I/N` on track, score and embed (src/cli/shard.h), without Snakemake:
#  - for N in 1..5 (and more shards than contigs), the N shard outputs concatenated in order equal the
#    unsharded output exactly (bedGraph lines; VCF records and scores via bcftools query; Zarr arrays);
#  - empty shards write valid empty outputs; bad values (0/3, 4/3, 2, a/b, 1/0) and score --shard on
#    stdin fail with a message naming --shard and leave no output file.
# Env: DNAMBA, DNAMBA_SOURCE_DIR (set by ctest). Data: testdata/yeast_slice (the first 20 kb of yeast
# I, II, III and 2 kb of Mito from ../shared/data/yeast, with their variants), so the test stands alone.
set -euo pipefail
: "${DNAMBA:?}" "${DNAMBA_SOURCE_DIR:?}"
PY=/usr/bin/python3
failures=0
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*"; failures=$((failures + 1)); }
check() { local msg=$1; shift; if "$@"; then ok "$msg"; else fail "$msg"; fi; }
W=$(mktemp -d /tmp/dnamba_shard.XXXXXX)
trap 'rm -rf "$W"' EXIT

# 4 contigs of different lengths from yeast (names kept), their variants, a small model.
samtools faidx "$DNAMBA_SOURCE_DIR/testdata/yeast_slice/yeast_r64_slice.fa.gz" I:1-9000 II:1-3000 III:1-6000 Mito:1-2000 |
  sed 's/^>\([^:]*\):.*/>\1/' > "$W/ref.fa"
samtools faidx "$W/ref.fa"
bcftools view -Oz -o "$W/raw.vcf.gz" -r I:1-9000,II:1-3000,III:1-6000 "$DNAMBA_SOURCE_DIR/testdata/yeast_slice/yeast_variants_slice.vcf.gz"
bcftools reheader -f "$W/ref.fa.fai" -o "$W/in.vcf.gz" "$W/raw.vcf.gz"
$PY "$DNAMBA_SOURCE_DIR/scripts/make_untrained_model.py" "$W/m" --d-model 16 --n-layer 2 --d-state 4 >/dev/null
C=(--model "$W/m" --device cpu --threads 1 -q)
S=(--horizon 16 --context 300 --segment 1500)
Q='%CHROM\t%POS\t%ID\t%REF\t%ALT\t%INFO\n'

"$DNAMBA" track --ref "$W/ref.fa" -o "$W/t.bg" "${C[@]}"
"$DNAMBA" score --ref "$W/ref.fa" --vcf "$W/in.vcf.gz" -o "$W/s.vcf.gz" "${C[@]}" "${S[@]}"
bcftools query -f "$Q" "$W/s.vcf.gz" > "$W/s.txt"
"$DNAMBA" embed --ref "$W/ref.fa" -o "$W/e.zarr" --pool window:100 "${C[@]}"
echo "$(wc -l < "$W/s.txt") variants, $(wc -l < "$W/t.bg") track lines"

for n in 1 2 3 5 7; do
  rm -f "$W"/t_*.bg "$W"/s_*.vcf.gz*
  rm -rf "$W"/e_*.zarr
  parts_t=() parts_s=() parts_e=()
  for i in $(seq 1 $n); do
    "$DNAMBA" track --ref "$W/ref.fa" -o "$W/t_$i.bg" "${C[@]}" --shard "$i/$n"
    "$DNAMBA" score --ref "$W/ref.fa" --vcf "$W/in.vcf.gz" -o "$W/s_$i.vcf.gz" "${C[@]}" "${S[@]}" --shard "$i/$n"
    "$DNAMBA" embed --ref "$W/ref.fa" -o "$W/e_$i.zarr" --pool window:100 "${C[@]}" --shard "$i/$n"
    parts_t+=("$W/t_$i.bg") parts_s+=("$W/s_$i.vcf.gz") parts_e+=("$W/e_$i.zarr")
  done
  check "track: $n shards concatenate to the unsharded bedGraph" cmp -s <(cat "${parts_t[@]}") "$W/t.bg"
  check "score: $n shards concatenate to the unsharded VCF (records and scores, bit for bit)" \
    cmp -s <(for f in "${parts_s[@]}"; do bcftools query -f "$Q" "$f"; done) "$W/s.txt"
  check "score: every shard has its .tbi" test "$(ls "$W"/s_*.vcf.gz.tbi | wc -l)" = "$n"
  $PY "$DNAMBA_SOURCE_DIR/workflows/scripts/gather_zarr.py" "$W/g.zarr" "${parts_e[@]}" 2>/dev/null
  check "embed: $n shards gathered (workflows/scripts/gather_zarr.py) equal the unsharded Zarr" $PY - "$W/e.zarr" "$W/g.zarr" <<'EOF'
import sys, numpy as np, zarr
a, b = (zarr.open_group(p, mode="r") for p in sys.argv[1:3])
assert sorted(a.array_keys()) == sorted(b.array_keys())
for k in a.array_keys():
    assert a[k].dtype == b[k].dtype and np.array_equal(a[k][:], b[k][:]), k
EOF
  rm -rf "$W/g.zarr"
done
check "7 shards of 4 contigs: some track shards are empty files" \
  test "$(find "$W" -name 't_*.bg' -size 0 | wc -l)" -ge 3

for bad in 0/3 4/3 2 a/b 1/0 -1/2; do
  r=0; out=$("$DNAMBA" track --ref "$W/ref.fa" -o "$W/bad.bg" "${C[@]}" --shard "$bad" 2>&1) || r=$?
  check "track --shard $bad: exit 1 naming --shard, no output" \
    test "$r" = 1 -a ! -e "$W/bad.bg" -a -n "$(echo "$out" | grep -- '--shard')"
done
r=0; out=$("$DNAMBA" score --ref "$W/ref.fa" --vcf - -o "$W/bad.vcf.gz" "${C[@]}" --shard 1/2 < "$W/in.vcf.gz" 2>&1) || r=$?
check "score --shard on stdin: exit 1 with a message, no output" \
  test "$r" = 1 -a ! -e "$W/bad.vcf.gz" -a -n "$(echo "$out" | grep -- 'stdin')"
check "score --shard leaves no temporary copy behind" test -z "$(find "${TMPDIR:-/tmp}" -maxdepth 1 -name 'dnamba-shard-*' -newer "$W/s.txt" 2>/dev/null)"

if [ "$failures" -gt 0 ]; then echo "$failures failed"; exit 1; fi
echo "all passed"
