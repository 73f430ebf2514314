// Sequencing reads from SAM, BAM or CRAM (through HTSlib), one read at a time, each in the
// orientation it was sequenced in: a record with flag 0x10 (reverse strand) stores the reverse
// complement of the read, so it is reverse-complemented back. Unaligned BAM/SAM files work.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace dnamba::io {

// Which records are read, as samtools view -f / -F / -q: a record is kept when it has every bit of
// include_flags, none of exclude_flags, and MAPQ >= min_mapq (so min_mapq > 0 drops unmapped reads,
// whose MAPQ is 0, as samtools does). Default: primary alignments (not secondary 0x100, not
// supplementary 0x800).
struct ReadFilter {
  int include_flags = 0;
  int exclude_flags = 0x900;
  int min_mapq = 0;
};

// A samtools flag expression: a number (decimal, 0x hex, 0 octal) or comma-separated names
// (PAIRED,UNMAP,SECONDARY,...). Error naming the option on anything else.
int parse_sam_flags(const std::string& s, const std::string& option);

struct ReadRecord {
  std::string name;
  std::string seq;          // bases in sequenced orientation (A,C,G,T,N and IUPAC codes as stored)
  uint16_t flag = 0;
  uint8_t mapq = 0;
  int32_t tid = -1;         // contig of the alignment, -1 when unmapped
  int64_t ref_start = -1;   // 0-based leftmost aligned reference position, -1 when unmapped
  int64_t ref_end = -1;     // one past the last aligned reference position, -1 when unmapped
  int64_t record = 0;       // 1-based record number in the file (counting every record)
  bool reverse() const { return flag & 0x10; }
};

class ReadsReader {
 public:
  // path: SAM, BAM or CRAM ("-" for stdin). ref: reference FASTA, required for CRAM (Error without
  // it, before anything is decoded); ignored for SAM/BAM. threads > 1: HTSlib decompression threads.
  ReadsReader(const std::string& path, const std::string& ref, const ReadFilter& filter, int threads = 1);
  ~ReadsReader();
  ReadsReader(const ReadsReader&) = delete;
  ReadsReader& operator=(const ReadsReader&) = delete;

  // The next record that passes the filter; false at end of file. A kept record without a sequence
  // (SEQ '*') or a corrupt file is an Error naming the file and the read.
  bool next(ReadRecord& r);

  const std::vector<std::string>& contig_names() const { return contigs_; }
  const std::string& path() const { return path_; }
  bool is_cram() const { return cram_; }
  int64_t records_read() const { return n_records_; }
  int64_t records_kept() const { return n_kept_; }
  // Why records were dropped, for an error when nothing was kept ("84 records: 84 secondary...").
  std::string filter_summary() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::string path_;
  std::vector<std::string> contigs_;
  ReadFilter filter_;
  bool cram_ = false;
  int64_t n_records_ = 0, n_kept_ = 0, n_missing_include_ = 0, n_excluded_ = 0, n_low_mapq_ = 0;
};

}  // namespace dnamba::io
