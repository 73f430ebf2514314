// The training loop of `dnamba train`: next-base prediction on random genome windows, AdamW with
// fp32 master weights, warmup + cosine learning rate, global gradient-norm clipping, periodic
// validation in bits per base on held-out regions, and checkpoints that resume exactly.
//
// Output directory (a normal model directory plus the training state):
//   config.json, model.safetensors   the model (HF layout, fp32) that every command loads
//   optimizer.safetensors            AdamW moments "m.<param>", "v.<param>"
//   trainer_state.json               step, sampler RNG state, the hyperparameters, refs
//   train_log.tsv                    one line per step (and the validation results)
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace dnamba::train {

struct TrainOptions {
  // data
  std::vector<std::string> refs;
  std::vector<std::string> val_regions;
  int64_t seq_len = 1024;
  int64_t batch = 8;
  double max_n_frac = 0.1;
  bool reverse_complement = true;
  // model
  std::string config_json;  // --config: a config.json to start from random weights
  std::string init_dir;     // --init: a model directory to start from
  int64_t recompute_chunk = 64;
  // optimisation
  int64_t steps = 1000;
  int64_t warmup = 100;
  double lr = 2e-3;
  double min_lr_ratio = 0.1;
  double weight_decay = 0.1;
  double clip = 1.0;
  double beta1 = 0.9, beta2 = 0.95, adam_eps = 1e-8;
  uint64_t seed = 1;
  // run control (not part of the checkpointed recipe)
  std::string out_dir;
  bool resume = false;
  int64_t val_every = 200;
  int64_t val_max_bases = 0;  // 0: whole regions
  int64_t save_every = 500;
  int64_t stop_at = 0;        // stop (with a checkpoint) after this step; 0: run to --steps
  double time_limit = 0;      // seconds; stop with a checkpoint when exceeded; 0: none
  std::string device = "cpu";  // cpu, cuda, cuda:N, or auto (cuda when available)
  std::string dtype = "auto";   // fp32, bf16 (GPU), or auto (bf16 on the GPU, fp32 on the CPU)
  int threads = 0;
  bool quiet = false;
};

// Names of the options that define the run (fixed by a checkpoint; --resume rejects changes).
const std::vector<std::string>& recipe_option_names();

// Runs (or resumes) training. Returns 0. Throws Error on bad input.
int run_training(TrainOptions opt, const std::vector<std::string>& explicitly_given);

// Learning rate at 1-based step: linear warmup, then cosine from lr down to lr*min_lr_ratio.
double lr_at(const TrainOptions& o, int64_t step);

}  // namespace dnamba::train
