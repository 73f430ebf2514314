// Streaming FASTA reader: plain, gzip or bgzip; random access through a .fai (+ .gzi) index when one
// exists, a sequential line-by-line scan otherwise. Never holds a whole contig in memory.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/region.h"

namespace dnamba::io {

struct ContigInfo {
  std::string name;
  int64_t length;
};

// One stretch of bases. Consecutive pieces of one segment (a contig, or one region of it) are
// contiguous: the next piece starts where this one ends.
struct SequencePiece {
  std::string contig;
  int64_t start = 0;            // 0-based genomic position of seq[0]
  std::string seq;              // letters as in the file (case and IUPAC codes kept), no line breaks
  bool segment_start = false;   // first piece of a segment: per-sequence state must be reset
  bool segment_end = false;     // last piece of the segment
  int64_t segment_length = -1;  // bases in the whole segment when known in advance, else -1
};

// Reads a FASTA file piece by piece.
//
// Indexed mode (a .fai beside the file, and a .gzi too when the file is bgzip-compressed): ranges are
// fetched through faidx; the index is checked against the file (first header, and the line layout
// at both ends of every contig before it is read) so a stale index is an Error, not wrong bases.
// Sequential mode (no index, gzip, bgzip without .gzi): the file is scanned line by line through
// BGZF; regions out of file order make it reopen the file and scan again.
//
// Zero-length contigs and empty regions (beg == end) produce no pieces at all.
// Every problem (unknown contig, region past a contig end, character that is not a letter, stale
// index, not a FASTA) is an Error naming the file and the contig/line/position.
class FastaReader {
 public:
  // Opens path and checks that its first non-empty line is a '>' header. A present but malformed .fai
  // is an Error (not a silent fallback to scanning). Missing, unreadable or empty file -> Error.
  explicit FastaReader(const std::string& path);
  ~FastaReader();
  FastaReader(const FastaReader&) = delete;
  FastaReader& operator=(const FastaReader&) = delete;

  bool indexed() const;
  const std::vector<ContigInfo>& contigs() const;         // from the .fai; empty when not indexed
  int64_t contig_length(const std::string& name) const;   // -1 if unknown or not indexed

  // Restricts reading to these regions, in this order (duplicates are read again), and restarts the
  // iteration. Without a call: every contig in file order. Region end == -1 means to the contig end.
  // Indexed: checked here (unknown contig, region past the contig end -> Error). Sequential: checked
  // while scanning, so the Error comes when the contig is missing at end of file or ends too early.
  void set_regions(std::vector<Region> regions);

  // Fills out with the next piece of at most max_len (>= 1) bases; false when everything is read.
  // segment_length is known for indexed files, and for regions with an explicit end otherwise.
  bool next(SequencePiece& out, int64_t max_len);

  const std::string& path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A block of one contig's reference from an indexed FASTA, refetched as requests move on (any order
// works; sorted requests refetch rarely): a new block starts `back` bases before the request and
// reaches at least 2 Mb past its start, clipped to the contig. Contig lengths are cached.
class ReferenceWindow {
 public:
  ReferenceWindow(FastaReader& reader, int64_t back) : reader_(reader), back_(back) {}
  int64_t length(const std::string& contig);
  // Bases [beg, end) of contig (0-based), valid until the next get().
  std::string_view get(const std::string& contig, int64_t beg, int64_t end);
  // The block held now: it starts at block_begin() of its contig; fetches() counts the refetches.
  const std::string& block() const { return seq_; }
  int64_t block_begin() const { return beg_; }
  int64_t fetches() const { return fetches_; }

 private:
  FastaReader& reader_;
  int64_t back_;
  std::unordered_map<std::string, int64_t> len_;
  std::string contig_, seq_;
  int64_t beg_ = 0, fetches_ = 0;
};

}  // namespace dnamba::io
