#include "io/bedgraph.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <thread>

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

namespace {

// "contig\tstart\tend\tvalue\n" for values[0..n), appended to out.
void format_lines(std::string& out, const std::string& contig, int64_t start, const float* values, int64_t n) {
  out.clear();
  out.reserve(size_t(n) * (contig.size() + 40));
  char buf[64];
  for (int64_t i = 0; i < n; ++i) {
    char* p = buf;
    *p++ = '\t';
    p = std::to_chars(p, p + 20, start + i).ptr;
    *p++ = '\t';
    p = std::to_chars(p, p + 20, start + i + 1).ptr;
    *p++ = '\t';
    p = format_track_value(p, values[i]);
    *p++ = '\n';
    out.append(contig);
    out.append(buf, size_t(p - buf));
  }
}

}  // namespace

void BedGraphWriter::add_run(const std::string& contig, int64_t start, const float* values, int64_t n) {
  if (n <= 0) return;
  if (start < 0) throw Error(out_.path() + ": negative position " + std::to_string(start) + " on " + contig);
  // About 0.5 us a line with to_chars' 7-digit general format: split long runs over threads.
  constexpr int64_t kLinesPerPart = 1 << 15;
  const int64_t hw = std::max<int64_t>(1, int64_t(std::thread::hardware_concurrency()));
  const int64_t nparts = std::min<int64_t>(std::min<int64_t>(hw, 32), (n + kLinesPerPart - 1) / kLinesPerPart);
  if (int64_t(parts_.size()) < nparts) parts_.resize(size_t(nparts));
  const int64_t per = (n + nparts - 1) / nparts;
  auto part = [&](int64_t k) {
    const int64_t b = k * per, e = std::min(n, b + per);
    format_lines(parts_[size_t(k)], contig, start + b, values + b, std::max<int64_t>(0, e - b));
  };
  std::vector<std::thread> pool;
  for (int64_t k = 1; k < nparts; ++k) pool.emplace_back(part, k);
  part(0);
  for (auto& t : pool) t.join();
  for (int64_t k = 0; k < nparts; ++k) out_.write(parts_[size_t(k)]);
}

void BedGraphWriter::close() { out_.close(); }

}  // namespace dnamba::io
