// Streams sequences (FASTA contigs/regions, or reads) through a causal model and hands the caller
// the hidden states of one layer, per base or pooled, in input order. Long sequences run in chunks
// with every layer's state carried across them (results do not depend on the chunk size); short
// reads run several at a time, right-padded to the longest one of the batch (a causal model's
// outputs for real bases do not depend on padding after them). Memory does not grow with the output:
// rows go to the sink as soon as they are computed.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "io/reads.h"
#include "model/mamba_lm.h"

namespace dnamba {

// --pool none | mean | window:W[:S]
struct EmbedPooling {
  enum class Kind { None, Mean, Window };
  Kind kind = Kind::None;
  int64_t window = 0, step = 0;  // Window only; step defaults to window
  std::string str() const;
};
// Parses a --pool value; Error naming it when malformed (W, S must be >= 1).
EmbedPooling parse_pooling(const std::string& s);

// Coordinates of one output row.
struct EmbedRow {
  int32_t contig;  // index into the output's contig list; -1: an unaligned read
  int64_t start;   // FASTA: 0-based genomic [start, end); reads: positions in the read, sequenced orientation
  int64_t end;
  char strand;     // '+'; for reads the strand of the alignment ('+', '-', '.' when unaligned)
  int64_t read;    // index of the read (in output order) or -1 for FASTA input
};

// Receives rows in output order: rows[n] and values [n, D] (float32, row-major).
using EmbedSink = std::function<void(const EmbedRow* rows, const float* values, int64_t n)>;

// Pools the per-base hidden states of one segment (a contig, region or read) at a time.
//   none        one row per base
//   mean        one row per segment: the mean over all its bases
//   window:W:S  rows for windows starting every S bases from the segment start, each the mean over
//               [k*S, min(k*S + W, len)) (bedtools makewindows -w W -s S: the last windows may be
//               shorter; with S > W the bases between windows are in none)
class SegmentPooler {
 public:
  SegmentPooler(EmbedPooling pool, int64_t d, EmbedSink sink);
  // `meta` gives contig, strand, read; meta.start is the coordinate of the segment's first base.
  void begin(const EmbedRow& meta);
  void add(const float* h, int64_t n);  // the next n bases of the segment: h [n, D]
  void end();
  int64_t rows_emitted() const { return rows_emitted_; }

 private:
  struct Window {
    int64_t start;
    std::vector<double> sum;
  };
  void emit_window(const Window& w, int64_t end);
  void flush();

  EmbedPooling pool_;
  int64_t d_;
  EmbedSink sink_;
  EmbedRow meta_{};
  bool open_ = false;
  int64_t pos_ = 0;             // bases of the segment seen so far
  int64_t next_window_ = 0;     // offset where the next window opens
  std::vector<Window> windows_; // open windows, oldest first
  std::vector<Window> spare_;
  std::vector<EmbedRow> out_rows_;
  std::vector<float> out_vals_;
  int64_t rows_emitted_ = 0;
};

struct EmbedOptions {
  int64_t chunk = int64_t(1) << 20;  // most tokens per model call (batch * length)
  int64_t layer = -1;                // 0..n_layer (see MambaLM::forward_layer); -1: n_layer
  EmbedPooling pool;
  int64_t max_batch = 1;             // reads: most reads per model call
  bool quiet = false;
};

struct EmbedStats {
  int64_t bases = 0;     // bases run through the model (padding not counted)
  int64_t segments = 0;  // contigs/regions or reads
  int64_t rows = 0;      // rows given to the sink
};

// FASTA input: every segment the reader yields (all contigs, or its regions). contig_index maps a
// contig name to its index in the output's contig list.
EmbedStats embed_fasta(MambaLM& model, io::FastaReader& reader,
                       const std::function<int32_t(const std::string&)>& contig_index,
                       const EmbedOptions& opt, const EmbedSink& sink);

// Reads input: every read the reader keeps. on_read(read, index) is called for each read, in order,
// before its rows reach the sink.
EmbedStats embed_reads(MambaLM& model, io::ReadsReader& reader, const EmbedOptions& opt, const EmbedSink& sink,
                       const std::function<void(const io::ReadRecord&, int64_t)>& on_read);

}  // namespace dnamba
