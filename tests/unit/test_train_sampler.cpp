// The training-window sampler and the learning-rate schedule.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "common/error.h"
#include "model/tokenizer.h"
#include "train/sampler.h"
#include "train/trainer.h"

using namespace dnamba;
using namespace dnamba::train;

namespace {

std::string lambda_fa() { return std::string(DNAMBA_TESTDATA_DIR) + "/lambda_virus.fa"; }
const char* kLambda = "gi|9626243|ref|NC_001416.1|";

std::string read_lambda() {
  std::ifstream in(lambda_fa());
  std::string line, seq;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '>') seq += line;
  return seq;
}

}  // namespace

TEST(TrainSampler, HeldOutRegionsAreNeverSampledAndBothStrandsAre) {
  SamplerOptions o;
  o.window = 300;
  // 1-based inclusive 20001-30000 -> 0-based [20000, 30000)
  WindowSampler s({lambda_fa()}, {std::string(kLambda) + ":20001-30000"}, o);
  const std::string seq = read_lambda();
  const int64_t L = int64_t(seq.size());
  EXPECT_EQ(s.trainable_starts(), (L - 300 + 1) - (30000 - (20000 - 300 + 1)));
  std::mt19937_64 rng(5);
  std::vector<int32_t> tok;
  int rc = 0, near_left = 0, near_right = 0;
  for (int i = 0; i < 3000; ++i) {
    s.sample(rng, tok);
    const auto& w = s.last_origin();
    ASSERT_EQ(int64_t(tok.size()), 300);
    EXPECT_TRUE(w.start + 300 <= 20000 || w.start >= 30000) << w.start;
    EXPECT_TRUE(w.start >= 0 && w.start + 300 <= L);
    near_left += w.start + 300 > 19000 && w.start + 300 <= 20000;
    near_right += w.start >= 30000 && w.start < 31000;
    std::vector<int32_t> fwd;
    tokenize(std::string_view(seq).substr(size_t(w.start), 300), fwd);
    if (w.reverse) {
      ++rc;
      for (size_t k = 0; k < 300; ++k) ASSERT_EQ(tok[k], complement_token(fwd[299 - k]));
    } else {
      ASSERT_EQ(tok, fwd);
    }
  }
  EXPECT_GT(rc, 1300);
  EXPECT_LT(rc, 1700);
  EXPECT_GT(near_left, 10);  // windows come right up to the held-out region on both sides
  EXPECT_GT(near_right, 10);
  auto v = s.region_tokens(0);
  std::vector<int32_t> want;
  tokenize(std::string_view(seq).substr(20000, 10000), want);
  EXPECT_EQ(v, want);
}

TEST(TrainSampler, WindowsWithTooManyNAreRedrawn) {
  // An unindexed FASTA: half of the contig is N.
  const std::string path = testing::TempDir() + "/dnamba_sampler_" + std::to_string(getpid()) + ".fa";
  {
    std::ofstream f(path);
    f << ">a\n" << std::string(2000, 'N') << std::string(2000, 'a') << "\n>short\nACGT\n";
  }
  SamplerOptions o;
  o.window = 100;
  o.max_n_frac = 0.05;
  WindowSampler s({path}, {}, o);
  std::mt19937_64 rng(1);
  std::vector<int32_t> tok;
  for (int i = 0; i < 200; ++i) {
    s.sample(rng, tok);
    int n = 0;
    for (auto t : tok) n += t == kTokN;
    EXPECT_LE(n, 5);
    EXPECT_EQ(s.last_origin().contig, "a");
  }
  EXPECT_GT(s.redrawn(), 50);
  std::filesystem::remove(path);
}

TEST(TrainSampler, Errors) {
  SamplerOptions o;
  o.window = 100;
  EXPECT_THROW(WindowSampler({lambda_fa()}, {"nosuchcontig:1-100"}, o), dnamba::Error);
  o.window = 100000;
  EXPECT_THROW(WindowSampler({lambda_fa()}, {}, o), dnamba::Error);
  EXPECT_THROW(WindowSampler({}, {}, o), dnamba::Error);
}

TEST(TrainSchedule, WarmupThenCosine) {
  TrainOptions o;
  o.lr = 1.0;
  o.min_lr_ratio = 0.1;
  o.warmup = 10;
  o.steps = 110;
  EXPECT_DOUBLE_EQ(lr_at(o, 1), 0.1);
  EXPECT_DOUBLE_EQ(lr_at(o, 10), 1.0);
  EXPECT_NEAR(lr_at(o, 60), 0.55, 1e-12);
  EXPECT_NEAR(lr_at(o, 110), 0.1, 1e-12);
  for (int64_t s = 11; s < 110; ++s) EXPECT_GT(lr_at(o, s), lr_at(o, s + 1));
}
