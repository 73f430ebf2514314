// `dnamba score` with a masked-LM (Caduceus) model: every ALT allele of a VCF/BCF gets the masked
// log-likelihood ratio at the variant position; records leave in input order, batched over variants.
//
// DEFINITION (the numbers written; the VCF header says the same)
// A contig G of length L, a record at 0-based POS p with REF r (length lr):
//   window   W' = min(W, L) reference bases [b, b + W') with b = clamp(p + lr/2 - W/2, 0, L - W'):
//            centred on the REF allele (an SNV sits at window offset W/2), shifted, not shrunk, at a
//            contig end, so every window of a contig has the same length (they batch together).
//   SNV      LLR_fwd = ln P(a | window with p masked) - ln P(r | same), both renormalised over A,C,G,T
//            (the renormalisation cancels in the difference).
//   MNP      (lr == la > 1): the sum of that over the bases where REF and ALT differ, each masked on
//            its own with every other base at the reference (an independent-sites approximation;
//            bases equal in REF and ALT, e.g. VCF padding, add nothing).
//   Ph       the same on the reverse complement of the window (masked at the mirrored position,
//            complemented bases) gives LLR_rev; DNAMBA_LLR = (LLR_fwd + LLR_rev) / 2 unless rc is off.
//   PS       RC-equivariant by construction (LLR_rev == LLR_fwd up to rounding): one pass, no _FWD/_REV.
// Flags (DNAMBA_FLAG, first that applies): CONTIG_MISSING, SYMBOLIC, BREAKEND, SPANNING_DELETION,
// INVALID_ALLELE, REF_MISMATCH, MLM_INDEL (REF and ALT lengths differ: a masked LM has no likelihood
// for a length change), TOO_LONG (REF longer than --max-allele-length or than the window),
// N_IN_WINDOW (a base of the window or of the ALT that is not A,C,G,T - as the causal path does),
// and NO_ALT for a record without ALT. Records may come in any order (random access to the reference).
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "io/vcf.h"
#include "model/caduceus.h"

namespace dnamba {

struct CaduceusScoreParams {
  int64_t window = 0;                 // W; 0: caduceus_default_window()
  bool rc = true;                     // Ph: average with the reverse-complement strand (PS: equivariant)
  int64_t max_allele_length = 1000;   // longer REF (MNPs): TOO_LONG
  // Execution only (results do not depend on these beyond floating-point rounding):
  int64_t tokens_per_call = int64_t(1) << 20;  // window tokens per model call
  int64_t max_pending_records = 100000;        // records held before a forced batch
};

struct CaduceusScoreStats {
  int64_t records = 0, alleles = 0, scored = 0, no_alt = 0, queries = 0;
  std::map<std::string, int64_t> flagged;  // alleles by flag name
  double seconds = 0;
  std::string summary() const;
};

// The resolved window W (params.window, else the model's default).
int64_t caduceus_score_window(const CaduceusModel& m, const CaduceusScoreParams& prm);

// INFO definitions (DNAMBA_LLR, _FWD/_REV for Ph with rc, DNAMBA_FLAG) and ##dnamba_score* lines.
std::vector<std::string> caduceus_score_header_lines(const CaduceusModel& m, const CaduceusScoreParams& prm,
                                                     const std::string& model_desc, const std::string& command_line);

// out_hdr: the input header with caduceus_score_header_lines() added. The reference must be indexed.
CaduceusScoreStats score_variants_caduceus(CaduceusModel& m, io::FastaReader& ref, io::VcfReader& in,
                                           bcf_hdr_t* out_hdr, io::VcfWriter& out, const CaduceusScoreParams& prm,
                                           bool quiet);

}  // namespace dnamba
