// `--shard i/n`: one of n deterministic, contiguous parts of a command's work, for batch systems.
//
// i is 1-based (1 <= i <= n), like `split -n l/K/N`; "1/1" is the whole input. Shards are contiguous
// and in input order, so concatenating the outputs of shards 1..n (bedGraph lines, VCF records, Zarr
// rows) gives exactly the output of one run without --shard. A shard may be empty: it then writes a
// valid empty output (a header-only VCF, an empty bedGraph), never no file.
//
// What is split:
//   track / embed  whole segments (contigs, or the given regions) in their reading order: a segment's
//                  values depend on every base before it in the segment, so a segment is never cut.
//                  Segment j (bases [c_j, c_j + l_j) of the T bases of all segments laid end to end)
//                  goes to shard floor(n * (c_j + l_j / 2) / T) + 1: the part its midpoint falls in.
//   score          records, in file order: shard i gets about records [floor((i-1) N / n), floor(i N / n))
//                  of the N records, with each cut moved forward to a segment start (VcfShardCopy).
//                  A variant's score depends only on the reference and itself (score/variant_score.h),
//                  so it is the same in every shard.
#pragma once
#include <boost/program_options.hpp>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "io/fasta.h"
#include "io/region.h"

namespace dnamba::cli {

struct Shard {
  int64_t index = 1;  // 1-based
  int64_t count = 1;
  bool whole() const { return count == 1; }
  std::string text() const { return std::to_string(index) + "/" + std::to_string(count); }
};

// Parses "i/n" (decimal, 1 <= i <= n <= 1e6). Anything else -> Error naming the value.
Shard parse_shard(const std::string& s);

// The option, for a command's options_description: --shard I/N (stored as text; parse_shard it).
void add_shard_option(boost::program_options::options_description& d, std::string& spec);

// Items [begin, end) (0-based) of `total` that shard s takes: contiguous, sizes differ by at most one.
std::pair<int64_t, int64_t> shard_item_range(int64_t total, const Shard& s);

// The segments a command reads, with ends resolved (end != -1): the given regions in their order, or
// every contig of the indexed FASTA in file order. --shard needs an indexed FASTA (samtools faidx),
// to know the lengths before reading: an unindexed one -> Error.
std::vector<io::Region> resolve_segments(const io::FastaReader& reader, const std::vector<io::Region>& regions);

// The whole segments of shard s (see the top of this file); segments must have resolved ends.
std::vector<io::Region> shard_segments(const std::vector<io::Region>& segments, const Shard& s);

// The records of one shard of a VCF/BCF, copied to a temporary uncompressed BCF (same header) that
// is removed with this object: score reads it in place of the input. `-` (stdin) -> Error, as the
// input is read twice (a counting pass, then the copy). The temporary file lies in $TMPDIR (or /tmp).
//
// The cut before record floor(k N / n) moves forward to the next record where score's segment (of
// length `segment`) changes on both strands, or a new contig starts: each score group (records whose
// model run starts at the same position of one strand) then lies in one shard, and a shard's model
// calls hold exactly the alleles they hold in one run over the whole file, so the scores are the same
// to the last bit, not only to floating-point rounding. A shard can therefore be empty.
class VcfShardCopy {
 public:
  VcfShardCopy(const std::string& path, const Shard& s, int64_t segment);
  ~VcfShardCopy();
  VcfShardCopy(const VcfShardCopy&) = delete;
  VcfShardCopy& operator=(const VcfShardCopy&) = delete;
  const std::string& path() const { return tmp_; }
  int64_t begin = 0, end = 0, total = 0;  // records [begin, end) of total (0-based)

 private:
  std::string tmp_;
};

}  // namespace dnamba::cli
