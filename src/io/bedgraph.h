// bedGraph per-base tracks: "contig\tstart\tend\tvalue", one line per base.
#pragma once
#include <cstdint>
#include <string>

#include "io/output_file.h"

namespace dnamba::io {

// One line per base, runs are not merged (bedGraphToBigWig and genome browsers accept this).
// Values have 7 significant digits; -0 prints as 0, NaN as "nan", infinities as "inf"/"-inf".
// Plain or bgzip by the file name; written atomically (nothing under path until close()).
class BedGraphWriter {
 public:
  explicit BedGraphWriter(const std::string& path, int threads = 1);
  void add(const std::string& contig, int64_t start, float value);  // the base [start, start + 1)
  void close();

 private:
  TextWriter out_;
};

// Formats value as bedGraph prints it (7 significant digits); returns the end of the written text.
// buf needs room for 16 characters.
char* format_track_value(char* buf, float value);

}  // namespace dnamba::io
