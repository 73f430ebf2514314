// NumPy .npy files (format version 1.0) written row by row: the header keeps room for any row
// count and is rewritten with the final shape on close, so memory does not depend on the size.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>

#include "io/output_file.h"

namespace dnamba::io {

class NpyWriter {
 public:
  // descr: "<f4" or "<f2" (any fixed-size numpy type string works); a 2-D array [n, cols].
  // max_rows > 0: appending past it is an Error naming the limit (the output is then discarded).
  NpyWriter(const std::string& path, std::string descr, int64_t cols, int64_t max_rows = 0);
  ~NpyWriter();  // without close(): the output is discarded
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  void append(const void* rows, int64_t n);  // n rows of cols items, packed
  void close();                              // final header, rename to path
  int64_t rows() const { return rows_; }

 private:
  std::string header(int64_t rows) const;

  AtomicOutput output_;
  std::string descr_;
  int64_t cols_, max_rows_, rows_ = 0;
  size_t row_bytes_;
  std::FILE* fp_ = nullptr;
};

}  // namespace dnamba::io
