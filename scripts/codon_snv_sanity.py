#!/usr/bin/env python3
"""Zero-shot sanity check of a DNA language model (issue 6, item 5): every possible SNV in the
coding sequences of one chromosome, scored with `dnamba score`, summarised by codon position.

  codon_snv_sanity.py make --gff yeast_r64.gff.gz --ref yeast_r64.fa.gz --chrom XVI -o cds_snvs.vcf
  dnamba score --ref yeast_r64.fa.gz --vcf cds_snvs.vcf -o cds_snvs.scored.vcf.gz ...
  codon_snv_sanity.py summarize cds_snvs.scored.vcf.gz

`make` writes a sorted VCF with the three alternative alleles of every CDS base of the chromosome
(one record per ALT), INFO CP = the codon position (1, 2, 3) in the reading frame of the CDS,
taken from the GFF3 phase of each CDS feature (phase = bases to skip, in transcript direction,
before the first whole codon of the feature). Bases covered by CDS features that disagree on the
codon position (overlapping genes in different frames) and non-ACGT reference bases are left out.

`summarize` prints, for each codon position, the number of SNVs, the mean DNAMBA_LLR and its
standard error, and the difference (mean at positions 1 and 2) - (mean at position 3) with its
standard error. Only the Python standard library is used (runs on machines without numpy).
"""
import argparse
import gzip
import math
import sys


def open_text(path):
    with open(path, "rb") as f:
        magic = f.read(2)
    return gzip.open(path, "rt") if magic == b"\x1f\x8b" else open(path, "rt")


def read_chrom(fasta, chrom):
    seq, on = [], False
    with open_text(fasta) as f:
        for line in f:
            if line.startswith(">"):
                if on:
                    break
                on = line[1:].split()[0] == chrom
            elif on:
                seq.append(line.strip())
    if not seq:
        sys.exit(f"codon_snv_sanity: contig {chrom} not found in {fasta}")
    return "".join(seq).upper()


def codon_positions(gff, chrom):
    """Maps 1-based position -> codon position (1..3); conflicting positions map to 0."""
    cp = {}
    n_features = 0
    with open_text(gff) as f:
        for lineno, line in enumerate(f, 1):
            if line.startswith("#") or not line.strip():
                continue
            col = line.rstrip("\n").split("\t")
            if len(col) < 9:
                sys.exit(f"codon_snv_sanity: {gff}:{lineno}: expected 9 columns")
            if col[0] != chrom or col[2] != "CDS":
                continue
            start, end, strand, phase = int(col[3]), int(col[4]), col[6], col[7]
            if phase not in ("0", "1", "2") or strand not in "+-":
                sys.exit(f"codon_snv_sanity: {gff}:{lineno}: CDS without a phase or strand")
            ph = int(phase)
            n_features += 1
            for p in range(start, end + 1):
                off = (p - start) if strand == "+" else (end - p)
                c = (off - ph) % 3 + 1
                old = cp.get(p)
                cp[p] = c if old is None or old == c else 0
    return cp, n_features


def make(args):
    seq = read_chrom(args.ref, args.chrom)
    cp, nfeat = codon_positions(args.gff, args.chrom)
    n = skipped_conflict = skipped_base = 0
    with open(args.output, "w") as out:
        out.write("##fileformat=VCFv4.2\n")
        out.write(f"##contig=<ID={args.chrom},length={len(seq)}>\n")
        out.write('##INFO=<ID=CP,Number=1,Type=Integer,Description="Codon position of the reference base in its CDS">\n')
        out.write("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
        for p in sorted(cp):
            c = cp[p]
            if c == 0:
                skipped_conflict += 1
                continue
            if p > len(seq):
                sys.exit(f"codon_snv_sanity: CDS position {p} beyond {args.chrom} ({len(seq)} bp)")
            ref = seq[p - 1]
            if ref not in "ACGT":
                skipped_base += 1
                continue
            for alt in "ACGT":
                if alt != ref:
                    out.write(f"{args.chrom}\t{p}\t.\t{ref}\t{alt}\t.\t.\tCP={c}\n")
                    n += 1
    print(f"{args.output}: {n} SNVs at {n // 3} CDS bases of {args.chrom} ({nfeat} CDS features); "
          f"left out {skipped_conflict} bases with conflicting frames, {skipped_base} non-ACGT", file=sys.stderr)


def summarize(args):
    vals = {1: [], 2: [], 3: []}
    with open_text(args.vcf) as f:
        for line in f:
            if line.startswith("#"):
                continue
            info = line.rstrip("\n").split("\t")[7]
            kv = dict(x.split("=", 1) for x in info.split(";") if "=" in x)
            if "CP" not in kv or "DNAMBA_LLR" not in kv:
                continue
            vals[int(kv["CP"])].append(float(kv["DNAMBA_LLR"]))

    def mean_se(v):
        m = sum(v) / len(v)
        var = sum((x - m) ** 2 for x in v) / (len(v) - 1)
        return m, math.sqrt(var / len(v))

    print("| codon position | SNVs | mean DNAMBA_LLR | standard error |")
    print("|---|---|---|---|")
    stats = {}
    for c in (1, 2, 3):
        if len(vals[c]) < 2:
            sys.exit(f"codon_snv_sanity: too few scored SNVs at codon position {c}")
        stats[c] = mean_se(vals[c])
        print(f"| {c} | {len(vals[c])} | {stats[c][0]:.5f} | {stats[c][1]:.5f} |")
    m12, se12 = mean_se(vals[1] + vals[2])
    d = m12 - stats[3][0]
    se = math.sqrt(se12 ** 2 + stats[3][1] ** 2)
    print(f"| 1 and 2 | {len(vals[1]) + len(vals[2])} | {m12:.5f} | {se12:.5f} |")
    print(f"\n(1,2) - 3: {d:.5f} +- {se:.5f} (z = {d / se:.1f}); "
          f"positions 1 and 2 {'lower' if stats[1][0] < stats[3][0] and stats[2][0] < stats[3][0] else 'NOT both lower'} than 3")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--gff", required=True)
    m.add_argument("--ref", required=True)
    m.add_argument("--chrom", default="XVI")
    m.add_argument("-o", "--output", required=True)
    s = sub.add_parser("summarize")
    s.add_argument("vcf")
    args = ap.parse_args()
    make(args) if args.cmd == "make" else summarize(args)


if __name__ == "__main__":
    main()
