// The trainable Mamba LM: fp32 master parameters under their Hugging Face checkpoint names, their
// gradients and AdamW moments, and the forward + backward of the whole model written against the
// TrainBackend interface.
//
// Memory (recomputation): per layer the forward keeps only the residual stream r [T,D], in_proj's
// output xz [T,2E], the scan output y [T,E] and the scan states at every `recompute_chunk`-th
// position [T/chunk, E*N]. The backward recomputes the norm output, the conv output, x_proj and
// dt_proj from those, and the scan states inside each chunk from its boundary state.
#pragma once
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/mamba_lm.h"
#include "train/train_backend.h"

namespace dnamba::train {

struct Param {
  std::string name;            // HF name, e.g. "backbone.layers.0.mixer.in_proj.weight"
  std::vector<int64_t> shape;  // shape in the checkpoint
  bool decay = false;          // AdamW weight decay applies (matrices; not norms, biases, A_log, D)
  Tensor value, grad, m, v;    // [rows, cols] F32 views on the backend (vectors are [1, n])
};

class TrainableMamba {
 public:
  // Allocates zeroed parameters for `cfg` (causal, RMSNorm). recompute_chunk: see above.
  TrainableMamba(TrainBackend& tb, const ModelConfig& cfg, int64_t recompute_chunk = 64);
  const ModelConfig& config() const { return cfg_; }
  TrainBackend& backend() { return tb_; }
  std::vector<Param>& params() { return params_; }
  Param& param(const std::string& name);
  int64_t parameter_count() const;
  int64_t recompute_chunk() const { return chunk_; }

  // Mamba's initialisation (as mamba_ssm's): see mamba_grad.cpp.
  void init_random(uint64_t seed);
  // Parameter values from a model directory (HF or mamba_ssm names; A_log etc. as stored).
  void load(const std::string& model_dir);
  // Writes config.json (HF layout) and model.safetensors (fp32) into dir; `note` goes into config.json.
  void save(const std::string& model_dir, const std::string& note = "") const;
  // Host copies of every parameter / moment (for checkpoints and tests).
  std::vector<float> host(const Tensor& t) const;
  void upload(Tensor& t, const std::vector<float>& host);

  void zero_grad();
  // One forward and backward over `batch` sequences of `len` tokens starting from zero state.
  // ids, targets: host [batch*len] (targets < 0 are not counted). Gradients of
  // loss_scale * (sum of -log p(target)) are added to every Param::grad.
  // Returns the unscaled sum of -log p (nats) over the counted targets.
  double forward_backward(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len, float loss_scale);
  // The same training forward and loss, without the backward (benchmarks: forward-only time).
  // The fused loss still forms its (tiny) logit gradient, with scale 0; no Param::grad changes.
  double forward_loss(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len);

  // Inference over the current parameters with carried state (validation): writes
  // logprobs [batch*len, 5] as Backend::token_logprobs does.
  std::vector<LayerState> new_state(int64_t batch);
  void forward_logprobs(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len,
                        std::vector<LayerState>& state, std::vector<float>& logprobs);

 private:
  struct LayerParams {
    Param *norm_w, *in_w, *in_b, *conv_w, *conv_b, *x_w, *dt_w, *dt_b, *A_log, *D, *out_w, *out_b;
  };
  Param& add(const std::string& name, std::vector<int64_t> shape, bool decay);
  const Tensor& lm_weight() const;
  Tensor& lm_grad();
  void refresh_A();  // A = -exp(A_log) for every layer
  MambaMixerWeights mixer_weights(size_t layer) const;
  double run(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len, float loss_scale, bool backward);

  TrainBackend& tb_;
  Backend& be_;
  ModelConfig cfg_;
  int64_t chunk_;
  std::vector<Param> params_;
  std::vector<LayerParams> layers_;
  Param *emb_ = nullptr, *norm_f_ = nullptr, *lm_head_ = nullptr;
  std::vector<Tensor> A_;  // per layer [E, N]
  Workspace ws_;
};

}  // namespace dnamba::train
