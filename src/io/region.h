// Genomic regions: samtools-style region strings and BED files.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace dnamba::io {

// 0-based, half-open [beg, end). end == -1 means "to the end of the contig"; the reader resolves it.
struct Region {
  std::string contig;
  int64_t beg = 0;
  int64_t end = -1;
};

// Parses a samtools-style region, 1-based inclusive: "chr", "chr:100" (100 to the end), "chr:100-200",
// "chr:100-", "chr:-200"; numbers may contain commas ("chr:1,000-2,000"). "{name}:100-200" quotes a
// contig name that contains ':'. Without a predicate the last ':' splits name from range; a string
// whose part after the last ':' is not a range is an Error (use the predicate overload for such
// names). Bad syntax (beg > end, beg < 1, non-numbers, empty name) -> Error naming the string.
Region parse_region(const std::string& s);

// As above, but first asks is_contig about the whole string (samtools does the same): our data have
// contigs named like "chr13:32315508-32400268", which must not be read as a range of "chr13".
Region parse_region(const std::string& s, const std::function<bool(const std::string&)>& is_contig);

// Reads a BED file (0-based half-open; plain or gzip/bgzip; "-" is stdin). Blank, '#', "track" and
// "browser" lines are skipped; columns after the third are ignored; fields are split on tabs or
// spaces. start == end is accepted (an empty region, which readers skip).
// A bad line -> Error "PATH:LINE: what is wrong".
std::vector<Region> read_bed(const std::string& path);

}  // namespace dnamba::io
