// Caduceus PS and Ph golden folders (kuleshov-group/caduceus CaduceusForMaskedLM, fp32) reproduced by
// loading each folder as it is; loading errors; tied vs untied projections; RC equivariance of PS.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/caduceus.h"
#include "model/tokenizer.h"
#include "pipeline/caduceus_track.h"
#include "test_util.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {

struct CadRun {
  std::vector<float> logits, hidden;  // [B, L, V], [B, L, H]
};

// Runs `batch` sequences of `len` host ids through the model in one forward (batch > 1).
CadRun run(CaduceusModel& m, const std::vector<int32_t>& ids, int64_t batch, int64_t len) {
  Backend& be = m.backend();
  const int64_t H = m.hidden_size(), V = m.vocab_rows();
  Tensor hid = be.alloc(batch * len, H);
  m.forward(ids.data(), batch, len, hid);
  Tensor lg = be.alloc(batch * len, V);
  be.linear(hid, m.lm_head(), nullptr, lg);
  CadRun r;
  r.hidden.resize(size_t(batch * len * H));
  r.logits.resize(size_t(batch * len * V));
  be.to_host(hid, r.hidden.data());
  be.to_host(lg, r.logits.data());
  return r;
}

std::vector<int32_t> golden_ids(const io::SafetensorsFile& g, int64_t& B, int64_t& L) {
  auto v = g.read_i64("input_ids");
  B = g.info("input_ids").shape[0];
  L = g.info("input_ids").shape[1];
  return std::vector<int32_t>(v.begin(), v.end());
}

// A copy of a model directory with config.json edited by `edit` and tensors renamed/dropped/added.
std::string edited_copy(const std::string& src, const std::string& name,
                        const std::function<void(nlohmann::json&)>& edit_cfg,
                        const std::function<void(std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>>&)>& edit_t) {
  std::string dir = (fs::temp_directory_path() / ("dnamba_cad_" + name + "_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  nlohmann::json j = nlohmann::json::parse(std::ifstream(src + "/config.json"));
  if (edit_cfg) edit_cfg(j);
  std::ofstream(dir + "/config.json") << j.dump(1);
  io::SafetensorsFile st(src + "/model.safetensors");
  std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>> ts;
  for (auto& n : st.names()) {
    if (st.info(n).dtype == io::StDType::I64) continue;  // buffers: written back below as they were not (f32 only writer)
    ts.push_back({n, {st.info(n).shape, st.read_f32(n)}});
  }
  if (edit_t) edit_t(ts);
  std::vector<io::StWriteTensor> w;
  for (auto& [n, v] : ts) w.push_back({n, v.first, v.second.data()});
  io::write_safetensors(dir + "/model.safetensors", w);
  return dir;
}

}  // namespace

class GoldenCaduceus : public ::testing::TestWithParam<std::string> {};

TEST_P(GoldenCaduceus, LogitsAndLastHiddenMatchReference) {
  const std::string dir = test::golden(GetParam());
  if (!fs::exists(dir)) GTEST_SKIP() << "no golden folder " << dir;
  CpuBackend be(2);
  CaduceusModel m(dir, be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  int64_t B, L;
  auto ids = golden_ids(g, B, L);
  ASSERT_GE(B, 2);
  auto r = run(m, ids, B, L);  // the whole golden batch in one forward
  double el = test::rel_err(r.logits, g.read_f32("logits"));
  double eh = test::rel_err(r.hidden, g.read_f32("last_hidden"));
  std::printf("%s: logits rel err %.3g, last_hidden rel err %.3g\n", GetParam().c_str(), el, eh);
  EXPECT_LT(el, 1e-4) << GetParam() << " logits";
  EXPECT_LT(eh, 1e-4) << GetParam() << " last_hidden";
  EXPECT_EQ(m.hidden_size(), GetParam() == "caduceus_ps_tiny" ? 64 : 32);
}

INSTANTIATE_TEST_SUITE_P(Golden, GoldenCaduceus, ::testing::Values("caduceus_ps_tiny", "caduceus_ph_tiny"));

// Golden models in a batch of 2 with the second sequence's RC: PS is RC-equivariant by construction:
// log p(b at t | x) = log p(comp(b) at L-1-t | rc(x)) for every token b.
TEST(Caduceus, PsIsReverseComplementEquivariant) {
  const std::string dir = test::golden("caduceus_ps_tiny");
  if (!fs::exists(dir)) GTEST_SKIP();
  CpuBackend be(2);
  CaduceusModel m(dir, be);
  io::SafetensorsFile g(dir + "/golden.safetensors");
  int64_t B, L;
  auto ids = golden_ids(g, B, L);
  ids.resize(size_t(L));
  auto rc = caduceus_reverse_complement(m, ids.data(), L);
  std::vector<int32_t> both = ids;
  both.insert(both.end(), rc.begin(), rc.end());
  auto r = run(m, both, 2, L);
  const int64_t V = m.vocab_rows();
  const auto& comp = m.complement_map();
  double mx = 0;
  for (int64_t t = 0; t < L; ++t)
    for (int64_t v = 0; v < V; ++v)
      mx = std::max(mx, std::fabs(double(r.logits[size_t(t * V + v)]) - r.logits[size_t((L + L - 1 - t) * V + comp[size_t(v)])]));
  EXPECT_LT(mx, 1e-4) << "PS logits are not RC-equivariant";
}

// Untied checkpoints: the golden model rewritten with explicit mamba_rev in/out projections
// (copies of the forward ones) and bidirectional_weight_tie: false gives the golden numbers; a tied
// config accepts identical copies but rejects different ones.
TEST(Caduceus, UntiedProjectionsAndTiedCopies) {
  for (std::string name : {"caduceus_ps_tiny", "caduceus_ph_tiny"}) {
    const std::string src = test::golden(name);
    if (!fs::exists(src)) GTEST_SKIP();
    const bool ps = name == "caduceus_ps_tiny";
    auto add_rev_proj = [&](float scale) {
      return [=](auto& ts) {
        std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>> extra;
        for (auto& [n, v] : ts)
          for (std::string p : {"in_proj.weight", "out_proj.weight"})
            if (n.size() > p.size() && n.compare(n.size() - p.size(), p.size(), p) == 0 && n.find("mamba_fwd") != std::string::npos) {
              std::string r = n;
              r.replace(r.find("mamba_fwd"), 9, "mamba_rev");
              auto vals = v.second;
              for (auto& x : vals) x *= scale;
              extra.push_back({r, {v.first, vals}});
            }
        ts.insert(ts.end(), extra.begin(), extra.end());
      };
    };
    io::SafetensorsFile g(src + "/golden.safetensors");
    int64_t B, L;
    auto ids = golden_ids(g, B, L);
    std::string untied = edited_copy(src, name + "_untied", [](nlohmann::json& j) { j["bidirectional_weight_tie"] = false; },
                                     add_rev_proj(1.0f));
    CpuBackend be(2);
    // The copy lost the complement_map buffers (float-only writer): config.json's map is used then.
    CaduceusModel mu(untied, be);
    auto r = run(mu, ids, B, L);
    EXPECT_LT(test::rel_err(r.logits, g.read_f32("logits")), 1e-4) << name << " untied";
    std::string tied_copies = edited_copy(src, name + "_tiedcopies", nullptr, add_rev_proj(1.0f));
    CaduceusModel mt(tied_copies, be);
    EXPECT_LT(test::rel_err(run(mt, ids, B, L).logits, g.read_f32("logits")), 1e-4) << name << " tied with copies";
    std::string tied_bad = edited_copy(src, name + "_tiedbad", nullptr, add_rev_proj(0.5f));
    try {
      CaduceusModel bad(tied_bad, be);
      ADD_FAILURE() << "tied config with different rev projections loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("mamba_rev.in_proj.weight"), std::string::npos) << e.what();
    }
    // Untied config without rev projections: missing tensor named.
    std::string missing = edited_copy(src, name + "_untiedmissing", [](nlohmann::json& j) { j["bidirectional_weight_tie"] = false; }, nullptr);
    try {
      CaduceusModel bad(missing, be);
      ADD_FAILURE() << "untied config without rev projections loaded";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string(ps ? "mixer.submodule." : "mixer.") + "mamba_rev.in_proj.weight"), std::string::npos) << e.what();
    }
    for (auto d : {untied, tied_copies, tied_bad, missing}) fs::remove_all(d);
  }
}

// Missing, unexpected and misshapen tensors, and a PS checkpoint under a Ph config, are Errors
// naming the tensor.
TEST(Caduceus, LoadingErrorsNameTheTensor) {
  const std::string src = test::golden("caduceus_ps_tiny");
  if (!fs::exists(src)) GTEST_SKIP();
  CpuBackend be(1);
  auto expect_error = [&](const std::string& dir, const std::string& needle) {
    try {
      CaduceusModel m(dir, be);
      ADD_FAILURE() << dir << " loaded; expected an error naming " << needle;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
  };
  const std::string x = "caduceus.backbone.layers.1.mixer.submodule.mamba_rev.x_proj.weight";
  expect_error(edited_copy(src, "missing", nullptr, [&](auto& ts) {
                 std::erase_if(ts, [&](auto& t) { return t.first == x; });
               }), x);
  expect_error(edited_copy(src, "extra", nullptr, [&](auto& ts) { ts.push_back({"caduceus.backbone.bogus", {{3}, {1, 2, 3}}}); }),
               "caduceus.backbone.bogus");
  expect_error(edited_copy(src, "shape", nullptr, [&](auto& ts) {
                 for (auto& t : ts)
                   if (t.first == x) {
                     t.second.first = {t.second.first[0] - 1, t.second.first[1]};
                     t.second.second.resize(size_t(t.second.first[0] * t.second.first[1]));
                   }
               }), x);
  expect_error(edited_copy(src, "layout", [](nlohmann::json& j) { j["rcps"] = false; }, nullptr), "looks like a PS model");
}

// BF16 checkpoints load (converted to fp32) and stay close to the fp32 golden outputs.
TEST(Caduceus, Bf16Checkpoint) {
  const std::string src = test::golden("caduceus_ph_tiny");
  if (!fs::exists(src)) GTEST_SKIP();
  std::string dir = (fs::temp_directory_path() / ("dnamba_cad_bf16_" + std::to_string(::getpid()))).string();
  fs::create_directories(dir);
  fs::copy_file(src + "/config.json", dir + "/config.json");
  io::SafetensorsFile st(src + "/model.safetensors");
  std::vector<std::vector<float>> keep;
  std::vector<io::StWriteTensor> w;
  for (auto& n : st.names()) {
    keep.push_back(st.read_f32(n));
    w.push_back({n, st.info(n).shape, keep.back().data()});
  }
  io::write_safetensors(dir + "/model.safetensors", w, {}, true);
  CpuBackend be(2);
  CaduceusModel m(dir, be);
  EXPECT_EQ(m.stored_dtype(), "BF16");
  io::SafetensorsFile g(src + "/golden.safetensors");
  int64_t B, L;
  auto ids = golden_ids(g, B, L);
  double e = test::rel_err(run(m, ids, B, L).logits, g.read_f32("logits"));
  std::printf("bf16 weights: logits rel err %.3g\n", e);
  EXPECT_LT(e, 2e-2);
  fs::remove_all(dir);
}
