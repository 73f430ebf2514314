// Gradients of the training ops and of the whole model against finite differences.
//
// Op level: the reference templates instantiated in double are checked against central
// differences in double (tight), and the CPU TrainBackend (fp32) against that double gradient.
// Model level: TrainableMamba's fp32 backward against central differences of an independent
// double-precision forward of the same model, for every entry of every parameter tensor.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <map>
#include <random>

#include "backend/cpu/cpu_backend.h"
#include "model/mamba_lm.h"
#include "train/cpu_grad.h"
#include "train/mamba_grad.h"

using namespace dnamba;
using namespace dnamba::train;
using dnamba::train::ref::View;

namespace {

using Vec = std::vector<double>;

struct Rng {
  std::mt19937_64 g;
  explicit Rng(uint64_t s) : g(s) {}
  double normal(double sd = 1.0) { return std::normal_distribution<double>(0.0, sd)(g); }
  double uniform(double a, double b) { return std::uniform_real_distribution<double>(a, b)(g); }
  Vec randn(size_t n, double sd = 1.0) {
    Vec v(n);
    for (auto& x : v) x = normal(sd);
    return v;
  }
  Vec rand(size_t n, double a, double b) {
    Vec v(n);
    for (auto& x : v) x = uniform(a, b);
    return v;
  }
};

View<double> mv(Vec& v, int64_t rows, int64_t cols) { return View<double>{v.data(), rows, cols, cols}; }
View<const double> cv(const Vec& v, int64_t rows, int64_t cols) { return View<const double>{v.data(), rows, cols, cols}; }

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of f with respect to every entry of x.
Vec fd(Vec& x, const std::function<double()>& f, double h = 1e-6) {
  Vec g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    const double x0 = x[i];
    x[i] = x0 + h;
    const double fp = f();
    x[i] = x0 - h;
    const double fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

// ||a - b|| / ||b||
template <class A>
double rel(const A& a, const Vec& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

void report(const char* op, const std::string& what, double err) {
  std::printf("[grad] %-10s %-45s rel err %.2e\n", op, what.c_str(), err);
}

// fp32 tensors on the CPU backend from double vectors, and back.
struct F32 {
  CpuTrainBackend tb{2};
  Backend& be = tb.fwd();
  Tensor t(const Vec& v, int64_t rows, int64_t cols) {
    std::vector<float> f(v.begin(), v.end());
    Tensor x = be.alloc(rows, cols, DType::F32);
    be.to_device(x, f.data());
    return x;
  }
  Tensor zeros(int64_t rows, int64_t cols) {
    Tensor x = be.alloc(rows, cols, DType::F32);
    be.zero(x);
    return x;
  }
  Tensor ids(const std::vector<int32_t>& v) {
    Tensor x = be.alloc(int64_t(v.size()), 1, DType::I32);
    be.to_device(x, v.data());
    return x;
  }
  std::vector<float> h(const Tensor& x) {
    std::vector<float> v(static_cast<size_t>(x.numel()));
    be.to_host(x, v.data());
    return v;
  }
};

constexpr double kFdTol = 1e-6;   // double analytic vs double finite differences
constexpr double kF32Tol = 1e-4;  // fp32 backend vs double analytic

}  // namespace

TEST(TrainGrad, Embedding) {
  Rng r(1);
  const int64_t T = 9, V = 12, D = 5;
  std::vector<int32_t> ids = {3, 7, 7, 11, 0, 3, 9, 7, 2};
  Vec table = r.randn(static_cast<size_t>(V * D)), G = r.randn(static_cast<size_t>(T * D));
  auto f = [&] {
    Vec out(static_cast<size_t>(T * D));
    ref::embedding_fwd<double>(ids.data(), T, cv(table, V, D), mv(out, T, D));
    return dot(out, G);
  };
  Vec dtab(static_cast<size_t>(V * D), 0.0);
  ref::embedding_bwd<double>(ids.data(), T, cv(G, T, D), mv(dtab, V, D));
  double e = rel(dtab, fd(table, f));
  report("embedding", "table (double)", e);
  EXPECT_LT(e, kFdTol);
  F32 k;
  Tensor dt = k.zeros(V, D);
  k.tb.embedding_backward(k.ids(ids), k.t(G, T, D), dt);
  e = rel(k.h(dt), dtab);
  report("embedding", "table (fp32 backend)", e);
  EXPECT_LT(e, kF32Tol);
}

TEST(TrainGrad, AddRmsNorm) {
  Rng r(2);
  const int64_t T = 6, D = 7;
  const double eps = 1e-5;
  Vec x = r.randn(static_cast<size_t>(T * D)), rin = r.randn(static_cast<size_t>(T * D)), w = r.rand(static_cast<size_t>(D), 0.5, 1.5);
  Vec G = r.randn(static_cast<size_t>(T * D)), Gr = r.randn(static_cast<size_t>(T * D));
  for (bool first : {false, true}) {
    // loss = <out, G> + <r, Gr>: Gr stands for the gradient reaching r from the next block.
    auto f = [&] {
      Vec rr = rin, out(static_cast<size_t>(T * D));
      ref::add_rmsnorm_fwd<double>(cv(x, T, D), mv(rr, T, D), first, w.data(), eps, mv(out, T, D));
      return dot(out, G) + dot(rr, Gr);
    };
    Vec rr = rin, out(static_cast<size_t>(T * D));
    ref::add_rmsnorm_fwd<double>(cv(x, T, D), mv(rr, T, D), first, w.data(), eps, mv(out, T, D));
    Vec dr = Gr, dw(static_cast<size_t>(D), 0.0);
    ref::add_rmsnorm_bwd<double>(cv(rr, T, D), w.data(), eps, cv(G, T, D), mv(dr, T, D), dw.data());
    const std::string tag = first ? " (first)" : "";
    double ex = rel(dr, fd(x, f)), ew = rel(dw, fd(w, f));
    report("add_norm", "x (double)" + tag, ex);
    report("add_norm", "weight (double)" + tag, ew);
    EXPECT_LT(ex, kFdTol);
    EXPECT_LT(ew, kFdTol);
    if (!first) {
      double er = rel(dr, fd(rin, f));
      report("add_norm", "residual in (double)", er);
      EXPECT_LT(er, kFdTol);
    }
    F32 k;
    Tensor tdr = k.t(Gr, T, D), tdw = k.zeros(1, D);
    k.tb.add_rmsnorm_backward(k.t(rr, T, D), k.t(w, 1, D), float(eps), k.t(G, T, D), tdr, tdw);
    double e1 = rel(k.h(tdr), dr), e2 = rel(k.h(tdw), dw);
    report("add_norm", "x, weight (fp32 backend)" + tag, std::max(e1, e2));
    EXPECT_LT(e1, kF32Tol);
    EXPECT_LT(e2, kF32Tol);
  }
}

TEST(TrainGrad, Linear) {
  Rng r(3);
  const int64_t T = 5, K = 6, N = 4;
  Vec x = r.randn(static_cast<size_t>(T * K)), W = r.randn(static_cast<size_t>(N * K)), b = r.randn(static_cast<size_t>(N)), G = r.randn(static_cast<size_t>(T * N));
  auto f = [&] {
    Vec out(static_cast<size_t>(T * N));
    ref::linear_fwd<double>(cv(x, T, K), cv(W, N, K), b.data(), mv(out, T, N));
    return dot(out, G);
  };
  Vec prior = r.randn(static_cast<size_t>(T * K));
  Vec dx = prior, dW(static_cast<size_t>(N * K), 0.0), db(static_cast<size_t>(N), 0.0);
  ref::linear_bwd<double>(cv(x, T, K), cv(W, N, K), cv(G, T, N), mv(dx, T, K), true, mv(dW, N, K), db.data());
  Vec fx = fd(x, f);
  for (size_t i = 0; i < fx.size(); ++i) fx[i] += prior[i];  // accumulate_dx adds to what was there
  double ex = rel(dx, fx), eW = rel(dW, fd(W, f)), eb = rel(db, fd(b, f));
  report("linear", "x (accumulated), W, bias (double)", std::max({ex, eW, eb}));
  EXPECT_LT(ex, kFdTol);
  EXPECT_LT(eW, kFdTol);
  EXPECT_LT(eb, kFdTol);
  F32 k;
  Tensor tdx = k.zeros(T, K), tdW = k.zeros(N, K), tdb = k.zeros(1, N);
  k.tb.linear_backward(k.t(x, T, K), k.t(W, N, K), k.t(G, T, N), &tdx, false, &tdW, &tdb);
  Vec dx_only(dx.size());
  for (size_t i = 0; i < dx.size(); ++i) dx_only[i] = dx[i] - prior[i];
  double e = std::max({rel(k.h(tdx), dx_only), rel(k.h(tdW), dW), rel(k.h(tdb), db)});
  report("linear", "x, W, bias (fp32 backend)", e);
  EXPECT_LT(e, kF32Tol);
}

TEST(TrainGrad, Conv1dSilu) {
  Rng r(4);
  const int64_t B = 2, L = 7, C = 3, K = 4, S = K - 1;
  Vec x = r.randn(static_cast<size_t>(B * L * C)), w = r.randn(static_cast<size_t>(C * K), 0.5), bias = r.randn(static_cast<size_t>(C), 0.3);
  Vec st = r.randn(static_cast<size_t>(B * C * S)), G = r.randn(static_cast<size_t>(B * L * C));
  for (bool with_state : {false, true}) {
    View<const double> sv = with_state ? cv(st, B, C * S) : View<const double>{};
    auto f = [&] {
      Vec out(static_cast<size_t>(B * L * C));
      ref::conv1d_silu_fwd<double>(cv(x, B * L, C), cv(w, C, K), bias.data(), sv, B, L, mv(out, B * L, C));
      return dot(out, G);
    };
    Vec dx(static_cast<size_t>(B * L * C)), dw(static_cast<size_t>(C * K), 0.0), db(static_cast<size_t>(C), 0.0);
    ref::conv1d_silu_bwd<double>(cv(x, B * L, C), cv(w, C, K), bias.data(), sv, B, L, cv(G, B * L, C),
                                 mv(dx, B * L, C), mv(dw, C, K), db.data());
    const std::string tag = with_state ? " (state in)" : " (zero state)";
    double ex = rel(dx, fd(x, f)), ew = rel(dw, fd(w, f)), eb = rel(db, fd(bias, f));
    report("conv1d", "x, weight, bias (double)" + tag, std::max({ex, ew, eb}));
    EXPECT_LT(ex, kFdTol);
    EXPECT_LT(ew, kFdTol);
    EXPECT_LT(eb, kFdTol);
    // fp32 backend, and its forward equals Backend::conv1d_silu
    F32 k;
    Tensor tx = k.t(x, B * L, C), tw = k.t(w, C, K), tb = k.t(bias, 1, C), ts = k.t(st, B, C * S);
    Tensor tdx = k.zeros(B * L, C), tdw = k.zeros(C, K), tdb = k.zeros(1, C);
    k.tb.conv1d_silu_backward(tx, tw, &tb, with_state ? &ts : nullptr, B, L, k.t(G, B * L, C), tdx, tdw, &tdb);
    double e = std::max({rel(k.h(tdx), dx), rel(k.h(tdw), dw), rel(k.h(tdb), db)});
    report("conv1d", "x, weight, bias (fp32 backend)" + tag, e);
    EXPECT_LT(e, kF32Tol);
  }
}

TEST(TrainGrad, SelectiveScanWithRecomputation) {
  Rng r(5);
  const int64_t B = 2, L = 11, C = 3, N = 4, T = B * L;
  Vec u = r.randn(static_cast<size_t>(T * C)), delta = r.rand(static_cast<size_t>(T * C), -3.0, 1.0), A_log = r.rand(static_cast<size_t>(C * N), -0.5, 1.5);
  Vec Bm = r.randn(static_cast<size_t>(T * N)), Cm = r.randn(static_cast<size_t>(T * N)), D = r.randn(static_cast<size_t>(C)), z = r.randn(static_cast<size_t>(T * C));
  Vec dtb = r.rand(static_cast<size_t>(C), -1.0, 0.5), h0 = r.randn(static_cast<size_t>(B * C * N), 0.5), G = r.randn(static_cast<size_t>(T * C));
  auto negexp = [](const Vec& a) {
    Vec o(a.size());
    for (size_t i = 0; i < a.size(); ++i) o[i] = -std::exp(a[i]);
    return o;
  };
  auto make_in = [&](const Vec& A) {
    ref::ScanIn<double> in;
    in.u = cv(u, T, C);
    in.delta = cv(delta, T, C);
    in.A = cv(A, C, N);
    in.B = cv(Bm, T, N);
    in.C = cv(Cm, T, N);
    in.D = cv(D, 1, C);
    in.z = cv(z, T, C);
    in.dt_bias = cv(dtb, 1, C);
    in.batch = B;
    in.len = L;
    return in;
  };
  auto f = [&] {
    Vec A = negexp(A_log), st = h0, out(static_cast<size_t>(T * C));
    ref::scan_fwd<double>(make_in(A), mv(st, B, C * N), mv(out, T, C), 0, View<double>{});
    return dot(out, G);
  };
  struct Named {
    const char* name;
    Vec* x;
  };
  std::vector<Named> inputs = {{"u", &u}, {"delta", &delta}, {"A_log", &A_log}, {"B", &Bm},
                               {"C", &Cm}, {"D", &D},         {"z", &z},         {"dt_bias", &dtb}};
  std::map<std::string, Vec> num;
  for (auto& in : inputs) num[in.name] = fd(*in.x, f);
  for (int64_t chunk : {1, 4, 11, 16}) {
    const int64_t nch = (L + chunk - 1) / chunk;
    Vec A = negexp(A_log), st = h0, out(static_cast<size_t>(T * C)), cs(static_cast<size_t>(B * nch * C * N));
    auto in = make_in(A);
    ref::scan_fwd<double>(in, mv(st, B, C * N), mv(out, T, C), chunk, mv(cs, B * nch, C * N));
    std::map<std::string, Vec> an = {{"u", Vec(static_cast<size_t>(T * C))},   {"delta", Vec(static_cast<size_t>(T * C))}, {"A_log", Vec(static_cast<size_t>(C * N))},
                                     {"B", Vec(static_cast<size_t>(T * N))},   {"C", Vec(static_cast<size_t>(T * N))},     {"D", Vec(static_cast<size_t>(C))},
                                     {"z", Vec(static_cast<size_t>(T * C))},   {"dt_bias", Vec(static_cast<size_t>(C))}};
    ref::ScanOut<double> g{mv(an["u"], T, C), mv(an["delta"], T, C), mv(an["A_log"], C, N), mv(an["B"], T, N),
                           mv(an["C"], T, N), mv(an["D"], 1, C),     mv(an["z"], T, C),     mv(an["dt_bias"], 1, C)};
    ref::scan_bwd<double>(in, chunk, cv(cs, B * nch, C * N), cv(G, T, C), g);
    double worst = 0;
    for (auto& [name, v] : an) {
      double e = rel(v, num[name]);
      worst = std::max(worst, e);
      EXPECT_LT(e, kFdTol) << name << " chunk " << chunk;
    }
    report("scan", "u,delta,A_log,B,C,D,z,dt_bias (double) chunk " + std::to_string(chunk), worst);

    // fp32 backend: forward with chunk states equals Backend::selective_scan; backward equals double.
    F32 k;
    Tensor tu = k.t(u, T, C), tdl = k.t(delta, T, C), tA = k.t(A, C, N), tB = k.t(Bm, T, N), tC = k.t(Cm, T, N);
    Tensor tD = k.t(D, 1, C), tz = k.t(z, T, C), tdb = k.t(dtb, 1, C), ts = k.t(h0, B, C * N), ts2 = k.t(h0, B, C * N);
    Tensor to = k.zeros(T, C), to2 = k.zeros(T, C), tcs = k.zeros(B * nch, C * N);
    SelectiveScanArgs a;
    a.u = &tu;
    a.delta = &tdl;
    a.A = &tA;
    a.B = &tB;
    a.C = &tC;
    a.D = &tD;
    a.z = &tz;
    a.dt_bias = &tdb;
    a.state = &ts;
    a.out = &to;
    a.batch = B;
    a.len = L;
    k.tb.selective_scan_forward_ckpt(a, chunk, tcs);
    SelectiveScanArgs a2 = a;
    a2.state = &ts2;
    a2.out = &to2;
    k.be.selective_scan(a2);
    double ef = std::max(rel(k.h(to), out), rel(k.h(to2), out));
    EXPECT_LT(ef, 1e-5);
    EXPECT_LT(rel(k.h(ts), st), 1e-5);
    EXPECT_LT(rel(k.h(tcs), cs), 1e-5);
    std::map<std::string, Tensor> tg = {{"u", k.zeros(T, C)}, {"delta", k.zeros(T, C)}, {"A_log", k.zeros(C, N)},
                                        {"B", k.zeros(T, N)}, {"C", k.zeros(T, N)},     {"D", k.zeros(1, C)},
                                        {"z", k.zeros(T, C)}, {"dt_bias", k.zeros(1, C)}};
    ScanGrads sg{&tg["u"], &tg["delta"], &tg["A_log"], &tg["B"], &tg["C"], &tg["D"], &tg["z"], &tg["dt_bias"]};
    k.tb.selective_scan_backward(a, chunk, tcs, k.t(G, T, C), sg);
    double e32 = 0;
    for (auto& [name, t] : tg) {
      double e = rel(k.h(t), an[name]);
      e32 = std::max(e32, e);
      EXPECT_LT(e, kF32Tol) << name << " chunk " << chunk;
    }
    char tag[96];
    std::snprintf(tag, sizeof tag, "all inputs (fp32 backend) chunk %lld, fwd %.1e", (long long)chunk, ef);
    report("scan", tag, e32);
  }
}

TEST(TrainGrad, CrossEntropy) {
  Rng r(6);
  const int64_t T = 6, D = 5, V = 13;
  Vec hid = r.randn(static_cast<size_t>(T * D)), W = r.randn(static_cast<size_t>(V * D));
  std::vector<int32_t> tg = {7, 8, -1, 10, 11, 0};
  auto f = [&] {
    return ref::cross_entropy<double>(cv(hid, T, D), cv(W, V, D), tg.data(), 1.0, View<double>{}, View<double>{});
  };
  const double scale = 0.25;
  Vec dh(static_cast<size_t>(T * D)), dW(static_cast<size_t>(V * D), 0.0);
  const double loss = ref::cross_entropy<double>(cv(hid, T, D), cv(W, V, D), tg.data(), scale, mv(dh, T, D), mv(dW, V, D));
  Vec nh = fd(hid, f), nW = fd(W, f);
  for (auto& v : nh) v *= scale;
  for (auto& v : nW) v *= scale;
  double eh = rel(dh, nh), eW = rel(dW, nW);
  report("xent", "hidden, lm_head (double)", std::max(eh, eW));
  EXPECT_LT(eh, kFdTol);
  EXPECT_LT(eW, kFdTol);
  F32 k;
  Tensor tdh = k.zeros(T, D), tdW = k.zeros(V, D);
  const double l32 = k.tb.cross_entropy(k.t(hid, T, D), k.t(W, V, D), k.ids(tg), float(scale), tdh, tdW);
  EXPECT_NEAR(l32, loss, 1e-5 * std::fabs(loss));
  double e = std::max(rel(k.h(tdh), dh), rel(k.h(tdW), dW));
  report("xent", "hidden, lm_head (fp32 backend)", e);
  EXPECT_LT(e, kF32Tol);
}

TEST(TrainGrad, AdamW) {
  F32 k;
  Vec p0 = {0.5, -1.0, 2.0}, g0 = {0.1, -0.2, 0.3};
  Tensor p = k.t(p0, 1, 3), g = k.t(g0, 1, 3), m = k.zeros(1, 3), v = k.zeros(1, 3);
  AdamWStep s;
  s.lr = 0.01f;
  s.weight_decay = 0.1f;
  s.grad_scale = 0.5f;
  s.step = 1;
  k.tb.adamw(p, g, m, v, s);
  s.step = 2;
  k.tb.adamw(p, g, m, v, s);
  auto hp = k.h(p);
  for (size_t i = 0; i < 3; ++i) {
    double pp = p0[i], mm = 0, vv = 0;
    for (int step = 1; step <= 2; ++step) {
      double gg = g0[i] * 0.5;
      pp *= 1 - 0.01 * 0.1;
      mm = 0.9 * mm + 0.1 * gg;
      vv = 0.95 * vv + 0.05 * gg * gg;
      pp -= 0.01 * (mm / (1 - std::pow(0.9, step))) / (std::sqrt(vv / (1 - std::pow(0.95, step))) + 1e-8);
    }
    EXPECT_NEAR(hp[i], pp, 1e-6);
  }
}

// ---------------------------------------------------------------- whole model

namespace {

ModelConfig tiny_config(bool tied, bool bias) {
  ModelConfig c;
  c.layout = CheckpointLayout::HuggingFace;
  c.d_model = 8;
  c.n_layer = 2;
  c.d_state = 4;
  c.d_conv = 4;
  c.d_inner = 16;
  c.dt_rank = 2;
  c.vocab_size = 16;
  c.pad_vocab_size_multiple = 1;
  c.tie_embeddings = tied;
  c.proj_bias = bias;
  c.conv_bias = true;
  c.norm_eps = 1e-5f;
  return c;
}

// Mean -log p(target) of the model with parameters P, in double, from the reference templates.
double ref_model_loss(const ModelConfig& c, std::map<std::string, Vec>& P, const std::vector<int32_t>& ids,
                      const std::vector<int32_t>& tg, int64_t batch, int64_t len) {
  const int64_t T = batch * len, D = c.d_model, E = c.d_inner, N = c.d_state, K = c.d_conv, R = c.dt_rank;
  const int64_t V = c.padded_vocab();
  const double eps = c.norm_eps;
  auto V2 = [&](const std::string& n, int64_t rows, int64_t cols) { return cv(P.at(n), rows, cols); };
  auto ptr = [&](const std::string& n) { return P.count(n) ? P.at(n).data() : nullptr; };
  Vec h(static_cast<size_t>(T * D)), res(static_cast<size_t>(T * D)), normed(static_cast<size_t>(T * D));
  ref::embedding_fwd<double>(ids.data(), T, V2("backbone.embeddings.weight", V, D), mv(h, T, D));
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i) + ".", m = p + "mixer.";
    ref::add_rmsnorm_fwd<double>(cv(h, T, D), mv(res, T, D), i == 0, P.at(p + "norm.weight").data(), eps, mv(normed, T, D));
    Vec xz(static_cast<size_t>(T * 2 * E)), xc(static_cast<size_t>(T * E)), xdbl(static_cast<size_t>(T * (R + 2 * N))), dt(static_cast<size_t>(T * E)), y(static_cast<size_t>(T * E));
    ref::linear_fwd<double>(cv(normed, T, D), V2(m + "in_proj.weight", 2 * E, D), ptr(m + "in_proj.bias"), mv(xz, T, 2 * E));
    ref::conv1d_silu_fwd<double>(View<const double>{xz.data(), T, E, 2 * E}, V2(m + "conv1d.weight", E, K),
                                 ptr(m + "conv1d.bias"), View<const double>{}, batch, len, mv(xc, T, E));
    ref::linear_fwd<double>(cv(xc, T, E), V2(m + "x_proj.weight", R + 2 * N, E), nullptr, mv(xdbl, T, R + 2 * N));
    ref::linear_fwd<double>(View<const double>{xdbl.data(), T, R, R + 2 * N}, V2(m + "dt_proj.weight", E, R), nullptr,
                            mv(dt, T, E));
    Vec A = P.at(m + "A_log");
    for (auto& a : A) a = -std::exp(a);
    ref::ScanIn<double> in;
    in.u = cv(xc, T, E);
    in.delta = cv(dt, T, E);
    in.A = cv(A, E, N);
    in.B = View<const double>{xdbl.data() + R, T, N, R + 2 * N};
    in.C = View<const double>{xdbl.data() + R + N, T, N, R + 2 * N};
    in.D = V2(m + "D", 1, E);
    in.z = View<const double>{xz.data() + E, T, E, 2 * E};
    in.dt_bias = V2(m + "dt_proj.bias", 1, E);
    in.batch = batch;
    in.len = len;
    Vec st(static_cast<size_t>(batch * E * N), 0.0);
    ref::scan_fwd<double>(in, mv(st, batch, E * N), mv(y, T, E), 0, View<double>{});
    ref::linear_fwd<double>(cv(y, T, E), V2(m + "out_proj.weight", D, E), ptr(m + "out_proj.bias"), mv(h, T, D));
  }
  ref::add_rmsnorm_fwd<double>(cv(h, T, D), mv(res, T, D), false, P.at("backbone.norm_f.weight").data(), eps, mv(normed, T, D));
  const std::string head = c.tie_embeddings ? "backbone.embeddings.weight" : "lm_head.weight";
  int64_t count = 0;
  for (auto t : tg) count += t >= 0;
  return ref::cross_entropy<double>(cv(normed, T, D), V2(head, V, D), tg.data(), 1.0, View<double>{}, View<double>{}) /
         double(count);
}

// Moves every parameter away from its special initial values (D = 1, norms = 1, zero biases).
void perturb(TrainableMamba& m, uint64_t seed) {
  Rng r(seed);
  for (auto& p : m.params()) {
    auto h = m.host(p.value);
    for (auto& x : h) x += float(r.normal(0.15));
    m.upload(p.value, h);
  }
}

void check_model_grads(bool tied, bool bias, int64_t chunk) {
  const ModelConfig c = tiny_config(tied, bias);
  CpuTrainBackend tb(2);
  TrainableMamba m(tb, c, chunk);
  m.init_random(11);
  perturb(m, 12);
  const int64_t batch = 2, len = 9, T = batch * len;
  Rng r(13);
  std::vector<int32_t> ids(static_cast<size_t>(T)), tg(static_cast<size_t>(T));
  for (auto& x : ids) x = int32_t(7 + r.g() % 5);
  for (int64_t t = 0; t < T; ++t) tg[static_cast<size_t>(t)] = (t % len == len - 1) ? -1 : ids[static_cast<size_t>(t + 1)];
  tg[3] = 2;  // a special token as target: the softmax is over the whole vocabulary
  int64_t count = 0;
  for (auto t : tg) count += t >= 0;

  m.zero_grad();
  const double loss32 = m.forward_backward(ids.data(), tg.data(), batch, len, 1.0f / float(count)) / double(count);
  std::map<std::string, Vec> P;
  for (auto& p : m.params()) {
    auto h = m.host(p.value);
    P[p.name] = Vec(h.begin(), h.end());
  }
  const double loss64 = ref_model_loss(c, P, ids, tg, batch, len);
  EXPECT_NEAR(loss32, loss64, 1e-5 * loss64);
  double worst = 0;
  // The double forward runs thousands of times on tiny tensors: threads would only add overhead.
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  for (auto& p : m.params()) {
    Vec& x = P[p.name];
    Vec num = fd(x, [&] { return ref_model_loss(c, P, ids, tg, batch, len); }, 1e-5);
    const double e = rel(m.host(p.grad), num);
    worst = std::max(worst, e);
    EXPECT_LT(e, 2e-4) << p.name;
  }
  omp_set_num_threads(threads);
  char tag[96];
  std::snprintf(tag, sizeof tag, "every parameter, %s%s, chunk %lld", tied ? "tied" : "untied",
                bias ? ", proj bias" : "", (long long)chunk);
  report("model", tag, worst);
}

}  // namespace

TEST(TrainGrad, WholeModelTied) { check_model_grads(true, false, 4); }
TEST(TrainGrad, WholeModelUntiedWithBias) { check_model_grads(false, true, 1); }

TEST(TrainGrad, RecomputeChunkDoesNotChangeGradients) {
  const ModelConfig c = tiny_config(true, false);
  const int64_t batch = 3, len = 37, T = batch * len;
  std::vector<int32_t> ids(static_cast<size_t>(T)), tg(static_cast<size_t>(T));
  Rng r(21);
  for (auto& x : ids) x = int32_t(7 + r.g() % 4);
  for (int64_t t = 0; t < T; ++t) tg[static_cast<size_t>(t)] = (t % len == len - 1) ? -1 : ids[static_cast<size_t>(t + 1)];
  std::vector<std::vector<float>> ref_grads;
  for (int64_t chunk : {37, 1, 5, 64}) {
    CpuTrainBackend tb(2);
    TrainableMamba m(tb, c, chunk);
    m.init_random(3);
    perturb(m, 4);
    m.zero_grad();
    m.forward_backward(ids.data(), tg.data(), batch, len, 0.01f);
    size_t i = 0;
    for (auto& p : m.params()) {
      auto g = m.host(p.grad);
      if (ref_grads.size() <= i) {
        ref_grads.push_back(g);
      } else {
        Vec want(ref_grads[i].begin(), ref_grads[i].end());
        EXPECT_LT(rel(g, want), 1e-5) << p.name << " chunk " << chunk;
      }
      ++i;
    }
  }
}

TEST(TrainGrad, SavedModelLoadsAndAgreesWithInference) {
  const ModelConfig c = tiny_config(false, true);
  CpuTrainBackend tb(2);
  TrainableMamba m(tb, c, 8);
  m.init_random(5);
  perturb(m, 6);
  const std::string dir = testing::TempDir() + "/dnamba_train_save_" + std::to_string(getpid());
  m.save(dir, "test");
  const int64_t len = 23;
  std::vector<int32_t> ids(static_cast<size_t>(len)), tg(static_cast<size_t>(len));
  Rng r(7);
  for (auto& x : ids) x = int32_t(7 + r.g() % 5);
  for (int64_t t = 0; t < len; ++t) tg[static_cast<size_t>(t)] = t + 1 < len ? ids[static_cast<size_t>(t + 1)] : -1;
  std::vector<float> lp_train;
  auto st = m.new_state(1);
  m.forward_logprobs(ids.data(), tg.data(), 1, len, st, lp_train);

  CpuBackend be(2);
  MambaLM lm(dir, be);
  EXPECT_EQ(lm.parameter_count(), m.parameter_count());
  auto st2 = lm.new_state(1);
  Tensor hid = be.alloc(len, c.d_model, DType::F32);
  lm.forward_host(ids.data(), 1, len, st2, hid);
  Tensor tgt = be.alloc(len, 1, DType::I32);
  be.to_device(tgt, tg.data());
  Tensor out = be.alloc(len, 5, DType::F32);
  be.token_logprobs(hid, lm.lm_head(), tgt, out);
  std::vector<float> lp(static_cast<size_t>(len * 5));
  be.to_host(out, lp.data());
  for (int64_t i = 0; i < len * 5; ++i) {
    if (std::isnan(lp[static_cast<size_t>(i)])) {
      EXPECT_TRUE(std::isnan(lp_train[static_cast<size_t>(i)]));
      continue;
    }
    EXPECT_NEAR(lp[static_cast<size_t>(i)], lp_train[static_cast<size_t>(i)], 1e-5);
  }
  // Loading the saved directory back into a trainable model gives the same parameters.
  TrainableMamba m2(tb, load_model_config(dir), 8);
  m2.load(dir);
  for (size_t i = 0; i < m.params().size(); ++i) EXPECT_EQ(m.host(m.params()[i].value), m2.host(m2.params()[i].value));
  std::filesystem::remove_all(dir);
}
