// bedGraph per-base tracks: "contig\tstart\tend\tvalue", one line per base.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/output_file.h"

namespace dnamba::io {

// One line per base, runs are not merged (bedGraphToBigWig and genome browsers accept this).
// Values have 7 significant digits; -0 prints as 0, NaN as "nan", infinities as "inf"/"-inf".
// Plain or bgzip by the file name; written atomically (nothing under path until close()).
class BedGraphWriter {
 public:
  explicit BedGraphWriter(const std::string& path, int threads = 1);
  void add(const std::string& contig, int64_t start, float value);  // the base [start, start + 1)
  // values[i] for the base [start + i, start + i + 1), i < n: the same text as n calls of add(),
  // formatted on several threads (formatting, not writing, is what limits a per-base track).
  void add_run(const std::string& contig, int64_t start, const float* values, int64_t n);
  void close();

 private:
  TextWriter out_;
  std::vector<std::string> parts_;  // add_run's per-thread text, reused
};

// Formats value as bedGraph prints it (7 significant digits); returns the end of the written text.
// buf needs room for 16 characters.
char* format_track_value(char* buf, float value);

}  // namespace dnamba::io
