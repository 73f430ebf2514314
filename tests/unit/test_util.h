// Helpers shared by the unit tests.
#pragma once
#include <cmath>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"

namespace dnamba::test {

// ||a - b|| / ||b||
inline double rel_err(const float* a, const float* b, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(a[i]) - double(b[i]);
    num += d * d;
    den += double(b[i]) * double(b[i]);
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}
inline double rel_err(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() ? rel_err(a.data(), b.data(), a.size()) : 1e30;
}
inline double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - b[i]));
  return m;
}
// The environment variable DNAMBA_GOLDEN_DIR, when set, overrides the compiled-in folder (GPU runs
// on another machine).
inline std::string golden(const std::string& sub) {
  const char* env = std::getenv("DNAMBA_GOLDEN_DIR");
  return std::string(env && *env ? env : DNAMBA_GOLDEN_DIR) + "/" + sub;
}

// The message of the dnamba::Error that f throws ("" when it throws none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace dnamba::test
