// Caduceus: bidirectional (BiMamba) masked DNA language models, in the two released variants:
//   PS (rcps: true)  reverse-complement parameter sharing: every layer carries a forward half and a
//                    reverse-complement half of d_model channels each; hidden size 2*d_model; the
//                    model is RC-equivariant by construction.
//   Ph (rcps: false) a plain bidirectional model (RC-averaging happens post hoc, outside the model).
// Loads kuleshov-group/caduceus checkpoints (CaduceusForMaskedLM) as released; written against the
// Backend interface only, so it runs on every backend.
//
// How the forward is laid out (see caduceus.cpp for the derivation):
// - Activations are "streams" stacked along rows: PS has 2 streams (forward half, RC half, both in
//   forward time and the reference's channel order), Ph has 1. A batch of `batch` sequences of `len`
//   tokens is [nstreams*batch*len, d_model]; stream s occupies rows s*batch*len ...
// - The reverse Mamba of BiMamba runs on the time-flipped sequence; time flips are
//   Backend::flip_rows (a copy kernel on the GPU), channel flips of the RC half are folded into weights.
// - The large intermediates (in_proj output, conv/scan outputs, block-input norm) are in
//   Backend::activation_dtype(): bf16 on a GPU in bf16 mode, like the causal model.
// - A bidirectional model sees the whole input at once: there is no state carried between calls.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"
#include "model/mamba_lm.h"

namespace dnamba {

// The selective-SSM part of one direction's Mamba (everything but in_proj and out_proj).
struct CaduceusSsmWeights {
  Tensor conv_w;     // [E, K]
  Tensor conv_b;     // [1, E] or undefined
  Tensor x_proj_w;   // [R + 2N, E]
  Tensor dt_proj_w;  // [E, R]
  Tensor dt_proj_b;  // [1, E]
  Tensor A;          // [E, N] = -exp(A_log)
  Tensor D;          // [1, E]
};

// Index [s] = stream (0 forward, 1 RC half of PS), [d] = direction (0 mamba_fwd, 1 mamba_rev).
struct CaduceusLayerWeights {
  Tensor norm_w[2], norm_b[2];      // [1, D]; stream 1 holds the weights reversed (channel order)
  CaduceusSsmWeights ssm[2];
  Tensor in_w[2][2], in_b[2][2];    // [2E, D], [1, 2E]; stream 1: input columns reversed. Tied: [s][1] unset
  Tensor out_cat_w[2], out_cat_b[2];  // strategy add: [D, ndir*E] = [W_fwd | W_rev] (stream 1: rows reversed)
  Tensor out_w[2][2], out_b[2][2];  // strategy ew_multiply: [D, E] per direction (stream 1: rows reversed)
};

class CaduceusModel {
 public:
  // Loads DIR/config.json and DIR/model.safetensors onto `be`. Every missing, unexpected or
  // misshapen tensor is an Error naming it.
  CaduceusModel(const std::string& model_dir, Backend& be);

  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const std::string& dir() const { return dir_; }
  bool rc_equivariant() const { return cfg_.rcps; }
  int64_t streams() const { return cfg_.rcps ? 2 : 1; }
  // Width of last_hidden: 2*d_model for PS (forward half, RC half), d_model for Ph.
  int64_t hidden_size() const { return streams() * cfg_.d_model; }
  int64_t vocab_rows() const { return lm_head_.rows; }
  int64_t parameter_count() const { return n_params_; }
  const std::string& stored_dtype() const { return stored_dtype_; }
  // Sequence length the model was trained on when the model directory says so, else 0.
  int64_t training_length() const { return train_len_; }
  // The complement of each token id (from the checkpoint's buffers or config.json).
  const std::vector<int32_t>& complement_map() const { return comp_lm_; }

  // ids: host [batch*len] token ids, sequence b at b*len. hidden_out: [batch*len, hidden_size()]
  // (PS: columns 0..D-1 the forward half, D..2D-1 the RC half in the reference's layout).
  void forward(const int32_t* ids, int64_t batch, int64_t len, Tensor& hidden_out);
  // logits = hidden . lm_head()^T (PS: the RC-equivariant head folded into one [V, 2D] matrix).
  const Tensor& lm_head() const { return lm_head_; }
  Workspace& workspace() { return ws_; }

 private:
  void mixer(const CaduceusLayerWeights& w, const Tensor& normed, int64_t batch, int64_t len, int out_parity,
             Tensor& h);
  int parity(int64_t layer) const;

  Backend& be_;
  std::string dir_;
  ModelConfig cfg_;
  int ndir_ = 2;
  bool tied_ = true;
  bool swap_halves_ = true;       // PS with fused_add_norm: the fused path swaps halves (see .cpp)
  Tensor emb_[2];                 // [V, D] per stream (stream 1: complement rows, reversed channels)
  Tensor lm_head_;                // [V, hidden_size()]
  std::vector<CaduceusLayerWeights> layers_;
  Tensor norm_f_w_[2], norm_f_b_[2];
  std::vector<int32_t> comp_emb_, comp_lm_;
  int64_t n_params_ = 0, train_len_ = 0;
  std::string stored_dtype_;
  Workspace ws_;
};

// True when DIR/config.json describes a Caduceus model.
bool is_caduceus_model(const std::string& model_dir);

}  // namespace dnamba
