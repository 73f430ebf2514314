#include "model/config.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/error.h"

namespace dnamba {

const char* layout_name(CheckpointLayout l) {
  switch (l) {
    case CheckpointLayout::HuggingFace: return "transformers MambaForCausalLM";
    case CheckpointLayout::MambaSsm: return "mamba_ssm MambaLMHeadModel";
    case CheckpointLayout::Caduceus: return "Caduceus";
  }
  return "?";
}

int64_t ModelConfig::padded_vocab() const {
  int64_t m = pad_vocab_size_multiple > 0 ? pad_vocab_size_multiple : 1;
  return (vocab_size + m - 1) / m * m;
}

std::string ModelConfig::describe() const {
  std::ostringstream s;
  s << layout_name(layout) << ": d_model " << d_model << ", n_layer " << n_layer << ", d_inner " << d_inner
    << ", d_state " << d_state << ", d_conv " << d_conv << ", dt_rank " << dt_rank << ", vocab " << vocab_size;
  if (padded_vocab() != vocab_size) s << " (padded " << padded_vocab() << ")";
  return s.str();
}

namespace {

using nlohmann::json;

struct Reader {
  const json& j;
  std::string file;
  bool has(const char* k) const { return j.contains(k) && !j[k].is_null(); }
  int64_t integer(const char* k) const {
    if (!has(k)) throw Error(file + ": missing field '" + k + "'");
    if (!j[k].is_number_integer() || j[k].get<int64_t>() < 0)
      throw Error(file + ": field '" + std::string(k) + "' must be a non-negative integer, got " + j[k].dump());
    return j[k].get<int64_t>();
  }
  int64_t integer_or(const char* k, int64_t d) const { return has(k) ? integer(k) : d; }
  bool boolean_or(const char* k, bool d) const {
    if (!has(k)) return d;
    if (!j[k].is_boolean()) throw Error(file + ": field '" + std::string(k) + "' must be true or false, got " + j[k].dump());
    return j[k].get<bool>();
  }
  double number_or(const char* k, double d) const {
    if (!has(k)) return d;
    if (!j[k].is_number()) throw Error(file + ": field '" + std::string(k) + "' must be a number, got " + j[k].dump());
    return j[k].get<double>();
  }
  // dt_rank: "auto" or an integer
  int64_t rank_or_auto(const char* k, int64_t d_model) const {
    if (!has(k) || (j[k].is_string() && j[k].get<std::string>() == "auto")) return (d_model + 15) / 16;
    return integer(k);
  }
};

}  // namespace

ModelConfig load_model_config(const std::string& model_dir) {
  const std::string file = model_dir + "/config.json";
  std::ifstream in(file);
  if (!in) throw Error(file + ": cannot open model config (a model directory holds config.json and model.safetensors)");
  json j;
  try {
    j = json::parse(in);
  } catch (const std::exception& e) {
    throw Error(file + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw Error(file + ": expected a JSON object");
  ModelConfig c;
  Reader r{j, file};
  std::string model_type = j.contains("model_type") && j["model_type"].is_string() ? j["model_type"].get<std::string>() : "";
  if (model_type == "caduceus" || j.contains("bidirectional") || j.contains("rcps")) {
    c.layout = CheckpointLayout::Caduceus;
  } else if (model_type == "mamba" || j.contains("hidden_size")) {
    c.layout = CheckpointLayout::HuggingFace;
  } else if (j.contains("d_model")) {
    c.layout = CheckpointLayout::MambaSsm;
  } else if (model_type == "mamba2") {
    throw Error(file + ": Mamba-2 models are not supported (model_type mamba2)");
  } else {
    throw Error(file + ": not a Mamba model config (no model_type 'mamba', no hidden_size or d_model)");
  }

  if (c.layout == CheckpointLayout::HuggingFace) {
    c.d_model = r.integer("hidden_size");
    c.n_layer = r.integer("num_hidden_layers");
    c.d_state = r.integer_or("state_size", 16);
    c.d_conv = r.integer_or("conv_kernel", 4);
    int64_t expand = r.integer_or("expand", 2);
    c.d_inner = r.integer_or("intermediate_size", expand * c.d_model);
    c.dt_rank = r.rank_or_auto("time_step_rank", c.d_model);
    c.vocab_size = r.integer("vocab_size");
    c.pad_vocab_size_multiple = r.integer_or("pad_vocab_size_multiple", 1);
    c.proj_bias = r.boolean_or("use_bias", false);
    c.conv_bias = r.boolean_or("use_conv_bias", true);
    c.residual_in_fp32 = r.boolean_or("residual_in_fp32", true);
    c.tie_embeddings = r.boolean_or("tie_word_embeddings", true);
    c.norm_eps = float(r.number_or("layer_norm_epsilon", 1e-5));
    if (j.contains("hidden_act") && j["hidden_act"] != "silu")
      throw Error(file + ": hidden_act " + j["hidden_act"].dump() + " is not supported (only silu)");
  } else {
    c.d_model = r.integer("d_model");
    c.n_layer = r.integer("n_layer");
    c.vocab_size = r.integer("vocab_size");
    if (r.integer_or("d_intermediate", 0) != 0)
      throw Error(file + ": d_intermediate > 0 (gated MLP blocks) is not supported");
    if (j.contains("attn_layer_idx") && j["attn_layer_idx"].is_array() && !j["attn_layer_idx"].empty())
      throw Error(file + ": attention layers (attn_layer_idx) are not supported");
    c.pad_vocab_size_multiple = r.integer_or("pad_vocab_size_multiple", 8);
    c.rms_norm = r.boolean_or("rms_norm", true);
    c.residual_in_fp32 = r.boolean_or("residual_in_fp32", c.layout == CheckpointLayout::MambaSsm);
    c.fused_add_norm = r.boolean_or("fused_add_norm", true);
    c.norm_eps = float(r.number_or("norm_epsilon", 1e-5));
    c.tie_embeddings = r.boolean_or("tie_embeddings", true);
    json ssm = j.contains("ssm_cfg") && j["ssm_cfg"].is_object() ? j["ssm_cfg"] : json::object();
    Reader s{ssm, file + " (ssm_cfg)"};
    if (ssm.contains("layer") && ssm["layer"] != "Mamba1")
      throw Error(file + ": ssm_cfg.layer " + ssm["layer"].dump() + " is not supported (only Mamba1)");
    c.d_state = s.integer_or("d_state", 16);
    c.d_conv = s.integer_or("d_conv", 4);
    int64_t expand = s.integer_or("expand", 2);
    c.d_inner = expand * c.d_model;
    c.dt_rank = s.rank_or_auto("dt_rank", c.d_model);
    c.proj_bias = s.boolean_or("bias", false);
    c.conv_bias = s.boolean_or("conv_bias", true);
    if (c.layout == CheckpointLayout::Caduceus) {
      c.bidirectional = r.boolean_or("bidirectional", true);
      c.bidirectional_weight_tie = r.boolean_or("bidirectional_weight_tie", true);
      c.rcps = r.boolean_or("rcps", false);
      if (j.contains("bidirectional_strategy") && j["bidirectional_strategy"].is_string())
        c.bidirectional_strategy = j["bidirectional_strategy"].get<std::string>();
      if (c.bidirectional_strategy != "add" && c.bidirectional_strategy != "ew_multiply")
        throw Error(file + ": bidirectional_strategy '" + c.bidirectional_strategy + "' is not supported (add or ew_multiply)");
      c.complement_map.resize(size_t(c.padded_vocab()));
      for (size_t i = 0; i < c.complement_map.size(); ++i) c.complement_map[i] = int32_t(i);
      if (j.contains("complement_map") && j["complement_map"].is_object()) {
        for (auto& [k, v] : j["complement_map"].items()) {
          size_t idx = std::stoul(k);
          if (idx < c.complement_map.size() && v.is_number_integer()) c.complement_map[idx] = v.get<int32_t>();
        }
      }
    }
  }
  auto positive = [&](int64_t v, const char* name) {
    if (v <= 0) throw Error(file + ": " + std::string(name) + " must be positive");
  };
  positive(c.d_model, "d_model");
  positive(c.n_layer, "n_layer");
  positive(c.d_state, "d_state");
  positive(c.d_conv, "d_conv");
  positive(c.d_inner, "d_inner");
  positive(c.dt_rank, "dt_rank");
  positive(c.vocab_size, "vocab_size");
  if (c.d_conv > 64) throw Error(file + ": d_conv > 64 is not supported");
  if (c.d_state > 256) throw Error(file + ": d_state > 256 is not supported");
  if (c.padded_vocab() < 12) throw Error(file + ": vocab_size " + std::to_string(c.vocab_size) + " is too small for the DNA character vocabulary (ids 0-11)");
  return c;
}

}  // namespace dnamba
