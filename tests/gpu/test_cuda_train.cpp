// The CUDA training backend against the CPU reference (CpuTrainBackend) on fresh random, non-zero
// inputs: every backward op (odd lengths, length 1, lengths that are not a multiple of the recompute
// chunk, batch > 1, state_in given and null, strided views as the model uses), the whole model's
// gradients, AdamW steps, and bit-identical weights from two identical GPU runs. fp32 within 1e-4
// relative (||gpu - cpu|| / ||cpu||); a failure names the op, the tensor and its worst element.
#include <cstring>
#include <sstream>

#include "backend/cuda/cuda_train_backend.h"
#include "gpu_test_util.h"
#include "train/cpu_grad.h"
#include "train/mamba_grad.h"

using namespace dnamba;
using namespace dnamba::gputest;
using namespace dnamba::train;

namespace {

struct Backends {
  CpuTrainBackend cpu{4};
  CudaTrainBackend gpu{0, DType::F32};
  Backend& cb() { return cpu.fwd(); }
  Backend& gb() { return gpu.fwd(); }
  Pair pair(const std::vector<float>& h, int64_t rows, int64_t cols, int64_t pad = 0) {
    return make_pair(cb(), gb(), h, rows, cols, pad);
  }
};

// Fails (without stopping) when rel_err(gpu, cpu) >= tol, naming the worst element.
void compare(const std::string& what, const std::vector<float>& g, const std::vector<float>& c, int64_t cols,
             double tol = kTolF32) {
  ASSERT_EQ(g.size(), c.size()) << what;
  const double e = rel_err_nan(g, c);
  if (e < tol) return;
  size_t worst = 0;
  double wd = -1;
  for (size_t i = 0; i < g.size(); ++i) {
    const double d = std::isnan(g[i]) != std::isnan(c[i]) ? 1e30 : std::fabs(double(g[i]) - double(c[i]));
    if (d > wd) wd = d, worst = i;
  }
  ADD_FAILURE() << what << ": relative error " << e << " (tolerance " << tol << "); worst element [" << worst / size_t(cols)
                << "," << worst % size_t(cols) << "]: gpu " << g[worst] << " cpu " << c[worst];
}
void compare_t(Backends& b, const std::string& what, const Pair& p, double tol = kTolF32) {
  compare(what, host_of(b.gb(), p.gpu), host_of(b.cb(), p.cpu), p.cpu.cols, tol);
}

std::string tag(std::initializer_list<std::pair<const char*, int64_t>> kv) {
  std::ostringstream o;
  for (auto& [k, v] : kv) o << k << "=" << v << " ";
  return o.str();
}

}  // namespace

TEST(CudaTrain, NegExp) {
  SKIP_WITHOUT_GPU();
  Backends b;
  auto a = b.pair(randn(37 * 20, 0.7f), 37, 20, 3);
  auto o = b.pair(randn(37 * 20), 37, 20, 1);
  b.cpu.neg_exp(a.cpu, o.cpu);
  b.gpu.neg_exp(a.gpu, o.gpu);
  compare_t(b, "neg_exp", o);
}

TEST(CudaTrain, EmbeddingBackward) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (int64_t V : {16, 5}) {
    for (int64_t D : {1, 67, 256}) {
      for (int64_t T : {1, 7, 1001, 70000}) {
        std::vector<int32_t> ids(static_cast<size_t>(T));
        for (auto& i : ids) i = int32_t(rng()() % V);
        auto id = make_pair_i32(b.cb(), b.gb(), ids, T);
        auto dout = b.pair(randn(size_t(T * D)), T, D, 2);
        auto dt = b.pair(randn(size_t(V * D)), V, D);  // non-zero: the op adds
        b.cpu.embedding_backward(id.cpu, dout.cpu, dt.cpu);
        b.gpu.embedding_backward(id.gpu, dout.gpu, dt.gpu);
        compare_t(b, "embedding_backward dtable " + tag({{"V", V}, {"D", D}, {"T", T}}), dt);
      }
    }
  }
}

TEST(CudaTrain, AddRmsNormBackward) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (int64_t D : {32, 64, 257}) {
    for (int64_t T : {1, 7, 1000, 5000}) {
      auto r = b.pair(randn(size_t(T * D)), T, D, 3);
      auto w = b.pair(randn(size_t(D), 0.5f, 1.0f), 1, D);
      auto dout = b.pair(randn(size_t(T * D)), T, D, 1);
      auto dr = b.pair(randn(size_t(T * D)), T, D, 2);
      auto dw = b.pair(randn(size_t(D)), 1, D);
      b.cpu.add_rmsnorm_backward(r.cpu, w.cpu, 1e-5f, dout.cpu, dr.cpu, dw.cpu);
      b.gpu.add_rmsnorm_backward(r.gpu, w.gpu, 1e-5f, dout.gpu, dr.gpu, dw.gpu);
      const std::string t = tag({{"D", D}, {"T", T}});
      compare_t(b, "add_rmsnorm_backward dresidual " + t, dr);
      compare_t(b, "add_rmsnorm_backward dw " + t, dw);
    }
  }
}

TEST(CudaTrain, LinearBackward) {
  SKIP_WITHOUT_GPU();
  Backends b;
  struct Case {
    int64_t T, K, N, pad;
  };
  for (Case c : {Case{1, 8, 16, 0}, Case{7, 33, 65, 3}, Case{1000, 64, 130, 0}, Case{513, 16, 48, 5},
                 Case{4097, 2, 64, 1}, Case{300, 64, 34, 2}}) {
    for (int mode = 0; mode < 4; ++mode) {
      const bool acc = mode & 1, bias = mode & 2;
      auto x = b.pair(randn(size_t(c.T * c.K)), c.T, c.K, c.pad);
      auto W = b.pair(randn(size_t(c.N * c.K), 0.3f), c.N, c.K);
      auto dout = b.pair(randn(size_t(c.T * c.N)), c.T, c.N, c.pad);
      auto dx = b.pair(randn(size_t(c.T * c.K)), c.T, c.K, c.pad + 1);
      auto dW = b.pair(randn(size_t(c.N * c.K)), c.N, c.K);
      auto db = b.pair(randn(size_t(c.N)), 1, c.N);
      b.cpu.linear_backward(x.cpu, W.cpu, dout.cpu, &dx.cpu, acc, &dW.cpu, bias ? &db.cpu : nullptr);
      b.gpu.linear_backward(x.gpu, W.gpu, dout.gpu, &dx.gpu, acc, &dW.gpu, bias ? &db.gpu : nullptr);
      const std::string t = tag({{"T", c.T}, {"K", c.K}, {"N", c.N}, {"acc", acc}, {"bias", bias}});
      compare_t(b, "linear_backward dx " + t, dx);
      compare_t(b, "linear_backward dW " + t, dW);
      if (bias) compare_t(b, "linear_backward dbias " + t, db);
    }
  }
  // dx only / dW only
  auto x = b.pair(randn(50 * 9), 50, 9);
  auto W = b.pair(randn(11 * 9), 11, 9);
  auto dout = b.pair(randn(50 * 11), 50, 11);
  auto dx = b.pair(randn(50 * 9), 50, 9);
  auto dW = b.pair(randn(11 * 9), 11, 9);
  b.cpu.linear_backward(x.cpu, W.cpu, dout.cpu, &dx.cpu, false, nullptr, nullptr);
  b.gpu.linear_backward(x.gpu, W.gpu, dout.gpu, &dx.gpu, false, nullptr, nullptr);
  b.cpu.linear_backward(x.cpu, W.cpu, dout.cpu, nullptr, false, &dW.cpu, nullptr);
  b.gpu.linear_backward(x.gpu, W.gpu, dout.gpu, nullptr, false, &dW.gpu, nullptr);
  compare_t(b, "linear_backward dx only", dx);
  compare_t(b, "linear_backward dW only", dW);
}

TEST(CudaTrain, Conv1dSiluBackward) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (int64_t K : {4, 2, 1}) {
    for (int64_t batch : {1, 3}) {
      for (int64_t len : {1, 5, 100}) {
        for (int64_t C : {5, 64}) {
          for (int mode = 0; mode < 4; ++mode) {
            const bool bias = mode & 1, state = mode & 2;
            const int64_t T = batch * len, S = K - 1;
            auto x = b.pair(randn(size_t(T * C)), T, C, 2);
            auto w = b.pair(randn(size_t(C * K), 0.5f), C, K);
            auto bi = b.pair(randn(size_t(C), 0.5f), 1, C);
            auto st = b.pair(randn(size_t(batch * C * std::max<int64_t>(S, 1))), batch, C * S);
            auto dout = b.pair(randn(size_t(T * C)), T, C, 1);
            auto dx = b.pair(randn(size_t(T * C)), T, C, 3);
            auto dw = b.pair(randn(size_t(C * K)), C, K);
            auto db = b.pair(randn(size_t(C)), 1, C);
            b.cpu.conv1d_silu_backward(x.cpu, w.cpu, bias ? &bi.cpu : nullptr, state ? &st.cpu : nullptr, batch, len,
                                       dout.cpu, dx.cpu, dw.cpu, bias ? &db.cpu : nullptr);
            b.gpu.conv1d_silu_backward(x.gpu, w.gpu, bias ? &bi.gpu : nullptr, state ? &st.gpu : nullptr, batch, len,
                                       dout.gpu, dx.gpu, dw.gpu, bias ? &db.gpu : nullptr);
            const std::string t = tag({{"K", K}, {"batch", batch}, {"len", len}, {"C", C}, {"bias", bias}, {"state", state}});
            compare_t(b, "conv1d_silu_backward dx " + t, dx);
            compare_t(b, "conv1d_silu_backward dweight " + t, dw);
            if (bias) compare_t(b, "conv1d_silu_backward dbias " + t, db);
          }
        }
      }
    }
  }
}

namespace {

// Scan inputs on both backends: B and C are strided column views of one [T, R+2N] buffer, z a view
// of a [T, 2C] buffer, as the model has them.
struct ScanCase {
  int64_t batch, len, C, N, chunk;
  bool with_D, with_z, with_bias, softplus, state_in;
};
struct ScanData {
  Pair xdbl, xz, u, delta, A, D, bias, state;
  Tensor Bc, Cc, Bg, Cg, zc, zg;
};
ScanData scan_data(Backends& b, const ScanCase& s) {
  const int64_t T = s.batch * s.len, R = 3;
  ScanData d;
  d.xdbl = b.pair(randn(size_t(T * (R + 2 * s.N))), T, R + 2 * s.N);
  d.xz = b.pair(randn(size_t(T * 2 * s.C)), T, 2 * s.C);
  d.u = b.pair(randn(size_t(T * s.C)), T, s.C, 1);
  // Without softplus, delta is dt itself: keep it positive (a negative dt makes the state grow
  // without bound, and the comparison meaningless).
  d.delta = b.pair(s.softplus ? randn(size_t(T * s.C), 0.5f, -1.0f) : randu(size_t(T * s.C), 0.01f, 0.2f), T, s.C);
  d.A = b.pair(randn(size_t(s.C * s.N), 0.5f), s.C, s.N);
  b.cpu.neg_exp(d.A.cpu, d.A.cpu);
  b.gpu.neg_exp(d.A.gpu, d.A.gpu);
  d.D = b.pair(randn(size_t(s.C)), 1, s.C);
  d.bias = b.pair(randn(size_t(s.C), 0.3f), 1, s.C);
  d.state = b.pair(s.state_in ? randn(size_t(s.batch * s.C * s.N)) : std::vector<float>(size_t(s.batch * s.C * s.N), 0.0f),
                   s.batch, s.C * s.N);
  d.Bc = d.xdbl.cpu.cols_view(R, s.N);
  d.Cc = d.xdbl.cpu.cols_view(R + s.N, s.N);
  d.Bg = d.xdbl.gpu.cols_view(R, s.N);
  d.Cg = d.xdbl.gpu.cols_view(R + s.N, s.N);
  d.zc = d.xz.cpu.cols_view(s.C, s.C);
  d.zg = d.xz.gpu.cols_view(s.C, s.C);
  return d;
}
SelectiveScanArgs scan_args(ScanData& d, const ScanCase& s, bool gpu, Tensor& out) {
  SelectiveScanArgs a;
  a.u = gpu ? &d.u.gpu : &d.u.cpu;
  a.delta = gpu ? &d.delta.gpu : &d.delta.cpu;
  a.A = gpu ? &d.A.gpu : &d.A.cpu;
  a.B = gpu ? &d.Bg : &d.Bc;
  a.C = gpu ? &d.Cg : &d.Cc;
  a.D = s.with_D ? (gpu ? &d.D.gpu : &d.D.cpu) : nullptr;
  a.z = s.with_z ? (gpu ? &d.zg : &d.zc) : nullptr;
  a.dt_bias = s.with_bias ? (gpu ? &d.bias.gpu : &d.bias.cpu) : nullptr;
  a.delta_softplus = s.softplus;
  a.state = gpu ? &d.state.gpu : &d.state.cpu;
  a.out = &out;
  a.batch = s.batch;
  a.len = s.len;
  return a;
}
std::vector<ScanCase> scan_cases() {
  std::vector<ScanCase> v;
  for (int64_t batch : {1, 2})
    for (int64_t len : {1, 17, 100})
      for (int64_t chunk : {1, 7, 16, 200})
        v.push_back({batch, len, 20, 16, chunk, true, true, true, true, len != 17});
  // Other widths and options.
  v.push_back({3, 64, 5, 4, 16, true, true, true, true, true});
  v.push_back({2, 33, 40, 20, 8, false, false, false, true, false});
  v.push_back({1, 50, 17, 64, 64, true, false, true, true, true});
  v.push_back({2, 31, 33, 32, 10, true, true, false, true, false});
  v.push_back({1, 40, 16, 16, 16, true, true, true, false, true});
  v.push_back({4, 513, 48, 16, 64, true, true, true, true, true});
  return v;
}
std::string scan_tag(const ScanCase& s) {
  return tag({{"batch", s.batch}, {"len", s.len}, {"C", s.C}, {"N", s.N}, {"chunk", s.chunk}, {"D", s.with_D},
              {"z", s.with_z}, {"dt_bias", s.with_bias}, {"softplus", s.softplus}, {"state_in", s.state_in}});
}

}  // namespace

TEST(CudaTrain, SelectiveScanForwardCkpt) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (const ScanCase& s : scan_cases()) {
    auto d = scan_data(b, s);
    const int64_t T = s.batch * s.len, nch = (s.len + s.chunk - 1) / s.chunk;
    auto out = b.pair(randn(size_t(T * s.C)), T, s.C, 2);
    auto cs = b.pair(randn(size_t(s.batch * nch * s.C * s.N)), s.batch * nch, s.C * s.N);
    auto ac = scan_args(d, s, false, out.cpu);
    auto ag = scan_args(d, s, true, out.gpu);
    b.cpu.selective_scan_forward_ckpt(ac, s.chunk, cs.cpu);
    b.gpu.selective_scan_forward_ckpt(ag, s.chunk, cs.gpu);
    const std::string t = scan_tag(s);
    compare_t(b, "scan_forward_ckpt out " + t, out);
    compare_t(b, "scan_forward_ckpt state " + t, d.state);
    compare_t(b, "scan_forward_ckpt chunk_states " + t, cs);
  }
}

TEST(CudaTrain, SelectiveScanBackward) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (const ScanCase& s : scan_cases()) {
    auto d = scan_data(b, s);
    const int64_t T = s.batch * s.len, nch = (s.len + s.chunk - 1) / s.chunk, R = 3;
    auto out = b.pair(randn(size_t(T * s.C)), T, s.C);
    auto cs = b.pair(randn(size_t(s.batch * nch * s.C * s.N)), s.batch * nch, s.C * s.N);
    auto ac = scan_args(d, s, false, out.cpu);
    auto ag = scan_args(d, s, true, out.gpu);
    b.cpu.selective_scan_forward_ckpt(ac, s.chunk, cs.cpu);
    b.gpu.selective_scan_forward_ckpt(ag, s.chunk, cs.gpu);
    auto dout = b.pair(randn(size_t(T * s.C)), T, s.C, 1);
    auto du = b.pair(randn(size_t(T * s.C)), T, s.C, 2);
    auto ddelta = b.pair(randn(size_t(T * s.C)), T, s.C);
    auto dA = b.pair(randn(size_t(s.C * s.N)), s.C, s.N);
    auto dxdbl = b.pair(randn(size_t(T * (R + 2 * s.N))), T, R + 2 * s.N);
    auto dD = b.pair(randn(size_t(s.C)), 1, s.C);
    auto dxz = b.pair(randn(size_t(T * 2 * s.C)), T, 2 * s.C);
    auto dbias = b.pair(randn(size_t(s.C)), 1, s.C);
    Tensor dBc = dxdbl.cpu.cols_view(R, s.N), dCc = dxdbl.cpu.cols_view(R + s.N, s.N), dzc = dxz.cpu.cols_view(s.C, s.C);
    Tensor dBg = dxdbl.gpu.cols_view(R, s.N), dCg = dxdbl.gpu.cols_view(R + s.N, s.N), dzg = dxz.gpu.cols_view(s.C, s.C);
    ScanGrads gc, gg;
    gc.du = &du.cpu, gg.du = &du.gpu;
    gc.ddelta = &ddelta.cpu, gg.ddelta = &ddelta.gpu;
    gc.dA_log = &dA.cpu, gg.dA_log = &dA.gpu;
    gc.dB = &dBc, gg.dB = &dBg;
    gc.dC = &dCc, gg.dC = &dCg;
    if (s.with_D) gc.dD = &dD.cpu, gg.dD = &dD.gpu;
    if (s.with_z) gc.dz = &dzc, gg.dz = &dzg;
    if (s.with_bias) gc.ddt_bias = &dbias.cpu, gg.ddt_bias = &dbias.gpu;
    b.cpu.selective_scan_backward(ac, s.chunk, cs.cpu, dout.cpu, gc);
    b.gpu.selective_scan_backward(ag, s.chunk, cs.gpu, dout.gpu, gg);
    const std::string t = scan_tag(s);
    compare_t(b, "scan_backward du " + t, du);
    compare_t(b, "scan_backward ddelta " + t, ddelta);
    compare_t(b, "scan_backward dA_log " + t, dA);
    compare(b.gb().name() + " scan_backward dB " + t, host_of(b.gb(), dBg), host_of(b.cb(), dBc), s.N);
    compare("scan_backward dC " + t, host_of(b.gb(), dCg), host_of(b.cb(), dCc), s.N);
    compare("scan_backward dt_low columns untouched " + t, host_of(b.gb(), dxdbl.gpu.cols_view(0, R)),
            host_of(b.cb(), dxdbl.cpu.cols_view(0, R)), R, 1e-7);
    if (s.with_D) compare_t(b, "scan_backward dD " + t, dD);
    if (s.with_z) compare_t(b, "scan_backward dz (and x half untouched) " + t, dxz);
    if (s.with_bias) compare_t(b, "scan_backward ddt_bias " + t, dbias);
  }
}

TEST(CudaTrain, CrossEntropy) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (int64_t V : {16, 40}) {
    for (int64_t D : {32, 256}) {
      for (int64_t T : {1, 7, 1000, 20000}) {
        auto h = b.pair(randn(size_t(T * D)), T, D, 1);
        auto W = b.pair(randn(size_t(V * D), 0.2f), V, D);
        std::vector<int32_t> tg(static_cast<size_t>(T));
        for (auto& x : tg) x = (rng()() % 5 == 0) ? -1 : int32_t(rng()() % V);
        auto tgp = make_pair_i32(b.cb(), b.gb(), tg, T);
        auto dh = b.pair(randn(size_t(T * D)), T, D, 2);
        auto dW = b.pair(randn(size_t(V * D)), V, D);
        const float scale = 1.0f / float(T);
        const double lc = b.cpu.cross_entropy(h.cpu, W.cpu, tgp.cpu, scale, dh.cpu, dW.cpu);
        const double lg = b.gpu.cross_entropy(h.gpu, W.gpu, tgp.gpu, scale, dh.gpu, dW.gpu);
        const std::string t = tag({{"V", V}, {"D", D}, {"T", T}});
        EXPECT_NEAR(lg, lc, 1e-5 * std::max(1.0, std::fabs(lc))) << "cross_entropy loss " << t;
        compare_t(b, "cross_entropy dhidden " + t, dh);
        compare_t(b, "cross_entropy dlm_w " + t, dW);
      }
    }
  }
  // A target outside the vocabulary is an error, not a silent skip.
  auto h = b.pair(randn(4 * 8), 4, 8);
  auto W = b.pair(randn(16 * 8), 16, 8);
  auto tgp = make_pair_i32(b.cb(), b.gb(), {1, 2, 99, 3}, 4);
  auto dh = b.pair(randn(4 * 8), 4, 8);
  auto dW = b.pair(randn(16 * 8), 16, 8);
  EXPECT_THROW(b.gpu.cross_entropy(h.gpu, W.gpu, tgp.gpu, 1.0f, dh.gpu, dW.gpu), Error);
}

TEST(CudaTrain, SumSquares) {
  SKIP_WITHOUT_GPU();
  Backends b;
  for (auto [rows, cols] : {std::pair<int64_t, int64_t>{1, 1}, {1, 37}, {1000, 37}, {3000, 1000}}) {
    auto x = b.pair(randn(size_t(rows * cols)), rows, cols, 3);
    const double c = b.cpu.sum_squares(x.cpu), g = b.gpu.sum_squares(x.gpu);
    EXPECT_NEAR(g, c, 1e-9 * c) << tag({{"rows", rows}, {"cols", cols}});
    EXPECT_EQ(g, b.gpu.sum_squares(x.gpu)) << "sum_squares is not deterministic";
  }
}

TEST(CudaTrain, AdamW) {
  SKIP_WITHOUT_GPU();
  Backends b;
  const int64_t R = 300, C = 77;
  auto p = b.pair(randn(size_t(R * C)), R, C);
  auto m = b.pair(std::vector<float>(size_t(R * C), 0.0f), R, C);
  auto v = b.pair(std::vector<float>(size_t(R * C), 0.0f), R, C);
  for (int64_t step = 1; step <= 5; ++step) {
    auto g = b.pair(randn(size_t(R * C), 0.1f), R, C, 2);
    AdamWStep s;
    s.lr = 1e-2f;
    s.weight_decay = 0.1f;
    s.grad_scale = step == 3 ? 0.5f : 1.0f;
    s.step = step;
    b.cpu.adamw(p.cpu, g.cpu, m.cpu, v.cpu, s);
    b.gpu.adamw(p.gpu, g.gpu, m.gpu, v.gpu, s);
  }
  compare_t(b, "adamw param", p, 1e-5);
  compare_t(b, "adamw m", m, 1e-5);
  compare_t(b, "adamw v", v, 1e-5);
}

namespace {

ModelConfig small_config(bool tied, bool bias, int64_t d_model) {
  ModelConfig c;
  c.layout = CheckpointLayout::HuggingFace;
  c.d_model = d_model;
  c.n_layer = 2;
  c.d_state = 16;
  c.d_conv = 4;
  c.d_inner = 2 * d_model;
  c.dt_rank = (d_model + 15) / 16;
  c.vocab_size = 16;
  c.pad_vocab_size_multiple = 1;
  c.tie_embeddings = tied;
  c.proj_bias = bias;
  c.conv_bias = true;
  c.norm_eps = 1e-5f;
  return c;
}

// Same random (Mamba-initialised, then perturbed off its special values) weights on both models.
void init_both(TrainableMamba& cpu, TrainableMamba& gpu, uint64_t seed) {
  cpu.init_random(seed);
  std::mt19937_64 r(seed + 1);
  std::normal_distribution<float> nd(0.0f, 0.05f);
  for (size_t i = 0; i < cpu.params().size(); ++i) {
    auto h = cpu.host(cpu.params()[i].value);
    for (auto& x : h) x += nd(r);
    cpu.upload(cpu.params()[i].value, h);
    gpu.upload(gpu.params()[i].value, h);
  }
}

void tokens(int64_t batch, int64_t len, uint64_t seed, std::vector<int32_t>& ids, std::vector<int32_t>& tg) {
  std::mt19937_64 r(seed);
  ids.assign(size_t(batch * len), 0);
  tg.assign(size_t(batch * len), 0);
  for (auto& x : ids) x = int32_t(7 + r() % 5);
  for (int64_t t = 0; t < batch * len; ++t)
    tg[size_t(t)] = (t % len == len - 1) ? -1 : ids[size_t(t + 1)];
  tg[2] = 3;  // a special token: the softmax is over the whole vocabulary
}

// One optimiser step as the trainer does it.
double train_step(TrainableMamba& m, const std::vector<int32_t>& ids, const std::vector<int32_t>& tg, int64_t batch,
                  int64_t len, int64_t step, float lr = 3e-3f) {
  m.zero_grad();
  int64_t count = 0;
  for (auto t : tg) count += t >= 0;
  const double loss = m.forward_backward(ids.data(), tg.data(), batch, len, 1.0f / float(count));
  double sq = 0;
  for (auto& p : m.params()) sq += m.backend().sum_squares(p.grad);
  const double gn = std::sqrt(sq);
  AdamWStep s;
  s.lr = lr;
  s.grad_scale = gn > 1.0 ? float(1.0 / gn) : 1.0f;
  s.step = step;
  for (auto& p : m.params()) {
    s.weight_decay = p.decay ? 0.1f : 0.0f;
    m.backend().adamw(p.value, p.grad, p.m, p.v, s);
  }
  return loss / double(count);
}

}  // namespace

namespace {

// Loss and every parameter's gradient of a small model (tied and untied) on the GPU in `dt` against the
// CPU: the loss within loss_tol relative, each gradient within grad_tol.
void whole_model_gradients(DType dt, double loss_tol, double grad_tol, const std::string& label) {
  for (bool tied : {true, false}) {
    const ModelConfig c = small_config(tied, !tied, 32);
    const int64_t batch = 2, len = 100, chunk = 16;
    CpuTrainBackend cpu(4);
    CudaTrainBackend gpu(0, dt);
    EXPECT_EQ(gpu.fwd().compute_dtype(), dt);
    TrainableMamba mc(cpu, c, chunk), mg(gpu, c, chunk);
    init_both(mc, mg, 17);
    std::vector<int32_t> ids, tg;
    tokens(batch, len, 18, ids, tg);
    mc.zero_grad();
    mg.zero_grad();
    const double lc = mc.forward_backward(ids.data(), tg.data(), batch, len, 0.01f);
    const double lg = mg.forward_backward(ids.data(), tg.data(), batch, len, 0.01f);
    EXPECT_NEAR(lg, lc, loss_tol * lc) << label << " loss, tied=" << tied;
    for (size_t i = 0; i < mc.params().size(); ++i) {
      const auto& p = mc.params()[i];
      compare(label + " grad " + p.name + (tied ? " (tied)" : " (untied, proj bias)"), mg.host(mg.params()[i].grad),
              mc.host(p.grad), p.grad.cols, grad_tol);
    }
  }
}

}  // namespace

TEST(CudaTrain, WholeModelGradients) {
  SKIP_WITHOUT_GPU();
  whole_model_gradients(DType::F32, 1e-5, kTolF32, "whole model");
}

TEST(CudaTrain, AdamWStepsMatchCpu) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = small_config(true, false, 32);
  const int64_t batch = 2, len = 100, chunk = 16;
  CpuTrainBackend cpu(4);
  CudaTrainBackend gpu(0, DType::F32);
  TrainableMamba mc(cpu, c, chunk), mg(gpu, c, chunk);
  init_both(mc, mg, 23);
  for (int64_t step = 1; step <= 3; ++step) {
    std::vector<int32_t> ids, tg;
    tokens(batch, len, 100 + uint64_t(step), ids, tg);
    const double lc = train_step(mc, ids, tg, batch, len, step);
    const double lg = train_step(mg, ids, tg, batch, len, step);
    EXPECT_NEAR(lg, lc, 1e-4 * lc) << "loss at step " << step;
  }
  for (size_t i = 0; i < mc.params().size(); ++i) {
    const auto& p = mc.params()[i];
    compare("weights after 3 AdamW steps " + p.name, mg.host(mg.params()[i].value), mc.host(p.value), p.value.cols);
  }
}

TEST(CudaTrain, TwoRunsGiveBitIdenticalWeights) {
  SKIP_WITHOUT_GPU();
  // Large enough that every reduction has many blocks and parts.
  const ModelConfig c = small_config(false, true, 64);
  const int64_t batch = 3, len = 700, chunk = 64;
  for (DType dt : {DType::F32, DType::BF16}) {
  SCOPED_TRACE(dtype_name(dt));
  std::vector<std::vector<float>> first;
  for (int run = 0; run < 2; ++run) {
    CudaTrainBackend gpu(0, dt);
    TrainableMamba m(gpu, c, chunk);
    m.init_random(5);
    for (int64_t step = 1; step <= 3; ++step) {
      std::vector<int32_t> ids, tg;
      tokens(batch, len, 200 + uint64_t(step), ids, tg);
      train_step(m, ids, tg, batch, len, step);
    }
    for (size_t i = 0; i < m.params().size(); ++i) {
      auto h = m.host(m.params()[i].value);
      if (run == 0) {
        first.push_back(h);
      } else {
        EXPECT_EQ(0, std::memcmp(h.data(), first[i].data(), h.size() * sizeof(float)))
            << m.params()[i].name << " differs between two identical runs";
      }
    }
  }
  }
}

// bf16 compute: the layers' products in bf16 (fp32 accumulation), all else fp32. Gradients within
// 3e-2 of the fp32 CPU reference.
TEST(CudaTrain, BF16WholeModelGradients) {
  SKIP_WITHOUT_GPU();
  whole_model_gradients(DType::BF16, 5e-3, 3e-2, "bf16 whole model");
}

// The bf16 weight copies follow the fp32 master weights through AdamW steps: after training on the
// GPU, its forward loss equals the CPU's on the same (downloaded) weights, and differs from the loss
// before training (a stale copy would give the old loss).
TEST(CudaTrain, BF16WeightCopiesFollowTheOptimizer) {
  SKIP_WITHOUT_GPU();
  const ModelConfig c = small_config(true, false, 32);
  const int64_t batch = 2, len = 100, chunk = 16;
  CpuTrainBackend cpu(4);
  CudaTrainBackend gpu(0, DType::BF16);
  TrainableMamba mc(cpu, c, chunk), mg(gpu, c, chunk);
  init_both(mc, mg, 31);
  std::vector<int32_t> ids, tg;
  tokens(batch, len, 32, ids, tg);
  const double before = mg.forward_loss(ids.data(), tg.data(), batch, len);
  for (int64_t step = 1; step <= 10; ++step) train_step(mg, ids, tg, batch, len, step, 2e-2f);
  const double after_gpu = mg.forward_loss(ids.data(), tg.data(), batch, len);
  for (size_t i = 0; i < mc.params().size(); ++i) mc.upload(mc.params()[i].value, mg.host(mg.params()[i].value));
  const double after_cpu = mc.forward_loss(ids.data(), tg.data(), batch, len);
  EXPECT_NEAR(after_gpu, after_cpu, 5e-3 * after_cpu);
  EXPECT_GT(std::fabs(after_cpu - before), 0.05 * before) << "training did not move the loss: the test proves nothing";
}

TEST(CudaTrain, FactoryMakesTheCudaBackend) {
  SKIP_WITHOUT_GPU();
  auto tb = make_train_backend("cuda:0", 0);
  EXPECT_TRUE(tb->fwd().is_gpu());
  EXPECT_EQ(default_train_device(), "cuda");
  EXPECT_THROW(make_train_backend("cuda:999", 0), Error);
}
