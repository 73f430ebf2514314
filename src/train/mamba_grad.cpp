#include "train/mamba_grad.h"

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/safetensors.h"

namespace dnamba::train {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

}  // namespace

Param& TrainableMamba::add(const std::string& name, std::vector<int64_t> shape, bool decay) {
  DNAMBA_CHECK(params_.size() < params_.capacity(), "TrainableMamba: parameter table too small");
  Param p;
  p.name = name;
  p.shape = shape;
  p.decay = decay;
  int64_t rows = 1, cols = shape.back();
  if (shape.size() >= 2) rows = shape[0];
  for (size_t i = 1; i + 1 < shape.size(); ++i) cols *= shape[i];  // [E,1,K] -> [E,K]
  for (Tensor* t : {&p.value, &p.grad, &p.m, &p.v}) {
    *t = be_.alloc(rows, cols, DType::F32);
    be_.zero(*t);
  }
  params_.push_back(std::move(p));
  return params_.back();
}

TrainableMamba::TrainableMamba(TrainBackend& tb, const ModelConfig& cfg, int64_t recompute_chunk)
    : tb_(tb), be_(tb.fwd()), cfg_(cfg), chunk_(recompute_chunk), ws_(tb.fwd()) {
  if (!cfg_.causal()) throw Error("training: only causal Mamba language models can be trained (not Caduceus)");
  if (!cfg_.rms_norm) throw Error("training: only RMSNorm models can be trained (this config uses LayerNorm)");
  DNAMBA_CHECK(chunk_ > 0, "recompute chunk must be positive");
  const int64_t D = cfg_.d_model, E = cfg_.d_inner, N = cfg_.d_state, K = cfg_.d_conv, R = cfg_.dt_rank;
  const int64_t V = cfg_.padded_vocab();
  DNAMBA_CHECK(D > 0 && E > 0 && N > 0 && K > 0 && R > 0 && V > 11 && cfg_.n_layer > 0, "training: bad model config: " + cfg_.describe());
  params_.reserve(size_t(cfg_.n_layer) * 14 + 4);
  emb_ = &add("backbone.embeddings.weight", {V, D}, true);
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".";
    const std::string m = p + "mixer.";
    LayerParams l{};
    l.norm_w = &add(p + "norm.weight", {D}, false);
    l.in_w = &add(m + "in_proj.weight", {2 * E, D}, true);
    l.in_b = cfg_.proj_bias ? &add(m + "in_proj.bias", {2 * E}, false) : nullptr;
    l.conv_w = &add(m + "conv1d.weight", {E, 1, K}, true);
    l.conv_b = cfg_.conv_bias ? &add(m + "conv1d.bias", {E}, false) : nullptr;
    l.x_w = &add(m + "x_proj.weight", {R + 2 * N, E}, true);
    l.dt_w = &add(m + "dt_proj.weight", {E, R}, true);
    l.dt_b = &add(m + "dt_proj.bias", {E}, false);
    l.A_log = &add(m + "A_log", {E, N}, false);
    l.D = &add(m + "D", {E}, false);
    l.out_w = &add(m + "out_proj.weight", {D, E}, true);
    l.out_b = cfg_.proj_bias ? &add(m + "out_proj.bias", {D}, false) : nullptr;
    layers_.push_back(l);
    A_.push_back(be_.alloc(E, N, DType::F32));
  }
  norm_f_ = &add("backbone.norm_f.weight", {D}, false);
  if (!cfg_.tie_embeddings) lm_head_ = &add("lm_head.weight", {V, D}, true);
}

Param& TrainableMamba::param(const std::string& name) {
  for (auto& p : params_)
    if (p.name == name) return p;
  throw Error("no parameter named '" + name + "'");
}

int64_t TrainableMamba::parameter_count() const {
  int64_t n = 0;
  for (auto& p : params_) n += p.value.numel();
  return n;
}

std::vector<float> TrainableMamba::host(const Tensor& t) const {
  std::vector<float> h(size_t(t.numel()));
  be_.to_host(t, h.data());
  return h;
}

void TrainableMamba::upload(Tensor& t, const std::vector<float>& h) {
  DNAMBA_CHECK(int64_t(h.size()) == t.numel(), "upload: size mismatch");
  be_.to_device(t, h.data());
}

const Tensor& TrainableMamba::lm_weight() const { return lm_head_ ? lm_head_->value : emb_->value; }
Tensor& TrainableMamba::lm_grad() { return lm_head_ ? lm_head_->grad : emb_->grad; }

void TrainableMamba::zero_grad() {
  for (auto& p : params_) be_.zero(p.grad);
}

void TrainableMamba::refresh_A() {
  for (size_t i = 0; i < layers_.size(); ++i) tb_.neg_exp(layers_[i].A_log->value, A_[i]);
}

// As mamba_ssm initialises a MambaLMHeadModel: embedding N(0, 0.02); Linear weights
// U(+-1/sqrt(fan_in)) with zero biases, out_proj scaled by 1/sqrt(n_layer) (prenorm residual
// rescale); conv1d weight and bias U(+-1/sqrt(K)); dt_proj weight U(+-dt_rank^-1/2); dt_proj bias
// the inverse softplus of dt ~ logU(1e-3, 1e-1); A_log = log(1..N); D = 1; norms 1.
void TrainableMamba::init_random(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> unif(0.0, 1.0);
  auto fill = [&](Param* p, auto gen) {
    if (!p) return;
    std::vector<float> h(size_t(p->value.numel()));
    for (size_t k = 0; k < h.size(); ++k) h[k] = float(gen(k));
    upload(p->value, h);
  };
  auto uniform = [&](double bound) { return [&, bound](size_t) { return (2 * unif(rng) - 1) * bound; }; };
  const int64_t D = cfg_.d_model, E = cfg_.d_inner, N = cfg_.d_state, K = cfg_.d_conv, R = cfg_.dt_rank;
  fill(emb_, [&](size_t) { return 0.02 * normal(rng); });
  for (auto& l : layers_) {
    fill(l.norm_w, [](size_t) { return 1.0; });
    fill(l.in_w, uniform(1.0 / std::sqrt(double(D))));
    fill(l.conv_w, uniform(1.0 / std::sqrt(double(K))));
    fill(l.conv_b, uniform(1.0 / std::sqrt(double(K))));
    fill(l.x_w, uniform(1.0 / std::sqrt(double(E))));
    fill(l.dt_w, uniform(1.0 / std::sqrt(double(R))));
    fill(l.dt_b, [&](size_t) {
      double dt = std::exp(std::log(1e-3) + unif(rng) * (std::log(1e-1) - std::log(1e-3)));
      dt = std::max(dt, 1e-4);
      return dt + std::log(-std::expm1(-dt));
    });
    fill(l.A_log, [&](size_t k) { return std::log(double(k % size_t(N) + 1)); });
    fill(l.D, [](size_t) { return 1.0; });
    fill(l.out_w, uniform(1.0 / std::sqrt(double(E)) / std::sqrt(double(cfg_.n_layer))));
    // in_proj / out_proj biases stay zero.
  }
  fill(norm_f_, [](size_t) { return 1.0; });
  fill(lm_head_, uniform(1.0 / std::sqrt(double(D))));
  for (auto& p : params_) {
    be_.zero(p.m);
    be_.zero(p.v);
  }
}

void TrainableMamba::load(const std::string& model_dir) {
  const std::string path = model_dir + "/model.safetensors";
  io::SafetensorsFile st(path);
  std::set<std::string> used;
  for (auto& p : params_) {
    std::string name = p.name;
    if (!st.has(name) && name == "backbone.embeddings.weight" && st.has("backbone.embedding.weight"))
      name = "backbone.embedding.weight";
    if (!st.has(name)) throw Error(path + ": missing tensor '" + p.name + "' (expected shape " + shape_str(p.shape) + ")");
    if (st.info(name).shape != p.shape)
      throw Error(path + ": tensor '" + name + "' has shape " + shape_str(st.info(name).shape) + ", expected " + shape_str(p.shape));
    upload(p.value, st.read_f32(name));
    used.insert(name);
  }
  for (const auto& n : st.names()) {
    if (used.count(n)) continue;
    // A tied checkpoint may still carry lm_head.weight equal to the embedding; untie is not implied.
    if (n == "lm_head.weight" && cfg_.tie_embeddings) continue;
    throw Error(path + ": unexpected tensor '" + n + "' for " + cfg_.describe());
  }
}

void TrainableMamba::save(const std::string& dir, const std::string& note) const {
  std::filesystem::create_directories(dir);
  nlohmann::json j;
  j["architectures"] = {"MambaForCausalLM"};
  j["model_type"] = "mamba";
  j["hidden_size"] = cfg_.d_model;
  j["num_hidden_layers"] = cfg_.n_layer;
  j["state_size"] = cfg_.d_state;
  j["conv_kernel"] = cfg_.d_conv;
  j["expand"] = cfg_.d_inner % cfg_.d_model == 0 ? cfg_.d_inner / cfg_.d_model : 2;
  j["intermediate_size"] = cfg_.d_inner;
  j["time_step_rank"] = cfg_.dt_rank;
  j["vocab_size"] = cfg_.padded_vocab();
  j["use_bias"] = cfg_.proj_bias;
  j["use_conv_bias"] = cfg_.conv_bias;
  j["residual_in_fp32"] = true;
  j["tie_word_embeddings"] = cfg_.tie_embeddings;
  {
    char eps[32];  // 1e-05, not the float's 9.99999974e-06
    std::snprintf(eps, sizeof eps, "%.6g", double(cfg_.norm_eps));
    j["layer_norm_epsilon"] = std::stod(eps);
  }
  j["hidden_act"] = "silu";
  j["pad_token_id"] = 4;
  j["bos_token_id"] = 2;
  j["eos_token_id"] = 1;
  if (!note.empty()) j["dnamba_note"] = note;
  {
    const std::string tmp = dir + "/config.json.tmp";
    std::ofstream o(tmp);
    o << j.dump(2) << "\n";
    if (!o.good()) throw Error(dir + "/config.json: cannot write");
    o.close();
    std::filesystem::rename(tmp, dir + "/config.json");
  }
  std::vector<std::vector<float>> hosts;
  hosts.reserve(params_.size());
  std::vector<io::StWriteTensor> ts;
  for (auto& p : params_) {
    hosts.push_back(host(p.value));
    ts.push_back({p.name, p.shape, hosts.back().data()});
  }
  io::write_safetensors(dir + "/model.safetensors", ts, {{"format", "pt"}});
}

MambaMixerWeights TrainableMamba::mixer_weights(size_t i) const {
  const auto& l = layers_[i];
  MambaMixerWeights w;
  w.in_proj_w = l.in_w->value;
  if (l.in_b) w.in_proj_b = l.in_b->value;
  w.conv_w = l.conv_w->value;
  if (l.conv_b) w.conv_b = l.conv_b->value;
  w.x_proj_w = l.x_w->value;
  w.dt_proj_w = l.dt_w->value;
  w.dt_proj_b = l.dt_b->value;
  w.A = A_[i];
  w.D = l.D->value;
  w.out_proj_w = l.out_w->value;
  if (l.out_b) w.out_proj_b = l.out_b->value;
  return w;
}

std::vector<LayerState> TrainableMamba::new_state(int64_t batch) { return zero_layer_states(be_, cfg_, batch); }

void TrainableMamba::forward_logprobs(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len,
                                      std::vector<LayerState>& state, std::vector<float>& logprobs) {
  const int64_t T = batch * len, D = cfg_.d_model;
  refresh_A();
  Tensor ids_t = ws_.get("ids", T, 1, DType::I32);
  Tensor tg_t = ws_.get("targets", T, 1, DType::I32);
  be_.to_device(ids_t, ids);
  be_.to_device(tg_t, targets);
  Tensor h = ws_.get("h", T, D), res = ws_.get("res_eval", T, D), normed = ws_.get("normed", T, D);
  be_.embedding(ids_t, emb_->value, h);
  for (size_t i = 0; i < layers_.size(); ++i) {
    be_.add_norm(h, res, i == 0, layers_[i].norm_w->value, nullptr, cfg_.norm_eps, normed);
    mixer_forward(be_, ws_, mixer_weights(i), cfg_, normed, batch, len, state[i], h);
  }
  be_.add_norm(h, res, false, norm_f_->value, nullptr, cfg_.norm_eps, normed);
  Tensor out = ws_.get("logprobs", T, 5);
  be_.token_logprobs(normed, lm_weight(), tg_t, out);
  logprobs.resize(size_t(T * 5));
  be_.to_host(out, logprobs.data());
}

double TrainableMamba::forward_backward(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len,
                                        float loss_scale) {
  return run(ids, targets, batch, len, loss_scale, true);
}

double TrainableMamba::forward_loss(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len) {
  return run(ids, targets, batch, len, 0.0f, false);
}

double TrainableMamba::run(const int32_t* ids, const int32_t* targets, int64_t batch, int64_t len, float loss_scale,
                           bool backward) {
  const int64_t T = batch * len, D = cfg_.d_model, E = cfg_.d_inner, N = cfg_.d_state, K = cfg_.d_conv;
  const int64_t R = cfg_.dt_rank, L = cfg_.n_layer, nch = (len + chunk_ - 1) / chunk_;
  const float eps = cfg_.norm_eps;
  DNAMBA_CHECK(T > 0, "forward_backward: empty batch");
  refresh_A();
  Tensor ids_t = ws_.get("ids", T, 1, DType::I32);
  Tensor tg_t = ws_.get("targets", T, 1, DType::I32);
  be_.to_device(ids_t, ids);
  be_.to_device(tg_t, targets);

  // Kept from the forward for the backward (see the header).
  std::vector<Tensor> res(static_cast<size_t>(L + 1)), xz(static_cast<size_t>(L)), y(static_cast<size_t>(L)),
      cs(static_cast<size_t>(L));
  for (int64_t i = 0; i <= L; ++i) res[size_t(i)] = ws_.get("res" + std::to_string(i), T, D);    // [T, D]
  for (int64_t i = 0; i < L; ++i) {
    xz[size_t(i)] = ws_.get("xz" + std::to_string(i), T, 2 * E);                                  // [T, 2E]
    y[size_t(i)] = ws_.get("y" + std::to_string(i), T, E);                                        // [T, E]
    cs[size_t(i)] = ws_.get("scan_states" + std::to_string(i), batch * nch, E * N);               // [B*nch, E*N]
  }
  // Scratch, recomputed in the backward.
  Tensor h = ws_.get("h", T, D);                 // [T, D] block output
  Tensor normed = ws_.get("normed", T, D);       // [T, D]
  Tensor xc = ws_.get("xc", T, E);               // [T, E] conv output = scan input u
  Tensor xdbl = ws_.get("xdbl", T, R + 2 * N);   // [T, R+2N] = [dt_low | B | C]
  Tensor dt = ws_.get("dt", T, E);               // [T, E]
  Tensor conv_state = ws_.get("conv_state", batch, E * (K - 1));
  Tensor ssm_state = ws_.get("ssm_state", batch, E * N);
  auto opt = [](const Param* p) -> const Tensor* { return p ? &p->value : nullptr; };
  auto optg = [](Param* p) -> Tensor* { return p ? &p->grad : nullptr; };

  auto recompute_conv_proj = [&](size_t i) {
    const auto& l = layers_[i];
    be_.zero(conv_state);  // training windows start from zero state
    be_.conv1d_silu(xz[i].cols_view(0, E), l.conv_w->value, opt(l.conv_b), conv_state, batch, len, xc);
    be_.linear(xc, l.x_w->value, nullptr, xdbl);
    be_.linear(xdbl.cols_view(0, R), l.dt_w->value, nullptr, dt);
  };
  Tensor Bm = xdbl.cols_view(R, N), Cm = xdbl.cols_view(R + N, N);
  auto scan_args = [&](size_t i, Tensor& z, Tensor& out) {
    SelectiveScanArgs a;
    a.u = &xc;
    a.delta = &dt;
    a.A = &A_[i];
    a.B = &Bm;
    a.C = &Cm;
    a.D = &layers_[i].D->value;
    a.z = &z;
    a.dt_bias = &layers_[i].dt_b->value;
    a.delta_softplus = true;
    a.state = &ssm_state;
    a.out = &out;
    a.batch = batch;
    a.len = len;
    return a;
  };

  // ---- forward
  be_.embedding(ids_t, emb_->value, h);
  for (size_t i = 0; i < size_t(L); ++i) {
    const auto& l = layers_[i];
    if (i > 0) be_.copy(res[i], res[i - 1]);
    be_.add_norm(h, res[i], i == 0, l.norm_w->value, nullptr, eps, normed);
    be_.linear(normed, l.in_w->value, opt(l.in_b), xz[i]);
    recompute_conv_proj(i);
    Tensor z = xz[i].cols_view(E, E);
    be_.zero(ssm_state);
    auto a = scan_args(i, z, y[i]);
    tb_.selective_scan_forward_ckpt(a, chunk_, cs[i]);
    be_.linear(y[i], l.out_w->value, opt(l.out_b), h);
  }
  be_.copy(res[size_t(L)], res[size_t(L - 1)]);
  be_.add_norm(h, res[size_t(L)], false, norm_f_->value, nullptr, eps, normed);  // normed = final hidden

  // ---- loss
  Tensor dhid = ws_.get("dhidden", T, D);
  if (!backward) {
    Tensor dlm = ws_.get("dlm_unused", lm_weight().rows, lm_weight().cols);  // not a Param::grad
    return tb_.cross_entropy(normed, lm_weight(), tg_t, 0.0f, dhid, dlm);
  }
  const double loss = tb_.cross_entropy(normed, lm_weight(), tg_t, loss_scale, dhid, lm_grad());

  // ---- backward. dres is the gradient of the residual stream: it is the gradient of each block's
  // output and of the residual it was added to, since the add passes it to both.
  Tensor dres = ws_.get("dres", T, D);
  be_.zero(dres);
  tb_.add_rmsnorm_backward(res[size_t(L)], norm_f_->value, eps, dhid, dres, norm_f_->grad);
  Tensor dnormed = ws_.get("dnormed", T, D);
  Tensor dy = ws_.get("dy", T, E);
  Tensor dxz = ws_.get("dxz", T, 2 * E);
  Tensor dxc = ws_.get("dxc", T, E);
  Tensor ddt = ws_.get("ddt", T, E);
  Tensor dxdbl = ws_.get("dxdbl", T, R + 2 * N);
  Tensor rtmp = ws_.get("res_tmp", T, D);
  for (int64_t ii = L - 1; ii >= 0; --ii) {
    const size_t i = size_t(ii);
    auto& l = layers_[i];
    // Recompute the block's inputs that were not kept.
    be_.add_norm(res[i], rtmp, true, l.norm_w->value, nullptr, eps, normed);
    recompute_conv_proj(i);
    // out_proj: h = y . W_out^T
    tb_.linear_backward(y[i], l.out_w->value, dres, &dy, false, &l.out_w->grad, optg(l.out_b));
    // selective scan (recomputes its states chunk by chunk)
    Tensor z = xz[i].cols_view(E, E);
    Tensor dz = dxz.cols_view(E, E), dB = dxdbl.cols_view(R, N), dC = dxdbl.cols_view(R + N, N);
    auto a = scan_args(i, z, y[i]);
    ScanGrads g;
    g.du = &dxc;
    g.ddelta = &ddt;
    g.dA_log = &l.A_log->grad;
    g.dB = &dB;
    g.dC = &dC;
    g.dD = &l.D->grad;
    g.dz = &dz;
    g.ddt_bias = &l.dt_b->grad;
    tb_.selective_scan_backward(a, chunk_, cs[i], dy, g);
    // dt_proj: dt = xdbl[:, :R] . W_dt^T
    Tensor ddt_low = dxdbl.cols_view(0, R);
    tb_.linear_backward(xdbl.cols_view(0, R), l.dt_w->value, ddt, &ddt_low, false, &l.dt_w->grad, nullptr);
    // x_proj: xdbl = xc . W_x^T ; xc also fed the scan (du above), so dx accumulates
    tb_.linear_backward(xc, l.x_w->value, dxdbl, &dxc, true, &l.x_w->grad, nullptr);
    // conv1d + SiLU from zero state
    Tensor dxin = dxz.cols_view(0, E);
    tb_.conv1d_silu_backward(xz[i].cols_view(0, E), l.conv_w->value, opt(l.conv_b), nullptr, batch, len, dxc, dxin,
                             l.conv_w->grad, optg(l.conv_b));
    // in_proj
    tb_.linear_backward(normed, l.in_w->value, dxz, &dnormed, false, &l.in_w->grad, optg(l.in_b));
    // norm (and the residual add before it)
    tb_.add_rmsnorm_backward(res[i], l.norm_w->value, eps, dnormed, dres, l.norm_w->grad);
  }
  tb_.embedding_backward(ids_t, dres, emb_->grad);
  return loss;
}

}  // namespace dnamba::train
