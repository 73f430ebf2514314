// Helpers of the GPU tests: the same op on the CPU reference backend and on the CUDA backend,
// on fresh random inputs, compared by ||gpu - cpu|| / ||cpu||.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "backend/backend.h"
#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/cuda_backend.h"
#include "tests/unit/test_util.h"

namespace dnamba::gputest {

#define SKIP_WITHOUT_GPU() \
  if (!::dnamba::cuda_available()) GTEST_SKIP() << "no CUDA GPU"

inline constexpr double kTolF32 = 1e-4;
inline constexpr double kTolBF16 = 2e-2;

inline std::mt19937_64& rng() {
  static std::mt19937_64 g(std::random_device{}());
  return g;
}

inline std::vector<float> randn(size_t n, float scale = 1.0f, float shift = 0.0f) {
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = shift + scale * d(rng());
  return v;
}
inline std::vector<float> randu(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng());
  return v;
}

// A tensor on each backend with the same contents. With pad > 0, a [rows, cols] view into a
// [rows, cols+pad] buffer at column offset `pad` (a strided view, like the model's cols_view).
struct Pair {
  Tensor cpu, gpu;
};
inline Pair make_pair(Backend& cb, Backend& gb, const std::vector<float>& host, int64_t rows, int64_t cols,
                      int64_t pad = 0) {
  Pair p;
  const int64_t w = cols + pad;
  std::vector<float> full(size_t(rows * w), std::nanf(""));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) full[size_t(r * w + pad + c)] = host[size_t(r * cols + c)];
  Tensor tc = cb.alloc(rows, w, DType::F32), tg = gb.alloc(rows, w, DType::F32);
  cb.to_device(tc, full.data());
  gb.to_device(tg, full.data());
  p.cpu = tc.cols_view(pad, cols);
  p.gpu = tg.cols_view(pad, cols);
  return p;
}
inline Pair make_pair_i32(Backend& cb, Backend& gb, const std::vector<int32_t>& host, int64_t rows) {
  Pair p;
  p.cpu = cb.alloc(rows, 1, DType::I32);
  p.gpu = gb.alloc(rows, 1, DType::I32);
  cb.to_device(p.cpu, host.data());
  gb.to_device(p.gpu, host.data());
  return p;
}
inline std::vector<float> host_of(Backend& be, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  be.to_host(t, v.data());
  return v;
}
// Relative error where NaN in both counts as equal (and NaN in one only as a failure).
inline double rel_err_nan(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return 1e30;
  std::vector<float> x, y;
  for (size_t i = 0; i < a.size(); ++i) {
    const bool na = std::isnan(a[i]), nb = std::isnan(b[i]);
    if (na != nb) return 1e30;
    if (na) continue;
    x.push_back(a[i]);
    y.push_back(b[i]);
  }
  return test::rel_err(x, y);
}

inline std::unique_ptr<Backend> gpu_backend(DType dt) { return make_backend("cuda", dt, 0); }

}  // namespace dnamba::gputest
