// Options and wiring shared by the subcommands.
#pragma once
#include <boost/program_options.hpp>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace dnamba::cli {

namespace po = boost::program_options;

struct CommonOptions {
  std::string model;
  std::string device;
  std::string dtype;
  int threads = 0;
  bool quiet = false;
  int64_t chunk = 0;  // 0: auto_chunk() once the device is known
};

// --chunk 0 (the default of track and embed): 2^20 bases per model call on a GPU, 65,536 on the CPU
// (the CPU is no faster with larger calls, and the workspace grows with them).
int64_t auto_chunk(int64_t chunk, bool gpu);
// --model, --device, --dtype, --threads, --quiet (and --chunk when with_chunk). multi_device: the
// command takes device lists (cuda:0,1, cuda:all; see devices_from), and --help says so.
po::options_description common_options(CommonOptions& o, bool with_chunk, bool multi_device = false);
// The embedded default model directory (models/default next to the binary or in the source tree).
std::string default_model_dir();
// Resolves "auto" device/dtype and makes the backend. A --device naming several devices -> Error.
std::unique_ptr<Backend> make_backend_from(const CommonOptions& o);
// The devices of --device ("auto" resolved; lists and cuda:all expanded: backend/device_list.h).
std::vector<std::string> devices_from(const CommonOptions& o);
// The backend of one of them, with --dtype and --threads resolved as make_backend_from does.
std::unique_ptr<Backend> make_backend_for(const CommonOptions& o, const std::string& device);

// Parses argv with `desc`; prints help and returns false on --help. Unknown options are errors.
bool parse_or_help(int argc, char** argv, const po::options_description& desc,
                   const std::string& usage, po::variables_map& vm,
                   const po::positional_options_description* pos = nullptr);

using CommandFn = int (*)(int argc, char** argv);
int cmd_track(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_train(int argc, char** argv);
int cmd_score(int argc, char** argv);
int cmd_embed(int argc, char** argv);

}  // namespace dnamba::cli
