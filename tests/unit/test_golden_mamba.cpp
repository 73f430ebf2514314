// The causal golden folders of shared/golden reproduced by loading each folder as it is.
#include <gtest/gtest.h>

#include <filesystem>

#include "backend/cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/mamba_lm.h"
#include "test_util.h"

using namespace dnamba;

namespace {

struct GoldenRun {
  std::vector<float> logits, hidden;  // [B, L, V], [B, L, D]
};

// Runs every row of golden input_ids through the model in chunks of `chunk` tokens.
GoldenRun run_golden(MambaLM& m, const io::SafetensorsFile& g, int64_t chunk, int64_t batch_rows = -1) {
  auto ids64 = g.read_i64("input_ids");
  const auto& shp = g.info("input_ids").shape;
  const int64_t B = batch_rows > 0 ? batch_rows : shp[0], L = shp[1];
  const int64_t D = m.config().d_model, V = m.lm_head().rows;
  Backend& be = m.backend();
  GoldenRun r;
  r.logits.resize(size_t(B * L * V));
  r.hidden.resize(size_t(B * L * D));
  // All sequences as one batch: exercises batch>1 in every op.
  auto st = m.new_state(B);
  for (int64_t s = 0; s < L; s += chunk) {
    const int64_t n = std::min(chunk, L - s);
    std::vector<int32_t> ids(size_t(B * n));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t) ids[b * n + t] = int32_t(ids64[b * L + s + t]);
    Tensor hid = be.alloc(B * n, D);
    m.forward_host(ids.data(), B, n, st, hid);
    Tensor lp = be.alloc(B * n, V);
    be.linear(hid, m.lm_head(), nullptr, lp);
    std::vector<float> h(size_t(B * n * D)), l(size_t(B * n * V));
    be.to_host(hid, h.data());
    be.to_host(lp, l.data());
    for (int64_t b = 0; b < B; ++b) {
      std::copy_n(h.begin() + b * n * D, n * D, r.hidden.begin() + (b * L + s) * D);
      std::copy_n(l.begin() + b * n * V, n * V, r.logits.begin() + (b * L + s) * V);
    }
  }
  return r;
}

}  // namespace

class GoldenCausal : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenCausal, LogitsAndHiddenMatchReference) {
  const std::string dir = test::golden(GetParam());
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no golden folder " << dir;
  CpuBackend be(2);
  MambaLM m(dir, be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  auto ref_logits = g.read_f32("logits");
  for (int64_t chunk : {int64_t(1) << 30, int64_t(1000), int64_t(777), int64_t(13)}) {
    auto r = run_golden(m, g, chunk);
    double e = test::rel_err(r.logits, ref_logits);
    EXPECT_LT(e, 1e-4) << GetParam() << " logits, chunk " << chunk;
    if (g.has("last_hidden")) {
      double eh = test::rel_err(r.hidden, g.read_f32("last_hidden"));
      EXPECT_LT(eh, 1e-4) << GetParam() << " last_hidden, chunk " << chunk;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenCausal, ::testing::Values("hf_mamba_tiny", "mamba_ssm_tiny"));

TEST(GoldenCausalLong, TwentyThousandTokensChunked) {
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!std::filesystem::exists(dir + "/golden_long.safetensors")) GTEST_SKIP() << "no golden_long";
  CpuBackend be(2);
  MambaLM m(dir, be);
  io::SafetensorsFile g(dir + "/golden_long.safetensors");
  auto ref = g.read_f32("logits");
  for (int64_t chunk : {int64_t(1) << 30, int64_t(4096), int64_t(777)}) {
    auto r = run_golden(m, g, chunk);
    EXPECT_LT(test::rel_err(r.logits, ref), 1e-4) << "chunk " << chunk;
  }
}

// One token at a time (len 1, state carried every step) equals one pass.
TEST(StateCarry, TokenByTokenEqualsOnePass) {
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no golden folder";
  CpuBackend be(1);
  MambaLM m(dir, be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  auto ids64 = g.read_i64("input_ids");
  const int64_t L = 120, D = m.config().d_model;
  std::vector<int32_t> ids(ids64.begin(), ids64.begin() + L);
  auto st = m.new_state(1);
  Tensor whole = be.alloc(L, D);
  m.forward_host(ids.data(), 1, L, st, whole);
  std::vector<float> a(size_t(L * D)), b(size_t(L * D));
  be.to_host(whole, a.data());
  m.reset_state(st);
  Tensor one = be.alloc(1, D);
  for (int64_t t = 0; t < L; ++t) {
    m.forward_host(&ids[size_t(t)], 1, 1, st, one);
    be.to_host(one, b.data() + t * D);
  }
  EXPECT_LT(test::rel_err(b, a), 1e-5);
}
