// Zarr v2 directory stores, written chunk by chunk (hand-written: Debian has no C++ Zarr library).
//
// A store is a directory with a `.zgroup`, a `.zattrs` and one sub-directory per array holding
// `.zarray` (shape, chunks, numpy dtype string, compressor) and one file per chunk. Chunks are
// compressed with zstd in a single frame that records its content size, and described as numcodecs'
// codec {"id": "zstd", "level": N}, so Python zarr + numcodecs read them. Arrays grow along their
// first axis only; chunk i of a 2-D array [n, cols] is the file "i.0" and holds rows
// i*chunk_rows .. (i+1)*chunk_rows-1 (the last chunk is padded with zeros to the full chunk shape,
// as Zarr v2 stores edge chunks). Memory: one uncompressed chunk per array, whatever the output size.
//
// The store is written under "<path>.tmp.<pid>" and renamed to path by commit(): a failed run leaves
// no store that looks finished. An existing Zarr store at path is replaced; any other existing file
// or directory there is an Error (checked by the constructor, before any work).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace dnamba::io {

// Compresses n bytes into one zstd frame (content size recorded). Error on failure.
std::string zstd_compress(const void* data, size_t n, int level);
// Decompresses one zstd frame whose content size is recorded (for tests and readers of our stores).
std::string zstd_decompress(const void* data, size_t n);

class ZarrArrayWriter {
 public:
  // dtype: a numpy type string with explicit byte order: "<f4", "<f2", "<i4", "<i8", "|i1", "|u1",
  // "|S<n>" (fixed-width bytes, NUL padded). cols == 0: a 1-D array [n]; else 2-D [n, cols].
  ZarrArrayWriter(std::string dir, std::string dtype, int64_t cols, int64_t chunk_rows, int level);
  ~ZarrArrayWriter();
  ZarrArrayWriter(const ZarrArrayWriter&) = delete;
  ZarrArrayWriter& operator=(const ZarrArrayWriter&) = delete;

  // Appends n rows already encoded in this array's dtype (row_bytes() each, packed).
  void append(const void* rows, int64_t n);
  // Writes the last (partial) chunk and .zarray (and .zattrs when attrs is not empty).
  void close();

  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  size_t row_bytes() const { return row_bytes_; }
  int64_t chunk_rows() const { return chunk_rows_; }
  const std::string& dtype() const { return dtype_; }
  nlohmann::json attrs = nlohmann::json::object();

 private:
  void flush_chunk();

  std::string dir_, dtype_;
  int64_t cols_, chunk_rows_;
  int level_;
  size_t item_bytes_, row_bytes_;
  std::vector<char> buf_;  // one chunk: chunk_rows * row_bytes
  int64_t buffered_ = 0, rows_ = 0, chunks_written_ = 0;
  bool closed_ = false;
};

class ZarrStoreWriter {
 public:
  // Checks path (see above) and creates the temporary store directory with its .zgroup.
  ZarrStoreWriter(std::string path, int zstd_level = 3);
  ~ZarrStoreWriter();  // without commit(): the temporary directory is removed
  ZarrStoreWriter(const ZarrStoreWriter&) = delete;
  ZarrStoreWriter& operator=(const ZarrStoreWriter&) = delete;

  // A new array named `name` (a plain name: letters, digits, '_', '-', '.').
  ZarrArrayWriter& add_array(const std::string& name, const std::string& dtype, int64_t cols,
                             int64_t chunk_rows);
  ZarrArrayWriter& array(const std::string& name);
  // Group attributes, written to .zattrs on commit.
  nlohmann::json attrs = nlohmann::json::object();
  // Directory for scratch files of the writer's user; removed before commit renames the store.
  std::string scratch_dir() const { return temp_ + "/.scratch"; }

  // Closes every array, writes .zattrs, renames the temporary directory to path.
  void commit();
  const std::string& path() const { return path_; }
  const std::string& temp_path() const { return temp_; }

 private:
  std::string path_, temp_;
  int level_;
  std::vector<std::pair<std::string, std::unique_ptr<ZarrArrayWriter>>> arrays_;
  bool committed_ = false;
};

// Size in bytes of one element of a numpy type string ("<f4" -> 4, "|S12" -> 12); Error when unknown.
size_t zarr_dtype_size(const std::string& dtype);

}  // namespace dnamba::io
