// Training throughput on the GPU: a random Mamba LM (default d_model 256, n_layer 16, d_state 16,
// expand 2, vocabulary 16) on random DNA tokens, seq-len 8192. For each configuration (dtype x
// recompute chunk) it reports, from CUDA events after a warm-up (median of repeats):
//   fwd      the training forward + loss (TrainableMamba::forward_loss)
//   fwd+bwd  forward_backward (the forward, then the backward with its recomputation)
//   step     a whole optimiser step as `dnamba train` runs it: zero_grad, forward_backward, the
//            global gradient norm (sum_squares), AdamW on every parameter -> training tokens/s
//   peak     GPU memory in use at the end of the step minus before the model was built (every
//            buffer of the model, its workspace and the backend's scratch is allocated once and
//            kept, so what is in use after a step is the high-water mark); each configuration
//            builds its model and backend afresh and frees them before the next.
// Recompute chunk 64 stores the scan state every 64 positions and recomputes the rest in the
// backward; chunk 1 stores the state at every position ("no recomputation" of the scan states:
// the backward reads each state from memory, which is what a non-recomputing implementation keeps).
//
//   dnamba_bench_train [--d-model N] [--layers N] [--seq-len N] [--batch N] [--repeats N]
//                      [--chunks 64,1] [--dtypes fp32,bf16]
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "backend/cuda/cuda_train_backend.h"
#include "train/mamba_grad.h"

using namespace dnamba;
using namespace dnamba::train;

namespace {

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream ss(s);
  std::string x;
  while (std::getline(ss, x, ',')) v.push_back(x);
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

size_t used_bytes() {
  size_t fr = 0, tot = 0;
  cudaMemGetInfo(&fr, &tot);
  return tot - fr;
}

struct Result {
  std::string dtype;
  int64_t chunk = 0;
  double fwd_ms = 0, fb_ms = 0, step_ms = 0, tok_s = 0;
  double peak_gib = 0;
  std::string note;
};

}  // namespace

int main(int argc, char** argv) {
  int64_t d_model = 256, layers = 16, seq_len = 8192, batch = 8;
  int repeats = 3;
  std::string chunks = "64,1", dtypes = "fp32,bf16";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--d-model") d_model = std::atoll(argv[i + 1]);
    else if (a == "--layers") layers = std::atoll(argv[i + 1]);
    else if (a == "--seq-len") seq_len = std::atoll(argv[i + 1]);
    else if (a == "--batch") batch = std::atoll(argv[i + 1]);
    else if (a == "--repeats") repeats = std::atoi(argv[i + 1]);
    else if (a == "--chunks") chunks = argv[i + 1];
    else if (a == "--dtypes") dtypes = argv[i + 1];
    else {
      std::fprintf(stderr, "unknown option %s\n", a.c_str());
      return 2;
    }
  }
  if (cuda_device_count() == 0) {
    std::fprintf(stderr, "dnamba_bench_train: no CUDA GPU\n");
    return 1;
  }
  ModelConfig c;
  c.layout = CheckpointLayout::HuggingFace;
  c.d_model = d_model;
  c.n_layer = layers;
  c.d_state = 16;
  c.d_conv = 4;
  c.d_inner = 2 * d_model;
  c.dt_rank = (d_model + 15) / 16;
  c.vocab_size = 16;
  c.pad_vocab_size_multiple = 1;
  c.tie_embeddings = true;
  const int64_t T = batch * seq_len;
  std::vector<int32_t> ids(static_cast<size_t>(T)), tg(static_cast<size_t>(T));
  std::mt19937 g(1);
  for (auto& x : ids) x = 7 + int32_t(g() % 4);
  for (int64_t t = 0; t < T; ++t) tg[size_t(t)] = (t % seq_len == seq_len - 1) ? -1 : ids[size_t(t + 1)];
  std::printf("dnamba_bench_train: d_model %lld, n_layer %lld, d_state 16, expand 2, seq-len %lld, batch %lld (%lld tokens a step), %d repeats\n",
              (long long)d_model, (long long)layers, (long long)seq_len, (long long)batch, (long long)T, repeats);
  std::vector<Result> results;
  for (const std::string& dt : split(dtypes)) {
    for (const std::string& cs : split(chunks)) {
      Result r;
      r.dtype = dt;
      r.chunk = std::atoll(cs.c_str());
      try {
        cudaDeviceSynchronize();
        const size_t base = used_bytes();
        {
          CudaTrainBackend tb(0, dt == "bf16" ? DType::BF16 : DType::F32);
          TrainableMamba m(tb, c, r.chunk);
          m.init_random(1);
          cudaStream_t s = tb.cuda().stream();
          cudaEvent_t e0, e1;
          cudaEventCreate(&e0);
          cudaEventCreate(&e1);
          auto timed = [&](auto&& f) {
            cudaEventRecord(e0, s);
            f();
            cudaEventRecord(e1, s);
            cudaEventSynchronize(e1);
            float ms = 0;
            cudaEventElapsedTime(&ms, e0, e1);
            return double(ms);
          };
          int64_t count = 0;
          for (auto x : tg) count += x >= 0;
          int64_t step = 0;
          auto train_step = [&] {
            m.zero_grad();
            m.forward_backward(ids.data(), tg.data(), batch, seq_len, 1.0f / float(count));
            double sq = 0;
            for (auto& p : m.params()) sq += tb.sum_squares(p.grad);
            AdamWStep a;
            a.lr = 1e-4f;
            a.grad_scale = sq > 1.0 ? float(1.0 / std::sqrt(sq)) : 1.0f;
            a.step = ++step;
            for (auto& p : m.params()) {
              a.weight_decay = p.decay ? 0.1f : 0.0f;
              tb.adamw(p.value, p.grad, p.m, p.v, a);
            }
          };
          train_step();  // warm-up: allocates every buffer, cuBLAS picks its kernels
          m.forward_loss(ids.data(), tg.data(), batch, seq_len);
          std::vector<double> f, fb, st;
          for (int i = 0; i < repeats; ++i) {
            f.push_back(timed([&] { m.forward_loss(ids.data(), tg.data(), batch, seq_len); }));
            fb.push_back(timed([&] {
              m.zero_grad();
              m.forward_backward(ids.data(), tg.data(), batch, seq_len, 1.0f / float(count));
            }));
            st.push_back(timed(train_step));
          }
          cudaDeviceSynchronize();
          r.peak_gib = double(used_bytes() - base) / double(1ull << 30);
          r.fwd_ms = median(f);
          r.fb_ms = median(fb);
          r.step_ms = median(st);
          r.tok_s = double(T) / (r.step_ms / 1e3);
          cudaEventDestroy(e0);
          cudaEventDestroy(e1);
        }
      } catch (const std::exception& e) {
        r.note = e.what();
      }
      results.push_back(r);
      if (r.note.empty())
        std::printf("  %-5s chunk %-5lld fwd %8.1f ms  fwd+bwd %8.1f ms (x%.2f)  step %8.1f ms  %10.0f tokens/s  peak %6.2f GiB\n",
                    r.dtype.c_str(), (long long)r.chunk, r.fwd_ms, r.fb_ms, r.fb_ms / r.fwd_ms, r.step_ms, r.tok_s,
                    r.peak_gib);
      else
        std::printf("  %-5s chunk %-5lld not run: %s\n", r.dtype.c_str(), (long long)r.chunk, r.note.c_str());
      std::fflush(stdout);
    }
  }
  std::printf("\n| dtype | recompute chunk | fwd ms | fwd+bwd ms | (fwd+bwd)/fwd | step ms | tokens/s | peak GPU GiB |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");
  for (auto& r : results) {
    if (!r.note.empty()) {
      std::printf("| %s | %lld | - | - | - | - | - | - (%s) |\n", r.dtype.c_str(), (long long)r.chunk, r.note.c_str());
      continue;
    }
    std::printf("| %s | %lld%s | %.1f | %.1f | %.2f | %.1f | %.0f | %.2f |\n", r.dtype.c_str(), (long long)r.chunk,
                r.chunk == 1 ? " (no recomputation)" : "", r.fwd_ms, r.fb_ms, r.fb_ms / r.fwd_ms, r.step_ms, r.tok_s,
                r.peak_gib);
  }
  return 0;
}
