// The whole model on the GPU: the causal golden folders (fp32 within 1e-4, bf16 within 2e-2),
// chunked runs equal to one pass, and `dnamba track` on the GPU equal to the CPU.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gpu_test_util.h"
#include "io/safetensors.h"
#include "model/mamba_lm.h"

using namespace dnamba;
using namespace dnamba::gputest;
namespace fs = std::filesystem;

namespace {

// Runs every row of golden input_ids through the model, all rows as one batch, in chunks.
std::vector<float> run_golden_logits(MambaLM& m, const io::SafetensorsFile& g, int64_t chunk) {
  auto ids64 = g.read_i64("input_ids");
  const auto& shp = g.info("input_ids").shape;
  const int64_t B = shp[0], L = shp[1];
  const int64_t D = m.config().d_model, V = m.lm_head().rows;
  Backend& be = m.backend();
  std::vector<float> logits(size_t(B * L * V));
  auto st = m.new_state(B);
  for (int64_t s = 0; s < L; s += chunk) {
    const int64_t n = std::min(chunk, L - s);
    std::vector<int32_t> ids(size_t(B * n));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < n; ++t) ids[size_t(b * n + t)] = int32_t(ids64[size_t(b * L + s + t)]);
    Tensor hid = be.alloc(B * n, D);
    m.forward_host(ids.data(), B, n, st, hid);
    Tensor lp = be.alloc(B * n, V);
    be.linear(hid, m.lm_head(), nullptr, lp);
    std::vector<float> l(size_t(B * n * V));
    be.to_host(lp, l.data());
    for (int64_t b = 0; b < B; ++b)
      std::copy_n(l.begin() + b * n * V, n * V, logits.begin() + (b * L + s) * V);
  }
  return logits;
}

}  // namespace

class GpuGolden : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(GpuGolden, LogitsMatchReferenceChunkedAndUnchunked) {
  SKIP_WITHOUT_GPU();
  const auto [name, dt] = GetParam();
  const std::string dir = test::golden(name);
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder " << dir;
  auto be = gpu_backend(dt);
  MambaLM m(dir, *be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  auto ref = g.read_f32("logits");
  const double tol = dt == DType::F32 ? kTolF32 : kTolBF16;
  std::vector<float> whole;
  for (int64_t chunk : {int64_t(1) << 30, int64_t(1000), int64_t(777), int64_t(1)}) {
    if (chunk == 1 && name != "hf_mamba_tiny") continue;
    auto r = run_golden_logits(m, g, chunk);
    EXPECT_LT(test::rel_err(r, ref), tol) << name << " " << dtype_name(dt) << " chunk " << chunk;
    if (whole.empty()) whole = r;
    else EXPECT_LT(test::rel_err(r, whole), dt == DType::F32 ? 1e-5 : 1e-2) << "chunked vs one pass, chunk " << chunk;
  }
}

INSTANTIATE_TEST_SUITE_P(Golden, GpuGolden,
                         ::testing::Combine(::testing::Values("hf_mamba_tiny", "mamba_ssm_tiny"),
                                            ::testing::Values(DType::F32, DType::BF16)));

TEST(GpuGoldenLong, TwentyThousandTokens) {
  SKIP_WITHOUT_GPU();
  const std::string dir = test::golden("hf_mamba_tiny");
  if (!fs::exists(dir + "/golden_long.safetensors")) GTEST_SKIP() << "no golden_long";
  for (DType dt : {DType::F32, DType::BF16}) {
    auto be = gpu_backend(dt);
    MambaLM m(dir, *be);
    io::SafetensorsFile g(dir + "/golden_long.safetensors");
    auto ref = g.read_f32("logits");
    for (int64_t chunk : {int64_t(1) << 30, int64_t(4096), int64_t(777)}) {
      auto r = run_golden_logits(m, g, chunk);
      EXPECT_LT(test::rel_err(r, ref), dt == DType::F32 ? kTolF32 : kTolBF16)
          << dtype_name(dt) << " chunk " << chunk;
    }
  }
}

// ---- dnamba track, GPU vs CPU

namespace {

std::string binary() {
  const char* e = std::getenv("DNAMBA_BIN");
  return e && *e ? e : DNAMBA_BINARY;
}

std::vector<float> read_bedgraph_values(const std::string& path, size_t* lines = nullptr) {
  std::ifstream in(path);
  std::vector<float> v;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::string chr;
    long long s, e;
    std::string val;
    ss >> chr >> s >> e >> val;
    v.push_back(val == "nan" ? std::nanf("") : std::stof(val));
  }
  if (lines) *lines = v.size();
  return v;
}

int run(const std::string& cmd) { return std::system((cmd + " 2>&1").c_str()); }

}  // namespace

TEST(GpuTrack, EqualsCpu) {
  SKIP_WITHOUT_GPU();
  const fs::path tmp = fs::temp_directory_path() / ("dnamba_gpu_track_" + std::to_string(::getpid()));
  fs::create_directories(tmp);
  // Two contigs, soft-masked and N runs, 30 kb + 1,234 b.
  {
    std::ofstream fa(tmp / "ref.fa");
    const char* acgt = "ACGTacgtNN";
    for (int c = 0; c < 2; ++c) {
      fa << ">chr" << c + 1 << "\n";
      const int n = c == 0 ? 30000 : 1234;
      for (int i = 0; i < n; ++i) {
        fa << acgt[rng()() % (i % 5000 < 4990 ? 8 : 10)];
        if (i % 60 == 59) fa << "\n";
      }
      fa << "\n";
    }
  }
  const std::string ref = (tmp / "ref.fa").string();
  auto track = [&](const std::string& dev, const std::string& dt, int64_t chunk, const std::string& what) {
    const std::string out = (tmp / (dev + dt + std::to_string(chunk) + what + ".bedgraph")).string();
    const std::string cmd = binary() + " track -q --ref " + ref + " -o " + out + " --device " + dev + " --dtype " + dt +
                            " --chunk " + std::to_string(chunk) + " --what " + what;
    EXPECT_EQ(run(cmd), 0) << cmd;
    return read_bedgraph_values(out);
  };
  for (std::string what : {"loglik", "entropy"}) {
    auto cpu = track("cpu", "fp32", 100000, what);
    ASSERT_EQ(cpu.size(), size_t(30000 - 1 + 1234 - 1)) << what;
    auto g32 = track("cuda", "fp32", 100000, what);
    auto g32c = track("cuda", "fp32", 4097, what);
    auto g16 = track("cuda", "bf16", 100000, what);
    auto g16c = track("cuda", "bf16", 1000, what);
    EXPECT_LT(rel_err_nan(g32, cpu), kTolF32) << what;
    EXPECT_LT(rel_err_nan(g32c, cpu), kTolF32) << what << " chunked";
    EXPECT_LT(rel_err_nan(g16, cpu), kTolBF16) << what << " bf16";
    EXPECT_LT(rel_err_nan(g16c, cpu), kTolBF16) << what << " bf16 chunked";
  }
  fs::remove_all(tmp);
}
