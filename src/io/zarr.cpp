#include "io/zarr.h"

#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "common/error.h"

namespace dnamba::io {

namespace fs = std::filesystem;

std::string zstd_compress(const void* data, size_t n, int level) {
  std::string out(ZSTD_compressBound(n), '\0');
  size_t r = ZSTD_compress(out.data(), out.size(), data, n, level);
  if (ZSTD_isError(r)) throw Error(std::string("zstd compression failed: ") + ZSTD_getErrorName(r));
  out.resize(r);
  return out;
}

std::string zstd_decompress(const void* data, size_t n) {
  unsigned long long size = ZSTD_getFrameContentSize(data, n);
  if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN)
    throw Error("zstd: not a frame with a recorded content size");
  std::string out(size, '\0');
  size_t r = ZSTD_decompress(out.data(), out.size(), data, n);
  if (ZSTD_isError(r) || r != size) throw Error(std::string("zstd decompression failed: ") + ZSTD_getErrorName(r));
  return out;
}

size_t zarr_dtype_size(const std::string& dt) {
  if (dt.size() >= 3 && (dt[0] == '<' || dt[0] == '|') && (dt[1] == 'f' || dt[1] == 'i' || dt[1] == 'u')) {
    size_t n = std::stoul(dt.substr(2));
    if (n == 1 || n == 2 || n == 4 || n == 8) return n;
  }
  if (dt.size() >= 3 && dt[0] == '|' && dt[1] == 'S') {
    size_t n = std::stoul(dt.substr(2));
    if (n >= 1) return n;
  }
  throw Error("zarr: unsupported dtype '" + dt + "'");
}

namespace {

void write_file(const std::string& path, const void* data, size_t n) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw Error(path + ": cannot create: " + std::strerror(errno));
  bool ok = std::fwrite(data, 1, n, f) == n;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) throw Error(path + ": write failed: " + std::strerror(errno));
}

void write_json(const std::string& path, const nlohmann::json& j) {
  std::string s = j.dump(4) + "\n";
  write_file(path, s.data(), s.size());
}

bool is_zarr_store(const fs::path& p) {
  std::error_code ec;
  return fs::is_directory(p, ec) && (fs::exists(p / ".zgroup", ec) || fs::exists(p / ".zarray", ec));
}

}  // namespace

// ---------------------------------------------------------------- array

ZarrArrayWriter::ZarrArrayWriter(std::string dir, std::string dtype, int64_t cols, int64_t chunk_rows, int level)
    : dir_(std::move(dir)), dtype_(std::move(dtype)), cols_(cols), chunk_rows_(chunk_rows), level_(level) {
  DNAMBA_CHECK(cols_ >= 0 && chunk_rows_ >= 1, "zarr: bad array geometry");
  item_bytes_ = zarr_dtype_size(dtype_);
  row_bytes_ = item_bytes_ * size_t(cols_ == 0 ? 1 : cols_);
  buf_.assign(size_t(chunk_rows_) * row_bytes_, 0);
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) throw Error(dir_ + ": cannot create directory: " + ec.message());
}

ZarrArrayWriter::~ZarrArrayWriter() = default;

void ZarrArrayWriter::append(const void* rows, int64_t n) {
  DNAMBA_CHECK(!closed_, "zarr: append after close");
  const char* p = static_cast<const char*>(rows);
  while (n > 0) {
    int64_t take = std::min(n, chunk_rows_ - buffered_);
    std::memcpy(buf_.data() + size_t(buffered_) * row_bytes_, p, size_t(take) * row_bytes_);
    buffered_ += take;
    rows_ += take;
    p += size_t(take) * row_bytes_;
    n -= take;
    if (buffered_ == chunk_rows_) flush_chunk();
  }
}

void ZarrArrayWriter::flush_chunk() {
  if (buffered_ == 0) return;
  // Edge chunks are stored at the full chunk shape; the padding is zeros (the fill value).
  std::memset(buf_.data() + size_t(buffered_) * row_bytes_, 0, size_t(chunk_rows_ - buffered_) * row_bytes_);
  std::string z = zstd_compress(buf_.data(), buf_.size(), level_);
  std::string key = std::to_string(chunks_written_) + (cols_ > 0 ? ".0" : "");
  write_file(dir_ + "/" + key, z.data(), z.size());
  ++chunks_written_;
  buffered_ = 0;
}

void ZarrArrayWriter::close() {
  if (closed_) return;
  flush_chunk();
  nlohmann::json shape = cols_ > 0 ? nlohmann::json::array({rows_, cols_}) : nlohmann::json::array({rows_});
  nlohmann::json chunks = cols_ > 0 ? nlohmann::json::array({chunk_rows_, cols_}) : nlohmann::json::array({chunk_rows_});
  nlohmann::json za = {
      {"zarr_format", 2},
      {"shape", shape},
      {"chunks", chunks},
      {"dtype", dtype_},
      {"compressor", {{"id", "zstd"}, {"level", level_}}},
      {"order", "C"},
      {"filters", nullptr},
      {"dimension_separator", "."},
  };
  if (dtype_[1] == 'S') za["fill_value"] = nullptr;
  else if (dtype_[1] == 'f') za["fill_value"] = 0.0;
  else za["fill_value"] = 0;
  write_json(dir_ + "/.zarray", za);
  if (!attrs.empty()) write_json(dir_ + "/.zattrs", attrs);
  closed_ = true;
}

// ---------------------------------------------------------------- store

ZarrStoreWriter::ZarrStoreWriter(std::string path, int zstd_level) : path_(std::move(path)), level_(zstd_level) {
  while (path_.size() > 1 && path_.back() == '/') path_.pop_back();
  if (path_.empty() || path_ == "-") throw Error("a Zarr store needs a directory name, not '" + path_ + "'");
  if (zstd_level < 1 || zstd_level > ZSTD_maxCLevel())
    throw Error("zstd level must be in 1.." + std::to_string(ZSTD_maxCLevel()));
  std::error_code ec;
  if (fs::exists(path_, ec) && !is_zarr_store(path_))
    throw Error(path_ + ": exists and is not a Zarr store; not overwriting it");
  temp_ = path_ + ".tmp." + std::to_string(::getpid());
  fs::remove_all(temp_, ec);
  if (!fs::create_directory(temp_, ec) || ec)
    throw Error(path_ + ": cannot create " + temp_ + ": " + (ec ? ec.message() : "exists"));
  write_json(temp_ + "/.zgroup", {{"zarr_format", 2}});
}

ZarrStoreWriter::~ZarrStoreWriter() {
  if (committed_) return;
  arrays_.clear();
  std::error_code ec;
  fs::remove_all(temp_, ec);
}

ZarrArrayWriter& ZarrStoreWriter::add_array(const std::string& name, const std::string& dtype, int64_t cols,
                                            int64_t chunk_rows) {
  DNAMBA_CHECK(!committed_, "zarr: add_array after commit");
  DNAMBA_CHECK(!name.empty() && name[0] != '.' && name.find('/') == std::string::npos, "zarr: bad array name '" + name + "'");
  for (auto& [n, a] : arrays_) DNAMBA_CHECK(n != name, "zarr: array '" + name + "' added twice");
  arrays_.emplace_back(name, std::make_unique<ZarrArrayWriter>(temp_ + "/" + name, dtype, cols, chunk_rows, level_));
  return *arrays_.back().second;
}

ZarrArrayWriter& ZarrStoreWriter::array(const std::string& name) {
  for (auto& [n, a] : arrays_)
    if (n == name) return *a;
  throw Error("zarr: no array '" + name + "'");
}

void ZarrStoreWriter::commit() {
  if (committed_) return;
  for (auto& [n, a] : arrays_) a->close();
  write_json(temp_ + "/.zattrs", attrs);
  std::error_code ec;
  fs::remove_all(scratch_dir(), ec);
  // Replace an existing store: move it aside, put the new one in place, then delete the old one.
  std::string old;
  if (fs::exists(path_, ec)) {
    old = path_ + ".old." + std::to_string(::getpid());
    fs::remove_all(old, ec);
    if (std::rename(path_.c_str(), old.c_str()) != 0)
      throw Error(path_ + ": cannot move the existing store aside: " + std::strerror(errno));
  }
  if (std::rename(temp_.c_str(), path_.c_str()) != 0) {
    int e = errno;
    if (!old.empty()) std::rename(old.c_str(), path_.c_str());
    throw Error(path_ + ": cannot rename " + temp_ + " to it: " + std::strerror(e));
  }
  committed_ = true;
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace dnamba::io
