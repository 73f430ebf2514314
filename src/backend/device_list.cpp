#include "backend/device_list.h"

#include <algorithm>

#include "common/error.h"

namespace dnamba {

std::vector<std::string> parse_device_list(const std::string& spec, int gpu_count) {
  const std::string pre = "cuda:";
  if (spec.rfind(pre, 0) != 0) return {spec};
  const std::string rest = spec.substr(pre.size());
  const auto bad = [&](const std::string& why) {
    return Error("bad --device '" + spec + "': " + why + " (expected cpu, cuda, cuda:N, a list such as cuda:0,1, or cuda:all)");
  };
  const std::string count = std::to_string(gpu_count) + " CUDA device" + (gpu_count == 1 ? "" : "s") +
                            (gpu_count > 0 ? ", numbered 0 to " + std::to_string(gpu_count - 1) : "");
  std::vector<std::string> out;
  if (rest == "all") {
    if (gpu_count <= 0) throw Error("--device " + spec + ": no CUDA GPU is available on this machine (use --device cpu)");
    for (int i = 0; i < gpu_count; ++i) out.push_back(pre + std::to_string(i));
    return out;
  }
  if (rest.find(',') == std::string::npos) return {spec};  // cuda:N: make_backend checks it, as before
  size_t b = 0;
  while (true) {
    const size_t e = std::min(rest.find(',', b), rest.size());
    const std::string item = rest.substr(b, e - b);
    if (item.empty()) throw bad("an empty item");
    if (item.size() > 6 || item.find_first_not_of("0123456789") != std::string::npos)
      throw bad("'" + item + "' is not a device index");
    const int idx = std::stoi(item);
    if (gpu_count > 0 && idx >= gpu_count)
      throw Error("--device " + spec + ": no CUDA device " + item + " (this machine has " + count + ")");
    out.push_back(pre + std::to_string(idx));
    if (out.size() > 64) throw bad("more than 64 devices");
    if (e == rest.size()) break;
    b = e + 1;
  }
  return out;
}

std::string device_list_name(const std::vector<std::string>& devices) {
  if (devices.size() == 1) return devices[0];
  std::string s;
  for (const auto& d : devices) {
    const bool cuda = d.rfind("cuda:", 0) == 0;
    if (s.empty()) s = d;
    else s += "," + (cuda && s.rfind("cuda:", 0) == 0 ? d.substr(5) : d);
  }
  return s;
}

std::exception_ptr error_on_device(const std::string& name, std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc&) {
    return e;
  } catch (const std::exception& x) {
    return std::make_exception_ptr(Error(std::string(x.what()) + " (worker on device " + name + ")"));
  } catch (...) {
    return std::make_exception_ptr(Error("unknown error (worker on device " + name + ")"));
  }
}

}  // namespace dnamba
