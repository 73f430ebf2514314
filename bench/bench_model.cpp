// Whole-model forward throughput on the GPU: one sequence streamed in chunks with the state
// carried (as pipeline/causal_stream does), forward + fused lm_head/log-softmax/gather, results
// copied to the host. No file I/O. Median of repeats after a warm-up; reports Mbp/s and the
// GPU memory in use at the peak.
//
//   dnamba_bench_model MODEL_DIR [--len N] [--chunk N] [--dtype bf16|fp32] [--repeats N]
#include <cuda_runtime.h>

#include <cmath>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "model/mamba_lm.h"

using namespace dnamba;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL_DIR [--len N] [--chunk N] [--dtype bf16|fp32] [--repeats N]\n", argv[0]);
    return 2;
  }
  std::string dir = argv[1], dtype = "bf16";
  int64_t len = int64_t(1) << 22, chunk = int64_t(1) << 20;
  int repeats = 5;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--len")) len = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--chunk")) chunk = std::atoll(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--dtype")) dtype = argv[i + 1];
    else if (!std::strcmp(argv[i], "--repeats")) repeats = std::atoi(argv[i + 1]);
  }
  try {
    auto be = make_backend("cuda", dtype == "fp32" ? DType::F32 : DType::BF16, 0);
    MambaLM m(dir, *be);
    const auto& c = m.config();
    std::printf("model %s: d_model %lld, n_layer %lld, d_state %lld, d_inner %lld, %s; len %lld, chunk %lld\n",
                dir.c_str(), (long long)c.d_model, (long long)c.n_layer, (long long)c.d_state, (long long)c.d_inner,
                dtype.c_str(), (long long)len, (long long)chunk);
    std::mt19937 g(1);
    std::vector<int32_t> ids(static_cast<size_t>(len));
    for (auto& x : ids) x = 7 + int32_t(g() % 4);
    std::vector<float> stats(size_t(std::min(len, chunk) * 5));
    auto state = m.new_state(1);
    size_t free0 = 0, tot = 0;
    cudaMemGetInfo(&free0, &tot);
    size_t min_free = free0;
    auto run_once = [&]() {
      m.reset_state(state);
      for (int64_t s = 0; s < len; s += chunk) {
        const int64_t n = std::min(chunk, len - s);
        Tensor hid = m.workspace().get("bench_hidden", n, c.d_model);
        m.forward_host(ids.data() + s, 1, n, state, hid);
        Tensor tg = m.workspace().get("bench_targets", n, 1, DType::I32);
        be->to_device(tg, ids.data() + s);  // targets: any valid ids will do for timing
        Tensor out = m.workspace().get("bench_stats", n, 5);
        be->token_logprobs(hid, m.lm_head(), tg, out);
        be->to_host(out, stats.data());
        size_t fr = 0;
        cudaMemGetInfo(&fr, &tot);
        min_free = std::min(min_free, fr);
      }
      be->synchronize();
    };
    run_once();  // warm-up: allocations, cuBLAS heuristics
    std::vector<double> sec;
    for (int r = 0; r < repeats; ++r) {
      auto t0 = std::chrono::steady_clock::now();
      run_once();
      sec.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(sec.begin(), sec.end());
    const double med = sec[sec.size() / 2];
    std::printf("model forward + logprobs: median %.3f s over %d runs (min %.3f, max %.3f): %.2f Mbp/s; "
                "GPU memory in use at peak (whole device): %.0f MiB\n",
                med, repeats, sec.front(), sec.back(), double(len) / med / 1e6, double(tot - min_free) / 1048576.0);
    std::printf("RESULT model_mbps %.3f\n", double(len) / med / 1e6);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
