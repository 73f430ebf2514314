// Caduceus over long inputs (overlapping windows keeping each window's centre) and the masked-LM
// library calls used by score/embed.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "io/fasta.h"
#include "model/caduceus.h"
#include "model/tokenizer.h"
#include "pipeline/caduceus_track.h"
#include "test_util.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {

std::vector<int32_t> random_tokens(int64_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = kTokA + int32_t(g() % 4);
  for (int64_t i = n / 3; i < n / 3 + 25 && i < n; ++i) t[size_t(i)] = kTokN;
  return t;
}

std::vector<float> seq_stats(CaduceusModel& m, const std::vector<int32_t>& t, int64_t W, int64_t O,
                             MaskMode mask = MaskMode::None, int64_t tokens_per_call = int64_t(1) << 20) {
  CaduceusTrackOptions o;
  o.window = W;
  o.overlap = O;
  o.mask = mask;
  o.tokens_per_call = tokens_per_call;
  std::vector<float> s(t.size() * 5);
  caduceus_sequence_logprobs(m, t.data(), int64_t(t.size()), o, s.data());
  return s;
}

double max_diff_col0(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); i += 5) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}

}  // namespace

TEST(CaduceusWindows, PlanKeepsCentresAndCoversEveryBase) {
  for (int64_t n : {1, 99, 100, 101, 1000, 1234}) {
    for (auto [W, O] : std::vector<std::pair<int64_t, int64_t>>{{100, 0}, {100, 40}, {100, 99}, {64, 32}}) {
      auto w = plan_windows(n, W, O);
      ASSERT_FALSE(w.empty());
      EXPECT_EQ(w.front().keep_begin, 0);
      EXPECT_EQ(w.back().keep_end, n);
      for (size_t k = 0; k < w.size(); ++k) {
        EXPECT_LE(w[k].start, w[k].keep_begin);
        EXPECT_GE(w[k].start + w[k].len, w[k].keep_end);
        EXPECT_EQ(w[k].len, std::min(n, W));
        if (k) {
          EXPECT_EQ(w[k].keep_begin, w[k - 1].keep_end);
          // Every interior boundary leaves >= overlap/2 bases of context on both sides.
          EXPECT_GE(w[k].keep_begin - w[k].start, O / 2);
          EXPECT_GE(w[k - 1].start + W - w[k - 1].keep_end, O / 2);
        }
      }
    }
  }
  EXPECT_THROW(plan_windows(10, 10, 10), Error);
  EXPECT_THROW(plan_windows(10, 0, 0), Error);
}

// Kept-centre results do not depend on where the windows fall: windowed runs (several window sizes,
// overlaps and so placements) against one window over the whole 3000-base sequence.
// Measured on the golden tiny models (random weights, 2 layers), max |diff| of log p(ref) over all
// bases of a 3000-base sequence:
//   PS: W 1024/O 256: 1.1e-5;  W 700/O 200: 2.4e-5;  W 400/O 160: 7.5e-5;  W 300/O 64: 5.7e-4
//   Ph: W 1024/O 256: 1.9e-4;  W 700/O 200: 2.7e-4;  W 400/O 160: 5.7e-4;  W 300/O 64: 1.1e-2
// The error falls off with the context each kept base keeps (>= overlap/2 on each side); these random
// models forget slowly (small dt), trained ones with 131 kb windows keep >= 16 kb per side by default.
// The test runs a 2000-base sequence with bounds of about 4x the figures above.
TEST(CaduceusWindows, KeptCentresIndependentOfPlacement) {
  struct Case {
    int64_t W, O;
    double tol_ps, tol_ph;
  };
  for (std::string name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string dir = test::golden(name);
    if (!fs::exists(dir)) GTEST_SKIP();
    CpuBackend be(1);
    CaduceusModel m(dir, be);
    auto t = random_tokens(2000, 5);
    auto whole = seq_stats(m, t, 4096, 0);
    for (Case c : {Case{700, 200, 1e-4, 1.2e-3}, Case{400, 160, 3e-4, 2.5e-3}, Case{300, 64, 2.5e-3, 4e-2}}) {
      auto s = seq_stats(m, t, c.W, c.O);
      double d = max_diff_col0(s, whole);
      std::printf("%s window %lld overlap %lld: max |diff| %.3g\n", name.c_str(), (long long)c.W, (long long)c.O, d);
      EXPECT_LT(d, name == "caduceus_ps_tiny" ? c.tol_ps : c.tol_ph) << name << " W " << c.W << " O " << c.O;
    }
  }
}

// The streaming FASTA path gives exactly the in-memory windowed result (window bookkeeping across
// pieces), and --mask each batched equals unbatched.
TEST(CaduceusWindows, StreamingEqualsInMemoryAndMaskEachBatching) {
  const std::string dir = test::golden("caduceus_ph_tiny");
  if (!fs::exists(dir)) GTEST_SKIP();
  CpuBackend be(1);
  CaduceusModel m(dir, be);
  auto t = random_tokens(2503, 9);
  std::string fa = (fs::temp_directory_path() / ("dnamba_cad_stream_" + std::to_string(::getpid()) + ".fa")).string();
  {
    std::ofstream f(fa);
    f << ">a\n";
    for (size_t i = 0; i < t.size(); ++i) f << token_to_base(t[i]) << ((i % 70 == 69) ? "\n" : "");
    f << "\n>b\nACGTACGTTTGCA\n";
  }
  CaduceusTrackOptions o;
  o.window = 400;
  o.overlap = 160;
  o.tokens_per_call = 400;  // batch 1: pieces of 1024 bases, windows completed across pieces
  o.quiet = true;
  io::FastaReader r(fa);
  std::vector<float> got;
  std::vector<std::string> contigs;
  int64_t next = 0;
  stream_caduceus_logprobs(m, r, o, [&](const BaseLogProbs& b) {
    if (*b.contig == "a") {
      EXPECT_EQ(b.start, next);
      next = b.start + b.n;
      got.insert(got.end(), b.stats, b.stats + 5 * b.n);
    } else {
      EXPECT_EQ(b.n, 13);
    }
  });
  auto want = seq_stats(m, t, 400, 160);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(test::max_abs_diff(got, want), 1e-5);  // batch 1 vs batched: BLAS rounding only
  fs::remove(fa);

  std::vector<int32_t> shortseq(t.begin(), t.begin() + 60);
  auto a = seq_stats(m, shortseq, 1000, 0, MaskMode::Each, 60 * 16);
  auto b = seq_stats(m, shortseq, 1000, 0, MaskMode::Each, 60);
  EXPECT_LT(test::max_abs_diff(a, b), 1e-5);
  auto w = seq_stats(m, shortseq, 40, 20, MaskMode::Each, 40 * 7);  // windows + mask each
  EXPECT_LT(max_diff_col0(w, a), 0.5);  // sanity only (a short window changes the context)
}

// Variant LLR: PS is RC-equivariant, so the strand average changes nothing; Ph averages the two
// strands, which equals the mean of the forward and the mirrored reverse-complement masked queries.
TEST(CaduceusScore, MaskedLlrAndStrandAveraging) {
  for (std::string name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string dir = test::golden(name);
    if (!fs::exists(dir)) GTEST_SKIP();
    CpuBackend be(1);
    CaduceusModel m(dir, be);
    auto t = random_tokens(301, 3);
    std::vector<MaskedQuery> q;
    std::vector<int32_t> ref, alt;
    for (int64_t pos : {0, 17, 150, 299, 300}) {
      q.push_back({t.data(), 301, pos});
      ref.push_back(t[size_t(pos)] == kTokN ? kTokA : t[size_t(pos)]);
      alt.push_back(ref.back() == kTokG ? kTokT : kTokG);
    }
    std::vector<float> one(q.size() * 4), avg(q.size() * 4), batched(q.size() * 4);
    caduceus_masked_acgt(m, q, false, 1 << 20, one.data());
    caduceus_masked_acgt(m, q, true, 1 << 20, avg.data());
    caduceus_masked_acgt(m, q, true, 301, batched.data());  // one query per call
    EXPECT_LT(test::max_abs_diff(avg, batched), 1e-5);
    auto rc = caduceus_reverse_complement(m, t.data(), 301);
    std::vector<MaskedQuery> qr;
    for (auto& x : q) qr.push_back({rc.data(), 301, 300 - x.pos});
    std::vector<float> rcl(q.size() * 4);
    caduceus_masked_acgt(m, qr, false, 1 << 20, rcl.data());
    auto llr = caduceus_masked_llr(m, q, ref, alt);
    for (size_t i = 0; i < q.size(); ++i) {
      const int r = ref[i] - kTokA, a = alt[i] - kTokA;
      const double f = one[i * 4 + a] - one[i * 4 + r];
      const double b = rcl[i * 4 + (3 - a)] - rcl[i * 4 + (3 - r)];  // complement: A<->T, C<->G
      if (name == "caduceus_ps_tiny") {
        EXPECT_NEAR(f, b, 1e-4) << "PS equivariance at " << q[i].pos;
        EXPECT_NEAR(llr[i], f, 1e-4);
      } else {
        EXPECT_NEAR(llr[i], 0.5 * (f + b), 1e-4) << "Ph strand average at " << q[i].pos;
      }
    }
    // Not A,C,G,T -> NaN
    auto bad = caduceus_masked_llr(m, {q[0]}, {kTokN}, {kTokA});
    EXPECT_TRUE(std::isnan(bad[0]));
  }
}

// embed: PS mean of the forward half and the channel-reversed RC half; Ph mean over both strand passes;
// both make the embedding of a sequence equal the position-mirrored embedding of its reverse complement.
TEST(CaduceusEmbed, RcAveragedEmbeddingsAreStrandSymmetric) {
  for (std::string name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string dir = test::golden(name);
    if (!fs::exists(dir)) GTEST_SKIP();
    CpuBackend be(1);
    CaduceusModel m(dir, be);
    const int64_t L = 257, D = m.config().d_model;
    auto t = random_tokens(L, 4);
    auto rc = caduceus_reverse_complement(m, t.data(), L);
    std::vector<float> a(size_t(L * D)), b(size_t(L * D));
    caduceus_embed_window(m, t.data(), L, true, a.data());
    caduceus_embed_window(m, rc.data(), L, true, b.data());
    double mx = 0;
    for (int64_t i = 0; i < L; ++i)
      for (int64_t c = 0; c < D; ++c) mx = std::max(mx, std::fabs(double(a[size_t(i * D + c)]) - b[size_t((L - 1 - i) * D + c)]));
    EXPECT_LT(mx, 1e-4) << name;
  }
}
