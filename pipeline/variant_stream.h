// Streams a VCF/BCF through variant scoring: records are grouped by contig segment and strand
// (score/variant_score.h), every group runs once it is complete (the input has moved past it), and
// records leave in input order with their INFO fields added as soon as all their groups are done.
// Memory holds about two segments of records and one segment of reference.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
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

// ---- Several devices in one process (`--device cuda:0,1`, `cuda:all`)
//
// The unit of work is one lockstep batch: the ref_batch complete groups that one GroupScorer::score_groups
// call runs (score/variant_score.h). Its numbers depend on which groups share it (the batch's call shapes
// and steps), so the batches are cut exactly as in a one-device run - the k-th ref_batch groups of the
// input in completion order, across contigs - and batch k goes to worker k mod n (round robin, fixed: which
// device runs a batch never depends on timing). Every worker has its own backend, model copy, GroupScorer
// and CUDA stream; on devices of one kind a batch gives the same bits wherever it runs (no atomics; one
// cuBLAS handle per stream), so the records are those of a one-device run. The reading thread builds the
// batches, at most 2 per worker are in flight, and records are written in input order as their batches finish.

// A model on one device, made and used only by its worker thread (CUDA's current device is per thread).
struct ScoreDevice {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<MambaLM> model;  // on *backend; destroyed first
};
// Makes worker i's device (called in worker i's thread, all workers at once).
using ScoreDeviceLoader = std::function<ScoreDevice(size_t worker)>;

class ScoreDevicePool {
 public:
  // Starts one thread per entry of `names` (names[i]: worker i's device, for messages) and returns once
  // every model is loaded; a failed load -> the error of the first failing worker, naming its device.
  ScoreDevicePool(const std::vector<std::string>& names, const ScoreDeviceLoader& load,
                  const score::ScoreParams& prm);
  ~ScoreDevicePool();  // stops and joins the workers
  ScoreDevicePool(const ScoreDevicePool&) = delete;
  ScoreDevicePool& operator=(const ScoreDevicePool&) = delete;
  size_t size() const;
  // Worker i's model, to describe it (config, directory); not to run it.
  MambaLM& model(size_t i);
  struct Impl;
  Impl* impl() { return impl_.get(); }

 private:
  std::unique_ptr<Impl> impl_;
};

// As above, on the pool's workers; prm must be the pool's. The output equals a one-device run's.
VariantStreamStats score_variants_streaming(ScoreDevicePool& pool, io::FastaReader& ref, io::VcfReader& in,
                                            bcf_hdr_t* out_hdr, io::VcfWriter& out,
                                            const score::ScoreParams& prm, bool quiet);

}  // namespace dnamba
