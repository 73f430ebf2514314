// Streams FASTA segments (contigs or regions) through a causal language model in chunks of at
// most `chunk` bases, carrying every layer's state across chunks, and hands the caller the model's
// next-base log-probabilities for each base that has a prediction (every base but a segment's first).
// A reader thread fetches the next piece while the model runs on the current one.
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "io/fasta.h"
#include "model/mamba_lm.h"

namespace dnamba {

struct BaseLogProbs {
  const std::string* contig;
  int64_t start;        // 0-based genomic position of the first base in this batch of results
  int64_t n;            // number of bases
  const float* stats;   // [n, 5]: log p(observed base), log p(A), log p(C), log p(G), log p(T)
  const int32_t* tokens;  // [n] observed tokens
};

struct CausalStreamOptions {
  int64_t chunk = int64_t(1) << 20;
  bool quiet = false;
  std::string progress_label = "track";
};

// Calls `sink` with results in genomic order, one call at a time, on a thread of its own (the model
// computes the next piece meanwhile); the results a call sees stay valid until it returns.
// Returns the number of bases read.
int64_t stream_causal_logprobs(MambaLM& model, io::FastaReader& reader, const CausalStreamOptions& opt,
                               const std::function<void(const BaseLogProbs&)>& sink);

}  // namespace dnamba
