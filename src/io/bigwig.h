// bigWig per-base tracks through libBigWig, written as they stream in (fixed-step blocks of span 1).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/fasta.h"
#include "io/output_file.h"

namespace dnamba::io {

class BigWigWriter {
 public:
  // chroms: every chromosome of the output with its length, in the order data will be added. Tools
  // that look chromosomes up by name (UCSC) need this order to be byte-wise sorted by name; see
  // bigwig_chrom_order(). Written atomically (nothing under path until close()).
  BigWigWriter(const std::string& path, const std::vector<ContigInfo>& chroms);
  ~BigWigWriter();  // without close(): the output is discarded
  BigWigWriter(const BigWigWriter&) = delete;
  BigWigWriter& operator=(const BigWigWriter&) = delete;

  // Values of the n bases [start, start + n) of chrom. Calls must go forward: chromosomes in the
  // order given, positions increasing and not overlapping (Error otherwise); a call that continues
  // the previous one extends its block.
  void add(const std::string& chrom, int64_t start, const float* values, int64_t n);
  void close();  // writes the index and zoom levels, then renames to the final name

 private:
  AtomicOutput output_;
  void* fp_ = nullptr;  // bigWigFile_t* (an anonymous struct in bigWig.h, so not declarable here)
  std::vector<ContigInfo> chroms_;
  std::vector<std::string> names_;
  int64_t tid_ = -1, end_ = -1;  // where the last call ended
};

// Indices of chroms in byte-wise name order (the order bigWig files keep chromosomes in).
std::vector<size_t> bigwig_chrom_order(const std::vector<ContigInfo>& chroms);

}  // namespace dnamba::io
