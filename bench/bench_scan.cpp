// Selective scan forward alone (kernels/selective_scan.cu), the shapes of issue 3:
// bf16 u/delta/z/out, fp32 A/D/dt bias, B and C per token (one group), d_state 16, batch 1,
// z gating on. Random inputs (never zero), CUDA events after warm-up, median of repeats.
//
//   dnamba_bench_scan [--repeats N] [--first]   (--first: the reference shape only, e.g. under ncu)
//
// Reference: mamba_ssm's selective_scan_fwd took 11.3 ms on the H200 for L = 2^20 x 512.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

using namespace dnamba;

namespace {

struct Result {
  std::string name;
  double median_ms, min_ms, max_ms;
  double bytes, exps;
};

template <class T>
Result bench(int64_t L, int64_t C, int64_t N, int64_t chunk, int repeats, const char* tname, bool general = false,
             int64_t batch = 1, int mode = 0, int tpc = 0, int fma = -1) {
  const size_t es = sizeof(T);
  const int64_t Lseq = L;
  L *= batch;  // rows of every per-token tensor
  void *u, *dl, *z, *o, *B, *Cm;
  float *A, *D, *bias, *st;
  CUDA_CHECK(cudaMalloc(&u, size_t(L * C) * es));
  CUDA_CHECK(cudaMalloc(&dl, size_t(L * C) * es));
  CUDA_CHECK(cudaMalloc(&z, size_t(L * C) * es));
  CUDA_CHECK(cudaMalloc(&o, size_t(L * C) * es));
  CUDA_CHECK(cudaMalloc(&B, size_t(L * N) * es));
  CUDA_CHECK(cudaMalloc(&Cm, size_t(L * N) * es));
  CUDA_CHECK(cudaMalloc(&A, size_t(C * N) * 4));
  CUDA_CHECK(cudaMalloc(&D, size_t(C) * 4));
  CUDA_CHECK(cudaMalloc(&bias, size_t(C) * 4));
  CUDA_CHECK(cudaMalloc(&st, size_t(batch * C * N) * 4));
  auto fill = [&](void* p, int64_t n, uint64_t seed, float lo, float hi) {
    if constexpr (sizeof(T) == 2) kernels::fill_uniform_bf16(static_cast<__nv_bfloat16*>(p), n, seed, lo, hi, nullptr);
    else kernels::fill_uniform_f32(static_cast<float*>(p), n, seed, lo, hi, nullptr);
  };
  fill(u, L * C, 1, 0.05f, 2.0f);
  fill(dl, L * C, 2, -3.0f, 1.0f);
  fill(z, L * C, 3, 0.1f, 2.0f);
  fill(o, L * C, 4, 1.0f, 2.0f);
  fill(B, L * N, 5, 0.1f, 1.0f);
  fill(Cm, L * N, 6, 0.1f, 1.0f);
  kernels::fill_uniform_f32(A, C * N, 7, -8.0f, -0.5f, nullptr);
  kernels::fill_uniform_f32(D, C, 8, 0.5f, 1.5f, nullptr);
  kernels::fill_uniform_f32(bias, C, 9, -6.0f, -2.0f, nullptr);
  kernels::fill_uniform_f32(st, batch * C * N, 10, -1.0f, 1.0f, nullptr);
  kernels::ScanParams p;
  p.u = u; p.ld_u = C; p.delta = dl; p.ld_delta = C; p.z = z; p.ld_z = C;
  p.B = B; p.ld_B = N; p.C = Cm; p.ld_C = N; p.out = o; p.ld_out = C;
  p.A = A; p.ld_A = N; p.D = D; p.dt_bias = bias; p.state = st; p.ld_state = C * N;
  p.batch = batch; p.len = Lseq; p.channels = C; p.dstate = N; p.chunk = chunk; p.general = general;
  p.mode = mode; p.single_tpc = tpc; p.single_fma_exp = fma;
  int sms = 0;
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  auto plan = kernels::selective_scan_plan(p, sms);
  void* ws = nullptr;
  if (plan.workspace_bytes) CUDA_CHECK(cudaMalloc(&ws, plan.workspace_bytes));
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0));
  CUDA_CHECK(cudaEventCreate(&e1));
  for (int i = 0; i < 3; ++i) kernels::selective_scan<T>(p, plan, ws, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms;
  for (int i = 0; i < repeats; ++i) {
    CUDA_CHECK(cudaEventRecord(e0));
    kernels::selective_scan<T>(p, plan, ws, nullptr);
    CUDA_CHECK(cudaEventRecord(e1));
    CUDA_CHECK(cudaEventSynchronize(e1));
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  // Every output written and finite (a sample of rows).
  std::vector<T> sample(static_cast<size_t>(C));
  int bad = 0;
  for (int64_t r : {int64_t(0), L / 2, L - 1}) {
    CUDA_CHECK(cudaMemcpy(sample.data(), static_cast<char*>(o) + size_t(r * C) * es, size_t(C) * es, cudaMemcpyDeviceToHost));
    for (auto v : sample) {
      float f;
      if constexpr (sizeof(T) == 2) f = __bfloat162float(v);
      else f = v;
      if (!std::isfinite(f)) ++bad;
    }
  }
  if (bad) std::fprintf(stderr, "WARNING: %d non-finite outputs\n", bad);
  std::sort(ms.begin(), ms.end());
  Result r;
  char buf[200];
  if (plan.single)
    std::snprintf(buf, sizeof buf, "scan %s %lldx%lld C=%lld N=%lld single tpc%d%s", tname, (long long)batch,
                  (long long)Lseq, (long long)C, (long long)N, plan.single_tpc, plan.single_fma_exp ? " fmaexp" : "");
  else
    std::snprintf(buf, sizeof buf, "scan %s %lldx%lld C=%lld N=%lld ch=%lld(x%lld) %s", tname, (long long)batch,
                  (long long)Lseq, (long long)C, (long long)N, (long long)plan.chunk, (long long)plan.nchunks,
                  plan.fast ? "fast" : "general");
  r.name = buf;
  r.median_ms = ms[ms.size() / 2];
  r.min_ms = ms.front();
  r.max_ms = ms.back();
  r.bytes = double(L * C) * es * 4 + double(L * N) * es * 2;
  r.exps = double(L * C) * double(N);
  for (void* q : {u, dl, z, o, B, Cm, (void*)A, (void*)D, (void*)bias, (void*)st, ws})
    if (q) cudaFree(q);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 20;
  bool first_only = false;  // --first: only the reference shape (for profilers)
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--first")) first_only = true;
  }
  try {
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
    std::vector<Result> rs;
    const int64_t M = int64_t(1) << 20;
    rs.push_back(bench<__nv_bfloat16>(M, 512, 16, 0, repeats, "bf16"));
    rs.push_back(bench<__nv_bfloat16>(M, 512, 16, 0, repeats, "bf16", true));
    // The same tokens as independent sequences: chunked (mode 1) against the single pass (mode 2),
    // every variant (threads a channel, exps partly on the FMA pipe), and the automatic choice.
    for (auto [b, l] : {std::pair<int64_t, int64_t>{16, 65536}, {256, 4096}}) {
      rs.push_back(bench<__nv_bfloat16>(l, 512, 16, 0, repeats, "bf16", false, b, 1));
      for (int tpc : {1, 2, 4})
        for (int fma : {0, 1}) rs.push_back(bench<__nv_bfloat16>(l, 512, 16, 0, repeats, "bf16", false, b, 2, tpc, fma));
      rs.push_back(bench<__nv_bfloat16>(l, 512, 16, 0, repeats, "bf16 auto", false, b, 0));
    }
    if (!first_only) {
    rs.push_back(bench<__nv_bfloat16>(M, 1024, 16, 0, repeats, "bf16"));
    rs.push_back(bench<__nv_bfloat16>(M / 8, 1536, 16, 0, repeats, "bf16"));
    rs.push_back(bench<float>(M, 512, 16, 0, repeats, "fp32"));
    // The general kernel (the baseline: what every shape ran before the fast kernel), same run.
    rs.push_back(bench<__nv_bfloat16>(M, 1024, 16, 0, repeats, "bf16", true));
    rs.push_back(bench<float>(M, 512, 16, 0, repeats, "fp32", true));
    // Chunk sensitivity on the reference shape.
    for (int64_t ch : {256, 2048}) rs.push_back(bench<__nv_bfloat16>(M, 512, 16, ch, repeats, "bf16"));
    }
    std::printf("\n%-58s %9s %9s %9s %9s %10s\n", "benchmark", "median_ms", "min_ms", "max_ms", "GB/s", "Gexp2/s");
    for (auto& r : rs)
      std::printf("%-58s %9.3f %9.3f %9.3f %9.0f %10.0f\n", r.name.c_str(), r.median_ms, r.min_ms, r.max_ms,
                  r.bytes / r.median_ms / 1e6, r.exps / r.median_ms / 1e6);
    std::printf("(GB/s counts each input read once and the output written once; Gexp2/s counts one exp per\n"
                " element and state, L*C*N; the parallel scan computes them twice. mamba_ssm reference for the\n"
                " first row: 11.3 ms on this H200.)\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
