// Variant-effect scores of a causal DNA language model: log-likelihood ratios of alternate against
// reference haplotypes, computed by state caching (one reference pass per segment, a short run per
// allele from a snapshot of every layer's state) or plainly (both haplotypes from the segment start).
//
// DEFINITION (the numbers `dnamba score` writes; README and VCF header say the same)
// A contig G of length L, a variant at 0-based POS p with REF r (length lr) and ALT a (length la).
// Forward strand:
//   k  = length of the longest common prefix of r and a; q = p + k is the first differing base.
//   e  = min(L, p + lr + H): the scored window ends H bases after the REF allele (clipped at the end).
//   The variant's segment is i = floor(p / S); its model run starts at s = max(0, i*S - C).
//   ref haplotype  R = G[s, e)
//   alt haplotype  A = G[s, p) + a + G[p+lr, e)
//   LLR_fwd = sum_{t >= q-s} ln P(A_t | A_<t) - sum_{t >= q-s} ln P(R_t | R_<t)
//   i.e. the alternate's remaining allele bases a[k..] plus the H reference bases after the REF allele,
//   against the reference's remaining bases r[k..] plus the same H bases: both haplotypes score the
//   same H bases G[p+lr, p+lr+H) after the allele, so insertions and deletions compare fairly.
//   A base at the very start of a run (t = 0, only at a contig start) has no prediction and adds 0.
// Reverse strand: the same on the reverse complement, where the model reads right to left: k is the
//   common suffix of r and a, the window ends H bases before POS (clipped at 0), and the run starts at
//   min(L, (j+1)*S + C) with j = floor((p + lr - 1) / S), the segment of the REF allele's last base.
//   Segments therefore tile the contig identically on both strands.
// LLR = (LLR_fwd + LLR_rev) / 2 with reverse-complement averaging (default), else LLR_fwd.
// A variant's score depends only on the reference and itself, never on other variants in the file.
//
// This file holds the algorithm only (no I/O): a "group" is every allele of one strand whose model
// run starts at the same position s; the caller supplies the strand's reference tokens.
#pragma once
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "model/mamba_lm.h"

namespace dnamba::score {

enum class Method { Fast, Naive };

struct ScoreParams {
  int64_t horizon = 128;        // H
  int64_t context = 8192;       // C
  int64_t segment = 65536;      // S
  bool rc = true;               // average with the reverse strand
  Method method = Method::Fast;
  int64_t max_allele_length = 1000;  // longer REF or ALT: flagged TOO_LONG
  // Execution only (results do not depend on these beyond floating-point rounding; with ref_batch 1
  // the batches a variant shares depend only on its segment, so sharded runs reproduce one run bit
  // for bit on the CPU):
  int64_t batch = 64;                    // alleles (fast) or haplotypes (naive) per model call
  int64_t batch_tokens = int64_t(1) << 14;  // padded tokens per model call
  int64_t chunk = int64_t(1) << 14;      // most bases per row and call of the reference pass
  int64_t snapshot_gap = 1;  // g: snapshots only at multiples of g from the run start; alleles replay < g bases
  int64_t ref_batch = 1;     // reference runs (segment, strand) advanced together, one batch row each
};

// One allele on one strand, in strand coordinates (position x of the reverse strand is base
// L-1-x of the forward strand, complemented).
struct StrandAllele {
  int64_t q = 0;                     // first differing base
  int64_t flank = 0;                 // first reference base after the REF allele (p + lr)
  int64_t e = 0;                     // end (exclusive) of the scored window, <= L
  std::vector<int32_t> alt_insert;   // tokens of the ALT allele after the common prefix
  double llr = std::numeric_limits<double>::quiet_NaN();  // output
};

// Why an allele gets no score. Order = priority when several apply.
enum class Flag : uint8_t {
  None = 0, NoAlt, ContigMissing, Symbolic, Breakend, SpanningDeletion, InvalidAllele, TooLong,
  RefMismatch, NInWindow, kCount
};
const char* flag_name(Flag f);

// Classifies an ALT allele string by itself: Symbolic (<...>), Breakend, SpanningDeletion (*),
// InvalidAllele (characters that are not letters, or empty), else None.
Flag classify_alt(std::string_view alt);
bool is_acgt(char c);

// The two strands of one (REF, ALT) pair at POS p on a contig of length L (caller checked the REF).
// Also returns the forward range [lo, hi) of reference bases the scored windows read.
struct AlleleWindows {
  StrandAllele fwd, rev;
  int64_t fwd_segment_start = 0;  // s, forward coordinates
  int64_t rev_segment_start = 0;  // s, reverse-strand coordinates
  int64_t ref_lo = 0, ref_hi = 0;
};
AlleleWindows make_windows(int64_t p, std::string_view ref, std::string_view alt, int64_t L,
                           const ScoreParams& prm);

// One group: every allele of one strand whose model run starts at s. seq holds the strand's
// reference tokens from s on (seq[i] = token at s+i) and covers every allele's window
// (seq.size() >= e - s).
struct GroupJob {
  int64_t s = 0;
  const std::vector<int32_t>* seq = nullptr;
  std::vector<StrandAllele*> alleles;
};

// Scores the alleles of groups, filling llr.
// Fast method, as executed ("lockstep"): up to ref_batch groups run their reference passes as the
// rows of one batch, all rows advancing by the same number of positions per model call (rows sorted
// by length, a row leaves the batch when its run is done). A row's state is copied (device to
// device) into a free row of an allele batch right after the call that reaches a snapshot position
// of one of its alleles: the latest multiple of snapshot_gap at or before the base that predicts
// the allele's first differing base. An allele batch runs when it is full (`batch` rows), so memory
// holds ref_batch + 2*batch states, never one per variant. Alleles of rows short and long (allele
// length) fill separate batches, so a long insertion does not pad a batch of SNVs.
class GroupScorer {
 public:
  GroupScorer(MambaLM& model, const ScoreParams& prm);
  void score(int64_t s, const std::vector<int32_t>& seq, const std::vector<StrandAllele*>& alleles);
  // Groups in chunks of ref_batch, in the order given.
  void score_groups(const std::vector<GroupJob>& groups);
  // Model positions run so far (for speed reports).
  int64_t tokens_run() const { return tokens_run_; }
  int64_t model_calls() const { return calls_; }

 private:
  struct Run {  // one token sequence of a batched model call
    std::vector<int32_t> tokens;
    int64_t score_from = 0;  // sum log P(tokens[t]) for t >= score_from (t >= 1)
    double* sum = nullptr;   // receives the sum
  };
  // Allele runs whose start states sit in rows of `conv`/`ssm` (all layers in one tensor:
  // layer l, row r at row l*cap + r), run together when full.
  struct Pool {
    int64_t cap = 0;
    Tensor conv, ssm;  // [n_layer*cap, conv cols], [n_layer*cap, ssm cols]
    std::vector<Run> runs;
  };
  void score_lockstep(const std::vector<const GroupJob*>& groups);
  void score_naive(const GroupJob& g);
  // Naive: runs sequences from the zero state in batches (sorted by length, padded at the end).
  void run_batched(std::vector<Run>& runs);
  // Runs rows whose start states are the first rows.size() rows of `conv`/`ssm` (layer l at rows
  // l*cap ..), in chunks along the length.
  void run_rows(std::vector<Run*>& rows, Tensor& conv, Tensor& ssm, int64_t cap);
  void flush_pool(Pool& p);
  void alloc_states(Tensor& conv, Tensor& ssm, int64_t cap);

  MambaLM& model_;
  ScoreParams prm_;
  Tensor ref_conv_, ref_ssm_;  // lockstep reference rows, [n_layer*ref_batch, ...]
  Pool pools_[2];              // short and long allele runs
  Tensor naive_conv_, naive_ssm_;
  int64_t tokens_run_ = 0, calls_ = 0;
};

}  // namespace dnamba::score
