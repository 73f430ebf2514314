// Single-pass selective scan (Mamba-1 forward, d_state 16) for inputs with many independent
// recurrences: every (t, channel, state) is updated exactly once, in time order, from its true
// state. One exp per update, no aggregate pass, no combine (the chunked kernel in selective_scan.cu
// runs the recurrence twice to take its parallelism from time; here it comes from batch x channels
// x states).
//
// Launch limits:
//   d_state 16 exactly; B and C rows 16-byte aligned (rows of 16 values; the fast kernel's condition);
//   TPC (threads a channel) 1, 2 or 4: each thread holds 16/TPC states in registers; the TPC threads
//     of a channel are adjacent lanes of one warp and meet by shuffles;
//   blocks of 128 threads = 128/TPC channels of one sequence; grid 1-D over (batch, channel group),
//     < 2^31 blocks (the plan checks it);
//   any length >= 1, any channel count, any batch; row offsets are 64-bit per 64-step tile and
//     32-bit inside it (the plan requires ld * 80 < 2^31 for u, delta, z and out).
//   shared memory: 8 KiB a block (B and C of a 64-step tile, as fp32).
//
// Per 4-step group, the per-(t, channel) work is done once, by one of the channel's TPC threads:
// thread q of a channel takes steps q*SPL .. q*SPL+SPL-1 (SPL = 4/TPC): it loads u, delta, z for them,
// computes dt = softplus(delta + bias) and dt*u, and after the four steps it owns their outputs: the
// TPC partial sums C.h of each step meet in a transposed butterfly (log2(TPC) rounds, each lane
// ending with whole sums for its own steps), then y = sum + D*u, y *= silu(z).
//
// NF of each thread's exps run on the FMA pipe (a degree-5 polynomial, ex2_fma) instead of the
// special-function unit: with one exp per update the MUFU pipe is the bound, and the FMA pipe has
// room (see bench/RESULTS.md, "single-pass scan").
#include <algorithm>

#include "backend/cuda/cuda_check.h"
#include "kernels/kernels.h"

namespace dnamba::kernels {

namespace {

constexpr int kThreads = 128;
constexpr int kN = 16;    // d_state
constexpr int kTT = 64;   // time steps a shared-memory tile of B and C
constexpr int kG = 4;     // time steps a group (loads of the next group go out before this one's math)
constexpr float kLog2e = 1.4426950408889634f;

template <class T> __device__ __forceinline__ float to_f(T v);
template <> __device__ __forceinline__ float to_f<float>(float v) { return v; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
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
// 2^x for x <= 0 on the FMA pipe: x = j + f with j an integer (round to nearest through the
// 1.5 * 2^23 trick) and f in [-0.5, 0.5]; 2^f by a degree-5 polynomial fitted for relative error
// (2.4e-7 at most, as ex2.approx's ~2 ulp); 2^j added to the exponent bits. x is clamped at -125, so
// the result never goes subnormal: 2^-125 instead of a smaller value, which in h = dA*h + ... is
// below fp32 resolution of any h that is not itself that small.
__device__ __forceinline__ float ex2_fma(float x) {
  x = fmaxf(x, -125.0f);
  const float t = __fadd_rn(x, 12582912.0f);
  const float j = __fsub_rn(t, 12582912.0f);
  const float f = x - j;
  float p = 1.32772e-3f;
  p = fmaf(p, f, 9.67555e-3f);
  p = fmaf(p, f, 5.550711e-2f);
  p = fmaf(p, f, 2.402212e-1f);
  p = fmaf(p, f, 6.9314694e-1f);
  p = fmaf(p, f, 1.0000001f);
  return __int_as_float(__float_as_int(p) + ((__float_as_int(t) - 0x4B400000) << 23));
}
// As selective_scan.cu (PyTorch's softplus, beta 1, threshold 20, in two MUFU ops).
__device__ __forceinline__ float softplus_f(float x) {
  const float e = ex2(fminf(x, 20.0f) * kLog2e);
  const float series = e * (1.0f - e * (0.5f - e * (0.33333334f - e * 0.25f)));
  const float l = lg2(1.0f + e) * 0.69314718f;
  return x > 20.0f ? x : (e < 0.03125f ? series : l);
}
__device__ __forceinline__ float silu_f(float x) { return x * rcp(1.0f + ex2(-x * kLog2e)); }

// Blocks an SM the register cap allows (ptxas -v: 16 states a thread need ~96 registers, 8 ~70,
// 4 fit in 64 for bf16; fp32's wider tiles spill at 64).
template <class T, int TPC> constexpr int min_blocks() {
  return TPC == 1 ? 5 : (TPC == 4 && sizeof(T) == 2) ? 8 : 6;
}

template <class T, int TPC, int NF>
__global__ void __launch_bounds__(kThreads, min_blocks<T, TPC>())
scan_single_kernel(const ScanParams p) {
  constexpr int NS = kN / TPC;                 // states a thread
  constexpr int SPL = kG / TPC;                // steps of a group whose per-step work this thread does
  constexpr int CPB = kThreads / TPC;          // channels a block
  constexpr int VEC = 16 / int(sizeof(T));     // elements of a 16-byte load
  constexpr int VPR = kN / VEC;                // 16-byte loads a row of B (or C)
  constexpr int NV = kTT * VPR / kThreads;     // 16-byte loads a thread and matrix, a tile
  static_assert(NV >= 1 && kTT * VPR % kThreads == 0, "tile shape");
  static_assert(NF >= 0 && NF <= NS, "NF");
  __shared__ __align__(16) float Bs[kTT][kN];
  __shared__ __align__(16) float Cs[kTT][kN];

  const int64_t C = p.channels, len = p.len;
  const int64_t ncg = (C + CPB - 1) / CPB;
  const int64_t b = blockIdx.x / ncg, cg = blockIdx.x % ncg;
  const int q = int(threadIdx.x) % TPC;
  const int lane = int(threadIdx.x) & 31;
  const int lane0 = lane & ~(TPC - 1);
  const int64_t c = cg * CPB + threadIdx.x / TPC;
  const bool valid = c < C;
  const int64_t cc = valid ? c : 0;  // threads past the last channel compute on channel 0, never write
  const int n0 = q * NS;
  const int64_t row0 = b * len;

  float A2[NS], h[NS];
  const float* hin = p.state + b * p.ld_state + cc * kN + n0;
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    A2[i] = __ldg(p.A + cc * p.ld_A + n0 + i) * kLog2e;
    h[i] = hin[i];
  }
  const float bias = p.dt_bias ? __ldg(p.dt_bias + cc) : 0.0f;
  const float Dc = p.D ? __ldg(p.D + cc) : 0.0f;
  const bool has_z = p.z != nullptr;
  const int ld_u = int(p.ld_u), ld_d = int(p.ld_delta), ld_z = int(p.ld_z), ld_o = int(p.ld_out);

  const T* __restrict__ Bg = static_cast<const T*>(p.B);
  const T* __restrict__ Cg = static_cast<const T*>(p.C);
  uint4 bq[NV], cq[NV];
  auto load_bc = [&](int64_t tt) {  // rows past the sequence: its last row (never used)
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = int(threadIdx.x) + j * kThreads;
      const int64_t row = row0 + min(tt + v / VPR, len - 1);
      const int col = (v % VPR) * VEC;
      bq[j] = __ldg(reinterpret_cast<const uint4*>(Bg + row * p.ld_B + col));
      cq[j] = __ldg(reinterpret_cast<const uint4*>(Cg + row * p.ld_C + col));
    }
  };
  auto store_bc = [&]() {
#pragma unroll
    for (int j = 0; j < NV; ++j) {
      const int v = int(threadIdx.x) + j * kThreads;
      float* bd = &Bs[v / VPR][(v % VPR) * VEC];
      float* cd = &Cs[v / VPR][(v % VPR) * VEC];
      const T* bv = reinterpret_cast<const T*>(&bq[j]);
      const T* cv = reinterpret_cast<const T*>(&cq[j]);
#pragma unroll
      for (int e = 0; e < VEC; ++e) {
        bd[e] = to_f<T>(bv[e]);
        cd[e] = to_f<T>(cv[e]);
      }
    }
  };

  // This thread's steps of the group at tile-relative row r: r + q*SPL + s (clamped to rlast).
  T un[SPL], dn[SPL], zn[SPL];
  const T* __restrict__ Ub = nullptr;
  const T* __restrict__ Db = nullptr;
  const T* __restrict__ Zb = nullptr;
  T* __restrict__ Ob = nullptr;
  auto set_base = [&](int64_t tt) {
    const int64_t row = row0 + tt;
    Ub = static_cast<const T*>(p.u) + row * p.ld_u + cc;
    Db = static_cast<const T*>(p.delta) + row * p.ld_delta + cc;
    if (has_z) Zb = static_cast<const T*>(p.z) + row * p.ld_z + cc;
    Ob = static_cast<T*>(p.out) + row * p.ld_out + cc;
  };
  auto load_group = [&](int r, int rlast) {
#pragma unroll
    for (int s = 0; s < SPL; ++s) {
      const int rr = min(r + q * SPL + s, rlast);
      un[s] = Ub[rr * ld_u];
      dn[s] = Db[rr * ld_d];
      if (has_z) zn[s] = Zb[rr * ld_z];
    }
  };

  load_bc(0);
  set_base(0);
  load_group(0, int(min(int64_t(kTT + kG - 1), len - 1)));
  for (int64_t tt = 0; tt < len; tt += kTT) {
    const int nt = int(min(int64_t(kTT), len - tt));
    const int rlast = int(min(int64_t(kTT + kG - 1), len - 1 - tt));
    __syncthreads();  // the previous tile has been read
    store_bc();
    __syncthreads();
    if (tt + kTT < len) load_bc(tt + kTT);
    T* Ocur = Ob;
    for (int r0 = 0; r0 < nt; r0 += kG) {
      float uv[SPL], dts[SPL], dtus[SPL], zv[SPL];
#pragma unroll
      for (int s = 0; s < SPL; ++s) {
        uv[s] = to_f<T>(un[s]);
        float dt = to_f<T>(dn[s]) + bias;
        if (p.softplus) dt = softplus_f(dt);
        dts[s] = dt;
        dtus[s] = dt * uv[s];
        zv[s] = has_z ? to_f<T>(zn[s]) : 0.0f;
      }
      // The next group's loads go out before this group's arithmetic.
      if (r0 + kG < nt) load_group(r0 + kG, rlast);
      else if (tt + kTT < len) {
        set_base(tt + kTT);
        load_group(0, int(min(int64_t(kTT + kG - 1), len - 1 - (tt + kTT))));
      }
      float yp[kG];
#pragma unroll
      for (int j = 0; j < kG; ++j) {
        yp[j] = 0.0f;
        const int r = r0 + j;
        if (r >= nt) break;  // block-uniform
        asm volatile("" ::: "memory");
        float dt, dtu;
        if constexpr (TPC == 1) {
          dt = dts[j];
          dtu = dtus[j];
        } else {
          dt = __shfl_sync(0xffffffffu, dts[j % SPL], lane0 + j / SPL);
          dtu = __shfl_sync(0xffffffffu, dtus[j % SPL], lane0 + j / SPL);
        }
        const float4* b4 = reinterpret_cast<const float4*>(&Bs[r][n0]);
        const float4* c4 = reinterpret_cast<const float4*>(&Cs[r][n0]);
        float y = 0.0f;
#pragma unroll
        for (int i4 = 0; i4 < NS / 4; ++i4) {
          const float4 bb = b4[i4], cv = c4[i4];
          const float bl[4] = {bb.x, bb.y, bb.z, bb.w}, cl[4] = {cv.x, cv.y, cv.z, cv.w};
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int i = i4 * 4 + e;
            const float dA = i < NF ? ex2_fma(dt * A2[i]) : ex2(dt * A2[i]);
            h[i] = fmaf(dA, h[i], dtu * bl[e]);
            y = fmaf(h[i], cl[e], y);
          }
        }
        yp[j] = y;
      }
      // Transposed butterfly: lane q ends with whole sums of its own steps q*SPL + s.
      float tot[SPL];
      if constexpr (TPC == 1) {
#pragma unroll
        for (int s = 0; s < SPL; ++s) tot[s] = yp[s];
      } else if constexpr (TPC == 2) {
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const float keep = q ? yp[2 + k] : yp[k], send = q ? yp[k] : yp[2 + k];
          tot[k] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
        }
      } else {
        float v[2];
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const float keep = (q & 2) ? yp[2 + k] : yp[k], send = (q & 2) ? yp[k] : yp[2 + k];
          v[k] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
        }
        const float keep = (q & 1) ? v[1] : v[0], send = (q & 1) ? v[0] : v[1];
        tot[0] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
      }
#pragma unroll
      for (int s = 0; s < SPL; ++s) {
        const int r = r0 + q * SPL + s;
        if (valid && r < nt) {
          float y = fmaf(Dc, uv[s], tot[s]);
          if (has_z) y *= silu_f(zv[s]);
          Ocur[r * ld_o] = from_f<T>(y);
        }
      }
    }
  }
  if (!valid) return;
#pragma unroll
  for (int i = 0; i < NS; ++i) p.state[b * p.ld_state + c * kN + n0 + i] = h[i];
}

template <class T, int TPC, int NF>
void launch_single(const ScanParams& p, cudaStream_t s) {
  const int64_t cpb = kThreads / TPC;
  const int64_t blocks = p.batch * ((p.channels + cpb - 1) / cpb);
  DNAMBA_CHECK(blocks < (int64_t(1) << 31), "selective_scan (single pass): too many blocks");
  scan_single_kernel<T, TPC, NF><<<unsigned(blocks), kThreads, 0, s>>>(p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

template <class T>
void selective_scan_single(const ScanParams& p, int tpc, bool fma_exp, cudaStream_t s) {
  if (p.len == 0 || p.batch == 0 || p.channels == 0) return;
  DNAMBA_CHECK(p.dstate == kN, "selective_scan (single pass): d_state must be 16");
  switch (tpc * 2 + (fma_exp ? 1 : 0)) {
    case 2: launch_single<T, 1, 0>(p, s); break;
    case 3: launch_single<T, 1, 3>(p, s); break;
    case 4: launch_single<T, 2, 0>(p, s); break;
    case 5: launch_single<T, 2, 2>(p, s); break;
    case 8: launch_single<T, 4, 0>(p, s); break;
    case 9: launch_single<T, 4, 1>(p, s); break;
    default: DNAMBA_CHECK(false, "selective_scan (single pass): threads a channel must be 1, 2 or 4");
  }
}

template void selective_scan_single<float>(const ScanParams&, int, bool, cudaStream_t);
template void selective_scan_single<__nv_bfloat16>(const ScanParams&, int, bool, cudaStream_t);

}  // namespace dnamba::kernels
