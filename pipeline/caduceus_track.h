// Caduceus (bidirectional, masked-LM) models over long sequences, and the library calls that the
// track, score and embed commands use for them.
//
// Windows: a bidirectional model needs right-hand context, and its state cannot be carried across
// chunks, so a segment longer than `window` runs as overlapping windows. Regular windows start every
// window - overlap bases; the last one is aligned to the segment end. Each base is taken from the one
// window in which it is farthest from an edge: the boundary between two consecutive windows is the
// middle of their overlap, so every kept base has at least overlap/2 bases of context on each side
// (except at the segment ends, where there is none to have).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "model/caduceus.h"
#include "pipeline/causal_stream.h"  // BaseLogProbs

namespace dnamba {

constexpr int64_t kCaduceusDefaultWindow = 131072;

// --window default: the model's training length when its directory says so, else 131,072.
int64_t caduceus_default_window(const CaduceusModel& m);
// --overlap default: a quarter of the window.
inline int64_t caduceus_default_overlap(int64_t window) { return window / 4; }

struct WindowSpan {
  int64_t start = 0, len = 0;            // the window [start, start + len)
  int64_t keep_begin = 0, keep_end = 0;  // the bases it reports [keep_begin, keep_end)
};
// All windows of a segment of n bases (n > 0). Throws on window <= 0 or overlap outside [0, window).
std::vector<WindowSpan> plan_windows(int64_t n, int64_t window, int64_t overlap);

enum class MaskMode { None, Each };

struct CaduceusTrackOptions {
  int64_t window = 0;                   // 0: caduceus_default_window()
  int64_t overlap = -1;                 // -1: caduceus_default_overlap()
  MaskMode mask = MaskMode::None;
  int64_t tokens_per_call = int64_t(1) << 20;  // batch size = max(1, tokens_per_call / window length)
  bool quiet = false;
  std::string progress_label = "track";
};

// Per-base statistics of one in-memory token sequence (one segment), windowed as above:
// stats[i*5 + 0] = log p(tokens[i]) at position i, stats[i*5 + 1..4] = log p(A,C,G,T) there, all
// log-softmax over the whole vocabulary of the logits at the same position; with MaskMode::Each the
// position is replaced by [MASK] (id 3) in its window first (one masked copy per base, batched).
// `progress` (optional) is called with the number of bases finished so far.
void caduceus_sequence_logprobs(CaduceusModel& m, const int32_t* tokens, int64_t n, const CaduceusTrackOptions& opt,
                                float* stats, const std::function<void(int64_t)>& progress = {});

// Streams FASTA segments (contigs or regions) through the model and calls `sink` with every base's
// statistics (as above) in genomic order. Only about two windows of tokens are held at a time.
// Returns the number of bases read.
int64_t stream_caduceus_logprobs(CaduceusModel& m, io::FastaReader& reader, const CaduceusTrackOptions& opt,
                                 const std::function<void(const BaseLogProbs&)>& sink);

// ---- for `dnamba score` and `dnamba embed`

// One masked-LM query: `tokens[0..len)` with position `pos` replaced by [MASK].
struct MaskedQuery {
  const int32_t* tokens = nullptr;
  int64_t len = 0;
  int64_t pos = 0;
};

// log p(A), log p(C), log p(G), log p(T) at each query's masked position, renormalised over A,C,G,T
// (out[q*4 + k]). Queries of equal length run batched (up to tokens_per_call tokens per call).
// rc_average: also run the reverse complement of each window (masked at the mirrored position) and
// average the two strands' log-probabilities (complemented) — what Ph models need; PS models are
// RC-equivariant, so for them the average equals the one-strand value (and is skipped).
void caduceus_masked_acgt(CaduceusModel& m, const std::vector<MaskedQuery>& queries, bool rc_average,
                          int64_t tokens_per_call, float* out);

// DNAMBA_LLR of single-base variants: log p(alt) - log p(ref) at the masked variant position, over
// A,C,G,T only, averaged over both strands for Ph (PS: equivariant). ref/alt are tokens (A=7..T=10);
// a query whose ref or alt is not one of A,C,G,T gives NaN.
std::vector<float> caduceus_masked_llr(CaduceusModel& m, const std::vector<MaskedQuery>& queries,
                                       const std::vector<int32_t>& ref, const std::vector<int32_t>& alt,
                                       int64_t tokens_per_call = int64_t(1) << 20);

// Per-position embeddings [len, d_model] of one window (host, row-major). rc_average (the embed
// default): PS: mean of the forward half and the channel-reversed RC half of last_hidden (the RC half
// is already in forward time); Ph: mean of the forward pass and the position-mirrored pass over the
// reverse complement. Without rc_average: PS gives the forward half, Ph the forward pass.
void caduceus_embed_window(CaduceusModel& m, const int32_t* tokens, int64_t len, bool rc_average, float* out);

// Reverse complement of a token sequence (A<->T, C<->G through the model's complement map).
std::vector<int32_t> caduceus_reverse_complement(const CaduceusModel& m, const int32_t* tokens, int64_t len);

}  // namespace dnamba
