// Progress lines on stderr, only when stderr is a terminal and --quiet is not given.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace dnamba {

class Progress {
 public:
  Progress(std::string what, bool quiet);
  ~Progress();
  // Report that `done` units of `total` (0 = unknown) are finished; rate-limited to ~4 Hz.
  void update(int64_t done, int64_t total, const std::string& unit = "bp");
  void finish();
  bool enabled() const { return enabled_; }

 private:
  std::string what_;
  bool enabled_;
  bool dirty_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace dnamba
