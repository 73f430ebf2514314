// Backward of the depthwise causal conv1d + bias + SiLU (TrainBackend::conv1d_silu_backward),
// recomputing the pre-activation from x: pre[t,c] = bias[c] + sum_k w[c,k] x[t-(K-1)+k, c] (inputs
// before t = 0 from state_in, or zeros), out = silu(pre).
//   1. dpre[t,c] = dout[t,c] * silu'(pre[t,c])                         (scratch [T, C])
//   2. dx[t,c]   = sum_k w[c,k] dpre[t+(K-1)-k, c] within the sequence  (written)
//   3. dw[c,k]  += sum_t dpre[t,c] x[t-(K-1)+k, c]; dbias[c] += sum_t dpre[t,c]
//      through the deterministic column sum over the virtual [T, (K+1)*C] matrix.
//
// Launch limits: 1 and 2 one thread per (t, c), grid-stride, <= 8192 blocks of 256; K <= 16.
#include "kernels/train_colsum.cuh"

namespace dnamba::kernels::train {

namespace {

struct ConvIn {
  const float* x;
  int64_t ld_x;
  const float* state;  // or null
  int64_t ld_state, len, S;
  // Input at position j (may be negative) of sequence b, channel c.
  __device__ __forceinline__ float at(int64_t b, int64_t j, int64_t c) const {
    if (j >= 0) return x[(b * len + j) * ld_x + c];
    return state ? state[b * ld_state + c * S + (S + j)] : 0.0f;
  }
};

unsigned blocks_for(int64_t n) {
  int64_t b = (n + 255) / 256;
  if (b < 1) b = 1;
  if (b > 8192) b = 8192;
  return unsigned(b);
}

__global__ void __launch_bounds__(256)
conv_dpre_kernel(ConvIn in, const float* __restrict__ w, int64_t ld_w, const float* __restrict__ bias,
                 const float* __restrict__ dout, int64_t ld_dout, float* __restrict__ dpre, int64_t T, int64_t C,
                 int64_t K) {
  const int64_t n = T * C;
  for (int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x; e < n; e += int64_t(gridDim.x) * 256) {
    const int64_t t = e / C, c = e % C;
    const int64_t b = t / in.len, s = t % in.len;
    float pre = bias ? bias[c] : 0.0f;
    for (int64_t k = 0; k < K; ++k) pre += w[c * ld_w + k] * in.at(b, s - in.S + k, c);
    const float sg = 1.0f / (1.0f + expf(-pre));
    dpre[e] = dout[t * ld_dout + c] * (sg * (1.0f + pre * (1.0f - sg)));
  }
}

__global__ void __launch_bounds__(256)
conv_dx_kernel(const float* __restrict__ dpre, const float* __restrict__ w, int64_t ld_w, float* __restrict__ dx,
               int64_t ld_dx, int64_t T, int64_t C, int64_t K, int64_t len) {
  const int64_t n = T * C, S = K - 1;
  for (int64_t e = int64_t(blockIdx.x) * 256 + threadIdx.x; e < n; e += int64_t(gridDim.x) * 256) {
    const int64_t t = e / C, c = e % C;
    const int64_t s = t % len;
    float acc = 0.0f;
    // x[s] feeds out[s + S - k] through w[c, k].
    for (int64_t k = S; k >= 0; --k) {
      const int64_t o = s + S - k;
      if (o < len) acc += w[c * ld_w + k] * dpre[(t + S - k) * C + c];
    }
    dx[t * ld_dx + c] = acc;
  }
}

// Column k*C + c of the virtual [T, (K+1)*C] matrix: k < K: dpre * input k; k == K: dpre (bias).
struct ConvDw {
  ConvIn in;
  const float* dpre;
  int64_t C, K;
  __device__ float operator()(int64_t t, int64_t col) const {
    const int64_t k = col / C, c = col % C;
    const float g = dpre[t * C + c];
    if (k == K) return g;
    const int64_t b = t / in.len, s = t % in.len;
    return g * in.at(b, s - in.S + k, c);
  }
};
struct ConvDwSink {
  float* dw;
  int64_t ld_dw;
  float* dbias;
  int64_t C, K;
  __device__ void operator()(int64_t col, float v) const {
    const int64_t k = col / C, c = col % C;
    if (k < K) dw[c * ld_dw + k] += v;
    else if (dbias) dbias[c] += v;
  }
};

}  // namespace

void conv1d_silu_backward(const float* x, int64_t ld_x, const float* w, int64_t ld_w, const float* bias,
                          const float* state_in, int64_t ld_state, const float* dout, int64_t ld_dout, float* dx,
                          int64_t ld_dx, float* dw, int64_t ld_dw, float* dbias, int64_t batch, int64_t len,
                          int64_t C, int64_t K, float* dpre, float* partial, cudaStream_t s) {
  const int64_t T = batch * len;
  if (T <= 0 || C <= 0) return;
  ConvIn in{x, ld_x, state_in, ld_state, len, K - 1};
  conv_dpre_kernel<<<blocks_for(T * C), 256, 0, s>>>(in, w, ld_w, bias, dout, ld_dout, dpre, T, C, K);
  CUDA_CHECK_LAUNCH();
  conv_dx_kernel<<<blocks_for(T * C), 256, 0, s>>>(dpre, w, ld_w, dx, ld_dx, T, C, K, len);
  CUDA_CHECK_LAUNCH();
  detail::colsum_run(ConvDw{in, dpre, C, K}, ConvDwSink{dw, ld_dw, dbias, C, K}, T, (K + 1) * C, partial, s);
}

}  // namespace dnamba::kernels::train
