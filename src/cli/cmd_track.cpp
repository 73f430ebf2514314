// dnamba track: per-base model values over a reference, as bedGraph.
#include <cmath>
#include <iostream>

#include "cli/common.h"
#include "io/bedgraph.h"
#include "io/fasta.h"
#include "io/region.h"
#include "model/mamba_lm.h"
#include "pipeline/causal_stream.h"

namespace dnamba::cli {

namespace {

const char* kUsage =
    "Usage: dnamba track --ref FASTA [--region chr:beg-end ...] [--regions-file BED]\n"
    "                    [--what loglik|entropy] -o OUT.bedgraph[.gz] [--model DIR] [--device DEV]\n\n"
    "Per-base values of the model over the reference, one bedGraph line per base (0-based starts).\n"
    "  loglik   natural-log probability of the reference base given the bases before it in the same\n"
    "           contig or region (log-softmax over the model's whole vocabulary); the first base of\n"
    "           each contig/region has no prediction and is not written.\n"
    "  entropy  entropy (nats) of the predicted next-base distribution renormalised over A,C,G,T.\n"
    "Regions are 1-based inclusive (samtools style); without regions every contig is read.\n"
    "Output: .bedgraph, .bedgraph.gz/.bg.gz (bgzip), or - for stdout.";

double entropy_acgt(const float* lp) {
  double p[4], s = 0;
  for (int k = 0; k < 4; ++k) s += (p[k] = std::exp(double(lp[k])));
  double h = 0;
  for (int k = 0; k < 4; ++k) {
    double q = p[k] / s;
    if (q > 0) h -= q * std::log(q);
  }
  return h;
}

}  // namespace

int cmd_track(int argc, char** argv) {
  CommonOptions co;
  std::string ref, out, what = "loglik", regions_file;
  std::vector<std::string> regions;
  int out_threads = 1;
  po::options_description d("dnamba track options");
  d.add_options()
      ("ref,r", po::value(&ref)->required()->value_name("FASTA"), "reference FASTA (plain, gzip or bgzip; indexed or not)")
      ("region", po::value(&regions)->composing()->value_name("REG"), "chr, chr:beg or chr:beg-end (1-based inclusive); repeatable")
      ("regions-file,R", po::value(&regions_file)->value_name("BED"), "regions from a BED file (0-based half-open)")
      ("what,w", po::value(&what)->default_value("loglik")->value_name("W"), "loglik or entropy")
      ("output,o", po::value(&out)->required()->value_name("FILE"), "output bedGraph (.bedgraph, .bedgraph.gz, - for stdout)")
      ("output-threads", po::value(&out_threads)->default_value(1)->value_name("N"), "compression threads for .gz output");
  d.add(common_options(co, true));
  po::variables_map vm;
  if (!parse_or_help(argc, argv, d, kUsage, vm)) return 0;
  if (what != "loglik" && what != "entropy") throw Error("--what must be loglik or entropy, not '" + what + "'");
  if (co.chunk <= 0) throw Error("--chunk must be positive");
  if (out.size() >= 3 && (out.substr(out.size() - 3) == ".bw" || out.find(".bigwig") != std::string::npos))
    throw Error(out + ": bigWig output is not available in this build yet (use .bedgraph or .bedgraph.gz)");
  if (co.model.empty()) co.model = default_model_dir();

  io::FastaReader reader(ref);
  std::vector<io::Region> regs;
  for (auto& r : regions)
    regs.push_back(io::parse_region(r, [&](const std::string& name) { return reader.contig_length(name) >= 0; }));
  if (!regions_file.empty()) {
    auto b = io::read_bed(regions_file);
    regs.insert(regs.end(), b.begin(), b.end());
  }
  if (!regs.empty()) reader.set_regions(regs);

  auto be = make_backend_from(co);
  MambaLM model(co.model, *be);
  io::BedGraphWriter writer(out, out_threads);
  CausalStreamOptions so;
  so.chunk = co.chunk;
  so.quiet = co.quiet;
  so.progress_label = "track " + what;
  const bool loglik = what == "loglik";
  stream_causal_logprobs(model, reader, so, [&](const BaseLogProbs& r) {
    for (int64_t i = 0; i < r.n; ++i) {
      const float* s = r.stats + 5 * i;
      writer.add(*r.contig, r.start + i, loglik ? s[0] : float(entropy_acgt(s + 1)));
    }
  });
  writer.close();
  return 0;
}

}  // namespace dnamba::cli
