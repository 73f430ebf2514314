#include "io/output_file.h"

#include <htslib/bgzf.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/error.h"

namespace dnamba::io {

AtomicOutput::AtomicOutput(std::string path) : final_path_(std::move(path)) {
  if (final_path_.empty()) throw Error("empty output file name");
  temp_path_ = is_stdout() ? final_path_ : final_path_ + ".tmp." + std::to_string(::getpid());
}

AtomicOutput::~AtomicOutput() {
  if (!committed_ && !is_stdout()) std::remove(temp_path_.c_str());  // may not exist; that is fine
}

void AtomicOutput::commit() {
  if (committed_) return;
  if (!is_stdout() && std::rename(temp_path_.c_str(), final_path_.c_str()) != 0)
    throw Error(final_path_ + ": cannot rename " + temp_path_ + " to it: " + std::strerror(errno));
  committed_ = true;
}

namespace {
bool ends_with(const std::string& s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
}  // namespace

TextWriter::TextWriter(const std::string& path, int threads) : output_(path) {
  compressed_ = ends_with(path, ".gz") || ends_with(path, ".bgz");
  const char* mode = compressed_ ? "w" : "wu";
  if (output_.is_stdout()) {
    // A duplicate descriptor, so closing the BGZF leaves stdout open for whoever writes next.
    std::fflush(stdout);
    int fd = ::dup(STDOUT_FILENO);
    if (fd < 0 || !(fp_ = bgzf_dopen(fd, mode))) {
      if (fd >= 0) ::close(fd);
      throw Error("-: cannot write to stdout: " + std::string(std::strerror(errno)));
    }
  } else {
    fp_ = bgzf_open(output_.temp_path().c_str(), mode);
    if (!fp_) throw Error(path + ": cannot create " + output_.temp_path() + ": " + std::strerror(errno));
  }
  if (compressed_ && threads > 1 && bgzf_mt(fp_, threads, 256) < 0) {
    bgzf_close(fp_);
    fp_ = nullptr;
    throw Error(path + ": cannot start " + std::to_string(threads) + " compression threads");
  }
}

TextWriter::~TextWriter() {
  if (closed_ || !fp_) return;
  if (output_.is_stdout()) {
    if (buffer_used_ > 0 && bgzf_write(fp_, buffer_.get(), buffer_used_) < 0) {
      // nothing more to do in a destructor; the stream was already being abandoned
    }
  }
  bgzf_close(fp_);  // the temporary is then removed by ~AtomicOutput
}

void TextWriter::flush_buffer() {
  if (buffer_used_ == 0) return;
  if (bgzf_write(fp_, buffer_.get(), buffer_used_) != ssize_t(buffer_used_))
    throw Error(path() + ": write failed: " + std::strerror(errno));
  buffer_used_ = 0;
}

void TextWriter::write_large(const char* p, size_t n) {
  if (closed_) throw Error(path() + ": write after close");
  flush_buffer();
  if (n < kBufferSize) {
    std::memcpy(buffer_.get(), p, n);
    buffer_used_ = n;
  } else if (bgzf_write(fp_, p, n) != ssize_t(n)) {
    throw Error(path() + ": write failed: " + std::strerror(errno));
  }
}

void TextWriter::close() {
  if (closed_) return;
  flush_buffer();
  BGZF* fp = fp_;
  fp_ = nullptr;
  closed_ = true;
  buffer_used_ = kBufferSize;  // a later write() cannot fit, so it reaches write_large() and throws
  if (bgzf_close(fp) < 0) throw Error(path() + ": error finishing the file (disk full?)");
  output_.commit();
}

}  // namespace dnamba::io
