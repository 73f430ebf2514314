#include "io/npy.h"

#include <cerrno>
#include <cstring>

#include "common/error.h"
#include "io/zarr.h"

namespace dnamba::io {

namespace {
// Magic (6) + version (2) + header length (2) + header text: 128 bytes in all (a multiple of 64, as
// numpy aligns), enough for a shape of two 20-digit numbers.
constexpr size_t kHeaderTotal = 128;
}  // namespace

NpyWriter::NpyWriter(const std::string& path, std::string descr, int64_t cols, int64_t max_rows)
    : output_(path), descr_(std::move(descr)), cols_(cols), max_rows_(max_rows) {
  if (output_.is_stdout()) throw Error(".npy output needs a file name, not '-'");
  DNAMBA_CHECK(cols_ >= 1, "npy: cols must be >= 1");
  row_bytes_ = zarr_dtype_size(descr_) * size_t(cols_);
  fp_ = std::fopen(output_.temp_path().c_str(), "wb");
  if (!fp_) throw Error(path + ": cannot create " + output_.temp_path() + ": " + std::strerror(errno));
  std::string h = header(0);
  if (std::fwrite(h.data(), 1, h.size(), fp_) != h.size()) throw Error(path + ": write failed: " + std::strerror(errno));
}

NpyWriter::~NpyWriter() {
  if (fp_) std::fclose(fp_);  // the temporary is removed by ~AtomicOutput
}

std::string NpyWriter::header(int64_t rows) const {
  std::string dict = "{'descr': '" + descr_ + "', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                     std::to_string(cols_) + "), }";
  const size_t text = kHeaderTotal - 10;
  DNAMBA_CHECK(dict.size() < text, "npy: header too long");
  dict.append(text - 1 - dict.size(), ' ');
  dict.push_back('\n');
  std::string h("\x93NUMPY\x01\x00", 8);
  h.push_back(char(text & 0xff));
  h.push_back(char(text >> 8));
  return h + dict;
}

void NpyWriter::append(const void* rows, int64_t n) {
  DNAMBA_CHECK(fp_, "npy: append after close");
  if (max_rows_ > 0 && rows_ + n > max_rows_)
    throw Error(output_.final_path() + ": the output has more than --max-npy-rows " + std::to_string(max_rows_) +
                " rows; write .zarr instead (or raise the limit)");
  size_t bytes = size_t(n) * row_bytes_;
  if (std::fwrite(rows, 1, bytes, fp_) != bytes)
    throw Error(output_.final_path() + ": write failed: " + std::strerror(errno));
  rows_ += n;
}

void NpyWriter::close() {
  if (!fp_) return;
  std::string h = header(rows_);
  bool ok = std::fseek(fp_, 0, SEEK_SET) == 0 && std::fwrite(h.data(), 1, h.size(), fp_) == h.size();
  ok = (std::fclose(fp_) == 0) && ok;
  fp_ = nullptr;
  if (!ok) throw Error(output_.final_path() + ": write failed: " + std::strerror(errno));
  output_.commit();
}

}  // namespace dnamba::io
