#include "train/trainer.h"

#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "common/error.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/tokenizer.h"
#include "train/mamba_grad.h"
#include "train/sampler.h"

namespace dnamba::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kOptimizerFile = "optimizer.safetensors";
constexpr const char* kLogFile = "train_log.tsv";
constexpr const char* kLogHeader = "step\tlr\tloss_nats\tloss_bits\tgrad_norm\ttokens_per_s\tval_bits_per_base";

json recipe_json(const TrainOptions& o) {
  return json{{"ref", o.refs},
              {"val-region", o.val_regions},
              {"seq-len", o.seq_len},
              {"batch", o.batch},
              {"max-n-frac", o.max_n_frac},
              {"no-rc", !o.reverse_complement},
              {"recompute-chunk", o.recompute_chunk},
              {"steps", o.steps},
              {"warmup", o.warmup},
              {"lr", o.lr},
              {"min-lr-ratio", o.min_lr_ratio},
              {"weight-decay", o.weight_decay},
              {"clip", o.clip},
              {"beta1", o.beta1},
              {"beta2", o.beta2},
              {"adam-eps", o.adam_eps},
              {"seed", o.seed}};
}

void apply_recipe(const json& j, TrainOptions& o) {
  o.refs = j.at("ref").get<std::vector<std::string>>();
  o.val_regions = j.at("val-region").get<std::vector<std::string>>();
  o.seq_len = j.at("seq-len");
  o.batch = j.at("batch");
  o.max_n_frac = j.at("max-n-frac");
  o.reverse_complement = !j.at("no-rc").get<bool>();
  o.recompute_chunk = j.at("recompute-chunk");
  o.steps = j.at("steps");
  o.warmup = j.at("warmup");
  o.lr = j.at("lr");
  o.min_lr_ratio = j.at("min-lr-ratio");
  o.weight_decay = j.at("weight-decay");
  o.clip = j.at("clip");
  o.beta1 = j.at("beta1");
  o.beta2 = j.at("beta2");
  o.adam_eps = j.at("adam-eps");
  o.seed = j.at("seed");
}

void write_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream o(tmp);
    o << text;
    o.close();
    if (!o.good()) throw Error(path + ": cannot write");
  }
  fs::rename(tmp, path);
}

std::string fmt_duration(double s) {
  char b[32];
  if (!(s >= 0) || s > 1e8) return "?";
  if (s >= 3600) std::snprintf(b, sizeof b, "%dh%02dm", int(s / 3600), int(std::fmod(s, 3600) / 60));
  else if (s >= 60) std::snprintf(b, sizeof b, "%dm%02ds", int(s / 60), int(std::fmod(s, 60)));
  else std::snprintf(b, sizeof b, "%.0fs", s);
  return b;
}

// Bits per base of the model on the held-out regions: each region streamed from its start with the
// state carried across pieces; every base whose previous base exists and which is A, C, G or T counts.
double evaluate(TrainableMamba& m, const std::vector<std::vector<int32_t>>& regions, int64_t max_bases) {
  constexpr int64_t kPiece = 16384;
  double nats = 0;
  int64_t n = 0;
  std::vector<int32_t> ids, tg;
  std::vector<float> lp;
  for (const auto& tok : regions) {
    int64_t len = int64_t(tok.size());
    if (max_bases > 0) len = std::min(len, max_bases + 1);
    auto state = m.new_state(1);
    for (int64_t s = 0; s + 1 < len; s += kPiece) {
      const int64_t e = std::min(len - 1, s + kPiece);
      ids.assign(tok.begin() + s, tok.begin() + e);
      tg.assign(tok.begin() + s + 1, tok.begin() + e + 1);
      for (auto& t : tg)
        if (t < kTokA || t > kTokT) t = -1;
      m.forward_logprobs(ids.data(), tg.data(), 1, e - s, state, lp);
      for (int64_t i = 0; i < e - s; ++i)
        if (tg[size_t(i)] >= 0) {
          nats -= lp[size_t(i * 5)];
          ++n;
        }
    }
  }
  return n ? nats / double(n) / std::log(2.0) : std::nan("");
}

void save_checkpoint(TrainableMamba& m, const TrainOptions& o, int64_t step, const std::mt19937_64& rng,
                     double last_val) {
  std::ostringstream note;
  note << "trained by dnamba train: step " << step << "/" << o.steps << ", seq-len " << o.seq_len << ", batch "
       << o.batch;
  if (last_val == last_val) note << ", validation " << last_val << " bits/base";
  m.save(o.out_dir, note.str());
  std::vector<std::vector<float>> hosts;
  std::vector<io::StWriteTensor> ts;
  hosts.reserve(m.params().size() * 2);
  for (auto& p : m.params()) {
    hosts.push_back(m.host(p.m));
    ts.push_back({"m." + p.name, p.shape, hosts.back().data()});
    hosts.push_back(m.host(p.v));
    ts.push_back({"v." + p.name, p.shape, hosts.back().data()});
  }
  io::write_safetensors(o.out_dir + "/" + kOptimizerFile, ts, {{"step", std::to_string(step)}});
  std::ostringstream rs;
  rs << rng;
  json st{{"format", "dnamba-train-1"},
          {"step", step},
          {"sampler_rng", rs.str()},
          {"last_val_bits_per_base", last_val == last_val ? json(last_val) : json(nullptr)},
          {"recipe", recipe_json(o)}};
  // Written last: a checkpoint is complete when this file names its step.
  write_atomic(o.out_dir + "/" + kStateFile, st.dump(2) + "\n");
}

// Keeps the log's lines up to `step` (a run that died after its last checkpoint logged more).
void trim_log(const std::string& path, int64_t step) {
  std::ifstream in(path);
  if (!in) return;
  std::string line, out;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    if (line.rfind("step", 0) == 0 || std::atoll(line.c_str()) <= step) out += line + "\n";
  }
  in.close();
  write_atomic(path, out);
}

}  // namespace

const std::vector<std::string>& recipe_option_names() {
  static const std::vector<std::string> names = {"ref", "val-region", "seq-len", "batch", "max-n-frac", "no-rc",
                                                 "recompute-chunk", "steps", "warmup", "lr", "min-lr-ratio",
                                                 "weight-decay", "clip", "beta1", "beta2", "adam-eps", "seed"};
  return names;
}

double lr_at(const TrainOptions& o, int64_t step) {
  if (o.warmup > 0 && step <= o.warmup) return o.lr * double(step) / double(o.warmup);
  const double span = double(std::max<int64_t>(1, o.steps - o.warmup));
  const double progress = std::min(1.0, double(step - o.warmup) / span);
  const double lo = o.lr * o.min_lr_ratio;
  return lo + (o.lr - lo) * 0.5 * (1.0 + std::cos(M_PI * progress));
}

int run_training(TrainOptions o, const std::vector<std::string>& given) {
  if (o.out_dir.empty()) throw Error("-o DIR is required");
  const std::string state_path = o.out_dir + "/" + kStateFile;
  json state;
  if (o.resume) {
    std::ifstream in(state_path);
    if (!in) throw Error(state_path + ": no checkpoint to resume (run without --resume first)");
    try {
      state = json::parse(in);
      TrainOptions saved = o;
      apply_recipe(state.at("recipe"), saved);
      // The recipe is fixed by the checkpoint; options given again must agree with it.
      const json now = recipe_json(o), then = recipe_json(saved);
      for (auto& name : given) {
        if (!then.contains(name)) continue;
        if (name == "ref") continue;  // files may have moved
        if (now[name] != then[name])
          throw Error("--" + name + " " + now[name].dump() + " differs from the checkpoint's " + then[name].dump() +
                      " (a resumed run keeps its recipe)");
      }
      auto refs = o.refs;
      o = [&] {
        TrainOptions r = saved;
        r.out_dir = o.out_dir;
        r.resume = true;
        return r;
      }();
      if (!refs.empty()) o.refs = refs;
    } catch (const json::exception& e) {
      throw Error(state_path + ": not a dnamba training state: " + e.what());
    }
    if (!o.config_json.empty() || !o.init_dir.empty())
      throw Error("--config/--init cannot be combined with --resume (the model comes from the checkpoint)");
  } else {
    if (o.config_json.empty() == o.init_dir.empty())
      throw Error("give exactly one of --config MODEL.json (random initialisation) or --init DIR (start from a model)");
    if (fs::exists(state_path) || fs::exists(o.out_dir + "/model.safetensors"))
      throw Error(o.out_dir + ": already holds a model or a training run (use --resume to continue it, or another -o)");
  }
  if (o.refs.empty()) throw Error("--ref FASTA is required");
  if (o.seq_len < 2 || o.batch < 1 || o.steps < 1) throw Error("--seq-len must be >= 2, --batch and --steps >= 1");
  if (o.warmup < 0 || o.lr <= 0 || o.clip < 0 || o.weight_decay < 0 || o.recompute_chunk < 1)
    throw Error("bad optimiser options (--warmup >= 0, --lr > 0, --clip >= 0, --weight-decay >= 0, --recompute-chunk >= 1)");

  // Data first: errors in the FASTA or regions should come before any model work.
  SamplerOptions so;
  so.window = o.seq_len + 1;
  so.max_n_frac = o.max_n_frac;
  so.reverse_complement = o.reverse_complement;
  WindowSampler sampler(o.refs, o.val_regions, so);
  std::vector<std::vector<int32_t>> val_tokens;
  for (size_t i = 0; i < sampler.held_out().size(); ++i) val_tokens.push_back(sampler.region_tokens(i));

  const std::string device = o.device == "auto" ? default_train_device() : o.device;
  // auto: bf16 products on the GPU, fp32 on the CPU (master weights are fp32 either way).
  DType compute = DType::F32;
  if (o.dtype == "bf16" || (o.dtype == "auto" && device != "cpu")) compute = DType::BF16;
  else if (o.dtype != "fp32" && o.dtype != "f32" && o.dtype != "auto")
    throw Error("--dtype must be fp32, bf16 or auto (got '" + o.dtype + "')");
  auto tb = make_train_backend(device, o.threads, compute);
  fs::create_directories(o.out_dir);
  ModelConfig cfg;
  if (o.resume) {
    cfg = load_model_config(o.out_dir);
  } else if (!o.init_dir.empty()) {
    cfg = load_model_config(o.init_dir);
  } else {
    // load_model_config reads DIR/config.json: give it a directory holding a copy of the file.
    if (fs::is_directory(o.config_json)) {
      cfg = load_model_config(o.config_json);
    } else {
      if (!fs::exists(o.config_json)) throw Error(o.config_json + ": cannot open model config");
      const std::string tmp = o.out_dir + "/.config." + std::to_string(getpid());
      fs::create_directories(tmp);
      fs::copy_file(o.config_json, tmp + "/config.json", fs::copy_options::overwrite_existing);
      try {
        cfg = load_model_config(tmp);
      } catch (...) {
        fs::remove_all(tmp);
        throw;
      }
      fs::remove_all(tmp);
    }
  }
  TrainableMamba m(*tb, cfg, o.recompute_chunk);
  std::mt19937_64 rng(o.seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull);
  int64_t step = 0;
  double last_val = std::nan("");
  const std::string log_path = o.out_dir + "/" + kLogFile;
  if (o.resume) {
    m.load(o.out_dir);
    step = state.at("step");
    io::SafetensorsFile opt(o.out_dir + "/" + kOptimizerFile);
    auto it = opt.metadata().find("step");
    if (it == opt.metadata().end() || std::stoll(it->second) != step)
      throw Error(opt.path() + ": optimizer state is not from step " + std::to_string(step) + " (incomplete checkpoint)");
    for (auto& p : m.params()) {
      m.upload(p.m, opt.read_f32("m." + p.name));
      m.upload(p.v, opt.read_f32("v." + p.name));
    }
    std::istringstream rs(state.at("sampler_rng").get<std::string>());
    rs >> rng;
    if (rs.fail()) throw Error(state_path + ": bad sampler_rng");
    if (state.contains("last_val_bits_per_base") && state["last_val_bits_per_base"].is_number())
      last_val = state["last_val_bits_per_base"];
    trim_log(log_path, step);
  } else {
    if (!o.init_dir.empty()) m.load(o.init_dir);
    else m.init_random(o.seed);
    write_atomic(log_path, std::string(kLogHeader) + "\n");
  }
  std::FILE* log = std::fopen(log_path.c_str(), "a");
  if (!log) throw Error(log_path + ": cannot write");

  const bool progress = !o.quiet && isatty(STDERR_FILENO);
  if (!o.quiet)
    std::fprintf(stderr, "[dnamba] train: %s, %lld parameters, %s; %lld trainable window starts; %s step %lld/%lld\n",
                 cfg.describe().c_str(), (long long)m.parameter_count(), tb->name().c_str(),
                 (long long)sampler.trainable_starts(), o.resume ? "resuming at" : "starting at", (long long)step,
                 (long long)o.steps);

  const int64_t B = o.batch, L = o.seq_len, T = B * L;
  std::vector<int32_t> ids(static_cast<size_t>(T)), tg(static_cast<size_t>(T)), win;
  const auto t_start = std::chrono::steady_clock::now();
  auto last_print = t_start - std::chrono::seconds(1);
  int64_t steps_this_run = 0;
  double tok_per_s = 0;
  bool stopped = false;
  while (step < o.steps) {
    const auto t0 = std::chrono::steady_clock::now();
    ++step;
    int64_t count = 0;
    for (int64_t b = 0; b < B; ++b) {
      sampler.sample(rng, win);
      for (int64_t t = 0; t < L; ++t) {
        ids[size_t(b * L + t)] = win[size_t(t)];
        const int32_t next = win[size_t(t + 1)];
        const bool base = next >= kTokA && next <= kTokT;
        tg[size_t(b * L + t)] = base ? next : -1;
        count += base;
      }
    }
    m.zero_grad();
    const double loss_sum = m.forward_backward(ids.data(), tg.data(), B, L, count ? 1.0f / float(count) : 0.0f);
    const double loss = count ? loss_sum / double(count) : 0.0;
    if (!std::isfinite(loss))
      throw Error("the loss became " + std::to_string(loss) + " at step " + std::to_string(step) + " (try a lower --lr)");
    double sq = 0;
    for (auto& p : m.params()) sq += tb->sum_squares(p.grad);
    const double gnorm = std::sqrt(sq);
    AdamWStep s;
    s.lr = float(lr_at(o, step));
    s.beta1 = float(o.beta1);
    s.beta2 = float(o.beta2);
    s.eps = float(o.adam_eps);
    s.grad_scale = (o.clip > 0 && gnorm > o.clip) ? float(o.clip / gnorm) : 1.0f;
    s.step = step;
    for (auto& p : m.params()) {
      s.weight_decay = p.decay ? float(o.weight_decay) : 0.0f;
      tb->adamw(p.value, p.grad, p.m, p.v, s);
    }
    tb->fwd().synchronize();
    ++steps_this_run;
    const auto t1 = std::chrono::steady_clock::now();
    const double secs = std::chrono::duration<double>(t1 - t0).count();
    const double inst = secs > 0 ? double(T) / secs : 0;
    tok_per_s = steps_this_run == 1 ? inst : 0.9 * tok_per_s + 0.1 * inst;

    double val = std::nan("");
    if (!val_tokens.empty() && ((o.val_every > 0 && step % o.val_every == 0) || step == o.steps)) {
      val = last_val = evaluate(m, val_tokens, o.val_max_bases);
      if (progress) std::fputc('\n', stderr);
      if (!o.quiet)
        std::fprintf(stderr, "[dnamba] train: step %lld validation %.4f bits/base (train loss %.4f bits)\n",
                     (long long)step, val, loss / std::log(2.0));
    }
    std::fprintf(log, "%lld\t%.6g\t%.9g\t%.6f\t%.9g\t%.0f\t%s\n", (long long)step, double(s.lr), loss,
                 loss / std::log(2.0), gnorm, inst, val == val ? std::to_string(val).c_str() : "");
    std::fflush(log);

    const double elapsed = std::chrono::duration<double>(t1 - t_start).count();
    if (o.stop_at > 0 && step >= o.stop_at && step < o.steps) stopped = true;
    if (o.time_limit > 0 && elapsed >= o.time_limit && step < o.steps) stopped = true;
    if (step == o.steps || stopped || (o.save_every > 0 && step % o.save_every == 0))
      save_checkpoint(m, o, step, rng, last_val);
    if (progress && (t1 - last_print > std::chrono::milliseconds(250) || step == o.steps)) {
      last_print = t1;
      const double eta = tok_per_s > 0 ? double(o.steps - step) * double(T) / tok_per_s : -1;
      std::fprintf(stderr, "\r[dnamba] train: step %lld/%lld  loss %.4f bits  %.3g tokens/s  ETA %s      ",
                   (long long)step, (long long)o.steps, loss / std::log(2.0), tok_per_s, fmt_duration(eta).c_str());
    }
    if (stopped) break;
  }
  std::fclose(log);
  if (progress) std::fputc('\n', stderr);
  if (!o.quiet) {
    if (stopped)
      std::fprintf(stderr, "[dnamba] train: stopped after step %lld of %lld; checkpoint in %s (continue with --resume)\n",
                   (long long)step, (long long)o.steps, o.out_dir.c_str());
    else
      std::fprintf(stderr, "[dnamba] train: done, %lld steps; model in %s%s\n", (long long)step, o.out_dir.c_str(),
                   last_val == last_val ? (", validation " + std::to_string(last_val) + " bits/base").c_str() : "");
  }
  return 0;
}

}  // namespace dnamba::train
