// dnamba's one error type. Every bad input becomes an Error whose message names the file and
// the record or position; main() prints it on one line and exits non-zero.
#pragma once
#include <stdexcept>
#include <string>

namespace dnamba {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

// DNAMBA_CHECK(cond, msg-expression): loud assumption checks inside ops (ggml style).
#define DNAMBA_CHECK(cond, msg)                                                              \
  do {                                                                                      \
    if (!(cond))                                                                            \
      throw ::dnamba::Error(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": " + \
                            (msg));                                                         \
  } while (0)

}  // namespace dnamba
