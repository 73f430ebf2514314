// Training windows drawn at random from one or more genomes: uniform over every start position of
// every contig (so genomes weigh by their length), never overlapping the held-out regions, either
// strand (reverse complement with probability 1/2), windows with too many non-ACGT bases redrawn.
// Indexed FASTA files are read through faidx one window at a time; unindexed ones are read into
// memory once. All randomness comes from the caller's engine, whose state a checkpoint saves.
#pragma once
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "io/region.h"

namespace dnamba::train {

struct SamplerOptions {
  int64_t window = 1025;      // bases per window (seq_len + 1: inputs and next-base targets)
  double max_n_frac = 0.1;    // windows with more non-ACGT bases than this fraction are redrawn
  bool reverse_complement = true;
};

class WindowSampler {
 public:
  // held_out: samtools-style region strings; a region applies to that contig in every file.
  WindowSampler(const std::vector<std::string>& fastas, const std::vector<std::string>& held_out,
                const SamplerOptions& opt);
  ~WindowSampler();

  // One window of opt.window tokens (Caduceus ids).
  void sample(std::mt19937_64& rng, std::vector<int32_t>& tokens);
  // Tokens of a held-out region (forward strand), from the first file that has the contig.
  std::vector<int32_t> region_tokens(size_t i);
  const std::vector<io::Region>& held_out() const { return held_out_; }
  const std::vector<std::string>& held_out_names() const { return held_out_names_; }
  int64_t trainable_starts() const { return total_starts_; }
  int64_t redrawn() const { return redrawn_; }  // windows redrawn for too many N
  // Where the last sample() came from (for tests and diagnostics).
  struct Origin {
    std::string contig;
    int64_t start = 0;  // 0-based, forward strand
    bool reverse = false;
  };
  const Origin& last_origin() const { return last_; }

 private:
  struct Contig {
    size_t file;
    std::string name;
    int64_t length;
    std::vector<std::pair<int64_t, int64_t>> starts;  // allowed window starts, [beg, end) intervals
    int64_t n_starts = 0;
  };
  void fetch(const Contig& c, int64_t beg, int64_t len, std::string& out);

  SamplerOptions opt_;
  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<io::FastaReader>> readers_;
  std::vector<std::vector<std::pair<std::string, std::string>>> in_memory_;  // per unindexed file
  std::vector<Contig> contigs_;
  std::vector<int64_t> cum_starts_;  // cumulative n_starts
  int64_t total_starts_ = 0;
  std::vector<io::Region> held_out_;
  std::vector<std::string> held_out_names_;
  int64_t redrawn_ = 0;
  Origin last_;
  std::string buf_;
};

}  // namespace dnamba::train
