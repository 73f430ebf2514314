#include "common/progress.h"

#include <unistd.h>

#include <cstdio>

namespace dnamba {

Progress::Progress(std::string what, bool quiet)
    : what_(std::move(what)), enabled_(!quiet && isatty(STDERR_FILENO)) {
  start_ = last_ = std::chrono::steady_clock::now();
}

Progress::~Progress() { finish(); }

void Progress::update(int64_t done, int64_t total, const std::string& unit) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_ < std::chrono::milliseconds(250)) return;
  last_ = now;
  double secs = std::chrono::duration<double>(now - start_).count();
  double rate = secs > 0 ? done / secs : 0;
  if (total > 0) {
    double eta = rate > 0 ? (total - done) / rate : 0;
    std::fprintf(stderr, "\r[dnamba] %s: %lld/%lld %s (%.1f%%), %.3g %s/s, ETA %.0fs   ", what_.c_str(),
                 (long long)done, (long long)total, unit.c_str(), 100.0 * done / total, rate,
                 unit.c_str(), eta);
  } else {
    std::fprintf(stderr, "\r[dnamba] %s: %lld %s, %.3g %s/s   ", what_.c_str(), (long long)done,
                 unit.c_str(), rate, unit.c_str());
  }
  dirty_ = true;
}

void Progress::finish() {
  if (enabled_ && dirty_) std::fputc('\n', stderr);
  dirty_ = false;
}

}  // namespace dnamba
