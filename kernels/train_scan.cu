// Selective scan for training: the forward that stores the state at every chunk boundary, and the
// backward that recomputes the states inside each chunk from those (no per-position states kept),
// chunks in reverse. fp32 throughout. Same recurrence as backend.h / CpuTrainBackend:
//   dt = softplus(delta + dt_bias); h_n = exp(dt A_n) h_n + dt B_n u; y = sum_n h_n C_n + D u;
//   out = y * silu(z)
//
// Launch limits: a group of 16 lanes per (sequence b, channel c), each lane NS = ceil(N/16) states
// (N <= 64); 16 channels a block of 256 threads; grid (ceil(C/16), batch <= 65535). The state sums
// over n are xor-shuffle trees inside the 16 lanes (fixed order).
// Backward: each lane keeps the states of its chunk in global scratch (written and read back by the
// same thread). dB and dC (sums over channels) go through shared memory every FS = 8/NS positions
// (slots double-buffered, so a tile may run past a flush point): the block sums its 16 channels in order into a per-channel-block partial [CB, T, N], and a second
// kernel sums the CB partials in order. Parameter gradients get per-sequence partials summed in order
// over the batch. No atomics: bit-identical results run to run.
#include "backend/cuda/cuda_check.h"
#include "kernels/train_kernels.h"

namespace dnamba::kernels::train {

namespace {

constexpr int kLanes = 16;     // lanes per (b, c)
constexpr int kChannels = 16;  // channels per block
constexpr int kThreads = kLanes * kChannels;
constexpr int kTile = 16;      // positions (times NS) whose inputs a thread loads ahead

__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
__device__ __forceinline__ float silu_f(float x) { return x * sigmoid_f(x); }
__device__ __forceinline__ float dsilu_f(float x) {
  const float s = sigmoid_f(x);
  return s * (1.0f + x * (1.0f - s));
}
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
  for (int m = kLanes / 2; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}

// Per-thread coordinates. Groups past the last channel compute on channel C-1 (so that control
// flow and shuffles stay uniform) but write nothing.
struct Coord {
  int64_t b, c, cc;
  int lane, ch;
  bool valid;
};
__device__ __forceinline__ Coord coord(int64_t C) {
  Coord k;
  k.lane = threadIdx.x % kLanes;
  k.ch = threadIdx.x / kLanes;
  k.b = blockIdx.y;
  k.c = int64_t(blockIdx.x) * kChannels + k.ch;
  k.valid = k.c < C;
  k.cc = k.valid ? k.c : C - 1;
  return k;
}

template <int NS>
__global__ void __launch_bounds__(kThreads, 2)
scan_fwd_kernel(TrainScanParams p, float* __restrict__ state, int64_t ld_state, float* __restrict__ out,
                int64_t ld_out, float* __restrict__ cs, int64_t ld_cs, int64_t nch) {
  const Coord k = coord(p.channels);
  const int64_t N = p.dstate, len = p.len, b = k.b, cc = k.cc;
  float A[NS], h[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int64_t n = k.lane + kLanes * i;
    A[i] = n < N ? p.A[cc * p.ld_A + n] : 0.0f;
    h[i] = n < N ? state[b * ld_state + cc * N + n] : 0.0f;
  }
  const float Dc = p.D ? p.D[cc] : 0.0f;
  const float bias = p.dt_bias ? p.dt_bias[cc] : 0.0f;
  // Tiles of TL positions: the tile's inputs are loaded first (independent loads in flight
  // together), then the recurrence runs over them.
  constexpr int TL = kTile / NS;
  int64_t pos_in_chunk = 0, chunk_idx = 0;
  for (int64_t t0 = 0; t0 < len; t0 += TL) {
    float rd[TL], ru[TL], rz[TL], rB[TL][NS], rC[TL][NS];
#pragma unroll
    for (int q = 0; q < TL; ++q) {
      const int64_t t = t0 + q < len ? t0 + q : len - 1;
      const int64_t row = b * len + t;
      rd[q] = p.delta[row * p.ld_delta + cc];
      ru[q] = p.u[row * p.ld_u + cc];
      rz[q] = p.z ? p.z[row * p.ld_z + cc] : 0.0f;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        const int64_t n = k.lane + kLanes * i;
        rB[q][i] = n < N ? p.B[row * p.ld_B + n] : 0.0f;
        rC[q][i] = n < N ? p.C[row * p.ld_C + n] : 0.0f;
      }
    }
    // Phase 1, independent per position: decay a = exp(dt A), input dt B u, gate silu(z).
    float a[TL][NS], bu[TL][NS], gate[TL];
#pragma unroll
    for (int q = 0; q < TL; ++q) {
      const float pre = rd[q] + bias;
      const float dt = p.softplus ? softplus_f(pre) : pre;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        a[q][i] = expf(dt * A[i]);
        bu[q][i] = dt * rB[q][i] * ru[q];  // zero for padding states (B = 0)
      }
      gate[q] = p.z ? silu_f(rz[q]) : 1.0f;
    }
    // Phase 2, the recurrence (and the chunk-boundary states); positions past the end keep h.
    float yl[TL];
#pragma unroll
    for (int q = 0; q < TL; ++q) {
      const bool in = t0 + q < len;  // uniform across the block
      if (in && pos_in_chunk == 0 && k.valid) {
        float* dst = cs + (b * nch + chunk_idx) * ld_cs + k.c * N;
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          const int64_t n = k.lane + kLanes * i;
          if (n < N) dst[n] = h[i];
        }
      }
      if (in && ++pos_in_chunk == p.chunk) pos_in_chunk = 0, ++chunk_idx;
      float y = 0.0f;
#pragma unroll
      for (int i = 0; i < NS; ++i) {
        h[i] = in ? a[q][i] * h[i] + bu[q][i] : h[i];
        y += h[i] * rC[q][i];
      }
      yl[q] = y;
    }
    // Phase 3, sums over the states and the outputs.
#pragma unroll
    for (int q = 0; q < TL; ++q) {
      float y = group_sum(yl[q]);
      if (p.D) y += Dc * ru[q];
      y *= gate[q];
      if (k.lane == 0 && k.valid && t0 + q < len) out[(b * len + t0 + q) * ld_out + k.c] = y;
    }
  }
  if (k.valid) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int64_t n = k.lane + kLanes * i;
      if (n < N) state[b * ld_state + k.c * N + n] = h[i];
    }
  }
}

struct BwdBufs {
  float* H;      // [batch*C, hchunk, N] recomputed states of the current chunk
  float* pB;     // [CB, T, N]
  float* pC;     // [CB, T, N]
  float* pA;     // [batch, C, N]
  float* pD;     // [batch, C]
  float* pdb;    // [batch, C]
  int64_t hchunk, nch;
};

template <int NS>
__global__ void __launch_bounds__(kThreads, 2)
scan_bwd_kernel(TrainScanParams p, const float* __restrict__ cs, int64_t ld_cs, const float* __restrict__ dout,
                int64_t ld_dout, TrainScanGrads g, BwdBufs w) {
  constexpr int ST = kLanes / NS;  // positions of a recompute tile
  constexpr int FS = ST / 2;       // positions between flushes of dB/dC (double-buffered slots)
  constexpr int RT = FS;           // positions of a reverse tile (<= FS: see the flush)
  extern __shared__ float smem[];  // sB[2*FS][kChannels][N], sC[2*FS][kChannels][N]
  const Coord k = coord(p.channels);
  const int64_t N = p.dstate, len = p.len, C = p.channels, b = k.b, cc = k.cc;
  const int64_t T = p.batch * len, cb = blockIdx.x;
  float* sB = smem;
  float* sC = smem + 2 * FS * kChannels * N;
  float A[NS], dh[NS], dA[NS], h0[NS];
#pragma unroll
  for (int i = 0; i < NS; ++i) {
    const int64_t n = k.lane + kLanes * i;
    A[i] = n < N ? p.A[cc * p.ld_A + n] : 0.0f;
    dh[i] = 0.0f;
    dA[i] = 0.0f;
  }
  const float Dc = p.D ? p.D[cc] : 0.0f;
  const float bias = p.dt_bias ? p.dt_bias[cc] : 0.0f;
  float dD = 0.0f, db = 0.0f;
  float* H = w.H + (b * C + cc) * w.hchunk * N;  // this group's states (cc: invalid groups never write)

  for (int64_t kc = w.nch - 1; kc >= 0; --kc) {
    const int64_t t0 = kc * p.chunk;
    const int64_t m = (t0 + p.chunk < len ? t0 + p.chunk : len) - t0;
    // Recompute the chunk's states from its boundary state.
    float hp[NS];
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int64_t n = k.lane + kLanes * i;
      h0[i] = n < N ? cs[(b * w.nch + kc) * ld_cs + cc * N + n] : 0.0f;
      hp[i] = h0[i];
    }
    for (int64_t j0 = 0; j0 < m; j0 += ST) {
      float rd[ST], ru[ST], rB[ST][NS];
#pragma unroll
      for (int q = 0; q < ST; ++q) {
        const int64_t j = j0 + q < m ? j0 + q : m - 1;
        const int64_t row = b * len + t0 + j;
        rd[q] = p.delta[row * p.ld_delta + cc];
        ru[q] = p.u[row * p.ld_u + cc];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          const int64_t n = k.lane + kLanes * i;
          rB[q][i] = n < N ? p.B[row * p.ld_B + n] : 0.0f;
        }
      }
#pragma unroll
      for (int q = 0; q < ST; ++q) {
        const int64_t j = j0 + q;
        if (j >= m) break;
        const float pre = rd[q] + bias;
        const float dt = p.softplus ? softplus_f(pre) : pre;
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          const int64_t n = k.lane + kLanes * i;
          hp[i] = expf(dt * A[i]) * hp[i] + dt * rB[q][i] * ru[q];
          if (n < N && k.valid) H[j * N + n] = hp[i];
        }
      }
    }
    // Reverse through the chunk, RT positions at a time: the tile's inputs are loaded first, then
    // (1) what does not depend on the reverse recurrence, (2) the recurrence over dh, (3) the sums
    // over states, the outputs and the dB/dC flushes.
    for (int64_t j1 = m - 1; j1 >= 0; j1 -= RT) {
      float rd[RT], ru[RT], rz[RT], rg[RT], rB[RT][NS], rC[RT][NS], rh[RT][NS], rhp[RT][NS];
#pragma unroll
      for (int q = 0; q < RT; ++q) {
        const int64_t j = j1 - q >= 0 ? j1 - q : 0;
        const int64_t row = b * len + t0 + j;
        rd[q] = p.delta[row * p.ld_delta + cc];
        ru[q] = p.u[row * p.ld_u + cc];
        rz[q] = p.z ? p.z[row * p.ld_z + cc] : 0.0f;
        rg[q] = dout[row * ld_dout + cc];
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          const int64_t n = k.lane + kLanes * i;
          rB[q][i] = n < N ? p.B[row * p.ld_B + n] : 0.0f;
          rC[q][i] = n < N ? p.C[row * p.ld_C + n] : 0.0f;
          rh[q][i] = n < N ? H[j * N + n] : 0.0f;
          rhp[q][i] = n < N ? (j > 0 ? H[(j - 1) * N + n] : h0[i]) : 0.0f;
        }
      }
      float dtq[RT], a[RT][NS], dyq[RT], dzq[RT], dspq[RT];
#pragma unroll
      for (int q = 0; q < RT; ++q) {
        const float pre = rd[q] + bias;
        dtq[q] = p.softplus ? softplus_f(pre) : pre;
        dspq[q] = p.softplus ? (pre > 20.0f ? 1.0f : sigmoid_f(pre)) : 1.0f;
#pragma unroll
        for (int i = 0; i < NS; ++i) a[q][i] = expf(dtq[q] * A[i]);
        float y = 0.0f;
#pragma unroll
        for (int i = 0; i < NS; ++i) y += rh[q][i] * rC[q][i];
        y = group_sum(y);
        if (p.D) y += Dc * ru[q];
        const float go = rg[q];
        dyq[q] = go;
        dzq[q] = 0.0f;
        if (p.z) {
          dzq[q] = go * y * dsilu_f(rz[q]);
          dyq[q] = go * silu_f(rz[q]);
        }
      }
      float ddtl[RT], dul[RT];
#pragma unroll
      for (int q = 0; q < RT; ++q) {
        const int64_t j = j1 - q;
        const bool in = j >= 0;  // uniform across the block
        const int64_t t = t0 + j;
        const float dt = dtq[q], u = ru[q], dy = dyq[q];
        const int slot = in ? int(t % (2 * FS)) : 0;
        float ddt = 0.0f, du = 0.0f;
#pragma unroll
        for (int i = 0; i < NS; ++i) {
          const int64_t n = k.lane + kLanes * i;
          const float dhn = dh[i] + dy * rC[q][i];
          const float da = dhn * rhp[q][i] * a[q][i];
          ddt += da * A[i] + dhn * rB[q][i] * u;
          du += dhn * dt * rB[q][i];
          if (in) {
            dA[i] += da * dt;
            dh[i] = dhn * a[q][i];
            if (n < N) {
              sC[(slot * kChannels + k.ch) * N + n] = k.valid ? dy * rh[q][i] : 0.0f;
              sB[(slot * kChannels + k.ch) * N + n] = k.valid ? dhn * dt * u : 0.0f;
            }
          }
        }
        ddtl[q] = ddt;
        dul[q] = du;
      }
#pragma unroll
      for (int q = 0; q < RT; ++q) {
        const int64_t j = j1 - q;
        float ddt = group_sum(ddtl[q]);
        float du = group_sum(dul[q]);
        if (j < 0) break;  // uniform across the block
        const int64_t t = t0 + j, row = b * len + t;
        const float dy = dyq[q];
        if (p.D) {
          du += dy * Dc;
          dD += dy * ru[q];
        }
        const float dpre = ddt * dspq[q];
        db += dpre;
        if (k.lane == 0 && k.valid) {
          if (g.du) g.du[row * g.ld_du + k.c] = du;
          if (g.ddelta) g.ddelta[row * g.ld_ddelta + k.c] = dpre;
          if (g.dz) g.dz[row * g.ld_dz + k.c] = dzq[q];
        }
        if (t % FS == 0) {  // positions t .. t+cnt-1 are in slots base .. base+cnt-1: sum the block's channels
          __syncthreads();
          const int64_t cnt = (len - t < FS) ? len - t : FS;
          const int64_t base = t % (2 * FS);
          for (int64_t qq = threadIdx.x; qq < cnt * N; qq += kThreads) {
            const int64_t jj = qq / N, n = qq % N;
            float sb = 0.0f, sc = 0.0f;
#pragma unroll
            for (int ch = 0; ch < kChannels; ++ch) {
              sb += sB[((base + jj) * kChannels + ch) * N + n];
              sc += sC[((base + jj) * kChannels + ch) * N + n];
            }
            const int64_t o = (cb * T + row + jj) * N + n;
            w.pB[o] = sb;
            w.pC[o] = sc;
          }
          __syncthreads();
        }
      }
    }
  }
  if (k.valid) {
#pragma unroll
    for (int i = 0; i < NS; ++i) {
      const int64_t n = k.lane + kLanes * i;
      if (n < N) w.pA[(b * C + k.c) * N + n] = dA[i] * A[i];  // dA/dA_log = A
    }
    if (k.lane == 0) {
      w.pD[b * C + k.c] = dD;
      w.pdb[b * C + k.c] = db;
    }
  }
}

// dB[row, n] = sum_cb pB[cb, row, n] (in order), the same for dC.
__global__ void __launch_bounds__(256)
scan_bc_reduce(const float* __restrict__ pB, const float* __restrict__ pC, int64_t CB, int64_t T, int64_t N,
               float* __restrict__ dB, int64_t ld_dB, float* __restrict__ dC, int64_t ld_dC) {
  const int64_t n_all = T * N;
  for (int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x; e < n_all; e += int64_t(gridDim.x) * 256) {
    const int64_t row = e / N, n = e % N;
    float sb = 0.0f, sc = 0.0f;
    for (int64_t q = 0; q < CB; ++q) {
      sb += pB[q * n_all + e];
      sc += pC[q * n_all + e];
    }
    if (dB) dB[row * ld_dB + n] = sb;
    if (dC) dC[row * ld_dC + n] = sc;
  }
}

// Parameter gradients: sums over the batch in order.
__global__ void __launch_bounds__(256)
scan_param_reduce(const float* __restrict__ pA, const float* __restrict__ pD, const float* __restrict__ pdb,
                  int64_t batch, int64_t C, int64_t N, float* __restrict__ dA, int64_t ld_dA, float* __restrict__ dD,
                  float* __restrict__ ddt_bias) {
  const int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x;
  if (e >= C * N) return;
  const int64_t c = e / N, n = e % N;
  if (dA) {
    float s = 0.0f;
    for (int64_t b = 0; b < batch; ++b) s += pA[(b * C + c) * N + n];
    dA[c * ld_dA + n] += s;
  }
  if (n == 0) {
    float sd = 0.0f, sb = 0.0f;
    for (int64_t b = 0; b < batch; ++b) {
      sd += pD[b * C + c];
      sb += pdb[b * C + c];
    }
    if (dD) dD[c] += sd;
    if (ddt_bias) ddt_bias[c] += sb;
  }
}

int ns_for(int64_t N) { return N <= 16 ? 1 : N <= 32 ? 2 : 4; }

void check_params(const TrainScanParams& p) {
  DNAMBA_CHECK(p.dstate >= 1 && p.dstate <= kTrainScanMaxState,
               "training scan: d_state " + std::to_string(p.dstate) + " outside 1.." + std::to_string(kTrainScanMaxState));
  DNAMBA_CHECK(p.batch >= 1 && p.batch <= 65535, "training scan: batch must be 1..65535");
  DNAMBA_CHECK(p.chunk >= 1, "training scan: recompute chunk must be positive");
  DNAMBA_CHECK(p.channels >= 1 && (p.channels + kChannels - 1) / kChannels <= 0x7fffffff, "training scan: bad channel count");
}

}  // namespace

void scan_forward_ckpt(const TrainScanParams& p, float* state, int64_t ld_state, float* out, int64_t ld_out,
                       float* chunk_states, int64_t ld_cs, cudaStream_t s) {
  check_params(p);
  if (p.len <= 0) return;
  const int64_t nch = (p.len + p.chunk - 1) / p.chunk;
  dim3 grid(unsigned((p.channels + kChannels - 1) / kChannels), unsigned(p.batch));
  switch (ns_for(p.dstate)) {
    case 1: scan_fwd_kernel<1><<<grid, kThreads, 0, s>>>(p, state, ld_state, out, ld_out, chunk_states, ld_cs, nch); break;
    case 2: scan_fwd_kernel<2><<<grid, kThreads, 0, s>>>(p, state, ld_state, out, ld_out, chunk_states, ld_cs, nch); break;
    default: scan_fwd_kernel<4><<<grid, kThreads, 0, s>>>(p, state, ld_state, out, ld_out, chunk_states, ld_cs, nch); break;
  }
  CUDA_CHECK_LAUNCH();
}

ScanBwdScratch scan_backward_scratch(const TrainScanParams& p) {
  ScanBwdScratch r;
  const int64_t hchunk = p.chunk < p.len ? p.chunk : (p.len > 0 ? p.len : 1);
  const int64_t CB = (p.channels + kChannels - 1) / kChannels;
  r.states = p.batch * p.channels * hchunk * p.dstate;
  r.bc_parts = 2 * CB * p.batch * p.len * p.dstate;
  r.params = p.batch * p.channels * p.dstate + 2 * p.batch * p.channels;
  return r;
}

void scan_backward(const TrainScanParams& p, const float* chunk_states, int64_t ld_cs, const float* dout,
                   int64_t ld_dout, const TrainScanGrads& g, float* scratch, cudaStream_t s) {
  check_params(p);
  const ScanBwdScratch sz = scan_backward_scratch(p);
  const int64_t C = p.channels, N = p.dstate, T = p.batch * p.len;
  const int64_t CB = (C + kChannels - 1) / kChannels;
  BwdBufs w;
  w.hchunk = p.chunk < p.len ? p.chunk : (p.len > 0 ? p.len : 1);
  w.nch = (p.len + p.chunk - 1) / p.chunk;
  w.H = scratch;
  w.pB = scratch + sz.states;
  w.pC = w.pB + CB * T * N;
  w.pA = scratch + sz.states + sz.bc_parts;
  w.pD = w.pA + p.batch * C * N;
  w.pdb = w.pD + p.batch * C;
  if (p.len > 0) {
    dim3 grid(unsigned(CB), unsigned(p.batch));
    const int ns = ns_for(N);
    const size_t shm = size_t(2 * 2 * (kLanes / ns / 2) * kChannels * N) * sizeof(float);  // sB, sC: 2*FS slots each
    switch (ns) {
      case 1: scan_bwd_kernel<1><<<grid, kThreads, shm, s>>>(p, chunk_states, ld_cs, dout, ld_dout, g, w); break;
      case 2: scan_bwd_kernel<2><<<grid, kThreads, shm, s>>>(p, chunk_states, ld_cs, dout, ld_dout, g, w); break;
      default: scan_bwd_kernel<4><<<grid, kThreads, shm, s>>>(p, chunk_states, ld_cs, dout, ld_dout, g, w); break;
    }
    CUDA_CHECK_LAUNCH();
    if (g.dB || g.dC) {
      int64_t nb = (T * N + 255) / 256;
      if (nb > 8192) nb = 8192;
      scan_bc_reduce<<<unsigned(nb), 256, 0, s>>>(w.pB, w.pC, CB, T, N, g.dB, g.ld_dB, g.dC, g.ld_dC);
      CUDA_CHECK_LAUNCH();
    }
  } else {
    CUDA_CHECK(cudaMemsetAsync(w.pA, 0, size_t(sz.params) * sizeof(float), s));
  }
  if (g.dA_log || g.dD || g.ddt_bias) {
    scan_param_reduce<<<unsigned((C * N + 255) / 256), 256, 0, s>>>(w.pA, w.pD, w.pdb, p.batch, C, N, g.dA_log, g.ld_dA,
                                                                     g.dD, g.ddt_bias);
    CUDA_CHECK_LAUNCH();
  }
}

}  // namespace dnamba::kernels::train
