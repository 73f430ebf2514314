// Host launchers of the training kernels (kernels/train_*.cu): the backward of every op of the Mamba
// LM, the checkpointing scan forward, the fused cross-entropy and the optimizer. Used by
// src/backend/cuda/cuda_train_backend.cpp only. All fp32. Pointers are device pointers, row strides
// (ld*) in elements, offsets computed in 64 bits; every launcher runs on the given stream and checks
// its launch.
//
// Determinism: no float atomics anywhere. Every reduction over rows (parameter gradients, the loss,
// sums of squares) runs as fixed-size per-block partials followed by a reduce in a fixed order, and
// the partition depends only on the shapes, so two identical runs give bit-identical results.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace dnamba::kernels::train {

// ---- train_reduce.cu
// Partition of `rows` into row blocks for the column reductions (depends on rows only).
struct RowParts {
  int64_t parts = 1, rows_per_part = 1;
};
RowParts row_parts(int64_t rows);
// Partial buffer floats needed by a column reduction of [rows, cols].
inline int64_t colsum_partial_floats(int64_t rows, int64_t cols) { return row_parts(rows).parts * cols; }

// out[c] (+)= sum_t x[t, c] over [T, C] (linear's dbias). out has stride 1 (a [1, C] tensor).
void colsum(const float* x, int64_t ld_x, int64_t T, int64_t C, float* out, bool accumulate, float* partial,
            cudaStream_t s);
// dtable[v, d] += sum_{t: ids[t] == v} dout[t, d]. ids outside [0, V) contribute nothing.
void embedding_backward(const int32_t* ids, int64_t ld_ids, const float* dout, int64_t ld_dout, int64_t T,
                        int64_t V, int64_t D, float* dtable, int64_t ld_table, float* partial, cudaStream_t s);
// sum of x[r, c]^2 in double. partial: sum_squares_partials() doubles of device scratch; host_partial:
// the same count of pinned (or pageable) host doubles. Synchronises the stream.
int64_t sum_squares_partials(int64_t rows, int64_t cols);
double sum_squares(const float* x, int64_t ld, int64_t rows, int64_t cols, double* partial, double* host_partial,
                   cudaStream_t s);

// ---- train_norm_backward.cu: backward of residual add + RMSNorm (see TrainBackend).
// dr[t, :] += rstd*dout*w - rstd^3 * (sum_d dout*w*r) / D * r ; dw[d] += sum_t dout*r*rstd.
// rstd: [T] scratch. One warp per row.
void add_rmsnorm_backward(const float* r, int64_t ld_r, const float* w, float eps, const float* dout,
                          int64_t ld_dout, float* dr, int64_t ld_dr, float* dw, int64_t T, int64_t D, float* rstd,
                          float* partial, cudaStream_t s);

// ---- train_conv1d_backward.cu: backward of depthwise causal conv1d + bias + SiLU.
// state_in [batch, C*(K-1)] or null (zeros). dpre: [batch*len, C] scratch (contiguous).
// dx written; dw [C, K] +=; dbias [C] += (may be null). K <= 16.
void conv1d_silu_backward(const float* x, int64_t ld_x, const float* w, int64_t ld_w, const float* bias,
                          const float* state_in, int64_t ld_state, const float* dout, int64_t ld_dout, float* dx,
                          int64_t ld_dx, float* dw, int64_t ld_dw, float* dbias, int64_t batch, int64_t len,
                          int64_t C, int64_t K, float* dpre, float* partial, cudaStream_t s);

// ---- train_scan.cu
struct TrainScanParams {
  const float* u = nullptr;      int64_t ld_u = 0;      // [batch*len, C]
  const float* delta = nullptr;  int64_t ld_delta = 0;  // [batch*len, C]
  const float* z = nullptr;      int64_t ld_z = 0;      // [batch*len, C] or null
  const float* B = nullptr;      int64_t ld_B = 0;      // [batch*len, N]
  const float* C = nullptr;      int64_t ld_C = 0;      // [batch*len, N]
  const float* A = nullptr;      int64_t ld_A = 0;      // [C, N] (A = -exp(A_log))
  const float* D = nullptr;                             // [C] or null
  const float* dt_bias = nullptr;                       // [C] or null
  bool softplus = true;
  int64_t batch = 1, len = 0, channels = 0, dstate = 0;
  int64_t chunk = 1;  // recompute chunk (positions between stored states)
};
// The largest d_state the training scan kernels take.
constexpr int64_t kTrainScanMaxState = 64;
// Forward: state [batch, C*N] in/out (ld_state); out [batch*len, C] written; chunk_states
// [batch*nchunks, C*N] (ld_cs): row b*nchunks+k = state before position k*chunk.
void scan_forward_ckpt(const TrainScanParams& p, float* state, int64_t ld_state, float* out, int64_t ld_out,
                       float* chunk_states, int64_t ld_cs, cudaStream_t s);

struct TrainScanGrads {
  float* du = nullptr;       int64_t ld_du = 0;      // [batch*len, C] written, or null
  float* ddelta = nullptr;   int64_t ld_ddelta = 0;  // [batch*len, C] written, or null
  float* dz = nullptr;       int64_t ld_dz = 0;      // [batch*len, C] written, or null
  float* dB = nullptr;       int64_t ld_dB = 0;      // [batch*len, N] written, or null
  float* dC = nullptr;       int64_t ld_dC = 0;      // [batch*len, N] written, or null
  float* dA_log = nullptr;   int64_t ld_dA = 0;      // [C, N] +=, or null
  float* dD = nullptr;                               // [C] +=, or null
  float* ddt_bias = nullptr;                         // [C] +=, or null
};
// Scratch of the backward, in floats.
struct ScanBwdScratch {
  int64_t states = 0;    // recomputed states of one chunk, every (b, c)
  int64_t bc_parts = 0;  // partial dB and dC per channel block
  int64_t params = 0;    // per-sequence partials of dA_log, dD, ddt_bias
  int64_t total() const { return states + bc_parts + params; }
};
ScanBwdScratch scan_backward_scratch(const TrainScanParams& p);
void scan_backward(const TrainScanParams& p, const float* chunk_states, int64_t ld_cs, const float* dout,
                   int64_t ld_dout, const TrainScanGrads& g, float* scratch, cudaStream_t s);

// ---- train_cross_entropy.cu: per row t, logits = hidden[t] . W^T over V (<= 1024), softmax;
// loss[t] = lse - logit[target] (0 where target < 0); dlogits[t, v] = scale * (p_v - [v == target])
// (0 where target < 0). A target >= V sets *bad. dlogits [T, V] contiguous, loss [T].
void cross_entropy_rows(const float* hidden, int64_t ld_h, const float* W, int64_t ld_w, const int32_t* targets,
                        int64_t ld_tg, float scale, int64_t T, int64_t V, int64_t D, float* dlogits, float* loss,
                        int* bad, cudaStream_t s);
// sum of loss[0..T) in double, as per-block partials (sum_squares_partials(1, T) doubles) summed on
// the host in order. Synchronises the stream.
double sum_f32(const float* x, int64_t n, double* partial, double* host_partial, cudaStream_t s);

// ---- train_adamw.cu
struct AdamWArgs {
  float lr, beta1, beta2, eps, weight_decay, grad_scale, step_size, inv_sqrt_bc2;
};
void adamw(float* p, int64_t ld_p, const float* g, int64_t ld_g, float* m, int64_t ld_m, float* v, int64_t ld_v,
           int64_t rows, int64_t cols, const AdamWArgs& a, cudaStream_t s);
// dst[r, c] = -exp(src[r, c])
void neg_exp(const float* src, int64_t ld_src, float* dst, int64_t ld_dst, int64_t rows, int64_t cols,
             cudaStream_t s);

}  // namespace dnamba::kernels::train
