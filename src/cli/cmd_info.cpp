#include <iostream>

#include "backend/cpu/cpu_backend.h"
#include "cli/common.h"
#include "model/caduceus.h"
#include "model/mamba_lm.h"

namespace dnamba::cli {

int cmd_info(int argc, char** argv) {
  std::string model;
  po::options_description d("dnamba info options");
  d.add_options()("model,m", po::value(&model)->value_name("DIR"), "model directory (default: the embedded model)");
  po::variables_map vm;
  if (!parse_or_help(argc, argv, d, "Usage: dnamba info [--model DIR]\nDescribes a model directory: architecture, sizes, parameter count, dtype.", vm))
    return 0;
  if (model.empty()) model = default_model_dir();
  ModelConfig c = load_model_config(model);
  std::cout << "model\t" << model << "\n";
  std::cout << "format\t" << layout_name(c.layout) << "\n";
  std::cout << "architecture\t" << (c.causal() ? "causal Mamba-1 language model" : "bidirectional Caduceus masked LM") << "\n";
  std::cout << "d_model\t" << c.d_model << "\nn_layer\t" << c.n_layer << "\nd_inner\t" << c.d_inner << "\nd_state\t"
            << c.d_state << "\nd_conv\t" << c.d_conv << "\ndt_rank\t" << c.dt_rank << "\nvocab_size\t" << c.vocab_size
            << "\npadded_vocab\t" << c.padded_vocab() << "\nnorm\t" << (c.rms_norm ? "RMSNorm" : "LayerNorm")
            << "\nnorm_eps\t" << c.norm_eps << "\nproj_bias\t" << c.proj_bias << "\nconv_bias\t" << c.conv_bias
            << "\nresidual_in_fp32\t" << c.residual_in_fp32 << "\ntie_embeddings\t" << c.tie_embeddings << "\n";
  if (c.causal()) {
    CpuBackend be(1);
    MambaLM m(model, be);
    std::cout << "parameters\t" << m.parameter_count() << "\n";
    std::cout << "dtype\t" << m.stored_dtype() << "\n";
  } else {
    CpuBackend be(1);
    CaduceusModel m(model, be);
    std::cout << "variant\t" << (c.rcps ? "PS (reverse-complement equivariant)" : "Ph (post-hoc RC averaging)") << "\n"
              << "bidirectional\t" << c.bidirectional << "\nbidirectional_strategy\t" << c.bidirectional_strategy
              << "\nbidirectional_weight_tie\t" << c.bidirectional_weight_tie << "\nfused_add_norm\t" << c.fused_add_norm
              << "\nhidden_size\t" << m.hidden_size() << "\ntraining_length\t" << m.training_length() << "\n";
    std::cout << "parameters\t" << m.parameter_count() << "\n";
    std::cout << "dtype\t" << m.stored_dtype() << "\n";
  }
  return 0;
}

}  // namespace dnamba::cli
