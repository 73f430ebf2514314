// Caduceus (bidirectional, RC-equivariant) models on the GPU: the flip_rows and mul ops against the CPU
// backend; the golden PS and Ph folders in fp32 (1e-4) and with bf16 activations (2e-2), whole golden
// batch (2 sequences) in one forward; random inputs (batch 3, odd length) equal to the CPU forward for
// the released layout and for the untied / ew_multiply / unidirectional / LayerNorm variants; the
// windowed track statistics and the both-strand (batch-2) masked LLR equal to the CPU.
#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "gpu_test_util.h"
#include "io/safetensors.h"
#include "model/caduceus.h"
#include "model/tokenizer.h"
#include "pipeline/caduceus_track.h"

using namespace dnamba;
using namespace dnamba::gputest;
namespace fs = std::filesystem;

namespace {

// A [rows, cols] view at column `pad` of a [rows, cols + pad] buffer of dtype dt on each backend,
// filled with the same random bytes (valid finite values for F32/BF16).
Pair make_raw_pair(Backend& cb, Backend& gb, DType dt, int64_t rows, int64_t cols, int64_t pad) {
  const int64_t w = cols + pad;
  const size_t n = size_t(rows * w);
  std::vector<char> host(n * dtype_size(dt));
  std::uniform_int_distribution<int> bits(0, 0xffff);
  std::uniform_real_distribution<float> val(-3.0f, 3.0f);
  for (size_t i = 0; i < n; ++i) {
    if (dt == DType::F32) {
      const float v = val(rng());
      std::memcpy(host.data() + 4 * i, &v, 4);
    } else if (dt == DType::BF16) {
      const uint16_t v = io::f32_to_bf16(val(rng()));
      std::memcpy(host.data() + 2 * i, &v, 2);
    } else {
      const int32_t v = bits(rng());
      std::memcpy(host.data() + 4 * i, &v, 4);
    }
  }
  Tensor tc = cb.alloc(rows, w, dt), tg = gb.alloc(rows, w, dt);
  cb.to_device(tc, host.data());
  gb.to_device(tg, host.data());
  return {tc.cols_view(pad, cols), tg.cols_view(pad, cols)};
}

std::vector<char> bytes_of(Backend& be, const Tensor& t) {
  std::vector<char> v(size_t(t.numel()) * dtype_size(t.dtype));
  be.to_host(t, v.data());
  return v;
}

using NamedTensors = std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>>;

// A copy of a model directory with config.json edited by `edit_cfg` and the tensors by `edit_t`
// (float tensors only: the complement_map buffers are dropped, config.json's map is used then).
std::string edited_copy(const std::string& src, const std::string& name, const std::function<void(nlohmann::json&)>& edit_cfg,
                        const std::function<void(NamedTensors&)>& edit_t) {
  std::string dir = (fs::temp_directory_path() / ("dnamba_gpucad_" + name + "_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(src + "/config.json"));
  if (edit_cfg) edit_cfg(j);
  std::ofstream(dir + "/config.json") << j.dump(1);
  io::SafetensorsFile st(src + "/model.safetensors");
  NamedTensors ts;
  for (auto& n : st.names()) {
    if (st.info(n).dtype == io::StDType::I64) continue;
    ts.push_back({n, {st.info(n).shape, st.read_f32(n)}});
  }
  if (edit_t) edit_t(ts);
  std::vector<io::StWriteTensor> w;
  for (auto& [n, v] : ts) w.push_back({n, v.first, v.second.data()});
  io::write_safetensors(dir + "/model.safetensors", w);
  return dir;
}

bool ends_with(const std::string& s, const std::string& e) {
  return s.size() >= e.size() && s.compare(s.size() - e.size(), e.size(), e) == 0;
}

// Untied: explicit mamba_rev in/out projections, different from the forward ones.
void add_untied_rev_proj(NamedTensors& ts) {
  NamedTensors extra;
  for (auto& [n, v] : ts)
    for (std::string p : {"in_proj.weight", "out_proj.weight"})
      if (ends_with(n, p) && n.find("mamba_fwd") != std::string::npos) {
        std::string r = n;
        r.replace(r.find("mamba_fwd"), 9, "mamba_rev");
        auto vals = v.second;
        for (size_t i = 0; i < vals.size(); ++i) vals[i] *= 0.8f + 0.4f * float(i % 7) / 6.0f;
        extra.push_back({r, {v.first, vals}});
      }
  ts.insert(ts.end(), extra.begin(), extra.end());
}

// LayerNorm (rms_norm false): every norm.weight gets a norm.bias.
void add_norm_biases(NamedTensors& ts) {
  NamedTensors extra;
  for (auto& [n, v] : ts)
    if (ends_with(n, "norm.weight") || ends_with(n, "norm_f.weight")) {
      std::string b = n.substr(0, n.size() - 6) + "bias";
      extra.push_back({b, {v.first, randn(v.second.size(), 0.1f)}});
    }
  ts.insert(ts.end(), extra.begin(), extra.end());
}

void drop_rev(NamedTensors& ts) {
  ts.erase(std::remove_if(ts.begin(), ts.end(), [](auto& t) { return t.first.find("mamba_rev") != std::string::npos; }),
           ts.end());
}

std::vector<int32_t> random_tokens(int64_t n, int64_t V) {
  std::uniform_int_distribution<int> base(kTokA, kTokN), any(0, int(V) - 1), coin(0, 19);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = coin(rng()) == 0 ? (coin(rng()) < 10 ? kTokMask : any(rng())) : base(rng());
  return t;
}

// last_hidden of `batch` sequences of `len` host ids.
std::vector<float> hidden_of(CaduceusModel& m, const std::vector<int32_t>& ids, int64_t batch, int64_t len) {
  Backend& be = m.backend();
  Tensor hid = be.alloc(batch * len, m.hidden_size());
  m.forward(ids.data(), batch, len, hid);
  return host_of(be, hid);
}

std::vector<float> logits_of(CaduceusModel& m, const std::vector<int32_t>& ids, int64_t batch, int64_t len,
                             std::vector<float>* hidden = nullptr) {
  Backend& be = m.backend();
  Tensor hid = be.alloc(batch * len, m.hidden_size());
  m.forward(ids.data(), batch, len, hid);
  Tensor lg = be.alloc(batch * len, m.vocab_rows());
  be.linear(hid, m.lm_head(), nullptr, lg);
  if (hidden) *hidden = host_of(be, hid);
  return host_of(be, lg);
}

const char* dt_name(DType dt) { return dt == DType::F32 ? "fp32" : "bf16"; }

}  // namespace

// flip_rows: every dtype, odd and even lengths, batches, strided views, out of place and in place:
// byte-for-byte the CPU result (a copy), which is itself checked against the definition.
TEST(GpuCaduceusOps, FlipRowsEqualsCpu) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(2);
  auto gb = gpu_backend(DType::BF16);
  for (DType dt : {DType::F32, DType::BF16, DType::I32})
    for (int64_t cols : {1, 3, 8, 37, 256, 1024})
      for (int64_t batch : {1, 3})
        for (int64_t len : {1, 2, 7, 64, 1001})
          for (int64_t pad : {0, 5, 8}) {
            const int64_t T = batch * len;
            const std::string what = std::string(dtype_name(dt)) + " cols " + std::to_string(cols) + " batch " +
                                     std::to_string(batch) + " len " + std::to_string(len) + " pad " + std::to_string(pad);
            Pair in = make_raw_pair(cb, *gb, dt, T, cols, pad);
            const auto before = bytes_of(cb, in.cpu);
            // out of place, into another strided view
            Pair out = make_raw_pair(cb, *gb, dt, T, cols, pad == 0 ? 3 : 0);
            cb.flip_rows(in.cpu, batch, len, out.cpu);
            gb->flip_rows(in.gpu, batch, len, out.gpu);
            const auto oc = bytes_of(cb, out.cpu), og = bytes_of(*gb, out.gpu);
            const size_t rb = size_t(cols) * dtype_size(dt);
            bool def_ok = true;
            for (int64_t b = 0; b < batch; ++b)
              for (int64_t t = 0; t < len; ++t)
                def_ok = def_ok && std::memcmp(oc.data() + size_t(b * len + t) * rb,
                                               before.data() + size_t(b * len + len - 1 - t) * rb, rb) == 0;
            ASSERT_TRUE(def_ok) << "CPU flip_rows " << what;
            ASSERT_TRUE(oc == og) << "GPU flip_rows out of place " << what;
            ASSERT_TRUE(bytes_of(*gb, in.gpu) == before) << "GPU flip_rows changed its input " << what;
            // in place
            gb->flip_rows(in.gpu, batch, len, in.gpu);
            cb.flip_rows(in.cpu, batch, len, in.cpu);
            ASSERT_TRUE(bytes_of(*gb, in.gpu) == oc) << "GPU flip_rows in place " << what;
            ASSERT_TRUE(bytes_of(cb, in.cpu) == oc) << "CPU flip_rows in place " << what;
          }
}

TEST(GpuCaduceusOps, MulEqualsCpu) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(2);
  auto gb = gpu_backend(DType::BF16);
  for (int64_t cols : {1, 33, 256}) {
    const int64_t rows = 517;
    Pair a = make_pair(cb, *gb, randn(size_t(rows * cols)), rows, cols, 3);
    Pair b = make_pair(cb, *gb, randn(size_t(rows * cols)), rows, cols, 0);
    Pair o = make_pair(cb, *gb, randn(size_t(rows * cols)), rows, cols, 7);
    cb.mul(a.cpu, b.cpu, o.cpu);
    gb->mul(a.gpu, b.gpu, o.gpu);
    EXPECT_EQ(host_of(cb, o.cpu), host_of(*gb, o.gpu)) << "cols " << cols;
  }
}

class GpuCaduceusGolden : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

// The golden folders, the whole golden batch (2 sequences, 1200 tokens) in one forward.
TEST_P(GpuCaduceusGolden, LogitsAndLastHiddenMatchReference) {
  SKIP_WITHOUT_GPU();
  const auto [name, dt] = GetParam();
  const std::string dir = test::golden(name);
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder " << dir;
  auto be = gpu_backend(dt);
  CaduceusModel m(dir, *be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  auto ids64 = g.read_i64("input_ids");
  const int64_t B = g.info("input_ids").shape[0], L = g.info("input_ids").shape[1];
  std::vector<int32_t> ids(ids64.begin(), ids64.end());
  std::vector<float> hid;
  auto lg = logits_of(m, ids, B, L, &hid);
  const double el = test::rel_err(lg, g.read_f32("logits")), eh = test::rel_err(hid, g.read_f32("last_hidden"));
  std::printf("%s %s on %s (activations %s): logits rel err %.3g, last_hidden rel err %.3g\n", name.c_str(), dt_name(dt),
              be->name().c_str(), dtype_name(be->activation_dtype()), el, eh);
  const double tol = dt == DType::F32 ? kTolF32 : kTolBF16;
  EXPECT_LT(el, tol);
  EXPECT_LT(eh, tol);
}

INSTANTIATE_TEST_SUITE_P(Golden, GpuCaduceusGolden,
                         ::testing::Combine(::testing::Values("caduceus_ps_tiny", "caduceus_ph_tiny"),
                                            ::testing::Values(DType::F32, DType::BF16)));

// Random inputs (batch 3, odd length, [MASK] and other specials among the bases) through the
// released layout and the other options of the family: GPU hidden states equal to the CPU's.
class GpuCaduceusVariants : public ::testing::TestWithParam<std::tuple<std::string, DType>> {};

TEST_P(GpuCaduceusVariants, RandomInputsEqualCpu) {
  SKIP_WITHOUT_GPU();
  const auto [name, dt] = GetParam();
  const double tol = dt == DType::F32 ? kTolF32 : kTolBF16;
  for (std::string src_name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string src = test::golden(src_name);
    if (!fs::exists(src)) GTEST_SKIP() << "no golden folder " << src;
    std::string dir = src;
    if (name == "untied")
      dir = edited_copy(src, src_name + "_untied", [](nlohmann::json& j) { j["bidirectional_weight_tie"] = false; },
                        add_untied_rev_proj);
    else if (name == "ew_multiply")
      dir = edited_copy(src, src_name + "_ewm", [](nlohmann::json& j) { j["bidirectional_strategy"] = "ew_multiply"; },
                        nullptr);
    else if (name == "unidirectional")
      dir = edited_copy(src, src_name + "_uni", [](nlohmann::json& j) { j["bidirectional"] = false; }, drop_rev);
    else if (name == "layernorm_unfused")
      dir = edited_copy(src, src_name + "_ln",
                        [](nlohmann::json& j) {
                          j["rms_norm"] = false;
                          j["fused_add_norm"] = false;
                        },
                        add_norm_biases);
    CpuBackend cb(2);
    auto gb = gpu_backend(dt);
    CaduceusModel mc(dir, cb), mg(dir, *gb);
    for (auto [batch, len] : {std::pair<int64_t, int64_t>{3, 1501}, {1, 64}, {2, 1}}) {
      auto ids = random_tokens(batch * len, mc.vocab_rows());
      auto hc = hidden_of(mc, ids, batch, len), hg = hidden_of(mg, ids, batch, len);
      const double e = test::rel_err(hg, hc);
      std::printf("%s %s %s batch %ld len %ld: last_hidden rel err vs CPU %.3g\n", src_name.c_str(), name.c_str(),
                  dt_name(dt), long(batch), long(len), e);
      EXPECT_LT(e, tol) << src_name << " " << name << " batch " << batch << " len " << len;
    }
    if (dir != src) fs::remove_all(dir);
  }
}

INSTANTIATE_TEST_SUITE_P(Variants, GpuCaduceusVariants,
                         ::testing::Combine(::testing::Values("released", "untied", "ew_multiply", "unidirectional",
                                                              "layernorm_unfused"),
                                            ::testing::Values(DType::F32, DType::BF16)));

// The track statistics (overlapping windows, several windows a call, --mask none and --mask each)
// and the masked LLR (Ph: both strands as one batch-2 forward) on the GPU equal to the CPU.
class GpuCaduceusPipeline : public ::testing::TestWithParam<DType> {};

TEST_P(GpuCaduceusPipeline, TrackStatsAndMaskedLlrEqualCpu) {
  SKIP_WITHOUT_GPU();
  const DType dt = GetParam();
  const double tol = dt == DType::F32 ? kTolF32 : kTolBF16;
  for (std::string name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string dir = test::golden(name);
    if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder " << dir;
    CpuBackend cb(2);
    auto gb = gpu_backend(dt);
    CaduceusModel mc(dir, cb), mg(dir, *gb);
    std::uniform_int_distribution<int> base(kTokA, kTokT);
    std::vector<int32_t> seq(5000);
    for (auto& x : seq) x = base(rng());
    for (MaskMode mode : {MaskMode::None, MaskMode::Each}) {
      CaduceusTrackOptions o;
      o.window = mode == MaskMode::None ? 1024 : 256;
      o.overlap = o.window / 4;
      o.mask = mode;
      o.tokens_per_call = 4 * o.window;
      o.quiet = true;
      const int64_t n = mode == MaskMode::None ? int64_t(seq.size()) : 600;
      std::vector<float> sc(size_t(n * 5)), sg(size_t(n * 5));
      caduceus_sequence_logprobs(mc, seq.data(), n, o, sc.data());
      caduceus_sequence_logprobs(mg, seq.data(), n, o, sg.data());
      const double e = rel_err_nan(sg, sc);
      std::printf("%s %s track --mask %s: stats rel err vs CPU %.3g\n", name.c_str(), dt_name(dt),
                  mode == MaskMode::None ? "none" : "each", e);
      EXPECT_LT(e, tol) << name << (mode == MaskMode::None ? " mask none" : " mask each");
    }
    std::vector<MaskedQuery> q;
    std::vector<int32_t> ref, alt;
    for (int64_t p : {0, 17, 300, 511}) {
      q.push_back({seq.data() + 1000, 512, p});
      ref.push_back(seq[size_t(1000 + p)]);
      alt.push_back(ref.back() == kTokA ? kTokG : kTokA);
    }
    auto lc = caduceus_masked_llr(mc, q, ref, alt, 2048), lg = caduceus_masked_llr(mg, q, ref, alt, 2048);
    const double e = test::max_abs_diff(lg, lc);
    std::printf("%s %s masked LLR: max |GPU - CPU| %.3g\n", name.c_str(), dt_name(dt), e);
    EXPECT_LT(e, dt == DType::F32 ? 1e-3 : 0.15) << name;
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, GpuCaduceusPipeline, ::testing::Values(DType::F32, DType::BF16));
