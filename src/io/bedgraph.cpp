#include "io/bedgraph.h"

#include <charconv>
#include <cmath>
#include <cstring>

#include "common/error.h"

namespace dnamba::io {

char* format_track_value(char* buf, float value) {
  if (std::isnan(value)) return static_cast<char*>(std::memcpy(buf, "nan", 3)) + 3;  // never "-nan"
  if (value == 0.0f) value = 0.0f;                                                   // -0 -> 0
  // 7 significant digits in general format is at most "-1.234567e-38": 13 characters.
  return std::to_chars(buf, buf + 16, value, std::chars_format::general, 7).ptr;
}

BedGraphWriter::BedGraphWriter(const std::string& path, int threads) : out_(path, threads) {}

void BedGraphWriter::add(const std::string& contig, int64_t start, float value) {
  if (start < 0) throw Error(out_.path() + ": negative position " + std::to_string(start) + " on " + contig);
  // "\t" start "\t" end "\t" value "\n": int64 needs at most 19 digits, the value at most 16 characters.
  char buf[64];
  char* p = buf;
  *p++ = '\t';
  p = std::to_chars(p, p + 20, start).ptr;
  *p++ = '\t';
  p = std::to_chars(p, p + 20, start + 1).ptr;
  *p++ = '\t';
  p = format_track_value(p, value);
  *p++ = '\n';
  out_.write(contig);
  out_.write(buf, size_t(p - buf));
}

void BedGraphWriter::close() { out_.close(); }

}  // namespace dnamba::io
