#include "backend/backend.h"

#include <cstring>
#include <vector>

namespace dnamba {

size_t dtype_size(DType dt) {
  switch (dt) {
    case DType::F32: return 4;
    case DType::BF16: return 2;
    case DType::F16: return 2;
    case DType::I32: return 4;
  }
  return 0;
}

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::F32: return "fp32";
    case DType::BF16: return "bf16";
    case DType::F16: return "fp16";
    case DType::I32: return "int32";
  }
  return "?";
}

Tensor Tensor::cols_view(int64_t c0, int64_t n) const {
  DNAMBA_CHECK(c0 >= 0 && n >= 0 && c0 + n <= cols, "cols_view out of range");
  Tensor t = *this;
  t.offset += c0;
  t.cols = n;
  return t;
}

Tensor Tensor::rows_view(int64_t r0, int64_t n) const {
  DNAMBA_CHECK(r0 >= 0 && n >= 0 && r0 + n <= rows, "rows_view out of range");
  Tensor t = *this;
  t.offset += r0 * ld;
  t.rows = n;
  return t;
}

Tensor Backend::weight_matrix(const float* host, int64_t rows, int64_t cols) {
  return upload_f32(host, rows, cols);
}

Tensor Backend::upload_f32(const float* host, int64_t rows, int64_t cols) {
  Tensor t = alloc(rows, cols, DType::F32);
  to_device(t, host);
  return t;
}

void Backend::mul(const Tensor& a, const Tensor& b, Tensor& out) {
  DNAMBA_CHECK(a.dtype == DType::F32 && b.dtype == DType::F32 && out.dtype == DType::F32, "mul: expected fp32");
  DNAMBA_CHECK(a.rows == b.rows && a.cols == b.cols && out.rows == a.rows && out.cols == a.cols, "mul: shapes differ");
  std::vector<float> x(size_t(a.numel())), y(size_t(b.numel()));
  to_host(a, x.data());
  to_host(b, y.data());
  for (size_t i = 0; i < x.size(); ++i) x[i] *= y[i];
  if (out.contiguous()) {
    to_device(out, x.data());
  } else {
    Tensor t = alloc(out.rows, out.cols, DType::F32);
    to_device(t, x.data());
    copy(out, t);
  }
}

void Backend::flip_rows(const Tensor& in, int64_t batch, int64_t len, Tensor& out) {
  DNAMBA_CHECK(in.dtype == out.dtype, "flip_rows: dtype mismatch");
  DNAMBA_CHECK(batch >= 0 && len >= 0 && in.rows == batch * len && out.rows == in.rows && out.cols == in.cols,
               "flip_rows: expected in and out [batch*len, C]");
  if (in.rows == 0 || in.cols == 0) return;
  const size_t rb = size_t(in.cols) * dtype_size(in.dtype);
  std::vector<char> h(size_t(in.rows) * rb), r(h.size());
  to_host(in, h.data());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < len; ++t)
      std::memcpy(r.data() + size_t(b * len + t) * rb, h.data() + size_t(b * len + len - 1 - t) * rb, rb);
  if (out.contiguous()) {
    to_device(out, r.data());
  } else {
    Tensor t = alloc(out.rows, out.cols, out.dtype);
    to_device(t, r.data());
    copy(out, t);
  }
}

}  // namespace dnamba
