#include "io/region.h"

#include <htslib/bgzf.h>
#include <htslib/kstring.h>

#include <cerrno>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace dnamba::io {

namespace {

// Parses a non-negative decimal that may contain thousands commas ("1,000"). Returns false for an
// empty string, any other character, or a value that does not fit in int64.
bool parse_position(std::string_view text, int64_t& value) {
  int64_t v = 0;
  bool any_digit = false;
  for (char c : text) {
    if (c == ',') continue;
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<int64_t>::max() - (c - '0')) / 10) return false;
    v = v * 10 + (c - '0');
    any_digit = true;
  }
  if (!any_digit) return false;
  value = v;
  return true;
}

[[noreturn]] void bad_region(const std::string& s, const std::string& why) {
  throw Error("bad region '" + s + "': " + why);
}

// Parses "beg", "beg-", "beg-end" or "-end" (1-based inclusive) into r.beg/r.end (0-based half-open).
void parse_range(const std::string& whole, std::string_view range, Region& r) {
  size_t dash = range.find('-');
  std::string_view beg_text = range.substr(0, dash);
  std::string_view end_text = dash == std::string_view::npos ? std::string_view() : range.substr(dash + 1);
  int64_t beg1 = 1, end1 = -1;
  if (!beg_text.empty() && !parse_position(beg_text, beg1))
    bad_region(whole, "start '" + std::string(beg_text) + "' is not a number");
  if (beg_text.empty() && dash == std::string_view::npos) bad_region(whole, "empty range after ':'");
  if (!end_text.empty() && !parse_position(end_text, end1))
    bad_region(whole, "end '" + std::string(end_text) + "' is not a number");
  if (beg_text.empty() && end_text.empty()) bad_region(whole, "range '-' has neither start nor end");
  if (beg1 < 1) bad_region(whole, "start must be >= 1 (positions are 1-based)");
  if (end1 != -1 && beg1 > end1) bad_region(whole, "start is greater than end");
  r.beg = beg1 - 1;
  r.end = end1;  // 1-based inclusive end == 0-based exclusive end
}

}  // namespace

Region parse_region(const std::string& s) {
  return parse_region(s, nullptr);
}

Region parse_region(const std::string& s, const std::function<bool(const std::string&)>& is_contig) {
  if (s.empty()) bad_region(s, "empty string");
  Region r;
  if (is_contig && is_contig(s)) {
    r.contig = s;
    return r;
  }
  std::string_view range;
  if (s[0] == '{') {
    size_t close = s.find('}');
    if (close == std::string::npos) bad_region(s, "'{' without a matching '}'");
    r.contig = s.substr(1, close - 1);
    if (close + 1 < s.size()) {
      if (s[close + 1] != ':') bad_region(s, "expected ':' after '}'");
      range = std::string_view(s).substr(close + 2);
      parse_range(s, range, r);
    }
  } else {
    size_t colon = s.rfind(':');
    if (colon == std::string::npos) {
      r.contig = s;
    } else {
      r.contig = s.substr(0, colon);
      parse_range(s, std::string_view(s).substr(colon + 1), r);
    }
  }
  if (r.contig.empty()) bad_region(s, "empty contig name");
  return r;
}

std::vector<Region> read_bed(const std::string& path) {
  BGZF* fp = bgzf_open(path.c_str(), "r");
  if (!fp) throw Error(path + ": cannot open BED file: " + std::strerror(errno));
  kstring_t line = KS_INITIALIZE;
  std::vector<Region> regions;
  int64_t line_no = 0;
  auto fail = [&](const std::string& why) {
    std::string msg = path + ":" + std::to_string(line_no) + ": " + why;
    ks_free(&line);
    bgzf_close(fp);
    throw Error(msg);
  };
  int ret;
  while ((ret = bgzf_getline(fp, '\n', &line)) >= 0) {
    ++line_no;
    std::string_view text(line.s ? line.s : "", line.l);
    if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
    size_t first = text.find_first_not_of(" \t");
    if (first == std::string_view::npos || text[first] == '#') continue;
    if (text.substr(0, 5) == "track" || text.substr(0, 7) == "browser") {
      size_t kw = text[0] == 't' ? 5 : 7;
      if (text.size() == kw || text[kw] == ' ' || text[kw] == '\t') continue;
    }
    std::string_view fields[3];
    size_t n_fields = 0, pos = 0;
    while (n_fields < 3) {
      pos = text.find_first_not_of(" \t", pos);
      if (pos == std::string_view::npos) break;
      size_t stop = text.find_first_of(" \t", pos);
      if (stop == std::string_view::npos) stop = text.size();
      fields[n_fields++] = text.substr(pos, stop - pos);
      pos = stop;
    }
    if (n_fields < 3) fail("expected at least 3 columns (contig, start, end), found " + std::to_string(n_fields));
    Region r;
    r.contig = std::string(fields[0]);
    // BED numbers never contain commas; reject them so a pasted "1,000" is not silently accepted.
    if (fields[1].find(',') != std::string_view::npos || !parse_position(fields[1], r.beg))
      fail("start '" + std::string(fields[1]) + "' is not a non-negative integer");
    if (fields[2].find(',') != std::string_view::npos || !parse_position(fields[2], r.end))
      fail("end '" + std::string(fields[2]) + "' is not a non-negative integer");
    if (r.beg > r.end)
      fail("start " + std::string(fields[1]) + " is greater than end " + std::string(fields[2]));
    regions.push_back(std::move(r));
  }
  if (ret < -1) {
    ++line_no;
    fail("read error (truncated or corrupt compressed file?)");
  }
  ks_free(&line);
  if (bgzf_close(fp) < 0) throw Error(path + ": error closing BED file");
  return regions;
}

}  // namespace dnamba::io
