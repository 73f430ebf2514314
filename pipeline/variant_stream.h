// Streams a VCF/BCF through variant scoring: records are grouped by contig segment and strand
// (score/variant_score.h), every group runs once it is complete (the input has moved past it), and
// records leave in input order with their INFO fields added as soon as all their groups are done.
// Memory holds about two segments of records and one segment of reference.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "io/vcf.h"
#include "model/mamba_lm.h"
#include "score/variant_score.h"

namespace dnamba {

struct VariantStreamStats {
  int64_t records = 0, alleles = 0, scored = 0;
  std::array<int64_t, size_t(score::Flag::kCount)> flagged{};  // alleles (NO_ALT: records) by reason
  int64_t model_tokens = 0, model_calls = 0;
  double seconds = 0;
  std::string summary() const;  // one paragraph for stderr
};

// Header lines to add: the INFO definitions (DNAMBA_LLR, _FWD, _REV with rc, DNAMBA_FLAG) and
// ##dnamba_score* lines recording the model, the parameters and the command line.
std::vector<std::string> score_header_lines(const score::ScoreParams& prm, const std::string& model_desc,
                                            const std::string& command_line);

// out_hdr: the input header with score_header_lines() added (records are annotated against it).
// The reference must be indexed (random access). Unsorted input (a contig that comes back, or POS
// going down within a contig) -> Error naming the record.
VariantStreamStats score_variants_streaming(MambaLM& model, io::FastaReader& ref, io::VcfReader& in,
                                            bcf_hdr_t* out_hdr, io::VcfWriter& out,
                                            const score::ScoreParams& prm, bool quiet);

}  // namespace dnamba
