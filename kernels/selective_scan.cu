// Selective scan (Mamba-1 forward) with a given initial state, returning the final state.
//
// Launch limits:
//   d_state N: 1..256. Each thread holds 16 states in registers; a channel takes TPC = 1 (N <= 16,
//     the fast path), 4 (N <= 64) or 16 (N <= 256) threads, whose partial outputs meet by shuffles.
//   blocks of 128 threads = 128/TPC channels x one chunk of the sequence; grid 1-D over
//     (batch, chunk, channel group), < 2^31 blocks (the plan keeps it there).
//   any channel count, any length >= 1, any batch; row strides and offsets are 64-bit.
//   shared memory: 8 KiB a block (B and C of 64/TPC time steps as fp32).
//
// Parallel over the sequence in three passes (work-efficient: the recurrence runs twice over
// the data, never log(L) times):
//   1. chunk_aggregate: every chunk but the last runs the recurrence from h = 0 and writes its end
//      state h_loc[n] and the sum of its dt (its decay is exp(A[n] * sum dt)).
//   2. chunk_combine: per (batch, channel, state), walks the chunks in order:
//      h_in[k] = carry; carry = exp(A * S_k) * carry + h_loc_k   (starting from the given state).
//   3. chunk_output: every chunk re-runs the recurrence from its true h_in, computing
//      y = C.h + D*u, y *= silu(z); the last chunk writes the final state.
// With one chunk, passes 1 and 2 are skipped and pass 3 reads and writes the state directly.
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kNT = 16;  // states per thread
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kDefaultEmu = 0;  // measured: 0 fastest (7.33 ms against 7.73 with 2, 8.32 with 4)

template <class T> __device__ __forceinline__ float load_f(const T* p);
template <> __device__ __forceinline__ float load_f<float>(const float* p) { return __ldg(p); }
template <> __device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(__ldg(p));
}
template <class T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float rcp(float x) {
  float y;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// PyTorch's softplus (beta 1, threshold 20), as the CPU reference, in two MUFU ops (ex2, lg2)
// instead of log1pf's software sequence. For e = exp(x) < 1/32, log1p(e) comes from its series
// (relative error < e^4/5 < 2e-7), where lg2(1 + e) would lose digits; above, the rounding of
// 1 + e costs at most 2^-24 / log(1 + 1/32) ~ 2e-6 relative.
__device__ __forceinline__ float softplus_f(float x) {
  const float e = ex2(fminf(x, 20.0f) * kLog2e);
  const float series = e * (1.0f - e * (0.5f - e * (0.33333334f - e * 0.25f)));
  const float l = lg2(1.0f + e) * 0.69314718f;
  return x > 20.0f ? x : (e < 0.03125f ? series : l);
}
// x * sigmoid(x) with MUFU ex2 and rcp (1 ulp each) instead of an IEEE division. For x < -88 the
// exp overflows to inf and rcp gives 0: silu = -0, as the true value rounds to.
__device__ __forceinline__ float silu_f(float x) { return x * rcp(1.0f + ex2(-x * kLog2e)); }

// 2^x on the FMA pipe (Cephes exp2f's polynomial on [-0.5, 0.5], relative error ~2e-7, like
// MUFU's ex2.approx), used for a few of a thread's 16 states so that the FMA units take part of the
// exp load off the MUFU unit (16 ops a clock an SM against 128 FMAs): the scan is bound by MUFU.
__device__ __forceinline__ float ex2_fma(float x) {
  x = fminf(fmaxf(x, -125.0f), 125.0f);
  const float t = x + 12582912.0f;  // 1.5 * 2^23: rounds x to an integer, kept in t's low bits
  const float f = x - (t - 12582912.0f);
  float p = 1.535336188319500e-4f;
  p = fmaf(p, f, 1.339887440266574e-3f);
  p = fmaf(p, f, 9.618437357674640e-3f);
  p = fmaf(p, f, 5.550332471162809e-2f);
  p = fmaf(p, f, 2.402264791363012e-1f);
  p = fmaf(p, f, 6.931472028550421e-1f);
  p = fmaf(p, f, 1.0f);
  return __uint_as_float(__float_as_uint(p) + (__float_as_uint(t) << 23));
}

struct Geometry {
  int64_t ncg;      // channel groups
  int64_t nchunks;  // chunks of the sequence
  int64_t chunk;
};

// Shared body of passes 1 and 3. kOut: pass 3 (outputs), else pass 1 (aggregate).
// kEmu: how many of a thread's 16 states take their exp from ex2_fma instead of MUFU.
template <class T, int TPC, bool kOut, int kEmu>
__global__ void __launch_bounds__(kThreads)
scan_chunk_kernel(const ScanParams p, const Geometry g, int64_t chunks_launched, float* __restrict__ ws_h,
                  float* __restrict__ ws_s) {
  constexpr int CPB = kThreads / TPC;  // channels a block
  constexpr int NP = kNT * TPC;        // states padded
  constexpr int TT = 64 / TPC;         // time steps a shared-memory tile
  __shared__ float Bs[TT][NP];
  __shared__ float Cs[kOut ? TT : 1][NP];

  const int64_t C = p.channels, N = p.dstate, len = p.len;
  int64_t bid = blockIdx.x;
  const int64_t cg = bid % g.ncg;
  bid /= g.ncg;
  const int64_t k = bid % chunks_launched;
  const int64_t b = bid / chunks_launched;
  const int tile = threadIdx.x % TPC;
  const int64_t c = cg * CPB + threadIdx.x / TPC;
  const bool valid = c < C;
  const int64_t t0 = k * g.chunk, t1 = min(len, t0 + g.chunk);
  const int64_t row0 = b * len;
  const int n0 = tile * kNT;

  const T* __restrict__ U = static_cast<const T*>(p.u);
  const T* __restrict__ DL = static_cast<const T*>(p.delta);
  const T* __restrict__ Z = static_cast<const T*>(p.z);
  const T* __restrict__ Bg = static_cast<const T*>(p.B);
  const T* __restrict__ Cg = static_cast<const T*>(p.C);

  float A2[kNT], h[kNT];
  // h_in: the state itself with one chunk, else what the combine pass wrote.
  const float* hin = nullptr;
  int64_t hin_off = 0;
  if (kOut) {
    if (g.nchunks == 1) { hin = p.state; hin_off = b * p.ld_state + c * N; }
    else { hin = ws_h; hin_off = ((b * g.nchunks + k) * C + c) * N; }
  }
#pragma unroll
  for (int i = 0; i < kNT; ++i) {
    const int n = n0 + i;
    const bool ok = valid && n < N;
    A2[i] = ok ? __ldg(p.A + c * p.ld_A + n) * kLog2e : 0.0f;
    h[i] = (kOut && ok) ? hin[hin_off + n] : 0.0f;
  }
  const float bias = (valid && p.dt_bias) ? __ldg(p.dt_bias + c) : 0.0f;
  const float Dc = (valid && p.D) ? __ldg(p.D + c) : 0.0f;
  const bool has_z = p.z != nullptr;
  const int64_t cc = valid ? c : 0;  // a safe column for threads past the last channel
  float dt_sum = 0.0f;

  for (int64_t tt = t0; tt < t1; tt += TT) {
    const int nt = int(min(int64_t(TT), t1 - tt));
    __syncthreads();  // the previous tile has been read
    for (int idx = threadIdx.x; idx < TT * NP; idx += kThreads) {
      const int r = idx / NP, n = idx % NP;
      const bool ok = r < nt && n < N;
      const int64_t row = row0 + tt + r;
      Bs[r][n] = ok ? load_f<T>(Bg + row * p.ld_B + n) : 0.0f;
      if (kOut) Cs[r][n] = ok ? load_f<T>(Cg + row * p.ld_C + n) : 0.0f;
    }
    __syncthreads();
    // Four time steps at a time: their loads go out together before the arithmetic.
    for (int r0 = 0; r0 < nt; r0 += 4) {
      float uv[4], dv[4], zv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int64_t row = row0 + tt + r0 + j;
        const bool ok = valid && r0 + j < nt;
        uv[j] = ok ? load_f<T>(U + row * p.ld_u + cc) : 0.0f;
        dv[j] = ok ? load_f<T>(DL + row * p.ld_delta + cc) : 0.0f;
        zv[j] = (kOut && ok && has_z) ? load_f<T>(Z + row * p.ld_z + cc) : 0.0f;
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = r0 + j;
        if (r >= nt) break;  // block-uniform
        float dt = dv[j] + bias;
        if (p.softplus) dt = softplus_f(dt);
        if (!valid) dt = 0.0f;
        const float dtu = dt * uv[j];
        dt_sum += dt;
        float y = 0.0f;
#pragma unroll
        for (int i = 0; i < kNT; ++i) {
          const float dA = i >= kNT - kEmu ? ex2_fma(dt * A2[i]) : ex2(dt * A2[i]);
          h[i] = fmaf(dA, h[i], dtu * Bs[r][n0 + i]);
          if (kOut) y = fmaf(h[i], Cs[r][n0 + i], y);
        }
        if (kOut) {
#pragma unroll
          for (int m = 1; m < TPC; m <<= 1) y += __shfl_xor_sync(0xffffffffu, y, m);
          if (valid && tile == 0) {
            y = fmaf(Dc, uv[j], y);
            if (has_z) y *= silu_f(zv[j]);
            const int64_t row = row0 + tt + r;
            static_cast<T*>(p.out)[row * p.ld_out + c] = from_f<T>(y);
          }
        }
      }
    }
  }

  if (!valid) return;
  if (kOut) {
    if (k == g.nchunks - 1) {  // the final state
#pragma unroll
      for (int i = 0; i < kNT; ++i)
        if (n0 + i < N) p.state[b * p.ld_state + c * N + n0 + i] = h[i];
    }
  } else {
    const int64_t base = (b * g.nchunks + k) * C + c;
#pragma unroll
    for (int i = 0; i < kNT; ++i)
      if (n0 + i < N) ws_h[base * N + n0 + i] = h[i];
    if (tile == 0) ws_s[base] = dt_sum;
  }
}

// Pass 2: one thread per (batch, channel, state), sequential over the chunks.
__global__ void __launch_bounds__(256)
scan_combine_kernel(const ScanParams p, const Geometry g, float* __restrict__ ws_h, const float* __restrict__ ws_s) {
  const int64_t C = p.channels, N = p.dstate;
  const int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.batch * C * N) return;
  const int64_t n = i % N, c = (i / N) % C, b = i / (N * C);
  float carry = p.state[b * p.ld_state + c * N + n];
  const float a2 = p.A[c * p.ld_A + n] * kLog2e;
  const int64_t kstride = C * N;
  float* hp = ws_h + b * g.nchunks * kstride + c * N + n;
  const float* sp = ws_s + b * g.nchunks * C + c;
  int64_t k = 0;
  // Eight chunks at a time: their loads do not depend on the carry.
  for (; k + 8 <= g.nchunks - 1; k += 8) {
    float hl[8], s[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) { hl[j] = hp[(k + j) * kstride]; s[j] = sp[(k + j) * C]; }
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      hp[(k + j) * kstride] = carry;
      carry = fmaf(ex2(a2 * s[j]), carry, hl[j]);
    }
  }
  for (; k < g.nchunks - 1; ++k) {
    const float hl = hp[k * kstride], s = sp[k * C];
    hp[k * kstride] = carry;
    carry = fmaf(ex2(a2 * s), carry, hl);
  }
  hp[(g.nchunks - 1) * kstride] = carry;  // h_in of the last chunk
}

int tpc_for(int64_t N) { return N <= 16 ? 1 : N <= 64 ? 4 : 16; }

}  // namespace

ScanPlan selective_scan_plan(const ScanParams& p, int sm_count) {
  DNAMBA_CHECK(p.dstate >= 1 && p.dstate <= 256, "selective_scan: d_state " + std::to_string(p.dstate) +
                                                      " outside 1..256 on CUDA");
  DNAMBA_CHECK(p.len >= 0 && p.batch >= 0 && p.channels >= 0, "selective_scan: negative shape");
  ScanPlan pl;
  pl.tpc = tpc_for(p.dstate);
  // Exps on the FMA pipe: fast path only (0, 2 or 4 of the 16 states); -1 takes the default.
  pl.emu = pl.tpc == 1 ? (p.emu_states < 0 ? kDefaultEmu : p.emu_states >= 4 ? 4 : p.emu_states >= 2 ? 2 : 0) : 0;
  const int64_t cpb = kThreads / pl.tpc, tt = 64 / pl.tpc;
  const int64_t ncg = (p.channels + cpb - 1) / cpb;
  if (p.len == 0 || p.batch == 0 || p.channels == 0) return pl;
  int64_t chunk = p.chunk;
  if (chunk <= 0) {
    // About four waves of blocks, chunks of at least 256 steps (fewer only for short inputs).
    const int64_t target_blocks = int64_t(std::max(sm_count, 1)) * 32;
    const int64_t want_chunks = std::max<int64_t>(1, target_blocks / std::max<int64_t>(1, p.batch * ncg));
    chunk = std::max<int64_t>(256, (p.len + want_chunks - 1) / want_chunks);
    chunk = (chunk + tt - 1) / tt * tt;
  }
  pl.chunk = std::min(chunk, p.len);
  pl.nchunks = (p.len + pl.chunk - 1) / pl.chunk;
  DNAMBA_CHECK(p.batch * pl.nchunks * ncg < (int64_t(1) << 31), "selective_scan: too many chunks (raise the chunk)");
  if (pl.nchunks > 1)
    pl.workspace_bytes = size_t(p.batch * pl.nchunks * p.channels) * size_t(p.dstate + 1) * sizeof(float);
  return pl;
}

template <class T>
void selective_scan(const ScanParams& p, const ScanPlan& pl, void* workspace, cudaStream_t s) {
  if (p.len == 0 || p.batch == 0 || p.channels == 0) return;
  DNAMBA_CHECK(pl.nchunks >= 1 && pl.chunk >= 1, "selective_scan: no plan");
  DNAMBA_CHECK(pl.nchunks == 1 || workspace, "selective_scan: workspace missing");
  const int64_t cpb = kThreads / pl.tpc;
  Geometry g{(p.channels + cpb - 1) / cpb, pl.nchunks, pl.chunk};
  float* ws_h = static_cast<float*>(workspace);
  float* ws_s = ws_h ? ws_h + p.batch * pl.nchunks * p.channels * p.dstate : nullptr;
  auto launch = [&](auto kernel, int64_t chunks) {
    const int64_t blocks = p.batch * chunks * g.ncg;
    kernel<<<unsigned(blocks), kThreads, 0, s>>>(p, g, chunks, ws_h, ws_s);
    CUDA_CHECK_LAUNCH();
  };
  auto run = [&](auto tpc_tag, auto emu_tag) {
    constexpr int TPC = decltype(tpc_tag)::value;
    constexpr int EMU = decltype(emu_tag)::value;
    if (pl.nchunks > 1) {
      launch(scan_chunk_kernel<T, TPC, false, EMU>, pl.nchunks - 1);
      const int64_t n = p.batch * p.channels * p.dstate;
      scan_combine_kernel<<<unsigned((n + 255) / 256), 256, 0, s>>>(p, g, ws_h, ws_s);
      CUDA_CHECK_LAUNCH();
    }
    launch(scan_chunk_kernel<T, TPC, true, EMU>, pl.nchunks);
  };
  using I = std::integral_constant<int, 0>;
  switch (pl.tpc) {
    case 1:
      if (pl.emu == 2) run(std::integral_constant<int, 1>{}, std::integral_constant<int, 2>{});
      else if (pl.emu == 4) run(std::integral_constant<int, 1>{}, std::integral_constant<int, 4>{});
      else run(std::integral_constant<int, 1>{}, I{});
      break;
    case 4: run(std::integral_constant<int, 4>{}, I{}); break;
    default: run(std::integral_constant<int, 16>{}, I{}); break;
  }
}

template void selective_scan<float>(const ScanParams&, const ScanPlan&, void*, cudaStream_t);
template void selective_scan<__nv_bfloat16>(const ScanParams&, const ScanPlan&, void*, cudaStream_t);

}  // namespace dnamba::kernels
