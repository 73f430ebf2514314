#include "train/sampler.h"

#include <algorithm>

#include "common/error.h"
#include "model/tokenizer.h"

namespace dnamba::train {

WindowSampler::WindowSampler(const std::vector<std::string>& fastas, const std::vector<std::string>& held_out,
                             const SamplerOptions& opt)
    : opt_(opt), paths_(fastas) {
  if (fastas.empty()) throw Error("training needs at least one --ref FASTA");
  DNAMBA_CHECK(opt_.window >= 2, "sampler: window must be at least 2 bases");
  if (!(opt_.max_n_frac >= 0 && opt_.max_n_frac <= 1)) throw Error("--max-n-frac must be between 0 and 1");
  std::vector<std::vector<std::pair<std::string, int64_t>>> per_file;
  for (size_t f = 0; f < fastas.size(); ++f) {
    readers_.push_back(std::make_unique<io::FastaReader>(fastas[f]));
    auto& r = *readers_.back();
    in_memory_.emplace_back();
    std::vector<std::pair<std::string, int64_t>> cs;
    if (r.indexed()) {
      for (auto& c : r.contigs()) cs.push_back({c.name, c.length});
    } else {
      // No .fai: read the file once into memory (fine for small genomes; index large ones).
      io::SequencePiece p;
      while (r.next(p, int64_t(1) << 22)) {
        if (p.segment_start) in_memory_[f].push_back({p.contig, std::string()});
        in_memory_[f].back().second += p.seq;
      }
      for (auto& [n, s] : in_memory_[f]) cs.push_back({n, int64_t(s.size())});
    }
    per_file.push_back(cs);
  }
  auto is_contig = [&](const std::string& name) {
    for (auto& cs : per_file)
      for (auto& c : cs)
        if (c.first == name) return true;
    return false;
  };
  for (auto& s : held_out) {
    io::Region r = io::parse_region(s, is_contig);
    if (!is_contig(r.contig)) throw Error("--val-region " + s + ": no contig '" + r.contig + "' in the --ref files");
    int64_t len = -1;
    for (auto& cs : per_file)
      for (auto& c : cs)
        if (c.first == r.contig && len < 0) len = c.second;
    if (r.end < 0) r.end = len;
    if (r.end > len) throw Error("--val-region " + s + ": ends past the end of " + r.contig + " (" + std::to_string(len) + " bp)");
    if (r.end - r.beg < 2) throw Error("--val-region " + s + ": needs at least 2 bases");
    held_out_.push_back(r);
    held_out_names_.push_back(s);
  }
  const int64_t W = opt_.window;
  for (size_t f = 0; f < per_file.size(); ++f)
    for (auto& [name, length] : per_file[f]) {
      Contig c{f, name, length, {}, 0};
      if (length < W) continue;
      // Allowed starts [0, length-W], minus (beg-W, end) of every held-out region of this contig.
      std::vector<std::pair<int64_t, int64_t>> cut;
      for (auto& r : held_out_)
        if (r.contig == name) cut.push_back({std::max<int64_t>(0, r.beg - W + 1), r.end});
      std::sort(cut.begin(), cut.end());
      int64_t pos = 0;
      const int64_t last = length - W + 1;  // exclusive
      for (auto& [b, e] : cut) {
        if (b > pos) c.starts.push_back({pos, std::min(b, last)});
        pos = std::max(pos, e);
        if (pos >= last) break;
      }
      if (pos < last) c.starts.push_back({pos, last});
      c.starts.erase(std::remove_if(c.starts.begin(), c.starts.end(), [](auto& iv) { return iv.second <= iv.first; }),
                     c.starts.end());
      for (auto& [b, e] : c.starts) c.n_starts += e - b;
      if (c.n_starts == 0) continue;
      total_starts_ += c.n_starts;
      cum_starts_.push_back(total_starts_);
      contigs_.push_back(std::move(c));
    }
  if (total_starts_ == 0)
    throw Error("no training windows of " + std::to_string(W) + " bases: every contig of the --ref files is shorter "
                "or held out (lower --seq-len)");
}

WindowSampler::~WindowSampler() = default;

void WindowSampler::fetch(const Contig& c, int64_t beg, int64_t len, std::string& out) {
  out.clear();
  auto& r = *readers_[c.file];
  if (!r.indexed()) {
    for (auto& [n, s] : in_memory_[c.file])
      if (n == c.name) {
        out.assign(s, size_t(beg), size_t(len));
        return;
      }
    throw Error(paths_[c.file] + ": contig " + c.name + " vanished");
  }
  r.set_regions({io::Region{c.name, beg, beg + len}});
  io::SequencePiece p;
  while (r.next(p, len)) out += p.seq;
  if (int64_t(out.size()) != len)
    throw Error(paths_[c.file] + ": read " + std::to_string(out.size()) + " bases of " + c.name + ":" +
                std::to_string(beg + 1) + "-" + std::to_string(beg + len) + ", expected " + std::to_string(len));
}

void WindowSampler::sample(std::mt19937_64& rng, std::vector<int32_t>& tokens) {
  const int64_t W = opt_.window;
  const int64_t max_n = int64_t(opt_.max_n_frac * double(W));
  for (int attempt = 0;; ++attempt) {
    if (attempt == 100000)
      throw Error("100000 windows in a row had more than --max-n-frac " + std::to_string(opt_.max_n_frac) +
                  " non-ACGT bases: the --ref files are mostly N");
    // Uniform over all allowed starts of all contigs.
    const int64_t k = std::uniform_int_distribution<int64_t>(0, total_starts_ - 1)(rng);
    const bool rc = opt_.reverse_complement && (rng() & 1);
    const size_t ci = size_t(std::upper_bound(cum_starts_.begin(), cum_starts_.end(), k) - cum_starts_.begin());
    const Contig& c = contigs_[ci];
    int64_t off = k - (ci ? cum_starts_[ci - 1] : 0), start = -1;
    for (auto& [b, e] : c.starts) {
      if (off < e - b) {
        start = b + off;
        break;
      }
      off -= e - b;
    }
    fetch(c, start, W, buf_);
    tokenize(buf_, tokens);
    int64_t n = 0;
    for (auto t : tokens) n += t == kTokN;
    if (n > max_n) {
      ++redrawn_;
      continue;
    }
    if (rc) {
      std::reverse(tokens.begin(), tokens.end());
      for (auto& t : tokens) t = complement_token(t);
    }
    last_ = Origin{c.name, start, rc};
    return;
  }
}

std::vector<int32_t> WindowSampler::region_tokens(size_t i) {
  const io::Region& r = held_out_.at(i);
  for (auto& c : contigs_)
    if (c.name == r.contig) {
      fetch(c, r.beg, r.end - r.beg, buf_);
      std::vector<int32_t> t;
      tokenize(buf_, t);
      return t;
    }
  // The contig has no training windows (all held out or short): read it directly.
  for (size_t f = 0; f < readers_.size(); ++f) {
    Contig c{f, r.contig, 0, {}, 0};
    bool has = false;
    if (readers_[f]->indexed()) has = readers_[f]->contig_length(r.contig) >= 0;
    else
      for (auto& [n, s] : in_memory_[f]) has = has || n == r.contig;
    if (!has) continue;
    fetch(c, r.beg, r.end - r.beg, buf_);
    std::vector<int32_t> t;
    tokenize(buf_, t);
    return t;
  }
  throw Error("held-out region " + held_out_names_.at(i) + ": contig not found");
}

}  // namespace dnamba::train
