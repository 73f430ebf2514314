// dnamba train: trains a character-level Mamba LM on genomes (next-base prediction).
#include "cli/common.h"
#include "train/trainer.h"

namespace dnamba::cli {

namespace {

const char* kUsage =
    "Usage: dnamba train --ref FASTA [--ref FASTA ...] (--config MODEL.json | --init DIR) -o DIR [options]\n"
    "       dnamba train --resume -o DIR [--ref FASTA ...] [run options]\n\n"
    "Trains a Mamba language model on next-base prediction over random windows of the given genomes\n"
    "(both strands; windows overlapping a --val-region are never drawn). AdamW with fp32 master\n"
    "weights, linear warmup then cosine decay, global gradient-norm clipping. The selective scan's\n"
    "backward recomputes its states from checkpoints every --recompute-chunk positions.\n\n"
    "DIR becomes a normal model directory (config.json + model.safetensors, Hugging Face layout) that\n"
    "every dnamba command loads, plus optimizer.safetensors, trainer_state.json and train_log.tsv.\n"
    "--resume continues a run exactly where its last checkpoint left it (same losses as an\n"
    "uninterrupted run); the recipe (data, sizes, optimiser, seed) is taken from the checkpoint.\n"
    "--config takes a config.json (HF transformers or mamba_ssm layout) for a random initialisation;\n"
    "--init starts from the weights of a model directory. Progress (step, loss, tokens/s, ETA) is\n"
    "shown on stderr when it is a terminal; validation is in bits per base (log2, per A/C/G/T target).";

}  // namespace

int cmd_train(int argc, char** argv) {
  train::TrainOptions o;
  unsigned long long seed = o.seed;
  bool no_rc = false;
  po::options_description data("Data");
  data.add_options()
      ("ref,r", po::value(&o.refs)->composing()->value_name("FASTA"), "training genome (plain/gzip/bgzip; faidx-indexed for random access); repeatable")
      ("val-region", po::value(&o.val_regions)->composing()->value_name("REG"), "held-out region chr[:beg-end] (1-based): never trained on, evaluated in bits/base; repeatable")
      ("seq-len", po::value(&o.seq_len)->default_value(o.seq_len)->value_name("N"), "positions per training window")
      ("batch", po::value(&o.batch)->default_value(o.batch)->value_name("N"), "windows per step")
      ("max-n-frac", po::value(&o.max_n_frac)->default_value(o.max_n_frac)->value_name("F"), "redraw windows with more non-ACGT bases than this fraction")
      ("no-rc", po::bool_switch(&no_rc), "no reverse-complement augmentation (forward strand only)");
  po::options_description model("Model");
  model.add_options()
      ("config", po::value(&o.config_json)->value_name("JSON"), "model config.json: start from a random (Mamba) initialisation")
      ("init", po::value(&o.init_dir)->value_name("DIR"), "start from the weights of this model directory")
      ("output,o", po::value(&o.out_dir)->required()->value_name("DIR"), "output model directory (and checkpoints)")
      ("recompute-chunk", po::value(&o.recompute_chunk)->default_value(o.recompute_chunk)->value_name("N"), "scan states kept every N positions; the backward recomputes the rest");
  po::options_description optim("Optimisation");
  optim.add_options()
      ("steps", po::value(&o.steps)->default_value(o.steps)->value_name("N"), "optimiser steps")
      ("lr", po::value(&o.lr)->default_value(o.lr)->value_name("X"), "peak learning rate")
      ("warmup", po::value(&o.warmup)->default_value(o.warmup)->value_name("N"), "linear warmup steps")
      ("min-lr-ratio", po::value(&o.min_lr_ratio)->default_value(o.min_lr_ratio)->value_name("X"), "final learning rate / peak (cosine decay)")
      ("weight-decay", po::value(&o.weight_decay)->default_value(o.weight_decay)->value_name("X"), "AdamW weight decay (matrices and embeddings only)")
      ("clip", po::value(&o.clip)->default_value(o.clip)->value_name("X"), "clip the global gradient norm to X (0: off)")
      ("beta1", po::value(&o.beta1)->default_value(o.beta1)->value_name("X"), "AdamW beta1")
      ("beta2", po::value(&o.beta2)->default_value(o.beta2)->value_name("X"), "AdamW beta2")
      ("adam-eps", po::value(&o.adam_eps)->default_value(o.adam_eps)->value_name("X"), "AdamW epsilon")
      ("seed", po::value(&seed)->default_value(seed)->value_name("N"), "seed of the initialisation and the window sampler");
  po::options_description run("Run control");
  run.add_options()
      ("resume", po::bool_switch(&o.resume), "continue the run checkpointed in -o DIR")
      ("val-every", po::value(&o.val_every)->default_value(o.val_every)->value_name("N"), "validate every N steps (and at the end)")
      ("val-max-bases", po::value(&o.val_max_bases)->default_value(o.val_max_bases)->value_name("N"), "validate on the first N bases of each region only (0: all)")
      ("save-every", po::value(&o.save_every)->default_value(o.save_every)->value_name("N"), "checkpoint every N steps (and at the end)")
      ("stop-at", po::value(&o.stop_at)->default_value(0)->value_name("STEP"), "stop with a checkpoint after STEP (resume later)")
      ("time-limit", po::value(&o.time_limit)->default_value(0)->value_name("SEC"), "stop with a checkpoint once SEC seconds have passed")
      ("device", po::value(&o.device)->default_value("auto")->value_name("DEV"), "cpu, cuda or cuda:N (auto: cuda when a GPU is present, else cpu)")
      ("dtype", po::value(&o.dtype)->default_value("auto")->value_name("T"), "matrix products: fp32, bf16 (GPU; fp32 accumulation) or auto (bf16 on the GPU, fp32 on the CPU); master weights, gradients and optimizer state are always fp32")
      ("threads,t", po::value(&o.threads)->default_value(0)->value_name("N"), "CPU threads (0: all cores)")
      ("quiet,q", po::bool_switch(&o.quiet), "no progress or messages on stderr");
  po::options_description all;
  all.add(data).add(model).add(optim).add(run);
  po::variables_map vm;
  if (!parse_or_help(argc, argv, all, kUsage, vm)) return 0;
  o.seed = seed;
  o.reverse_complement = !no_rc;
  std::vector<std::string> given;
  for (auto& [name, v] : vm)
    if (!v.defaulted()) given.push_back(name);
  if (o.threads < 0) throw Error("--threads must be >= 0");
  return train::run_training(o, given);
}

}  // namespace dnamba::cli
