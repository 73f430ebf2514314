// The Mamba language model (Mamba-1 blocks, RMSNorm, tied or separate LM head), written against
// the Backend interface. Loads HF transformers and mamba_ssm checkpoints as they are.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/config.h"

namespace dnamba {

namespace io { class SafetensorsFile; }

// One Mamba mixer (in_proj -> conv1d+SiLU -> x_proj/dt_proj -> selective scan -> out_proj).
struct MambaMixerWeights {
  Tensor in_proj_w;   // [2*E, D]
  Tensor in_proj_b;   // [1, 2*E] or undefined
  Tensor conv_w;      // [E, K]
  Tensor conv_b;      // [1, E] or undefined
  Tensor x_proj_w;    // [R + 2N, E]
  Tensor dt_proj_w;   // [E, R]
  Tensor dt_proj_b;   // [1, E]
  Tensor A;           // [E, N] = -exp(A_log)
  Tensor D;           // [1, E]
  Tensor out_proj_w;  // [D, E]
  Tensor out_proj_b;  // [1, D] or undefined
};

struct MambaBlockWeights {
  Tensor norm_w;  // [1, D]
  Tensor norm_b;  // [1, D] or undefined (RMSNorm)
  MambaMixerWeights mixer;
};

// Reusable activation buffers, grown on demand (never shrunk) so a streaming run allocates once.
class Workspace {
 public:
  explicit Workspace(Backend& be) : be_(be) {}
  // A [rows, cols] view of the named buffer, of dtype dt.
  Tensor get(const std::string& name, int64_t rows, int64_t cols, DType dt = DType::F32);

 private:
  Backend& be_;
  std::vector<std::pair<std::string, Tensor>> bufs_;
};

// Loads the tensors of one mixer whose names start with `prefix` (e.g. "backbone.layers.3.mixer.").
MambaMixerWeights load_mixer(Backend& be, const io::SafetensorsFile& st, const std::string& prefix,
                             const ModelConfig& c, std::vector<std::string>& used);
// Zero recurrent state of `batch` sequences for every layer of a model with config c.
std::vector<LayerState> zero_layer_states(Backend& be, const ModelConfig& c, int64_t batch);
// Runs one mixer over x [batch*len, D] into out [batch*len, D] (accumulate: added to out, which is
// then F32), updating `state`.
void mixer_forward(Backend& be, Workspace& ws, const MambaMixerWeights& w, const ModelConfig& c,
                   const Tensor& x, int64_t batch, int64_t len, LayerState& state, Tensor& out,
                   bool accumulate = false);

class MambaLM {
 public:
  // Loads DIR/config.json and DIR/model.safetensors onto `be`.
  MambaLM(const std::string& model_dir, Backend& be);
  const ModelConfig& config() const { return cfg_; }
  Backend& backend() { return be_; }
  const std::string& dir() const { return dir_; }
  int64_t parameter_count() const { return n_params_; }
  const std::string& stored_dtype() const { return stored_dtype_; }

  // Fresh (zero) recurrent state for `batch` sequences.
  std::vector<LayerState> new_state(int64_t batch);
  void reset_state(std::vector<LayerState>& st);

  // ids: [batch*len, 1] I32 on the backend; hidden_out: [batch*len, D] after the final norm.
  void forward(const Tensor& ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
               Tensor& hidden_out);
  // Hidden states of one layer, numbered as Hugging Face's output_hidden_states (0..n_layer):
  // layer 0 = token embeddings, layer K (1 <= K < n_layer) = residual stream after K blocks (before
  // any norm), layer n_layer = after the final norm (the same as forward()). Blocks after the
  // chosen layer are not run and their entries of `state` are left untouched.
  // hidden_out: [batch*len, D].
  void forward_layer(const Tensor& ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                     int64_t layer, Tensor& hidden_out);
  // Host-ids convenience: uploads ids then forward().
  void forward_host(const int32_t* ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                    Tensor& hidden_out);
  const Tensor& lm_head() const { return lm_head_; }
  Workspace& workspace() { return ws_; }

 private:
  Backend& be_;
  std::string dir_;
  ModelConfig cfg_;
  Tensor embedding_;  // [V, D]
  Tensor lm_head_;    // [V, D]
  std::vector<MambaBlockWeights> blocks_;
  Tensor norm_f_w_, norm_f_b_;
  int64_t n_params_ = 0;
  std::string stored_dtype_;
  Workspace ws_;
};

}  // namespace dnamba
