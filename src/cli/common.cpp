#include "cli/common.h"

#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <thread>

#include "backend/device_list.h"
#include "common/error.h"

namespace dnamba::cli {

namespace fs = std::filesystem;

po::options_description common_options(CommonOptions& o, bool with_chunk, bool multi_device) {
  po::options_description d("Model and device");
  d.add_options()
      ("model,m", po::value(&o.model)->value_name("DIR"), "model directory (config.json + model.safetensors); default: the embedded model")
      ("device", po::value(&o.device)->default_value("auto")->value_name("DEV"),
       multi_device ? "cpu, cuda, cuda:N, or several GPUs: cuda:0,1 (a list; an index may repeat, e.g. cuda:0,0 runs two "
                      "workers on one GPU) or cuda:all (every GPU); one worker thread, model copy and stream per GPU, "
                      "results identical to one GPU (auto: cuda when a GPU is present)"
                    : "cpu, cuda or cuda:N (auto: cuda when a GPU is present)")
      ("dtype", po::value(&o.dtype)->default_value("auto")->value_name("T"), "compute type: fp32 or bf16 (auto: bf16 on GPU, fp32 on CPU)")
      ("threads,t", po::value(&o.threads)->default_value(0)->value_name("N"), "CPU threads (0: all cores)")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress on stderr");
  if (with_chunk)
    d.add_options()("chunk", po::value(&o.chunk)->default_value(o.chunk)->value_name("N"),
                    o.chunk == 0 ? "bases per model call (0: 1048576 on a GPU, 65536 on the CPU); state is carried across "
                                   "chunks, so results do not depend on it"
                                 : "bases per model call; state is carried across chunks, so results do not depend on it");
  return d;
}

int64_t auto_chunk(int64_t chunk, bool gpu) {
  if (chunk < 0) throw Error("--chunk must be positive");
  return chunk > 0 ? chunk : gpu ? int64_t(1) << 20 : int64_t(1) << 16;
}

std::string default_model_dir() {
  std::vector<fs::path> cands;
  if (const char* env = std::getenv("DNAMBA_MODEL")) cands.emplace_back(env);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    fs::path d = exe.parent_path();
    cands.push_back(d / "models/default");
    cands.push_back(d / "../models/default");
    cands.push_back(d / "../share/dnamba/models/default");
  }
  cands.push_back(fs::path(DNAMBA_SOURCE_DIR) / "models/default");
  for (auto& c : cands)
    if (fs::exists(c / "config.json")) return fs::weakly_canonical(c).string();
  throw Error("no --model given and the embedded default model (models/default) was not found");
}

std::vector<std::string> devices_from(const CommonOptions& o) {
  const std::string dev = o.device == "auto" ? default_device() : o.device;
  const int gpus = dev.rfind("cuda:", 0) == 0 ? cuda_device_total() : 0;
  auto devs = parse_device_list(dev, gpus);
  if (devs.size() > 1 && gpus == 0)
    throw Error("--device " + dev + ": no CUDA GPU is available on this machine (use --device cpu)");
  return devs;
}

std::unique_ptr<Backend> make_backend_from(const CommonOptions& o) {
  const auto devs = devices_from(o);
  if (devs.size() != 1)
    throw Error("--device " + o.device + ": several devices in one run are supported by dnamba score and track only (give one device)");
  return make_backend_for(o, devs[0]);
}

std::unique_ptr<Backend> make_backend_for(const CommonOptions& o, const std::string& dev) {
  bool gpu = dev != "cpu";
  DType dt;
  if (o.dtype == "auto") dt = gpu ? DType::BF16 : DType::F32;
  else if (o.dtype == "fp32" || o.dtype == "float32") dt = DType::F32;
  else if (o.dtype == "bf16" || o.dtype == "bfloat16") dt = DType::BF16;
  else throw Error("bad --dtype '" + o.dtype + "' (expected fp32 or bf16)");
  if (o.threads < 0) throw Error("--threads must be >= 0");
  return make_backend(dev, dt, o.threads);
}

bool parse_or_help(int argc, char** argv, const po::options_description& desc, const std::string& usage,
                   po::variables_map& vm, const po::positional_options_description* pos) {
  po::options_description all;
  bool help = false;
  po::options_description h("General");
  h.add_options()("help,h", po::bool_switch(&help), "show this help");
  all.add(desc).add(h);
  try {
    auto p = po::command_line_parser(argc, argv).options(all);
    if (pos) p.positional(*pos);
    po::store(p.run(), vm);
    if (vm.count("help") && vm["help"].as<bool>()) {
      std::cout << usage << "\n\n" << all << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(std::string(e.what()) + " (see --help)");
  }
  return true;
}

}  // namespace dnamba::cli
