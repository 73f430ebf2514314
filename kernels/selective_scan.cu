// Selective scan (Mamba-1 forward) with a given initial state, returning the final state.
//
// Launch limits:
//   d_state N: 1..256. Each thread holds 16 states in registers; a channel takes TPC = 1 (N <= 16),
//     4 (N <= 64) or 16 (N <= 256) threads, whose partial outputs meet by shuffles. N = 16 with
//     16-byte aligned rows of B and C (the released models' layout) takes scan_fast_kernel.
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
//      h_in[k] = carry; carry = exp(A * S_k) * carry + h_loc_k   (starting from the given state),
//      in kSeg segments per row (each segment's aggregate first, then its incoming carry).
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

template <class T> __device__ __forceinline__ float load_f(const T* p);
template <> __device__ __forceinline__ float load_f<float>(const float* p) { return __ldg(p); }
template <> __device__ __forceinline__ float load_f<__nv_bfloat16>(const __nv_bfloat16* p) {
  return __bfloat162float(__ldg(p));
}
__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
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

struct Geometry {
  int64_t ncg;      // channel groups
  int64_t nchunks;  // chunks of the sequence
  int64_t chunk;
};

// The state chunk k of sequence b starts from in pass 3 (channel c, d_state N values): the given
// state itself with one chunk, else what the combine pass wrote.
__device__ __forceinline__ const float* chunk_h_in(const ScanParams& p, const Geometry& g, const float* ws_h,
                                                   int64_t b, int64_t k, int64_t c) {
  return g.nchunks == 1 ? p.state + b * p.ld_state + c * p.dstate
                        : ws_h + ((b * g.nchunks + k) * p.channels + c) * p.dstate;
}

// Shared body of passes 1 and 3, any d_state, any layout of B and C (the general kernel).
// kOut: pass 3 (outputs), else pass 1 (aggregate).
template <class T, int TPC, bool kOut>
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
  const float* hin = kOut ? chunk_h_in(p, g, ws_h, b, k, valid ? c : 0) : nullptr;
#pragma unroll
  for (int i = 0; i < kNT; ++i) {
    const int n = n0 + i;
    const bool ok = valid && n < N;
    A2[i] = ok ? __ldg(p.A + c * p.ld_A + n) * kLog2e : 0.0f;
    h[i] = (kOut && ok) ? hin[n] : 0.0f;
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
          const float dA = ex2(dt * A2[i]);
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

// The fast path (d_state 16, B and C rows 16-byte aligned): the same three passes, with the
// instruction count and load latency of the general kernel cut (measured with ncu on the H200: the
// general kernel issued 19 instructions per (t, channel, state) over both passes and spent 40% of
// its stall cycles in pass 3 waiting on the u/delta/z loads):
//  - u, delta and z of the next four time steps are loaded while the current four are computed;
//  - B and C of the next 64-step tile are loaded (one 16-byte load per thread and matrix for bf16)
//    while the current tile is computed;
//  - addresses are 32-bit offsets from a per-tile base pointer, with no per-load bounds checks:
//    rows past the chunk are clamped to its last row and never used, channels past the last are
//    read from channel 0 and never written.
#ifndef DNAMBA_SCAN_FAST_MIN_BLOCKS
#define DNAMBA_SCAN_FAST_MIN_BLOCKS 5  // <= 102 registers: 5 blocks (20 warps) an SM; measured on the
                                       // H200: 6.13 ms (L 2^20 x 512) against 6.34 with 4 and 6.59 with 6
                                       // (each with its own automatic chunk)
#endif
template <class T, bool kOut>
__global__ void __launch_bounds__(kThreads, DNAMBA_SCAN_FAST_MIN_BLOCKS)
scan_fast_kernel(const ScanParams p, const Geometry g, int64_t chunks_launched, float* __restrict__ ws_h,
                 float* __restrict__ ws_s) {
  constexpr int TT = 64;                          // time steps a shared-memory tile
  constexpr int VEC = 16 / int(sizeof(T));        // elements of a 16-byte load
  constexpr int VPR = kNT / VEC;                  // 16-byte loads a row of B (or C)
  constexpr int NV = TT * VPR / kThreads;         // 16-byte loads a thread and matrix, a tile
  static_assert(NV >= 1 && TT * VPR % kThreads == 0, "tile shape");
  __shared__ __align__(16) float Bs[TT][kNT];
  __shared__ __align__(16) float Cs[kOut ? TT : 1][kNT];

  const int64_t C = p.channels, len = p.len;
  int64_t bid = blockIdx.x;
  const int64_t cg = bid % g.ncg;
  bid /= g.ncg;
  const int64_t k = bid % chunks_launched;
  const int64_t b = bid / chunks_launched;
  const int64_t c = cg * kThreads + threadIdx.x;
  const bool valid = c < C;
  const int64_t cc = valid ? c : 0;
  const int64_t t0 = k * g.chunk, t1 = min(len, t0 + g.chunk);
  const int64_t row0 = b * len;

  const T* __restrict__ Bg = static_cast<const T*>(p.B);
  const T* __restrict__ Cg = static_cast<const T*>(p.C);

  float A2[kNT], h[kNT];
  const float* hin = kOut ? chunk_h_in(p, g, ws_h, b, k, cc) : nullptr;  // dstate == kNT here
#pragma unroll
  for (int i = 0; i < kNT; ++i) {
    A2[i] = valid ? __ldg(p.A + cc * p.ld_A + i) * kLog2e : 0.0f;
    h[i] = (kOut && valid) ? hin[i] : 0.0f;
  }
  const float bias = (valid && p.dt_bias) ? __ldg(p.dt_bias + cc) : 0.0f;
  const float Dc = (valid && p.D) ? __ldg(p.D + cc) : 0.0f;
  const bool has_z = kOut && p.z != nullptr;
  const int ld_u = int(p.ld_u), ld_d = int(p.ld_delta), ld_z = int(p.ld_z), ld_o = int(p.ld_out);
  float dt_sum = 0.0f;

  // B and C of the tile starting at tt into registers (rows past the chunk: its last row).
  uint4 bq[NV], cq[NV];
  auto load_bc = [&](int64_t tt) {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = threadIdx.x + j * kThreads;
      const int64_t row = row0 + min(tt + v / VPR, t1 - 1);
      const int col = (v % VPR) * VEC;
      bq[j] = __ldg(reinterpret_cast<const uint4*>(Bg + row * p.ld_B + col));
      if (kOut) cq[j] = __ldg(reinterpret_cast<const uint4*>(Cg + row * p.ld_C + col));
    }
  };
  auto store_bc = [&]() {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = threadIdx.x + j * kThreads;
      float* bd = &Bs[v / VPR][(v % VPR) * VEC];
      float* cd = &Cs[kOut ? v / VPR : 0][(v % VPR) * VEC];
      const T* bv = reinterpret_cast<const T*>(&bq[j]);
      const T* cv = reinterpret_cast<const T*>(&cq[j]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        bd[e] = to_f(bv[e]);
        if (kOut) cd[e] = to_f(cv[e]);
      }
    }
  };

  // u, delta, z of four time steps starting at tile-relative row r (clamped to the chunk's last row).
  T un[4], dn[4], zn[4];
  const T* __restrict__ Ub = nullptr;
  const T* __restrict__ Db = nullptr;
  const T* __restrict__ Zb = nullptr;
  T* __restrict__ Ob = nullptr;
  auto set_base = [&](int64_t tt) {
    const int64_t row = row0 + tt;
    Ub = static_cast<const T*>(p.u) + row * p.ld_u + cc;
    Db = static_cast<const T*>(p.delta) + row * p.ld_delta + cc;
    if (has_z) Zb = static_cast<const T*>(p.z) + row * p.ld_z + cc;
    if (kOut) Ob = static_cast<T*>(p.out) + row * p.ld_out + cc;
  };
  auto load_group = [&](int r, int rlast) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int rr = min(r + j, rlast);
      un[j] = Ub[rr * ld_u];
      dn[j] = Db[rr * ld_d];
      if (has_z) zn[j] = Zb[rr * ld_z];
    }
  };

  load_bc(t0);
  set_base(t0);
  load_group(0, int(t1 - 1 - t0 < TT + 3 ? t1 - 1 - t0 : TT + 3));
  for (int64_t tt = t0; tt < t1; tt += TT) {
    const int nt = int(min(int64_t(TT), t1 - tt));
    const int rlast = int(min(int64_t(TT + 3), t1 - 1 - tt));  // last row a group may read, tile-relative
    __syncthreads();  // the previous tile has been read
    store_bc();
    __syncthreads();
    if (tt + TT < t1) load_bc(tt + TT);
    T* Ocur = Ob;  // this tile's output base (the next group's loads may already use the next tile's)
    for (int r0 = 0; r0 < nt; r0 += 4) {
      float uv[4], dv[4], zv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        uv[j] = to_f(un[j]);
        dv[j] = to_f(dn[j]);
        zv[j] = has_z ? to_f(zn[j]) : 0.0f;
      }
      // The next four steps' loads go out before this group's arithmetic.
      if (r0 + 4 < nt) load_group(r0 + 4, rlast);
      else if (tt + TT < t1) {
        set_base(tt + TT);
        load_group(0, int(min(int64_t(TT + 3), t1 - 1 - (tt + TT))));
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int r = r0 + j;
        if (r >= nt) break;  // block-uniform
        // A compiler barrier: the next steps' shared-memory reads of B and C (32 values a step) stay
        // below it. (What keeps the kernel at <= 96 registers is DNAMBA_SCAN_FAST_MIN_BLOCKS: without
        // it, 136-165 registers and 3 blocks an SM; with it the barrier changes 1-2 registers.)
        asm volatile("" ::: "memory");
        float dt = dv[j] + bias;
        if (p.softplus) dt = softplus_f(dt);
        const float dtu = dt * uv[j];
        if (!kOut) dt_sum += dt;
        float y = 0.0f;
#pragma unroll
        for (int i = 0; i < kNT; ++i) {
          const float dA = ex2(dt * A2[i]);
          h[i] = fmaf(dA, h[i], dtu * Bs[r][i]);
          if (kOut) y = fmaf(h[i], Cs[r][i], y);
        }
        if (kOut) {
          y = fmaf(Dc, uv[j], y);
          if (has_z) y *= silu_f(zv[j]);
          if (valid) Ocur[r * ld_o] = from_f<T>(y);
        }
      }
    }
  }

  if (!valid) return;
  if (kOut) {
    if (k == g.nchunks - 1) {
#pragma unroll
      for (int i = 0; i < kNT; ++i) p.state[b * p.ld_state + c * kNT + i] = h[i];
    }
  } else {
    const int64_t base = (b * g.nchunks + k) * C + c;
#pragma unroll
    for (int i = 0; i < kNT; ++i) ws_h[base * kNT + i] = h[i];
    ws_s[base] = dt_sum;
  }
}

// Pass 2: for each (batch, channel, state), the chunk states in order:
//   h_in[k] = carry; carry = exp(A * S_k) * carry + h_loc_k   (from the given state).
// A block takes 32 consecutive (batch, channel, state) rows x kSeg segments of the chunk
// sequence, so that 8x more threads share the sequential walk: each segment's aggregate (decay sum
// and end state from 0), then each segment's incoming carry from the aggregates before it, then
// the segment again, writing h_in.
constexpr int kSeg = 8;
__global__ void __launch_bounds__(32 * kSeg)
scan_combine_kernel(const ScanParams p, const Geometry g, float* __restrict__ ws_h, const float* __restrict__ ws_s) {
  __shared__ float seg_h[kSeg][32], seg_s[kSeg][32];
  const int64_t C = p.channels, N = p.dstate;
  const int lane = threadIdx.x % 32, sg = threadIdx.x / 32;
  const int64_t i = int64_t(blockIdx.x) * 32 + lane;
  const bool ok = i < p.batch * C * N;
  const int64_t ii = ok ? i : 0;
  const int64_t n = ii % N, c = (ii / N) % C, b = ii / (N * C);
  const float a2 = p.A[c * p.ld_A + n] * kLog2e;
  const int64_t kstride = C * N;
  float* hp = ws_h + b * g.nchunks * kstride + c * N + n;
  const float* sp = ws_s + b * g.nchunks * C + c;
  const int64_t K = g.nchunks - 1;  // chunks with an aggregate
  const int64_t per = (K + kSeg - 1) / kSeg;
  const int64_t k0 = min(K, sg * per), k1 = min(K, k0 + per);
  float hseg = 0.0f, sseg = 0.0f;
  if (ok) {
#pragma unroll 8
    for (int64_t kk = k0; kk < k1; ++kk) {
      const float s = sp[kk * C];
      hseg = fmaf(ex2(a2 * s), hseg, hp[kk * kstride]);
      sseg += s;
    }
  }
  seg_h[sg][lane] = hseg;
  seg_s[sg][lane] = sseg;
  __syncthreads();
  if (!ok) return;
  float carry = p.state[b * p.ld_state + c * N + n];
  for (int j = 0; j < sg; ++j) carry = fmaf(ex2(a2 * seg_s[j][lane]), carry, seg_h[j][lane]);
#pragma unroll 8
  for (int64_t kk = k0; kk < k1; ++kk) {
    const float hl = hp[kk * kstride], s = sp[kk * C];
    hp[kk * kstride] = carry;
    carry = fmaf(ex2(a2 * s), carry, hl);
  }
  if (sg == kSeg - 1) hp[K * kstride] = carry;  // h_in of the last chunk
}

int tpc_for(int64_t N) { return N <= 16 ? 1 : N <= 64 ? 4 : 16; }

}  // namespace

ScanPlan selective_scan_plan(const ScanParams& p, int sm_count) {
  DNAMBA_CHECK(p.dstate >= 1 && p.dstate <= 256, "selective_scan: d_state " + std::to_string(p.dstate) +
                                                      " outside 1..256 on CUDA");
  DNAMBA_CHECK(p.len >= 0 && p.batch >= 0 && p.channels >= 0, "selective_scan: negative shape");
  ScanPlan pl;
  pl.tpc = tpc_for(p.dstate);
  pl.fast = pl.tpc == 1 && p.dstate == kNT && !p.general;
  const int64_t cpb = kThreads / pl.tpc, tt = 64 / pl.tpc;
  const int64_t ncg = (p.channels + cpb - 1) / cpb;
  if (p.len == 0 || p.batch == 0 || p.channels == 0) return pl;
  // The single pass when batch x channels alone gives enough threads: about two warps a
  // sub-partition (256 threads an SM) with the states of a channel split over up to 4 threads
  // (d_state 16), or over tpc_for(N) threads (the general kernel, other d_state). Below half of
  // that, time must be split too: the chunked scan (bench/RESULTS.md, "single-pass scan").
  const int64_t target_threads = int64_t(std::max(sm_count, 1)) * 256;
  const int64_t bc = p.batch * p.channels;
  int single_tpc = p.single_tpc;
  if (single_tpc <= 0) {
    single_tpc = 1;
    while (single_tpc < 4 && bc * single_tpc < target_threads) single_tpc *= 2;
  }
  const int64_t single_threads = p.dstate == kNT && !p.general ? bc * single_tpc : bc * pl.tpc;
  const bool single = p.mode == 2 || (p.mode == 0 && p.chunk <= 0 && 2 * single_threads >= target_threads);
  if (single) {
    pl.single = true;
    pl.single_tpc = single_tpc;
    pl.single_fma_exp = p.single_fma_exp > 0;
    pl.chunk = p.len;
    pl.nchunks = 1;
    DNAMBA_CHECK(p.batch * ncg < (int64_t(1) << 31), "selective_scan: too many sequences for one launch");
    return pl;
  }
  int64_t chunk = p.chunk;
  if (chunk <= 0) {
    // About four full waves of pass-3 blocks (a partial last wave leaves SMs idle at the end),
    // chunks of at least 256 steps (fewer only for short inputs).
    static const int resident_fast = [] {
      int n = 0;
      if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, scan_fast_kernel<__nv_bfloat16, true>, kThreads, 0) !=
          cudaSuccess) {
        (void)cudaGetLastError();  // not left for the next launch check to report
        n = 0;
      }
      return n;
    }();
    const int per_sm = pl.fast && resident_fast > 0 ? resident_fast : 6;
    const int64_t target_blocks = int64_t(std::max(sm_count, 1)) * per_sm * 4;
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
  auto combine = [&] {
    const int64_t n = p.batch * p.channels * p.dstate;
    scan_combine_kernel<<<unsigned((n + 31) / 32), 32 * kSeg, 0, s>>>(p, g, ws_h, ws_s);
    CUDA_CHECK_LAUNCH();
  };
  // The fast kernel reads rows of B and C with 16-byte loads and keeps 32-bit offsets within a tile.
  auto aligned = [](const void* q, int64_t ld) {
    return reinterpret_cast<uintptr_t>(q) % 16 == 0 && (ld * int64_t(sizeof(T))) % 16 == 0;
  };
  const int64_t max_ld = std::max({p.ld_u, p.ld_delta, p.z ? p.ld_z : 0, p.ld_out});
  const bool fast = pl.fast && aligned(p.B, p.ld_B) && aligned(p.C, p.ld_C) && max_ld * 80 < (int64_t(1) << 31);
  if (pl.single && fast) {
    selective_scan_single<T>(p, pl.single_tpc, pl.single_fma_exp, s);
    return;
  }
  if (fast) {
    if (pl.nchunks > 1) {
      launch(scan_fast_kernel<T, false>, pl.nchunks - 1);
      combine();
    }
    launch(scan_fast_kernel<T, true>, pl.nchunks);
    return;
  }
  auto run = [&](auto tpc_tag) {
    constexpr int TPC = decltype(tpc_tag)::value;
    if (pl.nchunks > 1) {
      launch(scan_chunk_kernel<T, TPC, false>, pl.nchunks - 1);
      combine();
    }
    launch(scan_chunk_kernel<T, TPC, true>, pl.nchunks);
  };
  switch (pl.tpc) {
    case 1: run(std::integral_constant<int, 1>{}); break;
    case 4: run(std::integral_constant<int, 4>{}); break;
    default: run(std::integral_constant<int, 16>{}); break;
  }
}

template void selective_scan<float>(const ScanParams&, const ScanPlan&, void*, cudaStream_t);
template void selective_scan<__nv_bfloat16>(const ScanParams&, const ScanPlan&, void*, cudaStream_t);

}  // namespace dnamba::kernels
