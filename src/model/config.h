// Model hyperparameters, read from a model directory's config.json in any of the layouts we load:
// Hugging Face transformers MambaConfig, mamba_ssm's MambaConfig, and Caduceus.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dnamba {

enum class CheckpointLayout { HuggingFace, MambaSsm, Caduceus };
const char* layout_name(CheckpointLayout l);

struct ModelConfig {
  CheckpointLayout layout = CheckpointLayout::HuggingFace;
  int64_t d_model = 0;
  int64_t n_layer = 0;
  int64_t d_state = 16;
  int64_t d_conv = 4;
  int64_t d_inner = 0;     // expand * d_model, or HF intermediate_size
  int64_t dt_rank = 0;     // resolved ("auto" = ceil(d_model / 16))
  int64_t vocab_size = 0;  // as in the config
  int64_t pad_vocab_size_multiple = 1;
  bool proj_bias = false;  // in_proj / out_proj bias
  bool conv_bias = true;
  bool residual_in_fp32 = true;
  bool tie_embeddings = true;
  bool rms_norm = true;    // false: LayerNorm with bias (mamba_ssm rms_norm=false)
  bool fused_add_norm = false;
  float norm_eps = 1e-5f;
  // Caduceus
  bool bidirectional = false;
  std::string bidirectional_strategy = "add";
  bool bidirectional_weight_tie = true;
  bool rcps = false;
  std::vector<int32_t> complement_map;

  int64_t padded_vocab() const;
  bool causal() const { return !bidirectional; }
  std::string describe() const;
};

// Reads DIR/config.json. Throws Error naming the file and the field on anything missing or wrong.
ModelConfig load_model_config(const std::string& model_dir);

}  // namespace dnamba
