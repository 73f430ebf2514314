#include "model/mamba_lm.h"

#include <cmath>
#include <set>

#include "io/safetensors.h"

namespace dnamba {

Tensor Workspace::get(const std::string& name, int64_t rows, int64_t cols, DType dt) {
  for (auto& [n, t] : bufs_) {
    if (n != name) continue;
    if (t.dtype == dt && t.cols == cols && t.rows >= rows) return t.rows_view(0, rows);
    t = be_.alloc(std::max<int64_t>(rows, 1), cols, dt);
    return t.rows_view(0, rows);
  }
  bufs_.push_back({name, be_.alloc(std::max<int64_t>(rows, 1), cols, dt)});
  return bufs_.back().second.rows_view(0, rows);
}

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Reads a tensor of the expected shape as float32; errors name the tensor.
std::vector<float> read_checked(const io::SafetensorsFile& st, const std::string& name,
                                const std::vector<int64_t>& shape, std::vector<std::string>& used) {
  if (!st.has(name)) throw Error(st.path() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")");
  const auto& info = st.info(name);
  if (info.shape != shape)
    throw Error(st.path() + ": tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected " + shape_str(shape));
  used.push_back(name);
  return st.read_f32(name);
}

}  // namespace

MambaMixerWeights load_mixer(Backend& be, const io::SafetensorsFile& st, const std::string& p,
                             const ModelConfig& c, std::vector<std::string>& used) {
  const int64_t D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  MambaMixerWeights w;
  auto mat = [&](const std::string& n, int64_t r, int64_t cc) {
    auto v = read_checked(st, p + n, {r, cc}, used);
    return be.weight_matrix(v.data(), r, cc);
  };
  auto vec = [&](const std::string& n, int64_t len) {
    auto v = read_checked(st, p + n, {len}, used);
    return be.upload_f32(v.data(), 1, len);
  };
  w.in_proj_w = mat("in_proj.weight", 2 * E, D);
  if (c.proj_bias) w.in_proj_b = vec("in_proj.bias", 2 * E);
  {
    auto v = read_checked(st, p + "conv1d.weight", {E, 1, K}, used);
    w.conv_w = be.upload_f32(v.data(), E, K);
  }
  if (c.conv_bias) w.conv_b = vec("conv1d.bias", E);
  w.x_proj_w = mat("x_proj.weight", R + 2 * N, E);
  w.dt_proj_w = mat("dt_proj.weight", E, R);
  w.dt_proj_b = vec("dt_proj.bias", E);
  {
    auto v = read_checked(st, p + "A_log", {E, N}, used);
    for (auto& x : v) x = -std::exp(x);
    w.A = be.upload_f32(v.data(), E, N);
  }
  w.D = vec("D", E);
  w.out_proj_w = mat("out_proj.weight", D, E);
  if (c.proj_bias) w.out_proj_b = vec("out_proj.bias", D);
  return w;
}

void mixer_forward(Backend& be, Workspace& ws, const MambaMixerWeights& w, const ModelConfig& c,
                   const Tensor& x, int64_t batch, int64_t len, LayerState& state, Tensor& out, bool accumulate) {
  const int64_t T = batch * len, E = c.d_inner, N = c.d_state, R = c.dt_rank;
  auto opt = [](const Tensor& t) { return t.defined() ? &t : nullptr; };
  const DType adt = be.activation_dtype();  // F32, or BF16 on a GPU in bf16 mode
  Tensor xz = ws.get("xz", T, 2 * E, adt);                                          // [T, 2E]
  be.linear(x, w.in_proj_w, opt(w.in_proj_b), xz);
  Tensor xin = xz.cols_view(0, E);                                             // [T, E]
  Tensor z = xz.cols_view(E, E);                                               // [T, E]
  Tensor xc = ws.get("xc", T, E, adt);                                              // [T, E]
  be.conv1d_silu(xin, w.conv_w, opt(w.conv_b), state.conv, batch, len, xc);
  Tensor xdbl = ws.get("xdbl", T, R + 2 * N, adt);                                  // [T, R+2N]
  be.linear(xc, w.x_proj_w, nullptr, xdbl);
  Tensor dt = ws.get("dt", T, E, adt);                                              // [T, E]
  be.linear(xdbl.cols_view(0, R), w.dt_proj_w, nullptr, dt);
  Tensor Bm = xdbl.cols_view(R, N), Cm = xdbl.cols_view(R + N, N);             // [T, N] each
  Tensor y = ws.get("y", T, E, adt);                                                // [T, E]
  SelectiveScanArgs a;
  a.u = &xc;
  a.delta = &dt;
  a.A = &w.A;
  a.B = &Bm;
  a.C = &Cm;
  a.D = &w.D;
  a.z = &z;
  a.dt_bias = &w.dt_proj_b;
  a.delta_softplus = true;
  a.state = &state.ssm;
  a.out = &y;
  a.batch = batch;
  a.len = len;
  be.selective_scan(a);
  if (accumulate) be.linear_add(y, w.out_proj_w, opt(w.out_proj_b), out);
  else be.linear(y, w.out_proj_w, opt(w.out_proj_b), out);
}

MambaLM::MambaLM(const std::string& model_dir, Backend& be)
    : be_(be), dir_(model_dir), cfg_(load_model_config(model_dir)), ws_(be) {
  if (cfg_.layout == CheckpointLayout::Caduceus)
    throw Error(model_dir + ": a Caduceus (bidirectional) model cannot be run as a causal language model");
  const std::string path = model_dir + "/model.safetensors";
  io::SafetensorsFile st(path);
  const int64_t D = cfg_.d_model, V = cfg_.padded_vocab();
  std::vector<std::string> used;
  std::string emb_name = cfg_.layout == CheckpointLayout::MambaSsm ? "backbone.embedding.weight" : "backbone.embeddings.weight";
  // Accept either spelling: checkpoints converted between the two libraries keep the other one.
  if (!st.has(emb_name)) {
    std::string other = emb_name == "backbone.embedding.weight" ? "backbone.embeddings.weight" : "backbone.embedding.weight";
    if (st.has(other)) emb_name = other;
  }
  {
    if (!st.has(emb_name)) throw Error(path + ": missing tensor '" + emb_name + "'");
    auto info = st.info(emb_name);
    if (info.shape.size() != 2 || info.shape[1] != D || (info.shape[0] != V && info.shape[0] != cfg_.vocab_size))
      throw Error(path + ": tensor '" + emb_name + "' has shape " + shape_str(info.shape) + ", expected [" +
                  std::to_string(V) + ", " + std::to_string(D) + "]");
  }
  const int64_t Vrows = st.info(emb_name).shape[0];
  stored_dtype_ = st.info(emb_name).dtype_str;
  auto emb = read_checked(st, emb_name, {Vrows, D}, used);
  embedding_ = be.upload_f32(emb.data(), Vrows, D);
  if (!cfg_.tie_embeddings || st.has("lm_head.weight")) {
    auto lm = read_checked(st, "lm_head.weight", {Vrows, D}, used);
    lm_head_ = be.weight_matrix(lm.data(), Vrows, D);
  } else {
    lm_head_ = be.weight_matrix(emb.data(), Vrows, D);
  }
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    MambaBlockWeights b;
    auto nw = read_checked(st, p + "norm.weight", {D}, used);
    b.norm_w = be.upload_f32(nw.data(), 1, D);
    if (!cfg_.rms_norm) {
      auto nb = read_checked(st, p + "norm.bias", {D}, used);
      b.norm_b = be.upload_f32(nb.data(), 1, D);
    }
    b.mixer = load_mixer(be, st, p + "mixer.", cfg_, used);
    blocks_.push_back(std::move(b));
  }
  auto nf = read_checked(st, "backbone.norm_f.weight", {D}, used);
  norm_f_w_ = be.upload_f32(nf.data(), 1, D);
  if (!cfg_.rms_norm) {
    auto nb = read_checked(st, "backbone.norm_f.bias", {D}, used);
    norm_f_b_ = be.upload_f32(nb.data(), 1, D);
  }
  std::set<std::string> used_set(used.begin(), used.end());
  for (const auto& n : st.names()) {
    if (!used_set.count(n))
      throw Error(path + ": unexpected tensor '" + n + "' (not part of a " + std::string(layout_name(cfg_.layout)) +
                  " model with this config.json: " + cfg_.describe() + ")");
    if (st.info(n).dtype_str != stored_dtype_) stored_dtype_ = "mixed";
    n_params_ += st.info(n).numel();
  }
}

std::vector<LayerState> zero_layer_states(Backend& be, const ModelConfig& c, int64_t batch) {
  std::vector<LayerState> s(size_t(c.n_layer));
  for (auto& l : s) {
    l.conv = be.alloc(batch, c.d_inner * (c.d_conv - 1));
    l.ssm = be.alloc(batch, c.d_inner * c.d_state);
    be.zero(l.conv);
    be.zero(l.ssm);
  }
  return s;
}

std::vector<LayerState> MambaLM::new_state(int64_t batch) { return zero_layer_states(be_, cfg_, batch); }

void MambaLM::reset_state(std::vector<LayerState>& st) {
  for (auto& l : st) {
    be_.zero(l.conv);
    be_.zero(l.ssm);
  }
}

void MambaLM::forward(const Tensor& ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                      Tensor& hidden_out) {
  forward_layer(ids, batch, len, state, cfg_.n_layer, hidden_out);
}

void MambaLM::forward_layer(const Tensor& ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                            int64_t layer, Tensor& hidden_out) {
  const int64_t T = batch * len, D = cfg_.d_model;
  DNAMBA_CHECK(ids.rows == T, "forward: ids rows != batch*len");
  DNAMBA_CHECK(int64_t(state.size()) == cfg_.n_layer && state[0].ssm.rows == batch, "forward: state does not match the batch");
  DNAMBA_CHECK(hidden_out.rows == T && hidden_out.cols == D, "forward: hidden_out must be [batch*len, d_model]");
  DNAMBA_CHECK(layer >= 0 && layer <= cfg_.n_layer, "forward: layer must be in 0..n_layer");
  if (T == 0) return;
  if (layer == 0) {
    be_.embedding(ids, embedding_, hidden_out);
    return;
  }
  // The residual stream starts as the embedding; each block adds its mixer's output to it in the
  // out_proj product (linear_add), and add_norm with no x only normalises it for the next block.
  Tensor res = ws_.get("res", T, D);      // [T, D] residual stream
  Tensor normed = ws_.get("normed", T, D, be_.activation_dtype());  // in_proj input
  be_.embedding(ids, embedding_, res);
  for (int64_t i = 0; i < layer; ++i) {
    const auto& b = blocks_[size_t(i)];
    be_.add_norm(Tensor{}, res, false, b.norm_w, b.norm_b.defined() ? &b.norm_b : nullptr, cfg_.norm_eps, normed);
    mixer_forward(be_, ws_, b.mixer, cfg_, normed, batch, len, state[size_t(i)], res, /*accumulate=*/true);
  }
  if (layer == cfg_.n_layer) {
    be_.add_norm(Tensor{}, res, false, norm_f_w_, norm_f_b_.defined() ? &norm_f_b_ : nullptr, cfg_.norm_eps,
                 hidden_out);
    return;
  }
  be_.copy(hidden_out, res);  // the residual stream after `layer` blocks
}

void MambaLM::forward_host(const int32_t* ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                           Tensor& hidden_out) {
  Tensor t = ws_.get("ids", batch * len, 1, DType::I32);
  be_.to_device(t, ids);
  forward(t, batch, len, state, hidden_out);
}

}  // namespace dnamba
