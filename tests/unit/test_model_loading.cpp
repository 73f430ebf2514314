// Model directories: configs of both layouts, missing/extra/misshapen tensors, and safetensors
// headers that lie. Every failure must be an Error naming the file and tensor, never a crash.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/cpu/cpu_backend.h"
#include "io/safetensors.h"
#include "model/mamba_lm.h"
#include "test_util.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {

fs::path temp_dir(const std::string& name) {
  fs::path d = fs::path(::testing::TempDir()) / ("dnamba_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_all(const fs::path& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary);
  out << s;
}

// Builds a safetensors file from a header JSON string and a data blob.
std::string make_st(const std::string& header, const std::string& data, int64_t claimed_len = -1) {
  uint64_t n = claimed_len >= 0 ? uint64_t(claimed_len) : header.size();
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char((n >> (8 * i)) & 0xff);
  return s + header + data;
}

std::string expect_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

// Copies a golden model dir and rewrites its safetensors after `edit` changes the tensor map.
fs::path edited_model(const std::string& name,
                      const std::function<void(std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>>&)>& edit) {
  fs::path src = test::golden("hf_mamba_tiny");
  fs::path d = temp_dir(name);
  fs::copy_file(src / "config.json", d / "config.json");
  io::SafetensorsFile st((src / "model.safetensors").string());
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<float>>> t;
  for (auto& n : st.names()) t[n] = {st.info(n).shape, st.read_f32(n)};
  edit(t);
  std::vector<io::StWriteTensor> w;
  for (auto& [n, v] : t) w.push_back({n, v.first, v.second.data()});
  io::write_safetensors((d / "model.safetensors").string(), w);
  return d;
}

}  // namespace

TEST(Safetensors, RejectsLyingHeaders) {
  fs::path d = temp_dir("st");
  auto check = [&](const std::string& name, const std::string& bytes, const std::string& expect) {
    fs::path p = d / (name + ".safetensors");
    write_all(p, bytes);
    std::string msg = expect_error([&] { io::SafetensorsFile f(p.string()); });
    EXPECT_NE(msg.find(p.string()), std::string::npos) << name << ": message does not name the file: " << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << name << ": " << msg;
  };
  std::string data(64, '\x01');
  check("short", "abc", "shorter");
  check("header_longer_than_file", make_st("{}", "", 1000), "header claims");
  check("bad_json", make_st("{\"a\": [1,", data), "not valid JSON");
  check("not_object", make_st("[1,2]", data), "not a JSON object");
  check("out_of_range", make_st(R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,128]}})", data), "run past the end");
  check("size_mismatch", make_st(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})", data), "needs 12");
  check("overlap", make_st(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}})", data), "overlap");
  check("reversed", make_st(R"({"w":{"dtype":"F32","shape":[0],"data_offsets":[16,8]}})", data), "begin after");
  check("bad_dtype", make_st(R"({"w":{"dtype":"Q7","shape":[4],"data_offsets":[0,16]}})", data), "unknown dtype");
  check("neg_shape", make_st(R"({"w":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", data), "bad dimension");
  check("huge_shape", make_st(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,16]}})", data), "too large");
  check("missing_fields", make_st(R"({"w":{"dtype":"F32"}})", data), "must have");
}

TEST(Safetensors, RoundTripAllFloatTypes) {
  fs::path d = temp_dir("st_rt");
  std::vector<float> v = {1.0f, -2.5f, 3.140625f, 0.0078125f, -65504.0f, 1e-3f};
  io::write_safetensors((d / "f32.safetensors").string(), {{"x", {2, 3}, v.data()}});
  io::write_safetensors((d / "bf16.safetensors").string(), {{"x", {2, 3}, v.data()}}, {}, true);
  io::SafetensorsFile a((d / "f32.safetensors").string()), b((d / "bf16.safetensors").string());
  EXPECT_EQ(a.read_f32("x"), v);
  auto bv = b.read_f32("x");
  for (size_t i = 0; i < v.size(); ++i) EXPECT_NEAR(bv[i], v[i], std::fabs(v[i]) * 1e-2) << i;
  EXPECT_EQ(io::f16_to_f32(0x3c00), 1.0f);
  EXPECT_EQ(io::f16_to_f32(0xc000), -2.0f);
  EXPECT_EQ(io::f16_to_f32(0x7bff), 65504.0f);
  EXPECT_NEAR(io::f16_to_f32(0x0001), 5.96e-8f, 1e-9f);  // subnormal
}

TEST(ModelLoading, MissingExtraMisshapenTensorsAreNamed) {
  if (!fs::exists(test::golden("hf_mamba_tiny"))) GTEST_SKIP() << "no golden";
  CpuBackend be(1);
  auto missing = edited_model("missing", [](auto& t) { t.erase("backbone.layers.1.mixer.D"); });
  EXPECT_NE(expect_error([&] { MambaLM m(missing.string(), be); }).find("missing tensor 'backbone.layers.1.mixer.D'"), std::string::npos);
  auto extra = edited_model("extra", [](auto& t) { t["backbone.layers.7.mixer.D"] = {{128}, std::vector<float>(128, 1.0f)}; });
  EXPECT_NE(expect_error([&] { MambaLM m(extra.string(), be); }).find("unexpected tensor 'backbone.layers.7.mixer.D'"), std::string::npos);
  auto bad = edited_model("misshapen", [](auto& t) { t["backbone.layers.0.mixer.x_proj.weight"] = {{35, 128}, std::vector<float>(35 * 128, 0.5f)}; });
  std::string msg = expect_error([&] { MambaLM m(bad.string(), be); });
  EXPECT_NE(msg.find("x_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[35, 128]"), std::string::npos) << msg;
}

TEST(ModelLoading, ConfigErrorsNameTheField) {
  CpuBackend be(1);
  fs::path d = temp_dir("cfg");
  write_all(d / "config.json", R"({"model_type": "mamba", "num_hidden_layers": 2})");
  EXPECT_NE(expect_error([&] { load_model_config(d.string()); }).find("hidden_size"), std::string::npos);
  write_all(d / "config.json", R"({"d_model": 64, "n_layer": 2, "vocab_size": 16, "ssm_cfg": {"layer": "Mamba2"}})");
  EXPECT_NE(expect_error([&] { load_model_config(d.string()); }).find("Mamba1"), std::string::npos);
  write_all(d / "config.json", "{not json");
  EXPECT_NE(expect_error([&] { load_model_config(d.string()); }).find("not valid JSON"), std::string::npos);
  EXPECT_NE(expect_error([&] { load_model_config((d / "nope").string()); }).find("cannot open"), std::string::npos);
}

TEST(ModelLoading, BothLayoutsParse) {
  if (!fs::exists(test::golden("mamba_ssm_tiny"))) GTEST_SKIP() << "no golden";
  auto h = load_model_config(test::golden("hf_mamba_tiny"));
  auto m = load_model_config(test::golden("mamba_ssm_tiny"));
  EXPECT_EQ(h.layout, CheckpointLayout::HuggingFace);
  EXPECT_EQ(m.layout, CheckpointLayout::MambaSsm);
  for (auto* c : {&h, &m}) {
    EXPECT_EQ(c->d_model, 64);
    EXPECT_EQ(c->n_layer, 2);
    EXPECT_EQ(c->d_inner, 128);
    EXPECT_EQ(c->d_state, 16);
    EXPECT_EQ(c->d_conv, 4);
    EXPECT_EQ(c->dt_rank, 4);
    EXPECT_EQ(c->padded_vocab(), 16);
    EXPECT_TRUE(c->tie_embeddings);
  }
}
