// Every op of the CUDA backend against the CPU reference backend on fresh random inputs: odd
// lengths, length 1, lengths that are not a multiple of the scan chunk, chunk boundaries, state in
// and out, batch > 1, strided views like the model's. fp32 within 1e-4, bf16 within 2e-2.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstring>

#include "gpu_test_util.h"
#include "io/safetensors.h"
#include "kernels/kernels.h"

using namespace dnamba;
using namespace dnamba::gputest;

TEST(CudaOps, Embedding) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  for (DType dt : {DType::F32, DType::BF16}) {
    auto gb = gpu_backend(dt);
    const int64_t V = 16, D = 67, T = 1001;
    auto table = randn(size_t(V * D));
    // F32 tables through upload_f32; bf16 through weight_matrix (bf16 storage on the GPU).
    Tensor tc = cb.upload_f32(table.data(), V, D);
    Tensor tg = dt == DType::F32 ? gb->upload_f32(table.data(), V, D) : gb->weight_matrix(table.data(), V, D);
    std::vector<int32_t> ids(T);
    for (auto& i : ids) i = int32_t(rng()() % V);
    auto id = make_pair_i32(cb, *gb, ids, T);
    auto out = make_pair(cb, *gb, randn(size_t(T * D)), T, D, 3);
    cb.embedding(id.cpu, tc, out.cpu);
    gb->embedding(id.gpu, tg, out.gpu);
    double e = test::rel_err(host_of(*gb, out.gpu), host_of(cb, out.cpu));
    EXPECT_LT(e, dt == DType::F32 ? 0.0 + 1e-7 : kTolBF16) << dtype_name(dt);
  }
}

TEST(CudaOps, EmbeddingBadIdIsAnError) {
  SKIP_WITHOUT_GPU();
  auto gb = gpu_backend(DType::F32);
  auto table = randn(16 * 8);
  Tensor t = gb->upload_f32(table.data(), 16, 8);
  std::vector<int32_t> ids = {1, 99};
  Tensor id = gb->alloc(2, 1, DType::I32);
  gb->to_device(id, ids.data());
  Tensor out = gb->alloc(2, 8, DType::F32);
  gb->embedding(id, t, out);
  EXPECT_THROW(gb->synchronize(), Error);
}

TEST(CudaOps, AddNorm) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  auto gb = gpu_backend(DType::F32);
  for (int64_t D : {64, 257, 1024}) {
    for (int64_t T : {1, 7, 1000}) {
      for (bool layer : {false, true}) {
        for (bool first : {true, false}) {
          auto x = make_pair(cb, *gb, randn(size_t(T * D)), T, D, 5);
          auto res = make_pair(cb, *gb, randn(size_t(T * D)), T, D, 2);
          auto out = make_pair(cb, *gb, randn(size_t(T * D)), T, D, 1);
          auto w = make_pair(cb, *gb, randn(size_t(D), 0.3f, 1.0f), 1, D);
          auto b = make_pair(cb, *gb, randn(size_t(D)), 1, D);
          cb.add_norm(x.cpu, res.cpu, first, w.cpu, layer ? &b.cpu : nullptr, 1e-5f, out.cpu);
          gb->add_norm(x.gpu, res.gpu, first, w.gpu, layer ? &b.gpu : nullptr, 1e-5f, out.gpu);
          EXPECT_LT(test::rel_err(host_of(*gb, out.gpu), host_of(cb, out.cpu)), kTolF32)
              << "D " << D << " T " << T << " layer " << layer << " first " << first;
          EXPECT_LT(test::rel_err(host_of(*gb, res.gpu), host_of(cb, res.cpu)), 1e-6);
          // No x: the residual stream is only normalised (the model's flow after linear_add).
          cb.add_norm(Tensor{}, res.cpu, false, w.cpu, layer ? &b.cpu : nullptr, 1e-5f, out.cpu);
          gb->add_norm(Tensor{}, res.gpu, false, w.gpu, layer ? &b.gpu : nullptr, 1e-5f, out.gpu);
          EXPECT_LT(test::rel_err(host_of(*gb, out.gpu), host_of(cb, out.cpu)), kTolF32)
              << "norm only: D " << D << " T " << T << " layer " << layer;
          EXPECT_LT(test::rel_err(host_of(*gb, res.gpu), host_of(cb, res.cpu)), 1e-6);
        }
      }
    }
  }
}

TEST(CudaOps, Linear) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  for (DType dt : {DType::F32, DType::BF16}) {
    auto gb = gpu_backend(dt);
    for (auto [T, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1, 64, 256}, {777, 256, 1024}, {1000, 4, 512},
                           {33, 513, 48}}) {
      for (bool with_bias : {false, true}) {
        auto W = randn(size_t(N * K), 0.1f);
        Tensor wc = cb.weight_matrix(W.data(), N, K), wg = gb->weight_matrix(W.data(), N, K);
        auto x = make_pair(cb, *gb, randn(size_t(T * K)), T, K, 3);  // strided like xdbl.cols_view
        auto bias = make_pair(cb, *gb, randn(size_t(N)), 1, N);
        auto out = make_pair(cb, *gb, randn(size_t(T * N)), T, N, 2);
        cb.linear(x.cpu, wc, with_bias ? &bias.cpu : nullptr, out.cpu);
        gb->linear(x.gpu, wg, with_bias ? &bias.gpu : nullptr, out.gpu);
        EXPECT_LT(test::rel_err(host_of(*gb, out.gpu), host_of(cb, out.cpu)), dt == DType::F32 ? kTolF32 : kTolBF16)
            << dtype_name(dt) << " T " << T << " K " << K << " N " << N;
        // linear_add: out += x . W^T (+ bias), into an fp32 tensor holding other values.
        auto acc = make_pair(cb, *gb, randn(size_t(T * N)), T, N, 2);
        cb.linear_add(x.cpu, wc, with_bias ? &bias.cpu : nullptr, acc.cpu);
        gb->linear_add(x.gpu, wg, with_bias ? &bias.gpu : nullptr, acc.gpu);
        EXPECT_LT(test::rel_err(host_of(*gb, acc.gpu), host_of(cb, acc.cpu)), dt == DType::F32 ? kTolF32 : kTolBF16)
            << "linear_add " << dtype_name(dt) << " T " << T << " K " << K << " N " << N;
      }
    }
  }
}

namespace {
uint16_t to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
float from_bf16_bits(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
}  // namespace

// bf16 activations (the model's data flow on the GPU in bf16 mode), including thin K (dt_proj:
// the linear_small_k kernel) with x a strided view like xdbl.cols_view(0, R), and out bf16 or fp32.
TEST(CudaOps, LinearBf16Activations) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  CudaBackend gbe(0, DType::BF16);
  CudaBackend* gb = &gbe;
  for (bool small_k : {false, true}) {  // cuBLAS, and kernels/linear_small_k.cu for K <= 32
  gb->set_small_k(small_k);
  for (auto [T, K, N] : {std::tuple<int64_t, int64_t, int64_t>{1000, 16, 512}, {77, 5, 130}, {3, 32, 1},
                         {1, 17, 1025}, {4097, 16, 64}, {300, 64, 256}}) {
    for (bool out_bf16 : {true, false}) {
      for (bool with_bias : {false, true}) {
        const int64_t pad = 3, w = K + 2 * pad;  // x = cols [pad, pad+K) of a [T, K+2*pad] buffer
        auto W = randn(size_t(N * K), 0.3f);
        for (auto& v : W) v = from_bf16_bits(to_bf16_bits(v));
        auto xv = randn(size_t(T * K));
        std::vector<uint16_t> xb(size_t(T * w), 0x7FC0);  // NaN outside the view
        for (int64_t r = 0; r < T; ++r)
          for (int64_t k = 0; k < K; ++k) {
            const uint16_t b = to_bf16_bits(xv[size_t(r * K + k)]);
            xb[size_t(r * w + pad + k)] = b;
            xv[size_t(r * K + k)] = from_bf16_bits(b);
          }
        Tensor wc = cb.weight_matrix(W.data(), N, K), wg = gb->weight_matrix(W.data(), N, K);
        Tensor xc = cb.alloc(T, K, DType::F32);
        cb.to_device(xc, xv.data());
        Tensor xg_full = gb->alloc(T, w, DType::BF16);
        gb->to_device(xg_full, xb.data());
        Tensor xg = xg_full.cols_view(pad, K);
        auto bias = make_pair(cb, *gb, randn(size_t(N)), 1, N);
        Tensor oc = cb.alloc(T, N, DType::F32);
        Tensor og_full = gb->alloc(T, N + 2, out_bf16 ? DType::BF16 : DType::F32);
        Tensor og = og_full.cols_view(1, N);  // strided output
        cb.linear(xc, wc, with_bias ? &bias.cpu : nullptr, oc);
        gb->linear(xg, wg, with_bias ? &bias.gpu : nullptr, og);
        std::vector<float> got(size_t(T * N));
        if (out_bf16) {
          std::vector<uint16_t> raw(size_t(T * (N + 2)));
          gb->to_host(og_full, raw.data());
          for (int64_t r = 0; r < T; ++r)
            for (int64_t n = 0; n < N; ++n) got[size_t(r * N + n)] = from_bf16_bits(raw[size_t(r * (N + 2) + 1 + n)]);
        } else {
          got = host_of(*gb, og);
        }
        EXPECT_LT(test::rel_err(got, host_of(cb, oc)), kTolBF16)
            << "T " << T << " K " << K << " N " << N << " out_bf16 " << out_bf16 << " bias " << with_bias
            << " small_k " << small_k;
      }
    }
  }
  }
}

TEST(CudaOps, Conv1dSiluWithState) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  auto gb = gpu_backend(DType::F32);
  for (int64_t K : {4, 2, 7}) {
    for (int64_t batch : {1, 3}) {
      for (int64_t len : {1, 2, 3, 63, 64, 65, 1000}) {
        const int64_t C = 130, S = K - 1;
        auto w = make_pair(cb, *gb, randn(size_t(C * K), 0.5f), C, K);
        auto bias = make_pair(cb, *gb, randn(size_t(C)), 1, C);
        auto st = make_pair(cb, *gb, randn(size_t(batch * C * S)), batch, C * S);
        // Two consecutive calls: the state carried between them.
        for (int call = 0; call < 2; ++call) {
          auto x = make_pair(cb, *gb, randn(size_t(batch * len * C)), batch * len, C, 130);  // xz.cols_view(0, E)
          auto out = make_pair(cb, *gb, randn(size_t(batch * len * C)), batch * len, C);
          cb.conv1d_silu(x.cpu, w.cpu, &bias.cpu, st.cpu, batch, len, out.cpu);
          gb->conv1d_silu(x.gpu, w.gpu, &bias.gpu, st.gpu, batch, len, out.gpu);
          EXPECT_LT(test::rel_err(host_of(*gb, out.gpu), host_of(cb, out.cpu)), kTolF32)
              << "K " << K << " batch " << batch << " len " << len << " call " << call;
          EXPECT_LT(test::rel_err(host_of(*gb, st.gpu), host_of(cb, st.cpu)), 1e-7)
              << "state: K " << K << " batch " << batch << " len " << len << " call " << call;
        }
      }
    }
  }
}

// The conv kernel on bf16 rows (the model's data flow in bf16 mode): two channels a thread where
// widths and strides are even, one where not; the state carried across two calls.
TEST(CudaConvKernel, Bf16PairsAndSingles) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  auto round_bf16 = [](std::vector<float> v, std::vector<uint16_t>& bits) {
    bits.resize(v.size());
    for (size_t i = 0; i < v.size(); ++i) {
      bits[i] = io::f32_to_bf16(v[i]);
      v[i] = io::bf16_to_f32(bits[i]);
    }
    return v;
  };
  struct Case { int64_t C, ld_x; };
  for (Case k : {Case{130, 260}, Case{129, 258}, Case{130, 131}}) {  // pairs; odd C; odd stride
    for (int64_t batch : {1, 2}) {
      for (int64_t len : {1, 5, 64, 1000}) {
        const int64_t C = k.C, K = 4, S = K - 1, T = batch * len;
        auto wv = randn(size_t(C * K), 0.5f), bv = randn(size_t(C)), sv = randn(size_t(batch * C * S));
        Tensor wc = cb.upload_f32(wv.data(), C, K), bc = cb.upload_f32(bv.data(), 1, C);
        Tensor stc = cb.upload_f32(sv.data(), batch, C * S);
        float *wd, *bd, *sd;
        ASSERT_EQ(cudaMalloc(&wd, wv.size() * 4), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&bd, bv.size() * 4), cudaSuccess);
        ASSERT_EQ(cudaMalloc(&sd, sv.size() * 4), cudaSuccess);
        cudaMemcpy(wd, wv.data(), wv.size() * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(bd, bv.data(), bv.size() * 4, cudaMemcpyHostToDevice);
        cudaMemcpy(sd, sv.data(), sv.size() * 4, cudaMemcpyHostToDevice);
        for (int call = 0; call < 2; ++call) {
          std::vector<uint16_t> xb;
          auto xfull = round_bf16(randn(size_t(T * k.ld_x)), xb);  // rows of ld_x, the first C used
          std::vector<float> xr(size_t(T * C));
          for (int64_t t = 0; t < T; ++t)
            for (int64_t c = 0; c < C; ++c) xr[size_t(t * C + c)] = xfull[size_t(t * k.ld_x + c)];
          Tensor xc = cb.upload_f32(xr.data(), T, C), oc = cb.alloc(T, C);
          cb.conv1d_silu(xc, wc, &bc, stc, batch, len, oc);
          void *xd, *od;
          ASSERT_EQ(cudaMalloc(&xd, xb.size() * 2), cudaSuccess);
          ASSERT_EQ(cudaMalloc(&od, size_t(T * C) * 2), cudaSuccess);
          cudaMemcpy(xd, xb.data(), xb.size() * 2, cudaMemcpyHostToDevice);
          kernels::conv1d_silu(xd, k.ld_x, wd, K, bd, sd, C * S, od, C, batch, len, C, K, true, nullptr);
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          std::vector<uint16_t> ob(size_t(T * C));
          std::vector<float> got(ob.size()), got_state(sv.size());
          cudaMemcpy(ob.data(), od, ob.size() * 2, cudaMemcpyDeviceToHost);
          cudaMemcpy(got_state.data(), sd, got_state.size() * 4, cudaMemcpyDeviceToHost);
          for (size_t i = 0; i < ob.size(); ++i) got[i] = io::bf16_to_f32(ob[i]);
          const std::string what = "C " + std::to_string(C) + " ld " + std::to_string(k.ld_x) + " batch " +
                                   std::to_string(batch) + " len " + std::to_string(len) + " call " + std::to_string(call);
          EXPECT_LT(test::rel_err(got, host_of(cb, oc)), 1e-2) << what;
          EXPECT_LT(test::rel_err(got_state, host_of(cb, stc)), 1e-7) << "state: " << what;
          cudaFree(xd);
          cudaFree(od);
        }
        cudaFree(wd);
        cudaFree(bd);
        cudaFree(sd);
      }
    }
  }
}

namespace {

struct ScanCase {
  int64_t batch, len, C, N;
  bool z, D;
  int64_t chunk;  // 0: automatic
  int64_t R = 16;  // columns before B in the [T, R + 2N] buffer: 16 keeps B and C rows 16-byte aligned
};

void run_scan_case(CpuBackend& cb, CudaBackend& gb, const ScanCase& k, int calls = 1) {
  const int64_t T = k.batch * k.len, R = k.R;
  auto A = make_pair(cb, gb, randu(size_t(k.C * k.N), -3.0f, -0.05f), k.C, k.N);
  auto Dp = make_pair(cb, gb, randn(size_t(k.C)), 1, k.C);
  auto dtb = make_pair(cb, gb, randu(size_t(k.C), -4.0f, -1.0f), 1, k.C);
  auto st = make_pair(cb, gb, randn(size_t(k.batch * k.C * k.N)), k.batch, k.C * k.N);
  gb.set_scan_chunk(k.chunk);
  for (int call = 0; call < calls; ++call) {
    auto u = make_pair(cb, gb, randn(size_t(T * k.C)), T, k.C);
    auto delta = make_pair(cb, gb, randn(size_t(T * k.C), 1.0f, -1.0f), T, k.C);
    auto z = make_pair(cb, gb, randn(size_t(T * k.C)), T, k.C, k.C);  // like xz.cols_view(E, E)
    // B and C: strided column views of one [T, R+2N] buffer, like the model's xdbl.
    auto xdbl = make_pair(cb, gb, randn(size_t(T * (R + 2 * k.N))), T, R + 2 * k.N);
    Tensor Bc = xdbl.cpu.cols_view(R, k.N), Cc = xdbl.cpu.cols_view(R + k.N, k.N);
    Tensor Bg = xdbl.gpu.cols_view(R, k.N), Cg = xdbl.gpu.cols_view(R + k.N, k.N);
    auto out = make_pair(cb, gb, randn(size_t(T * k.C)), T, k.C, 1);
    SelectiveScanArgs ac, ag;
    ac.u = &u.cpu; ag.u = &u.gpu;
    ac.delta = &delta.cpu; ag.delta = &delta.gpu;
    ac.A = &A.cpu; ag.A = &A.gpu;
    ac.B = &Bc; ag.B = &Bg;
    ac.C = &Cc; ag.C = &Cg;
    ac.D = k.D ? &Dp.cpu : nullptr; ag.D = k.D ? &Dp.gpu : nullptr;
    ac.z = k.z ? &z.cpu : nullptr; ag.z = k.z ? &z.gpu : nullptr;
    ac.dt_bias = &dtb.cpu; ag.dt_bias = &dtb.gpu;
    ac.state = &st.cpu; ag.state = &st.gpu;
    ac.out = &out.cpu; ag.out = &out.gpu;
    ac.batch = ag.batch = k.batch;
    ac.len = ag.len = k.len;
    cb.selective_scan(ac);
    gb.selective_scan(ag);
    const std::string what = "batch " + std::to_string(k.batch) + " len " + std::to_string(k.len) + " C " +
                             std::to_string(k.C) + " N " + std::to_string(k.N) + " z " + std::to_string(k.z) +
                             " D " + std::to_string(k.D) + " chunk " + std::to_string(k.chunk) + " R " + std::to_string(k.R) + " call " +
                             std::to_string(call);
    EXPECT_LT(test::rel_err(host_of(gb, out.gpu), host_of(cb, out.cpu)), kTolF32) << what;
    EXPECT_LT(test::rel_err(host_of(gb, st.gpu), host_of(cb, st.cpu)), kTolF32) << "state: " << what;
  }
  gb.set_scan_chunk(0);
}

}  // namespace

TEST(CudaOps, SelectiveScanFastPath) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(8);
  CudaBackend gb(0, DType::F32);
  for (int64_t len : {1, 2, 5, 63, 64, 65, 255, 256, 257, 1000, 3001})
    for (int64_t chunk : {0, 7, 64, 100})
      run_scan_case(cb, gb, {len > 1000 ? 1 : 2, len, 130, 16, true, true, chunk});
  // Without the gate or the skip; and a state carried across calls.
  run_scan_case(cb, gb, {2, 777, 64, 16, false, false, 0});
  run_scan_case(cb, gb, {1, 1000, 256, 16, true, true, 128}, 3);
  run_scan_case(cb, gb, {3, 1, 64, 16, true, true, 0}, 3);
  // B and C rows not 16-byte aligned (R = 3): the general kernel.
  for (int64_t len : {1, 65, 1000})
    for (int64_t chunk : {0, 7, 64})
      run_scan_case(cb, gb, {2, len, 130, 16, true, true, chunk, 3});
  // The general kernel where the fast one would apply.
  gb.set_scan_general(true);
  run_scan_case(cb, gb, {2, 1000, 130, 16, true, true, 64});
  run_scan_case(cb, gb, {1, 3001, 256, 16, true, true, 0}, 2);
  run_scan_case(cb, gb, {2, 65, 16, 5, true, true, 7});
  gb.set_scan_general(false);
}

TEST(CudaOps, SelectiveScanOtherStateSizes) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(8);
  CudaBackend gb(0, DType::F32);
  for (int64_t N : {1, 5, 8, 17, 40, 64, 100, 256})
    for (int64_t chunk : {0, 33})
      run_scan_case(cb, gb, {2, 301, 70, N, true, true, chunk});
  run_scan_case(cb, gb, {1, 129, 33, 256, true, true, 16}, 2);
}

// The single-pass scan (kernels/selective_scan_single.cu) against the CPU op, every variant
// (threads a channel 1, 2, 4; exps on the MUFU or partly on the FMA pipe), on the chunked kernel's
// cases plus batches of 1, 3, 17 and 256, lengths off the 4-step group and 64-step tile, states
// carried across calls; unaligned B/C and other d_state take the general kernel in one pass.
TEST(CudaScanSingle, MatchesCpuEveryVariant) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(8);
  CudaBackend gb(0, DType::F32);
  for (int tpc : {1, 2, 4})
    for (int fma : {0, 1}) {
      SCOPED_TRACE("tpc " + std::to_string(tpc) + " fma_exp " + std::to_string(fma));
      gb.set_scan_mode(2, tpc, fma);
      for (int64_t batch : {1, 3, 17})
        for (int64_t len : {1, 2, 5, 63, 64, 65, 257, 1000})
          run_scan_case(cb, gb, {batch, len, 130, 16, true, true, 0});
      run_scan_case(cb, gb, {256, 65, 64, 16, true, true, 0});
      run_scan_case(cb, gb, {256, 301, 40, 16, true, true, 0}, 2);
      run_scan_case(cb, gb, {2, 777, 64, 16, false, false, 0});
      run_scan_case(cb, gb, {3, 1000, 256, 16, true, true, 0}, 3);
    }
  gb.set_scan_mode(2);
  for (int64_t len : {1, 65, 1000}) run_scan_case(cb, gb, {3, len, 130, 16, true, true, 0, 3});  // R 3: unaligned
  for (int64_t N : {1, 5, 40, 256}) run_scan_case(cb, gb, {3, 129, 70, N, true, true, 0}, 2);
  gb.set_scan_mode(0);
}

// bf16 activations through the kernels' own entry, every variant, against the CPU op on the same
// (bf16-rounded) inputs.
TEST(CudaScanSingle, Bf16EveryVariant) {
  SKIP_WITHOUT_GPU();
  for (int64_t batch : {1, 17, 256})
    for (int tpc : {1, 2, 4})
      for (int fma : {0, 1}) {
        const int64_t L = batch == 256 ? 129 : 1001, C = 96, N = 16, T = batch * L;
        const std::string what = "batch " + std::to_string(batch) + " tpc " + std::to_string(tpc) + " fma " + std::to_string(fma);
        auto rnd_bf16 = [](std::vector<float> v) {
          std::vector<uint16_t> b(v.size());
          for (size_t i = 0; i < v.size(); ++i) b[i] = io::f32_to_bf16(v[i]);
          for (size_t i = 0; i < v.size(); ++i) v[i] = io::bf16_to_f32(b[i]);
          return std::pair{v, b};
        };
        auto [u, ub] = rnd_bf16(randn(size_t(T * C)));
        auto [dl, db] = rnd_bf16(randn(size_t(T * C), 1.0f, -1.0f));
        auto [z, zb] = rnd_bf16(randn(size_t(T * C)));
        auto [B, Bb] = rnd_bf16(randn(size_t(T * N)));
        auto [Cm, Cb] = rnd_bf16(randn(size_t(T * N)));
        auto A = randu(size_t(C * N), -2.0f, -0.1f);
        auto D = randn(size_t(C));
        auto bias = randu(size_t(C), -4.0f, -1.0f);
        auto h0 = randn(size_t(batch * C * N));
        CpuBackend cb(8);
        auto up = [&](const std::vector<float>& v, int64_t r, int64_t c) { return cb.upload_f32(v.data(), r, c); };
        Tensor tu = up(u, T, C), td = up(dl, T, C), tz = up(z, T, C), tB = up(B, T, N), tC = up(Cm, T, N);
        Tensor tA = up(A, C, N), tD = up(D, 1, C), tb = up(bias, 1, C), ts = up(h0, batch, C * N), to = cb.alloc(T, C, DType::F32);
        SelectiveScanArgs a;
        a.u = &tu; a.delta = &td; a.z = &tz; a.B = &tB; a.C = &tC; a.A = &tA; a.D = &tD; a.dt_bias = &tb;
        a.state = &ts; a.out = &to; a.batch = batch; a.len = L;
        cb.selective_scan(a);
        std::vector<float> ref = host_of(cb, to), ref_state = host_of(cb, ts);
        auto dev = [](const void* h, size_t bytes) {
          void* p = nullptr;
          EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
          EXPECT_EQ(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
          return p;
        };
        std::vector<uint16_t> poison(size_t(T * C), 0x7fc0);  // NaN: every output must be written
        kernels::ScanParams p;
        p.u = dev(ub.data(), ub.size() * 2); p.ld_u = C;
        p.delta = dev(db.data(), db.size() * 2); p.ld_delta = C;
        p.z = dev(zb.data(), zb.size() * 2); p.ld_z = C;
        p.B = dev(Bb.data(), Bb.size() * 2); p.ld_B = N;
        p.C = dev(Cb.data(), Cb.size() * 2); p.ld_C = N;
        p.out = dev(poison.data(), poison.size() * 2); p.ld_out = C;
        p.A = static_cast<const float*>(dev(A.data(), A.size() * 4)); p.ld_A = N;
        p.D = static_cast<const float*>(dev(D.data(), D.size() * 4));
        p.dt_bias = static_cast<const float*>(dev(bias.data(), bias.size() * 4));
        p.state = static_cast<float*>(dev(h0.data(), h0.size() * 4)); p.ld_state = C * N;
        p.batch = batch; p.len = L; p.channels = C; p.dstate = N;
        p.mode = 2; p.single_tpc = tpc; p.single_fma_exp = fma;
        auto plan = kernels::selective_scan_plan(p, 132);
        ASSERT_TRUE(plan.single) << what;
        ASSERT_EQ(plan.workspace_bytes, 0u) << what;
        kernels::selective_scan<__nv_bfloat16>(p, plan, nullptr, nullptr);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
        std::vector<uint16_t> ob(size_t(T * C));
        std::vector<float> got(ob.size()), got_state(h0.size());
        ASSERT_EQ(cudaMemcpy(ob.data(), p.out, ob.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(got_state.data(), p.state, got_state.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < ob.size(); ++i) got[i] = io::bf16_to_f32(ob[i]);
        EXPECT_LT(test::rel_err(got, ref), 1e-2) << what;
        EXPECT_LT(test::rel_err(got_state, ref_state), kTolF32) << what;
        for (const void* q : {p.u, p.delta, p.z, p.B, p.C, static_cast<const void*>(p.out), static_cast<const void*>(p.A),
                              static_cast<const void*>(p.D), static_cast<const void*>(p.dt_bias),
                              static_cast<const void*>(p.state)})
          cudaFree(const_cast<void*>(q));
      }
}

// The automatic choice: the single pass where batch x channels fills the GPU, the chunked scan
// where time must be split (batch 1), and neither when pinned.
TEST(CudaScanSingle, PlanChoosesByShape) {
  kernels::ScanParams p;
  p.channels = 512; p.dstate = 16;
  auto plan_of = [&](int64_t batch, int64_t len) {
    p.batch = batch; p.len = len;
    return kernels::selective_scan_plan(p, 132);
  };
  EXPECT_FALSE(plan_of(1, int64_t(1) << 20).single);
  auto pl = plan_of(16, 65536);
  EXPECT_TRUE(pl.single);
  EXPECT_EQ(pl.single_tpc, 4);
  EXPECT_EQ(pl.nchunks, 1);
  pl = plan_of(256, 4096);
  EXPECT_TRUE(pl.single);
  EXPECT_EQ(pl.single_tpc, 1);
  p.mode = 1;
  EXPECT_FALSE(plan_of(256, 4096).single);
  p.mode = 0;
  p.chunk = 64;
  EXPECT_FALSE(plan_of(256, 4096).single);
  p.chunk = 0;
  p.mode = 2;
  EXPECT_TRUE(plan_of(1, 1000).single);
}

TEST(CudaOps, TokenLogprobsAndLogSoftmax) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(4);
  for (DType dt : {DType::F32, DType::BF16}) {
    auto gb = gpu_backend(dt);
    for (auto [V, D] : {std::pair<int64_t, int64_t>{16, 128}, {16, 256}, {50, 64}, {12, 1000}}) {
      const int64_t T = 1003;
      auto W = randn(size_t(V * D), 0.2f);
      Tensor wc = cb.weight_matrix(W.data(), V, D), wg = gb->weight_matrix(W.data(), V, D);
      auto h = make_pair(cb, *gb, randn(size_t(T * D)), T, D, 4);
      std::vector<int32_t> tg(T);
      for (auto& t : tg) t = int32_t(rng()() % (V + 1)) - 1;  // includes -1 (no target)
      auto targets = make_pair_i32(cb, *gb, tg, T);
      auto out = make_pair(cb, *gb, randn(size_t(T * 5)), T, 5, 2);
      cb.token_logprobs(h.cpu, wc, targets.cpu, out.cpu);
      gb->token_logprobs(h.gpu, wg, targets.gpu, out.gpu);
      const double tol = dt == DType::F32 ? kTolF32 : kTolBF16;
      EXPECT_LT(rel_err_nan(host_of(*gb, out.gpu), host_of(cb, out.cpu)), tol) << "V " << V << " D " << D;
      auto full = make_pair(cb, *gb, randn(size_t(T * V)), T, V, 1);
      cb.log_softmax_logits(h.cpu, wc, full.cpu);
      gb->log_softmax_logits(h.gpu, wg, full.gpu);
      EXPECT_LT(test::rel_err(host_of(*gb, full.gpu), host_of(cb, full.cpu)), tol) << "V " << V << " D " << D;
    }
  }
}

TEST(CudaOps, CopyZeroStrided) {
  SKIP_WITHOUT_GPU();
  CpuBackend cb(2);
  auto gb = gpu_backend(DType::F32);
  auto a = make_pair(cb, *gb, randn(100 * 7), 100, 7, 5);
  auto b = make_pair(cb, *gb, randn(100 * 7), 100, 7, 1);
  cb.copy(b.cpu, a.cpu);
  gb->copy(b.gpu, a.gpu);
  EXPECT_EQ(host_of(*gb, b.gpu), host_of(cb, b.cpu));
  Tensor v = a.gpu.rows_view(10, 20), vc = a.cpu.rows_view(10, 20);
  gb->zero(v);
  cb.zero(vc);
  EXPECT_EQ(host_of(*gb, a.gpu), host_of(cb, a.cpu));
}

TEST(CudaOps, AllocFailureIsAClearError) {
  SKIP_WITHOUT_GPU();
  auto gb = gpu_backend(DType::F32);
  try {
    gb->alloc(int64_t(1) << 40, 1024, DType::F32);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--chunk"), std::string::npos) << e.what();
  }
}

// The bf16 instantiation of the scan kernel (the benchmark's) against the CPU reference on the
// same bf16-rounded inputs.
TEST(CudaScanKernel, Bf16Inputs) {
  SKIP_WITHOUT_GPU();
  const int64_t L = 2000, C = 96, N = 16;
  auto rnd_bf16 = [](std::vector<float> v) {
    std::vector<uint16_t> b(v.size());
    for (size_t i = 0; i < v.size(); ++i) b[i] = io::f32_to_bf16(v[i]);
    for (size_t i = 0; i < v.size(); ++i) v[i] = io::bf16_to_f32(b[i]);
    return std::pair{v, b};
  };
  auto [u, ub] = rnd_bf16(randn(size_t(L * C)));
  auto [dl, db] = rnd_bf16(randn(size_t(L * C), 1.0f, -1.0f));
  auto [z, zb] = rnd_bf16(randn(size_t(L * C)));
  auto [B, Bb] = rnd_bf16(randn(size_t(L * N)));
  auto [Cm, Cb] = rnd_bf16(randn(size_t(L * N)));
  auto A = randu(size_t(C * N), -2.0f, -0.1f);
  auto D = randn(size_t(C));
  auto bias = randu(size_t(C), -4.0f, -1.0f);
  auto h0 = randn(size_t(C * N));
  // CPU reference.
  CpuBackend cb(8);
  auto up = [&](const std::vector<float>& v, int64_t r, int64_t c) { return cb.upload_f32(v.data(), r, c); };
  Tensor tu = up(u, L, C), td = up(dl, L, C), tz = up(z, L, C), tB = up(B, L, N), tC = up(Cm, L, N);
  Tensor tA = up(A, C, N), tD = up(D, 1, C), tb = up(bias, 1, C), ts = up(h0, 1, C * N), to = cb.alloc(L, C, DType::F32);
  SelectiveScanArgs a;
  a.u = &tu; a.delta = &td; a.z = &tz; a.B = &tB; a.C = &tC; a.A = &tA; a.D = &tD; a.dt_bias = &tb;
  a.state = &ts; a.out = &to; a.batch = 1; a.len = L;
  cb.selective_scan(a);
  std::vector<float> ref = host_of(cb, to), ref_state = host_of(cb, ts);
  // GPU, bf16.
  auto dev = [](const void* h, size_t bytes) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, bytes), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice), cudaSuccess);
    return p;
  };
  kernels::ScanParams p;
  p.u = dev(ub.data(), ub.size() * 2); p.ld_u = C;
  p.delta = dev(db.data(), db.size() * 2); p.ld_delta = C;
  p.z = dev(zb.data(), zb.size() * 2); p.ld_z = C;
  p.B = dev(Bb.data(), Bb.size() * 2); p.ld_B = N;
  p.C = dev(Cb.data(), Cb.size() * 2); p.ld_C = N;
  p.out = dev(ub.data(), ub.size() * 2); p.ld_out = C;
  p.A = static_cast<const float*>(dev(A.data(), A.size() * 4)); p.ld_A = N;
  p.D = static_cast<const float*>(dev(D.data(), D.size() * 4));
  p.dt_bias = static_cast<const float*>(dev(bias.data(), bias.size() * 4));
  p.state = static_cast<float*>(dev(h0.data(), h0.size() * 4)); p.ld_state = C * N;
  p.batch = 1; p.len = L; p.channels = C; p.dstate = N; p.chunk = 256;
  auto plan = kernels::selective_scan_plan(p, 132);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, plan.workspace_bytes), cudaSuccess);
  kernels::selective_scan<__nv_bfloat16>(p, plan, ws, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  std::vector<uint16_t> ob(size_t(L * C));
  std::vector<float> got(ob.size()), got_state(size_t(C * N));
  ASSERT_EQ(cudaMemcpy(ob.data(), p.out, ob.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  ASSERT_EQ(cudaMemcpy(got_state.data(), p.state, got_state.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  for (size_t i = 0; i < ob.size(); ++i) got[i] = io::bf16_to_f32(ob[i]);
  EXPECT_LT(test::rel_err(got, ref), 1e-2);
  EXPECT_LT(test::rel_err(got_state, ref_state), kTolF32);
  for (const void* q : {p.u, p.delta, p.z, p.B, p.C, static_cast<const void*>(p.out), static_cast<const void*>(p.A),
                        static_cast<const void*>(p.D), static_cast<const void*>(p.dt_bias),
                        static_cast<const void*>(p.state), static_cast<const void*>(ws)})
    cudaFree(const_cast<void*>(q));
}

// A single call of 2^22 tokens x 1,024 channels (bf16, 2^32 elements: offsets past 32 bits),
// checked on a few channels (first, middle, last) against a CPU recurrence.
TEST(CudaScanHuge, FourMillionTokensTimes1024Channels) {
  SKIP_WITHOUT_GPU();
  const int64_t L = int64_t(1) << 22, C = 1024, N = 16;
  size_t fr = 0, tot = 0;
  cudaMemGetInfo(&fr, &tot);
  if (fr < (size_t(40) << 30)) GTEST_SKIP() << "needs 40 GiB of GPU memory";
  const size_t big = size_t(L * C) * 2;
  __nv_bfloat16 *u, *dl, *z, *o, *B, *Cm;
  float *A, *D, *bias, *st;
  ASSERT_EQ(cudaMalloc(&u, big), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&dl, big), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&z, big), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&o, big), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&B, size_t(L * N) * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&Cm, size_t(L * N) * 2), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&A, size_t(C * N) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&D, size_t(C) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&bias, size_t(C) * 4), cudaSuccess);
  ASSERT_EQ(cudaMalloc(&st, size_t(C * N) * 4), cudaSuccess);
  kernels::fill_uniform_bf16(u, L * C, 1, -2.0f, 2.0f, nullptr);
  kernels::fill_uniform_bf16(dl, L * C, 2, -3.0f, 1.0f, nullptr);
  kernels::fill_uniform_bf16(z, L * C, 3, -2.0f, 2.0f, nullptr);
  kernels::fill_uniform_bf16(o, L * C, 9, -1.0f, 1.0f, nullptr);
  kernels::fill_uniform_bf16(B, L * N, 4, -1.0f, 1.0f, nullptr);
  kernels::fill_uniform_bf16(Cm, L * N, 5, -1.0f, 1.0f, nullptr);
  kernels::fill_uniform_f32(A, C * N, 6, -2.0f, -0.05f, nullptr);
  kernels::fill_uniform_f32(D, C, 7, -1.0f, 1.0f, nullptr);
  kernels::fill_uniform_f32(bias, C, 8, -4.0f, -1.0f, nullptr);
  kernels::fill_uniform_f32(st, C * N, 10, -1.0f, 1.0f, nullptr);
  // Channels checked: a few at the start, the middle and the end.
  const std::vector<int64_t> chans = {0, 1, 511, 1022, 1023};
  auto col = [&](const __nv_bfloat16* p, int64_t c) {
    std::vector<uint16_t> v(static_cast<size_t>(L));
    EXPECT_EQ(cudaMemcpy2D(v.data(), 2, p + c, size_t(C) * 2, 2, size_t(L), cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<float> f(v.size());
    for (size_t i = 0; i < v.size(); ++i) f[i] = io::bf16_to_f32(v[i]);
    return f;
  };
  auto all = [&](const void* p, size_t n, bool bf16) {
    std::vector<float> f(n);
    if (bf16) {
      std::vector<uint16_t> v(n);
      EXPECT_EQ(cudaMemcpy(v.data(), p, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      for (size_t i = 0; i < n; ++i) f[i] = io::bf16_to_f32(v[i]);
    } else {
      EXPECT_EQ(cudaMemcpy(f.data(), p, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    return f;
  };
  auto hB = all(B, size_t(L * N), true), hC = all(Cm, size_t(L * N), true);
  auto hA = all(A, size_t(C * N), false), hD = all(D, size_t(C), false), hb = all(bias, size_t(C), false);
  auto h0 = all(st, size_t(C * N), false);
  kernels::ScanParams p;
  p.u = u; p.ld_u = C; p.delta = dl; p.ld_delta = C; p.z = z; p.ld_z = C;
  p.B = B; p.ld_B = N; p.C = Cm; p.ld_C = N; p.out = o; p.ld_out = C;
  p.A = A; p.ld_A = N; p.D = D; p.dt_bias = bias; p.state = st; p.ld_state = C * N;
  p.batch = 1; p.len = L; p.channels = C; p.dstate = N;
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  auto plan = kernels::selective_scan_plan(p, sms);
  void* ws = nullptr;
  ASSERT_EQ(cudaMalloc(&ws, plan.workspace_bytes), cudaSuccess);
  kernels::selective_scan<__nv_bfloat16>(p, plan, ws, nullptr);
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  auto hstate = all(st, size_t(C * N), false);
  for (int64_t c : chans) {
    auto hu = col(u, c), hd = col(dl, c), hz = col(z, c), ho = col(o, c);
    std::vector<double> h(h0.begin() + c * N, h0.begin() + c * N + N);
    std::vector<float> ref(static_cast<size_t>(L));
    for (int64_t t = 0; t < L; ++t) {
      double x = double(hd[t]) + hb[c];
      double dt = x > 20 ? x : std::log1p(std::exp(x));
      double y = 0;
      for (int64_t n = 0; n < N; ++n) {
        h[n] = std::exp(dt * hA[c * N + n]) * h[n] + dt * hu[t] * hB[t * N + n];
        y += h[n] * hC[t * N + n];
      }
      y += hD[c] * hu[t];
      y *= hz[t] / (1 + std::exp(-double(hz[t])));
      ref[t] = float(y);
    }
    EXPECT_LT(test::rel_err(ho, ref), 1e-2) << "channel " << c << " (chunk " << plan.chunk << ", " << plan.nchunks << " chunks)";
    std::vector<float> hs(hstate.begin() + c * N, hstate.begin() + c * N + N), hr(h.begin(), h.end());
    EXPECT_LT(test::rel_err(hs, hr), 1e-3) << "final state, channel " << c;
  }
  for (void* q : {(void*)u, (void*)dl, (void*)z, (void*)o, (void*)B, (void*)Cm, (void*)A, (void*)D, (void*)bias,
                  (void*)st, ws})
    cudaFree(q);
}
