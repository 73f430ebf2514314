// CPU backend ops that the model's forward composes: linear_add (out_proj writing into the residual
// stream) and add_norm without x (normalising the residual stream only) against their definitions.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "test_util.h"

namespace dnamba {
namespace {

std::vector<float> randv(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

std::vector<float> host(CpuBackend& be, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  be.to_host(t, v.data());
  return v;
}

TEST(CpuOps, LinearAddIsLinearPlusOut) {
  CpuBackend be(2);
  for (bool with_bias : {false, true}) {
    const int64_t T = 301, K = 64, N = 48;
    auto xv = randv(size_t(T * K), 1), wv = randv(size_t(N * K), 2), bv = randv(size_t(N), 3), ov = randv(size_t(T * N), 4);
    Tensor x = be.upload_f32(xv.data(), T, K), W = be.weight_matrix(wv.data(), N, K), b = be.upload_f32(bv.data(), 1, N);
    Tensor acc = be.upload_f32(ov.data(), T, N), prod = be.alloc(T, N);
    be.linear_add(x, W, with_bias ? &b : nullptr, acc);
    be.linear(x, W, with_bias ? &b : nullptr, prod);
    std::vector<float> want = host(be, prod), got = host(be, acc);
    for (size_t i = 0; i < want.size(); ++i) want[i] += ov[i];
    EXPECT_LT(test::rel_err(got, want), 1e-6) << "bias " << with_bias;
    // It accumulated: not equal to the product alone.
    EXPECT_GT(test::rel_err(got, host(be, prod)), 0.1);
  }
}

TEST(CpuOps, AddNormWithoutXOnlyNormalises) {
  CpuBackend be(2);
  const int64_t T = 33, D = 40;
  for (bool layer : {false, true}) {
    auto rv = randv(size_t(T * D), 5), wv = randv(size_t(D), 6), bv = randv(size_t(D), 7), zv = std::vector<float>(size_t(T * D), 0.0f);
    Tensor w = be.upload_f32(wv.data(), 1, D), b = be.upload_f32(bv.data(), 1, D);
    // Reference: residual = 0 + r (first = false, x = zeros) then the norm.
    Tensor res1 = be.upload_f32(rv.data(), T, D), zeros = be.upload_f32(zv.data(), T, D), out1 = be.alloc(T, D);
    be.add_norm(zeros, res1, false, w, layer ? &b : nullptr, 1e-5f, out1);
    Tensor res2 = be.upload_f32(rv.data(), T, D), out2 = be.alloc(T, D);
    be.add_norm(Tensor{}, res2, false, w, layer ? &b : nullptr, 1e-5f, out2);
    EXPECT_EQ(host(be, out2), host(be, out1)) << "layer " << layer;
    EXPECT_EQ(host(be, res2), rv) << "the residual is left as it was";
  }
}

}  // namespace
}  // namespace dnamba
