// Outputs that appear under their final name only when complete: a failed run leaves no partial file
// that looks finished.
#pragma once
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

struct BGZF;

namespace dnamba::io {

// Names "<path>.tmp.<pid>" (same directory, so the rename is atomic) for the writer to create;
// commit() renames it to path. Destroyed without commit(): the temporary is removed.
// path "-" means stdout: temp_path() is "-" too and commit() does nothing.
class AtomicOutput {
 public:
  explicit AtomicOutput(std::string path);
  ~AtomicOutput();
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_path_; }
  const std::string& final_path() const { return final_path_; }
  bool is_stdout() const { return final_path_ == "-"; }
  bool committed() const { return committed_; }
  // Renames the (closed) temporary to the final name; rename failure -> Error. Idempotent.
  void commit();

 private:
  std::string final_path_;
  std::string temp_path_;
  bool committed_ = false;
};

// Text output through BGZF: bgzip-compressed when the path ends in .gz or .bgz, plain otherwise
// (stdout "-" is plain). threads > 1 compresses in parallel. Written atomically (see AtomicOutput).
class TextWriter {
 public:
  explicit TextWriter(const std::string& path, int threads = 1);
  ~TextWriter();  // without close(): the output is discarded (stdout: flushed, nothing to discard)
  TextWriter(const TextWriter&) = delete;
  TextWriter& operator=(const TextWriter&) = delete;

  void write(const char* p, size_t n) {
    if (n > kBufferSize - buffer_used_) {
      write_large(p, n);
      return;
    }
    std::char_traits<char>::copy(buffer_.get() + buffer_used_, p, n);
    buffer_used_ += n;
  }
  void write(std::string_view s) { write(s.data(), s.size()); }
  // Flushes, closes and renames to the final name; an I/O error -> Error (and the temporary is removed).
  void close();
  const std::string& path() const { return output_.final_path(); }
  bool compressed() const { return compressed_; }

 private:
  // Small writes are gathered here: bgzf_write per tiny string costs a call and checks each time.
  static constexpr size_t kBufferSize = size_t(1) << 16;
  void flush_buffer();
  void write_large(const char* p, size_t n);

  AtomicOutput output_;
  BGZF* fp_ = nullptr;
  bool compressed_ = false;
  bool closed_ = false;
  size_t buffer_used_ = 0;
  std::unique_ptr<char[]> buffer_ = std::make_unique<char[]>(kBufferSize);  // heap: writers live on stacks
};

}  // namespace dnamba::io
