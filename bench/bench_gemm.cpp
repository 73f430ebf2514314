// The four matrix products of a Mamba layer (d_model 256, expand 2, d_state 16, dt_rank 16) as
// the CUDA backend issues them: cublasGemmEx (default algorithm) against cuBLASLt's heuristic
// first choice and every other cuBLASLt candidate, timed with CUDA events (median of repeats
// after a warm-up) on random bf16 data. Prints the configuration of the fastest candidate so that
// a choice can be written down.
//
//   dnamba_bench_gemm [--T N] [--repeats N] [--candidates N]
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "backend/cuda/lt_gemm.h"

using namespace dnamba;
using namespace dnamba::cuda;

namespace {

std::vector<uint16_t> random_bf16(size_t n, uint32_t seed) {
  std::vector<uint16_t> v(n);
  uint32_t s = seed * 2654435761u + 1;
  for (auto& x : v) {
    s = s * 1664525u + 1013904223u;
    float f = (float(s >> 8) / float(1 << 24) - 0.5f) * 0.25f;
    uint32_t b;
    std::memcpy(&b, &f, 4);
    x = uint16_t(b >> 16);
  }
  return v;
}

template <class F>
float time_ms(F&& f, int repeats, cudaStream_t st) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  for (int i = 0; i < 2; ++i) f();
  std::vector<float> t;
  for (int i = 0; i < repeats; ++i) {
    CUDA_CHECK(cudaEventRecord(a, st));
    f();
    CUDA_CHECK(cudaEventRecord(b, st));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int64_t T = int64_t(1) << 20;
  int repeats = 7, ncand = 24;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--T")) T = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--candidates")) ncand = std::atoi(argv[i + 1]);
  }
  try {
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreate(&st));
    cublasHandle_t blas;
    CUBLAS_CHECK(cublasCreate(&blas));
    CUBLAS_CHECK(cublasSetStream(blas, st));
    LtGemm lt;
    const size_t xmax = size_t(T) * 512, omax = size_t(T) * 1024;
    void *x, *w, *o;
    CUDA_CHECK(cudaMalloc(&x, xmax * 2));
    CUDA_CHECK(cudaMalloc(&w, 1024 * 512 * 2));
    CUDA_CHECK(cudaMalloc(&o, omax * 4));
    {
      auto hx = random_bf16(xmax, 1), hw = random_bf16(1024 * 512, 2);
      CUDA_CHECK(cudaMemcpy(x, hx.data(), xmax * 2, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(w, hw.data(), hw.size() * 2, cudaMemcpyHostToDevice));
    }
    struct Case {
      const char* name;
      GemmShape s;
    };
    // Row strides as MambaLM's workspace lays them out (dt_proj reads the first 16 columns of x_dbl).
    std::vector<Case> cases = {
        {"in_proj  T x 1024 x 256 -> bf16", {T, 1024, 256, 256, 256, 1024, CUDA_R_16BF, CUDA_R_16BF}},
        {"out_proj T x 256 x 512 -> fp32", {T, 256, 512, 512, 512, 256, CUDA_R_16BF, CUDA_R_32F}},
        {"x_proj   T x 48 x 512 -> bf16", {T, 48, 512, 512, 512, 48, CUDA_R_16BF, CUDA_R_16BF}},
        {"dt_proj  T x 512 x 16 (ld 48) -> bf16", {T, 512, 16, 48, 16, 512, CUDA_R_16BF, CUDA_R_16BF}},
    };
    std::printf("T = %lld, median of %d after 2 warm-ups, CUDA events\n", (long long)T, repeats);
    std::printf("%-40s %10s %10s %10s %8s  %s\n", "product", "gemmex ms", "lt#0 ms", "best ms", "best #", "best config");
    double tot_ex = 0, tot_lt0 = 0, tot_best = 0;
    for (auto& c : cases) {
      const auto& s = c.s;
      const float one = 1.0f, zero = 0.0f;
      float ex = time_ms(
          [&] {
            CUBLAS_CHECK(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(s.N), int(s.T), int(s.K), &one, w,
                                      CUDA_R_16BF, int(s.ldw), x, CUDA_R_16BF, int(s.ldx), &zero, o, s.out_type,
                                      int(s.ldo), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
          },
          repeats, st);
      auto cand = lt.candidates(s, ncand);
      float lt0 = -1, best = 1e30f;
      int best_i = -1;
      for (size_t i = 0; i < cand.size(); ++i) {
        float ms;
        try {
          ms = time_ms([&] { lt.run(s, x, w, o, 0.0f, st, &cand[i]); }, repeats, st);
        } catch (const std::exception& e) {
          std::printf("  candidate %zu failed: %s\n", i, e.what());
          continue;
        }
        if (i == 0) lt0 = ms;
        if (ms < best) best = ms, best_i = int(i);
        std::printf("  #%-2zu %8.3f ms  %s\n", i, ms, cand[i].describe().c_str());
      }
      std::printf("%-40s %10.3f %10.3f %10.3f %8d  %s\n", c.name, ex, lt0, best, best_i,
                  best_i >= 0 ? cand[size_t(best_i)].describe().c_str() : "-");
      tot_ex += ex, tot_lt0 += lt0, tot_best += best;
    }
    const double per_mbp = 16.0 * double(1 << 20) / double(T) * (1e6 / double(1 << 20));
    std::printf("per Mbp of 16 layers: gemmex %.1f ms, lt#0 %.1f ms, best %.1f ms\n", tot_ex * per_mbp,
                tot_lt0 * per_mbp, tot_best * per_mbp);
    cudaFree(x);
    cudaFree(w);
    cudaFree(o);
    cublasDestroy(blas);
    cudaStreamDestroy(st);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dnamba_bench_gemm: %s\n", e.what());
    return 1;
  }
  return 0;
}
