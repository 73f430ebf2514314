// Caduceus forward, derived from the reference (kuleshov-group/caduceus, CaduceusForMaskedLM).
//
// Notation: a PS hidden state is H = [F | G] ([T, 2D]): F the forward half, G the RC half stored in
// forward time with its channels reversed (the reference's layout); flipTC(G) is the RC stream in its
// own coordinates. Per layer the reference computes, with S = H + residual (S = H in layer 0):
//   fused_add_norm (released checkpoints): residual' = [S_G | S_F]   (halves swapped)
//                                           normed   = [norm(S_G)*w | norm(S_F)*reverse(w)]
//   unfused (RCPSAddNormWrapper):          residual' = [S_F | S_G],  normed = [norm(S_F)*w | norm(S_G)*reverse(w)]
//   H' = [BiMamba(normed_F) | flipTC(BiMamba(flipTC(normed_G)))]
// and at the end norm_f without a swap: [norm(S_F)*w | norm(S_G)*reverse(w)];
// logits = F . W^T + flipC(G) . W[comp]^T, W the embedding (tied).
// BiMamba(x) = mamba_fwd(x) + flipT(mamba_rev(flipT(x)))   (or * for ew_multiply).
//
// Implementation:
// - Streams are stacked along rows ([2*B*L, D]); stream 1 (RC) stays in forward time with reversed
//   channels, so no channel flip is ever executed: the reversals are folded into weights
//   (norm weights reversed, in_proj columns reversed, out_proj rows reversed, a second embedding table
//   holding reverse(E[comp[v]]), and a [V, 2D] LM head [W | reverse(W[comp])]).
// - For the RC stream, flipTC(BiMamba(flipTC(x))) = flipC(mamba_rev(x') + flipT(mamba_fwd(flipT(x'))))
//   with x' = flipC(x): mamba_rev runs in natural time on the RC stream, mamba_fwd on the flipped one.
//   So each direction runs once over both streams (batch 2B), one of them time-flipped.
// - The fused half swap is absorbed by storing the residual of layer i with its stream blocks swapped
//   when i is odd (parity); the mixer writes its output blocks in the next layer's parity, so every
//   residual update is one in-place add_norm per stream block.
// - The two directions' outputs are combined by one matrix product: [y_fwd | flipT(y_rev)] . [Wf | Wr]^T.
#include "model/caduceus.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/safetensors.h"
#include "model/tokenizer.h"

namespace dnamba {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

struct Loader {
  const io::SafetensorsFile& st;
  std::set<std::string> used;

  std::vector<float> read(const std::string& name, const std::vector<int64_t>& shape, const std::string& hint = "") {
    if (!st.has(name))
      throw Error(st.path() + ": missing tensor '" + name + "' (expected shape " + shape_str(shape) + ")" + hint);
    const auto& info = st.info(name);
    if (info.shape != shape)
      throw Error(st.path() + ": tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected " +
                  shape_str(shape));
    used.insert(name);
    return st.read_f32(name);
  }
  // A complement map buffer [V] (int64); empty when absent.
  std::vector<int32_t> complement(const std::string& name, int64_t V) {
    if (!st.has(name)) return {};
    const auto& info = st.info(name);
    if (info.shape != std::vector<int64_t>{V})
      throw Error(st.path() + ": tensor '" + name + "' has shape " + shape_str(info.shape) + ", expected [" +
                  std::to_string(V) + "]");
    used.insert(name);
    auto v = st.read_i64(name);
    std::vector<int32_t> m(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      if (v[i] < 0 || v[i] >= V)
        throw Error(st.path() + ": tensor '" + name + "' maps token " + std::to_string(i) + " to " +
                    std::to_string(v[i]) + ", outside the vocabulary of " + std::to_string(V));
      m[i] = int32_t(v[i]);
    }
    return m;
  }
};

std::vector<float> reversed(const std::vector<float>& v) { return {v.rbegin(), v.rend()}; }

// [rows, cols] row-major with the order of the columns reversed.
std::vector<float> reverse_cols(const std::vector<float>& m, int64_t rows, int64_t cols) {
  std::vector<float> r(m.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) r[i * cols + j] = m[i * cols + (cols - 1 - j)];
  return r;
}

// [rows, cols] row-major with the order of the rows reversed.
std::vector<float> reverse_rows(const std::vector<float>& m, int64_t rows, int64_t cols) {
  std::vector<float> r(m.size());
  for (int64_t i = 0; i < rows; ++i) std::copy_n(m.begin() + (rows - 1 - i) * cols, cols, r.begin() + i * cols);
  return r;
}

int64_t read_training_length(const std::string& dir) {
  using nlohmann::json;
  auto from = [](const std::string& file, std::initializer_list<const char*> keys) -> int64_t {
    std::ifstream in(file);
    if (!in) return 0;
    json j = json::parse(in, nullptr, false);
    if (!j.is_object()) return 0;
    for (const char* k : keys)
      if (j.contains(k) && j[k].is_number_integer()) {
        int64_t v = j[k].get<int64_t>();
        if (v > 0 && v < (int64_t(1) << 32)) return v;  // tokenizers write 1e30 for "unlimited"
      }
    return 0;
  };
  int64_t v = from(dir + "/config.json", {"max_seq_len", "seq_len", "l_max", "max_position_embeddings", "n_positions"});
  if (v == 0) v = from(dir + "/tokenizer_config.json", {"model_max_length"});
  return v;
}

}  // namespace

bool is_caduceus_model(const std::string& model_dir) {
  return load_model_config(model_dir).layout == CheckpointLayout::Caduceus;
}

int CaduceusModel::parity(int64_t layer) const { return swap_halves_ ? int(layer & 1) : 0; }

CaduceusModel::CaduceusModel(const std::string& model_dir, Backend& be)
    : be_(be), dir_(model_dir), cfg_(load_model_config(model_dir)), ws_(be) {
  if (cfg_.layout != CheckpointLayout::Caduceus)
    throw Error(model_dir + ": not a Caduceus model (config.json has no model_type 'caduceus')");
  if (cfg_.vocab_size <= kTokN)
    throw Error(model_dir + "/config.json: vocab_size " + std::to_string(cfg_.vocab_size) + " cannot hold the DNA tokens");
  ndir_ = cfg_.bidirectional ? 2 : 1;
  tied_ = cfg_.bidirectional_weight_tie;
  swap_halves_ = cfg_.rcps && cfg_.fused_add_norm;
  train_len_ = read_training_length(model_dir);

  const std::string path = model_dir + "/model.safetensors";
  io::SafetensorsFile st(path);
  Loader ld{st, {}};
  const int64_t D = cfg_.d_model, E = cfg_.d_inner, N = cfg_.d_state, K = cfg_.d_conv, R = cfg_.dt_rank;
  const int64_t nS = streams();

  std::string root;
  if (st.has("caduceus.backbone.norm_f.weight")) root = "caduceus.";
  else if (!st.has("backbone.norm_f.weight"))
    throw Error(path + ": missing tensor 'caduceus.backbone.norm_f.weight' (not a Caduceus checkpoint?)");
  const std::string bb = root + "backbone.";
  const std::string ps_emb = bb + "embeddings.word_embeddings.embedding.weight";
  const std::string ph_emb = bb + "embeddings.word_embeddings.weight";
  const std::string emb_name = cfg_.rcps ? ps_emb : ph_emb;
  const std::string layout_hint =
      cfg_.rcps ? (st.has(ph_emb) ? " (the checkpoint looks like a Ph model but config.json says rcps: true)" : "")
                : (st.has(ps_emb) ? " (the checkpoint looks like a PS model but config.json says rcps: false)" : "");
  if (!st.has(emb_name))
    throw Error(path + ": missing tensor '" + emb_name + "' (expected shape [" + std::to_string(cfg_.padded_vocab()) +
                ", " + std::to_string(D) + "])" + layout_hint);
  const auto& einfo = st.info(emb_name);
  if (einfo.shape.size() != 2 || einfo.shape[1] != D ||
      (einfo.shape[0] != cfg_.padded_vocab() && einfo.shape[0] != cfg_.vocab_size))
    throw Error(path + ": tensor '" + emb_name + "' has shape " + shape_str(einfo.shape) + ", expected [" +
                std::to_string(cfg_.padded_vocab()) + ", " + std::to_string(D) + "]");
  const int64_t V = einfo.shape[0];
  auto emb = ld.read(emb_name, {V, D});

  // Complement maps: the checkpoint's buffers are what the reference uses at run time.
  std::vector<int32_t> comp_cfg(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) {
    int32_t c = v < int64_t(cfg_.complement_map.size()) ? cfg_.complement_map[size_t(v)] : int32_t(v);
    if (c < 0 || c >= V) throw Error(model_dir + "/config.json: complement_map maps " + std::to_string(v) + " outside the vocabulary");
    comp_cfg[size_t(v)] = c;
  }
  comp_emb_ = comp_lm_ = comp_cfg;
  if (cfg_.rcps) {
    auto a = ld.complement(bb + "embeddings.word_embeddings.complement_map", V);
    if (!a.empty()) comp_emb_ = a;
    auto b = ld.complement("lm_head.complement_map", V);
    if (!b.empty()) comp_lm_ = b;
  }

  emb_[0] = be.upload_f32(emb.data(), V, D);
  if (cfg_.rcps) {
    std::vector<float> rc(emb.size());
    for (int64_t v = 0; v < V; ++v)
      for (int64_t c = 0; c < D; ++c) rc[v * D + c] = emb[comp_emb_[size_t(v)] * D + (D - 1 - c)];
    emb_[1] = be.upload_f32(rc.data(), V, D);
  }

  // LM head (tied to the embedding unless the checkpoint holds its own).
  {
    const std::string lm_name = cfg_.rcps ? "lm_head.lm_head.weight" : "lm_head.weight";
    std::vector<float> W = st.has(lm_name) ? ld.read(lm_name, {V, D}) : emb;
    if (cfg_.rcps) {
      std::vector<float> Wc(size_t(V * 2 * D));
      for (int64_t v = 0; v < V; ++v)
        for (int64_t c = 0; c < D; ++c) {
          Wc[v * 2 * D + c] = W[v * D + c];
          Wc[v * 2 * D + D + c] = W[comp_lm_[size_t(v)] * D + (D - 1 - c)];
        }
      lm_head_ = be.weight_matrix(Wc.data(), V, 2 * D);
    } else {
      lm_head_ = be.weight_matrix(W.data(), V, D);
    }
  }

  auto per_stream_vec = [&](const std::vector<float>& v, Tensor* out) {
    out[0] = be.upload_f32(v.data(), 1, int64_t(v.size()));
    if (nS == 2) {
      auto r = reversed(v);
      out[1] = be.upload_f32(r.data(), 1, int64_t(r.size()));
    }
  };

  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const std::string lp = bb + "layers." + std::to_string(i) + ".";
    const std::string mp = lp + (cfg_.rcps ? "mixer.submodule." : "mixer.");
    CaduceusLayerWeights L;
    per_stream_vec(ld.read(lp + "norm.weight", {D}), L.norm_w);
    if (!cfg_.rms_norm) per_stream_vec(ld.read(lp + "norm.bias", {D}), L.norm_b);

    std::vector<float> out_w[2], out_b[2];
    for (int d = 0; d < ndir_; ++d) {
      const std::string p = mp + (d == 0 ? "mamba_fwd." : "mamba_rev.");
      const std::string hint = (d == 0 && !cfg_.rcps && st.has(lp + "mixer.submodule.mamba_fwd.D"))
                                   ? " (the checkpoint looks like a PS model but config.json says rcps: false)"
                               : (d == 0 && cfg_.rcps && st.has(lp + "mixer.mamba_fwd.D"))
                                   ? " (the checkpoint looks like a Ph model but config.json says rcps: true)"
                                   : "";
      CaduceusSsmWeights& s = L.ssm[d];
      {
        auto v = ld.read(p + "conv1d.weight", {E, 1, K}, hint);
        s.conv_w = be.upload_f32(v.data(), E, K);
      }
      if (cfg_.conv_bias) {
        auto v = ld.read(p + "conv1d.bias", {E});
        s.conv_b = be.upload_f32(v.data(), 1, E);
      }
      {
        auto v = ld.read(p + "x_proj.weight", {R + 2 * N, E});
        s.x_proj_w = be.weight_matrix(v.data(), R + 2 * N, E);
      }
      {
        auto v = ld.read(p + "dt_proj.weight", {E, R});
        s.dt_proj_w = be.weight_matrix(v.data(), E, R);
        auto b = ld.read(p + "dt_proj.bias", {E});
        s.dt_proj_b = be.upload_f32(b.data(), 1, E);
      }
      {
        auto v = ld.read(p + "A_log", {E, N});
        for (auto& x : v) x = -std::exp(x);
        s.A = be.upload_f32(v.data(), E, N);
        auto dd = ld.read(p + "D", {E});
        s.D = be.upload_f32(dd.data(), 1, E);
      }
      // In/out projections: the reverse Mamba shares the forward one's when tied (and then the
      // checkpoint normally has none; an identical copy is accepted).
      const bool own_proj = d == 0 || !tied_;
      const std::string fp = mp + "mamba_fwd.";
      auto proj = [&](const std::string& name, const std::vector<int64_t>& shape) {
        if (own_proj) return ld.read(p + name, shape);
        auto shared = st.read_f32(fp + name);
        if (st.has(p + name)) {
          auto mine = ld.read(p + name, shape);
          if (mine != shared)
            throw Error(path + ": tensor '" + p + name + "' differs from '" + fp + name +
                        "' although config.json says bidirectional_weight_tie: true");
        }
        return shared;
      };
      auto in_w = proj("in_proj.weight", {2 * E, D});
      std::vector<float> in_b;
      if (cfg_.proj_bias) in_b = proj("in_proj.bias", {2 * E});
      out_w[d] = proj("out_proj.weight", {D, E});
      if (cfg_.proj_bias) out_b[d] = proj("out_proj.bias", {D});
      if (own_proj) {
        L.in_w[0][d] = be.weight_matrix(in_w.data(), 2 * E, D);
        if (nS == 2) {
          auto r = reverse_cols(in_w, 2 * E, D);
          L.in_w[1][d] = be.weight_matrix(r.data(), 2 * E, D);
        }
        if (cfg_.proj_bias)
          for (int64_t s2 = 0; s2 < nS; ++s2) L.in_b[s2][d] = be.upload_f32(in_b.data(), 1, 2 * E);
      }
    }
    // Output projections.
    const bool multiply = ndir_ == 2 && cfg_.bidirectional_strategy == "ew_multiply";
    for (int64_t s = 0; s < nS; ++s) {
      if (multiply) {
        for (int d = 0; d < ndir_; ++d) {
          auto W = s == 0 ? out_w[d] : reverse_rows(out_w[d], D, E);
          L.out_w[s][d] = be.weight_matrix(W.data(), D, E);
          if (cfg_.proj_bias) {
            auto b = s == 0 ? out_b[d] : reversed(out_b[d]);
            L.out_b[s][d] = be.upload_f32(b.data(), 1, D);
          }
        }
      } else {
        std::vector<float> Wc(size_t(D * ndir_ * E));
        std::vector<float> bc(size_t(D), 0.0f);
        for (int64_t k = 0; k < D; ++k) {
          const int64_t src = s == 0 ? k : D - 1 - k;
          for (int d = 0; d < ndir_; ++d) {
            std::copy_n(out_w[d].begin() + src * E, E, Wc.begin() + k * ndir_ * E + d * E);
            if (cfg_.proj_bias) bc[size_t(k)] += out_b[d][size_t(src)];
          }
        }
        L.out_cat_w[s] = be.weight_matrix(Wc.data(), D, ndir_ * E);
        if (cfg_.proj_bias) L.out_cat_b[s] = be.upload_f32(bc.data(), 1, D);
      }
    }
    layers_.push_back(std::move(L));
  }
  per_stream_vec(ld.read(bb + "norm_f.weight", {D}), norm_f_w_);
  if (!cfg_.rms_norm) per_stream_vec(ld.read(bb + "norm_f.bias", {D}), norm_f_b_);

  for (const auto& n : st.names()) {
    if (!ld.used.count(n))
      throw Error(path + ": unexpected tensor '" + n + "' (not part of a Caduceus " + (cfg_.rcps ? "PS" : "Ph") +
                  " model with this config.json: " + cfg_.describe() + (cfg_.bidirectional ? ", bidirectional" : "") +
                  (tied_ ? ", tied in/out projections" : ", untied") + ")");
    const auto& info = st.info(n);
    if (info.dtype == io::StDType::I64 || info.dtype == io::StDType::I32) continue;  // buffers
    if (stored_dtype_.empty()) stored_dtype_ = info.dtype_str;
    else if (info.dtype_str != stored_dtype_) stored_dtype_ = "mixed";
    n_params_ += info.numel();
  }
}

void CaduceusModel::mixer(const CaduceusLayerWeights& w, const Tensor& normed, int64_t batch, int64_t len,
                          int out_parity, Tensor& h) {
  const int64_t nS = streams(), BL = batch * len, T = nS * BL;
  const int64_t D = cfg_.d_model, E = cfg_.d_inner, N = cfg_.d_state, K = cfg_.d_conv, R = cfg_.dt_rank;
  auto opt = [](const Tensor& t) { return t.defined() ? &t : nullptr; };
  // Stream s runs direction d in natural (forward) time when s == d: the forward half runs mamba_fwd
  // forwards, the RC half runs mamba_rev forwards (see the header comment).
  auto natural = [](int64_t s, int d) { return s == d; };
  // The large per-token intermediates in the backend's activation dtype (bf16 on a GPU in bf16 mode,
  // as in mixer_forward of the causal model); the residual stream and hidden states stay fp32.
  const DType adt = be_.activation_dtype();

  // 1. in_proj, in each direction's time order: X[d] = [nS*BL, 2E]. A direction that runs a stream
  //    flipped gets the flipped copy of that stream's natural-time projection (tied weights: the
  //    same product), or its own product, flipped (untied).
  Tensor X[2];
  for (int d = 0; d < ndir_; ++d) X[d] = ws_.get(d == 0 ? "cad_xz0" : "cad_xz1", T, 2 * E, adt);
  for (int64_t s = 0; s < nS; ++s) {
    const Tensor Ns = normed.rows_view(s * BL, BL);  // [BL, D]
    const int nat = s < ndir_ ? int(s) : -1;
    if (nat >= 0) {
      Tensor dst = X[nat].rows_view(s * BL, BL);
      const int wd = tied_ ? 0 : nat;
      be_.linear(Ns, w.in_w[s][wd], opt(w.in_b[s][wd]), dst);
    }
    for (int d = 0; d < ndir_; ++d) {
      if (d == nat) continue;
      Tensor dst = X[d].rows_view(s * BL, BL);
      if (tied_ && nat >= 0) {
        be_.flip_rows(X[nat].rows_view(s * BL, BL), batch, len, dst);
      } else {
        const int wd = tied_ ? 0 : d;
        Tensor tmp = ws_.get("cad_xz_tmp", BL, 2 * E, adt);
        be_.linear(Ns, w.in_w[s][wd], opt(w.in_b[s][wd]), tmp);
        be_.flip_rows(tmp, batch, len, dst);
      }
    }
  }

  // 2. Each direction over all streams at once (batch nS*B), from zero state. The scan writes its
  //    output straight into that direction's columns of YC; a stream that ran flipped is then turned
  //    back to natural time in place.
  Tensor YC = ws_.get("cad_yc", T, ndir_ * E, adt);  // per stream: [y_fwd | y_rev] in natural time
  for (int d = 0; d < ndir_; ++d) {
    const CaduceusSsmWeights& s = w.ssm[d];
    Tensor xin = X[d].cols_view(0, E), z = X[d].cols_view(E, E);
    Tensor conv_state = ws_.get("cad_conv_state", nS * batch, E * (K - 1));
    be_.zero(conv_state);
    Tensor xc = ws_.get("cad_xc", T, E, adt);
    be_.conv1d_silu(xin, s.conv_w, opt(s.conv_b), conv_state, nS * batch, len, xc);
    Tensor xdbl = ws_.get("cad_xdbl", T, R + 2 * N, adt);
    be_.linear(xc, s.x_proj_w, nullptr, xdbl);
    Tensor dt = ws_.get("cad_dt", T, E, adt);
    be_.linear(xdbl.cols_view(0, R), s.dt_proj_w, nullptr, dt);
    Tensor Bm = xdbl.cols_view(R, N), Cm = xdbl.cols_view(R + N, N);
    Tensor ssm_state = ws_.get("cad_ssm_state", nS * batch, E * N);
    be_.zero(ssm_state);
    Tensor y = YC.cols_view(d * E, E);
    SelectiveScanArgs a;
    a.u = &xc;
    a.delta = &dt;
    a.A = &s.A;
    a.B = &Bm;
    a.C = &Cm;
    a.D = &s.D;
    a.z = &z;
    a.dt_bias = &s.dt_proj_b;
    a.delta_softplus = true;
    a.state = &ssm_state;
    a.out = &y;
    a.batch = nS * batch;
    a.len = len;
    be_.selective_scan(a);
    for (int64_t st = 0; st < nS; ++st) {
      if (natural(st, d)) continue;
      Tensor blk = y.rows_view(st * BL, BL);
      be_.flip_rows(blk, batch, len, blk);
    }
  }

  // 3. Output projection per stream, written to the stream's block in the next layer's parity.
  for (int64_t s = 0; s < nS; ++s) {
    Tensor ys = YC.rows_view(s * BL, BL);
    Tensor hs = h.rows_view((s ^ out_parity) * BL, BL);
    if (w.out_cat_w[s].defined()) {
      be_.linear(ys, w.out_cat_w[s], opt(w.out_cat_b[s]), hs);
    } else {
      Tensor o0 = ws_.get("cad_o0", BL, D), o1 = ws_.get("cad_o1", BL, D);
      be_.linear(ys.cols_view(0, E), w.out_w[s][0], opt(w.out_b[s][0]), o0);
      be_.linear(ys.cols_view(E, E), w.out_w[s][1], opt(w.out_b[s][1]), o1);
      be_.mul(o0, o1, hs);
    }
  }
}

void CaduceusModel::forward(const int32_t* ids_host, int64_t batch, int64_t len, Tensor& hidden_out) {
  const int64_t BL = batch * len, D = cfg_.d_model, nS = streams(), T = nS * BL;
  DNAMBA_CHECK(batch >= 0 && len >= 0, "caduceus forward: negative shape");
  DNAMBA_CHECK(hidden_out.rows == BL && hidden_out.cols == hidden_size(),
               "caduceus forward: hidden_out must be [batch*len, " + std::to_string(hidden_size()) + "]");
  if (BL == 0) return;
  const int64_t V = emb_[0].rows;
  for (int64_t i = 0; i < BL; ++i)
    if (ids_host[i] < 0 || ids_host[i] >= V)
      throw Error("token id " + std::to_string(ids_host[i]) + " outside the model's vocabulary of " + std::to_string(V));
  Tensor ids = ws_.get("cad_ids", BL, 1, DType::I32);
  be_.to_device(ids, ids_host);
  Tensor h = ws_.get("cad_h", T, D);            // [nS*BL, D] block outputs (block j: stream j ^ parity)
  Tensor res = ws_.get("cad_res", T, D);        // [nS*BL, D] residual sums, same block order
  Tensor normed = ws_.get("cad_normed", T, D, be_.activation_dtype());  // [nS*BL, D] mixer input, stream order
  for (int64_t s = 0; s < nS; ++s) {
    Tensor hs = h.rows_view(s * BL, BL);
    be_.embedding(ids, emb_[s], hs);
  }
  auto opt = [](const Tensor& t) { return t.defined() ? &t : nullptr; };
  for (int64_t i = 0; i < cfg_.n_layer; ++i) {
    const auto& L = layers_[size_t(i)];
    const int p = parity(i);
    for (int64_t s = 0; s < nS; ++s) {
      // The fused PS path normalises each half from the other half's residual sum.
      const int64_t src = swap_halves_ ? 1 - s : s;
      const int64_t j = src ^ p;
      Tensor hj = h.rows_view(j * BL, BL), rj = res.rows_view(j * BL, BL), ns = normed.rows_view(s * BL, BL);
      be_.add_norm(hj, rj, i == 0, L.norm_w[s], opt(L.norm_b[s]), cfg_.norm_eps, ns);
    }
    mixer(L, normed, batch, len, parity(i + 1), h);
  }
  const int p = parity(cfg_.n_layer);
  for (int64_t s = 0; s < nS; ++s) {
    const int64_t j = s ^ p;
    Tensor hj = h.rows_view(j * BL, BL), rj = res.rows_view(j * BL, BL);
    Tensor out = hidden_out.cols_view(s * D, D);
    be_.add_norm(hj, rj, cfg_.n_layer == 0, norm_f_w_[s], opt(norm_f_b_[s]), cfg_.norm_eps, out);
  }
}

}  // namespace dnamba
