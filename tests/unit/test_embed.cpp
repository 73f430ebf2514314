// dnamba embed's engine: pooling against a plain computation, FASTA and read streaming against one
// in-memory forward of the whole sequence, hidden layers against the golden reference.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/mamba_lm.h"
#include "model/tokenizer.h"
#include "pipeline/embed_stream.h"
#include "test_util.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {

struct Collected {
  std::vector<EmbedRow> rows;
  std::vector<float> vals;
  EmbedSink sink(int64_t d) {
    return [this, d](const EmbedRow* r, const float* v, int64_t n) {
      rows.insert(rows.end(), r, r + n);
      vals.insert(vals.end(), v, v + n * d);
    };
  }
};

std::string tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("dnamba_test_embed_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// The whole sequence in one forward call (no chunking): the in-memory reference.
std::vector<float> forward_whole(MambaLM& m, const std::string& seq, int64_t layer) {
  std::vector<int32_t> ids;
  tokenize(seq, ids);
  const int64_t n = int64_t(ids.size()), D = m.config().d_model;
  auto st = m.new_state(1);
  Tensor t = m.backend().alloc(n, 1, DType::I32);
  m.backend().to_device(t, ids.data());
  Tensor h = m.backend().alloc(n, D);
  m.forward_layer(t, 1, n, st, layer, h);
  std::vector<float> out(size_t(n * D));
  m.backend().to_host(h, out.data());
  return out;
}

std::string random_dna(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, 'A');
  for (auto& c : s) c = "ACGTacgtN"[rng() % 9];
  return s;
}

}  // namespace

TEST(EmbedPooling, Parse) {
  EXPECT_EQ(parse_pooling("none").kind, EmbedPooling::Kind::None);
  EXPECT_EQ(parse_pooling("mean").kind, EmbedPooling::Kind::Mean);
  auto w = parse_pooling("window:100");
  EXPECT_EQ(w.window, 100);
  EXPECT_EQ(w.step, 100);
  w = parse_pooling("window:100:25");
  EXPECT_EQ(w.step, 25);
  EXPECT_EQ(w.str(), "window:100:25");
  for (const char* bad : {"", "max", "window", "window:", "window:0", "window:10:0", "window:10:", "window:x", "window:5:3:1", "window:-4"})
    EXPECT_THROW(parse_pooling(bad), Error) << bad;
}

// Pooled rows equal a plain computation over per-base rows, whatever the pieces fed to the pooler.
TEST(EmbedPooling, MatchesPlainComputation) {
  const int64_t D = 3;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-2, 2);
  for (const char* spec : {"none", "mean", "window:1", "window:7", "window:7:3", "window:4:9", "window:50", "window:10:10"}) {
    const EmbedPooling p = parse_pooling(spec);
    for (int64_t len : {1, 6, 7, 23, 100}) {
      std::vector<float> h(size_t(len * D));
      for (auto& x : h) x = u(rng);
      Collected c;
      SegmentPooler pooler(p, D, c.sink(D));
      pooler.begin(EmbedRow{2, 1000, 0, '+', -1});
      for (int64_t at = 0; at < len;) {
        int64_t n = std::min<int64_t>(len - at, 1 + rng() % 5);
        pooler.add(h.data() + at * D, n);
        at += n;
      }
      pooler.end();
      // Plain: the list of windows, then the mean over each.
      std::vector<std::pair<int64_t, int64_t>> win;
      if (p.kind == EmbedPooling::Kind::None)
        for (int64_t i = 0; i < len; ++i) win.push_back({i, i + 1});
      else if (p.kind == EmbedPooling::Kind::Mean)
        win.push_back({0, len});
      else
        for (int64_t s = 0; s < len; s += p.step) win.push_back({s, std::min(s + p.window, len)});
      ASSERT_EQ(c.rows.size(), win.size()) << spec << " len " << len;
      for (size_t k = 0; k < win.size(); ++k) {
        EXPECT_EQ(c.rows[k].start, 1000 + win[k].first);
        EXPECT_EQ(c.rows[k].end, 1000 + win[k].second);
        EXPECT_EQ(c.rows[k].contig, 2);
        for (int64_t d = 0; d < D; ++d) {
          double s = 0;
          for (int64_t i = win[k].first; i < win[k].second; ++i) s += h[size_t(i * D + d)];
          EXPECT_NEAR(c.vals[k * D + d], s / double(win[k].second - win[k].first), 1e-6) << spec;
        }
      }
    }
  }
}

TEST(EmbedLayers, LastLayerIsForwardAndMatchesGoldenHidden) {
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder";
  CpuBackend be(2);
  MambaLM m(dir, be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  auto ids64 = g.read_i64("input_ids");
  const int64_t L = g.info("input_ids").shape[1], D = m.config().d_model;
  std::string seq;
  for (int64_t t = 0; t < L; ++t) seq.push_back(token_to_base(int32_t(ids64[size_t(t)])));
  auto last = forward_whole(m, seq, m.config().n_layer);
  auto gold = g.read_f32("last_hidden");
  gold.resize(size_t(L * D));  // sequence 0
  EXPECT_LT(test::rel_err(last, gold), 1e-4);
  // forward() is forward_layer(n_layer).
  std::vector<int32_t> ids;
  tokenize(seq, ids);
  auto st = m.new_state(1);
  Tensor h = m.backend().alloc(L, D);
  m.forward_host(ids.data(), 1, L, st, h);
  std::vector<float> f(size_t(L * D));
  be.to_host(h, f.data());
  EXPECT_EQ(test::max_abs_diff(f, last), 0.0);
  // Layer 0 is the embedding table row of each token.
  auto emb = forward_whole(m, seq, 0);
  io::SafetensorsFile w(dir + "/model.safetensors");
  auto table = w.read_f32("backbone.embeddings.weight");
  for (int64_t t = 0; t < L; t += 97)
    for (int64_t d = 0; d < D; ++d) EXPECT_EQ(emb[size_t(t * D + d)], table[size_t(ids[size_t(t)] * D + d)]);
}

// embed_fasta over contigs and regions, in chunks, equals the whole-sequence forward of each segment.
TEST(EmbedFasta, ChunkedEqualsInMemory) {
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder";
  CpuBackend be(2);
  MambaLM m(dir, be);
  const int64_t D = m.config().d_model;
  const std::string tmp = tmpdir("fasta");
  const std::string s1 = random_dna(700, 1), s2 = random_dna(333, 2);
  {
    std::ofstream f(tmp + "/x.fa");
    f << ">one\n" << s1.substr(0, 350) << "\n" << s1.substr(350) << "\n>two desc\n" << s2 << "\n";
  }
  for (int64_t layer : {0, 1, 2}) {
    for (int64_t chunk : {int64_t(1) << 20, int64_t(64), int64_t(7)}) {
      if (chunk == 7 && layer != 1) continue;  // slow-ish; once is enough
      io::FastaReader r(tmp + "/x.fa");
      r.set_regions({io::Region{"two", 0, -1}, io::Region{"one", 100, 250}});
      EmbedOptions o;
      o.chunk = chunk;
      o.layer = layer;
      o.quiet = true;
      Collected c;
      auto st = embed_fasta(m, r, [](const std::string& n) { return n == "one" ? 0 : 1; }, o, c.sink(D));
      EXPECT_EQ(st.segments, 2);
      EXPECT_EQ(st.bases, 333 + 150);
      ASSERT_EQ(c.rows.size(), size_t(333 + 150));
      auto w2 = forward_whole(m, s2, layer), w1 = forward_whole(m, s1.substr(100, 150), layer);
      std::vector<float> want(w2);
      want.insert(want.end(), w1.begin(), w1.end());
      EXPECT_LT(test::max_abs_diff(c.vals, want), 1e-4) << "layer " << layer << " chunk " << chunk;
      EXPECT_EQ(c.rows[0].contig, 1);
      EXPECT_EQ(c.rows[333].contig, 0);
      EXPECT_EQ(c.rows[333].start, 100);
      EXPECT_EQ(c.rows[333 + 149].end, 250);
    }
  }
  fs::remove_all(tmp);
}

// Reads: sequenced orientation, filters, and batching that does not change any number.
TEST(EmbedReads, BatchedEqualsOneByOneAndInMemory) {
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder";
  CpuBackend be(2);
  MambaLM m(dir, be);
  const int64_t D = m.config().d_model;
  const std::string tmp = tmpdir("reads");
  std::vector<std::string> seqs = {random_dna(120, 3), random_dna(45, 4), random_dna(300, 5), random_dna(7, 6), random_dna(80, 7)};
  for (auto& s : seqs)
    for (auto& ch : s) ch = char(std::toupper(ch));
  auto revcomp = [](std::string s) {
    std::reverse(s.begin(), s.end());
    for (auto& c : s) c = c == 'A' ? 'T' : c == 'C' ? 'G' : c == 'G' ? 'C' : c == 'T' ? 'A' : c;
    return s;
  };
  {
    std::ofstream f(tmp + "/r.sam");
    f << "@SQ\tSN:chr1\tLN:10000\n";
    const int flags[] = {0, 16, 0, 4, 16};
    for (size_t i = 0; i < seqs.size(); ++i) {
      const bool rev = flags[i] & 16, un = flags[i] & 4;
      std::string stored = rev ? revcomp(seqs[i]) : seqs[i];
      f << "r" << i << "\t" << flags[i] << "\t" << (un ? "*" : "chr1") << "\t" << (un ? 0 : 100 + i) << "\t" << (un ? 0 : 60)
        << "\t" << (un ? "*" : std::to_string(stored.size()) + "M") << "\t*\t0\t0\t" << stored << "\t*\n";
      if (i == 1) f << "r1\t272\tchr1\t500\t0\t45M\t*\t0\t0\t*\t*\n";  // secondary without SEQ: skipped
    }
  }
  std::vector<float> first;
  for (int64_t batch : {1, 2, 8}) {
    io::ReadsReader r(tmp + "/r.sam", "", io::ReadFilter{});
    EmbedOptions o;
    o.chunk = batch == 1 ? 50 : 1000;  // batch 1: reads in pieces with state carry
    o.max_batch = batch;
    o.quiet = true;
    Collected c;
    std::vector<std::string> names;
    auto st = embed_reads(m, r, o, c.sink(D), [&](const io::ReadRecord& rec, int64_t i) {
      EXPECT_EQ(i, int64_t(names.size()));
      names.push_back(rec.name);
      EXPECT_EQ(rec.seq, seqs[names.size() - 1]);  // sequenced orientation
    });
    EXPECT_EQ(st.segments, 5);
    EXPECT_EQ(r.records_read(), 6);
    std::vector<float> want;
    for (auto& s : seqs) {
      auto w = forward_whole(m, s, m.config().n_layer);
      want.insert(want.end(), w.begin(), w.end());
    }
    ASSERT_EQ(c.vals.size(), want.size());
    EXPECT_LT(test::max_abs_diff(c.vals, want), 1e-4) << "batch " << batch;
    EXPECT_EQ(c.rows[120].strand, '-');
    EXPECT_EQ(c.rows[120].read, 1);
    EXPECT_EQ(c.rows[120].start, 0);
    EXPECT_EQ(c.rows[120 + 45 + 300].strand, '.');
    EXPECT_EQ(c.rows[120 + 45 + 300].contig, -1);
    if (first.empty()) first = c.vals;
    else EXPECT_LT(test::max_abs_diff(c.vals, first), 1e-5);
  }
  fs::remove_all(tmp);
}
