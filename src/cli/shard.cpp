#include "cli/shard.h"

#include <htslib/hts.h>
#include <htslib/kstring.h>
#include <htslib/vcf.h>

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace dnamba::cli {

namespace {

bool parse_count(const std::string& t, int64_t& v) {
  if (t.empty() || t.size() > 7) return false;
  v = 0;
  for (char c : t) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + (c - '0');
  }
  return true;
}

}  // namespace

Shard parse_shard(const std::string& s) {
  const auto bad = [&](const std::string& why) {
    return Error("--shard '" + s + "': " + why + " (expected I/N with 1 <= I <= N, e.g. 1/4)");
  };
  auto slash = s.find('/');
  if (slash == std::string::npos) throw bad("no '/'");
  Shard r;
  if (!parse_count(s.substr(0, slash), r.index) || !parse_count(s.substr(slash + 1), r.count))
    throw bad("not two whole numbers");
  if (r.count < 1 || r.count > 1000000) throw bad("N must be between 1 and 1000000");
  if (r.index < 1 || r.index > r.count) throw bad("I must be between 1 and N (shards are numbered from 1)");
  return r;
}

void add_shard_option(boost::program_options::options_description& d, std::string& spec) {
  d.add_options()("shard", boost::program_options::value(&spec)->value_name("I/N"),
                  "do only part I of N (1-based) of the work; the outputs of parts 1..N, concatenated "
                  "in order, equal the output of one run without --shard");
}

std::pair<int64_t, int64_t> shard_item_range(int64_t total, const Shard& s) {
  // 128-bit products: total * count may pass 2^63 for absurd inputs, never for real ones.
  auto at = [&](int64_t k) { return int64_t((__int128)total * k / s.count); };
  return {at(s.index - 1), at(s.index)};
}

std::vector<io::Region> resolve_segments(const io::FastaReader& reader, const std::vector<io::Region>& regions) {
  if (!reader.indexed())
    throw Error(reader.path() + ": --shard needs an indexed FASTA (make the .fai with `samtools faidx " +
                reader.path() + "`)");
  std::vector<io::Region> segs;
  if (regions.empty()) {
    for (auto& c : reader.contigs()) segs.push_back({c.name, 0, c.length});
    return segs;
  }
  for (auto r : regions) {
    int64_t len = reader.contig_length(r.contig);
    if (len < 0) throw Error(reader.path() + ": no contig '" + r.contig + "' (region " + r.contig + ")");
    if (r.end == -1) r.end = len;
    if (r.end > len || r.beg > r.end)
      throw Error(reader.path() + ": region " + r.contig + ":" + std::to_string(r.beg + 1) + "-" +
                  std::to_string(r.end) + " is past the end of " + r.contig + " (" + std::to_string(len) +
                  " bases)");
    segs.push_back(r);
  }
  return segs;
}

std::vector<io::Region> shard_segments(const std::vector<io::Region>& segments, const Shard& s) {
  if (s.whole()) return segments;
  __int128 total = 0;
  for (auto& r : segments) {
    DNAMBA_CHECK(r.end >= r.beg && r.beg >= 0, "shard_segments needs resolved segments");
    total += r.end - r.beg;
  }
  std::vector<io::Region> out;
  __int128 c = 0;
  for (auto& r : segments) {
    __int128 l = r.end - r.beg;
    // Shard of the midpoint c + l/2, in doubled units to stay in integers; zero-length segments
    // (which produce nothing) follow the same rule. All bases empty: everything goes to shard 1.
    int64_t k = total == 0 ? 0 : int64_t(s.count * (2 * c + l) / (2 * total));
    if (k >= s.count) k = s.count - 1;
    if (k == s.index - 1) out.push_back(r);
    c += l;
  }
  return out;
}

namespace {

// Counting pass: the number of records, and the record indices before which a shard may start.
struct VcfCuts {
  int64_t total = 0;
  std::vector<int64_t> allowed;  // ascending, starts with 0
};

VcfCuts scan_vcf_cuts(const std::string& path, int64_t segment) {
  htsFile* fp = hts_open(path.c_str(), "r");
  if (!fp) throw Error(path + ": cannot open");
  bcf_hdr_t* hdr = bcf_hdr_read(fp);
  if (!hdr) {
    hts_close(fp);
    throw Error(path + ": cannot read the VCF/BCF header");
  }
  VcfCuts c;
  bcf1_t* rec = bcf_init();
  int ret, prev_rid = -1;
  int64_t prev_seg = -1, max_rev = -1;
  while ((ret = bcf_read(fp, hdr, rec)) == 0) {
    bcf_unpack(rec, BCF_UN_STR);
    const int64_t p = rec->pos;
    const int64_t lr = rec->n_allele > 0 ? std::max<int64_t>(1, int64_t(std::strlen(rec->d.allele[0]))) : 1;
    const int64_t seg = p / segment, rev = (p + lr - 1) / segment;  // forward and reverse-strand segments
    if (rec->rid != prev_rid) {
      c.allowed.push_back(c.total);
      max_rev = rev;
    } else {
      // Every later record has both segments >= seg: a cut here splits no group of either strand.
      if (seg > prev_seg && max_rev < seg) c.allowed.push_back(c.total);
      max_rev = std::max(max_rev, rev);
    }
    prev_rid = rec->rid;
    prev_seg = seg;
    ++c.total;
  }
  bcf_destroy(rec);
  bcf_hdr_destroy(hdr);
  hts_close(fp);
  if (ret < -1) throw Error(path + ": cannot read record " + std::to_string(c.total + 1));
  if (c.allowed.empty()) c.allowed.push_back(0);
  return c;
}

}  // namespace

VcfShardCopy::VcfShardCopy(const std::string& path, const Shard& s, int64_t segment) {
  if (path == "-") throw Error("--shard needs the VCF/BCF as a file, not stdin (it is read twice)");
  DNAMBA_CHECK(segment >= 1, "VcfShardCopy needs segment >= 1");
  const VcfCuts cuts = scan_vcf_cuts(path, segment);
  total = cuts.total;
  const auto snap = [&](int64_t i) {  // first allowed cut >= i, or total
    auto it = std::lower_bound(cuts.allowed.begin(), cuts.allowed.end(), i);
    return it == cuts.allowed.end() ? total : *it;
  };
  auto [b, e] = shard_item_range(total, s);
  begin = snap(b);
  end = snap(e);
  std::string dir = std::filesystem::temp_directory_path().string();
  std::string templ = dir + "/dnamba-shard-XXXXXX";
  int fd = mkstemp(templ.data());
  if (fd < 0) throw Error(dir + ": cannot create a temporary file for --shard");
  close(fd);
  tmp_ = templ;
  htsFile* in = hts_open(path.c_str(), "r");
  htsFile* out = hts_open(tmp_.c_str(), "wbu");
  bcf_hdr_t* hdr = in ? bcf_hdr_read(in) : nullptr;
  bcf1_t* rec = bcf_init();
  std::string err;
  if (!in || !hdr) err = path + ": cannot read the VCF/BCF header";
  else if (!out || bcf_hdr_write(out, hdr) < 0) err = tmp_ + ": cannot write";
  int64_t i = 0;
  int ret = 0;
  while (err.empty() && i < end && (ret = bcf_read(in, hdr, rec)) == 0) {
    if (i >= begin && bcf_write(out, hdr, rec) < 0) err = tmp_ + ": write error";
    ++i;
  }
  if (err.empty() && ret < -1) err = path + ": cannot read record " + std::to_string(i + 1);
  if (err.empty() && i < end) err = path + ": changed while it was read (" + std::to_string(i) + " records, " +
                                     std::to_string(total) + " counted)";
  bcf_destroy(rec);
  if (hdr) bcf_hdr_destroy(hdr);
  if (in) hts_close(in);
  if (out && hts_close(out) != 0 && err.empty()) err = tmp_ + ": write error";
  if (!err.empty()) {
    std::remove(tmp_.c_str());
    throw Error(err);
  }
}

VcfShardCopy::~VcfShardCopy() {
  if (!tmp_.empty()) std::remove(tmp_.c_str());
}

}  // namespace dnamba::cli
