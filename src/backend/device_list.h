// `--device` values that name several devices: `cuda:0,1` (a list) and `cuda:all`.
#pragma once
#include <exception>
#include <string>
#include <vector>

namespace dnamba {

// The devices of one run, one worker each, in the order given.
//   "cpu", "cuda", "cuda:N"  -> that one device, unchanged (make_backend checks it, as before);
//   "cuda:I,J,..."           -> {"cuda:I", "cuda:J", ...}: indices may repeat (cuda:0,0: two workers on one
//                               GPU, e.g. to test the multi-device path on a one-GPU machine);
//   "cuda:all"               -> {"cuda:0", ..., "cuda:<gpu_count-1>"}.
// gpu_count: the CUDA devices present. When it is 0 a list is returned unchecked (make_backend then says
// why there is no GPU); "cuda:all" -> Error. An empty or non-numeric item, an index >= gpu_count, or more
// than 64 items -> Error naming the value and the device count.
std::vector<std::string> parse_device_list(const std::string& spec, int gpu_count);

// The value shown for a list of devices (header lines, messages): "cuda:0,1", "cuda:0,0"; one device: its name.
std::string device_list_name(const std::vector<std::string>& devices);

// A worker's failure as an Error that ends "(worker on device NAME)"; std::bad_alloc stays itself.
std::exception_ptr error_on_device(const std::string& name, std::exception_ptr e);

}  // namespace dnamba
