// dnamba track: per-base model values over a reference, as bedGraph or bigWig.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <optional>

#include "cli/common.h"
#include "cli/shard.h"
#include "io/bedgraph.h"
#include "io/bigwig.h"
#include "io/fasta.h"
#include "io/region.h"
#include "model/caduceus.h"
#include "model/mamba_lm.h"
#include "pipeline/caduceus_track.h"
#include "pipeline/causal_stream.h"
#include "pipeline/track_devices.h"

namespace dnamba::cli {

namespace {

const char* kUsage =
    "Usage: dnamba track --ref FASTA [--region chr:beg-end ...] [--regions-file BED]\n"
    "                    [--what loglik|entropy] -o OUT.bedgraph[.gz]|OUT.bw [--model DIR] [--device DEV]\n\n"
    "Per-base values of the model over the reference, one bedGraph line per base (0-based starts).\n"
    "  loglik   natural-log probability of the reference base given the bases before it in the same\n"
    "           contig or region (log-softmax over the model's whole vocabulary); the first base of\n"
    "           each contig/region has no prediction and is not written.\n"
    "  entropy  entropy (nats) of the predicted next-base distribution renormalised over A,C,G,T.\n"
    "Masked-LM (Caduceus) models predict every base from both sides: --mask none takes the logits at the\n"
    "base itself, --mask each masks each base in turn ([MASK], one batched copy per base); every base is\n"
    "written. Inputs longer than --window run as windows overlapping by --overlap, each keeping its centre.\n"
    "Regions are 1-based inclusive (samtools style); without regions every contig is read.\n"
    "Output: .bedgraph, .bedgraph.gz/.bg.gz (bgzip), - for stdout, or .bw/.bigwig (bigWig: needs an indexed\n"
    "FASTA for the chromosome sizes; chromosomes are written in name order and regions must not overlap).\n"
    "Several GPUs (--device cuda:0,1 or cuda:all; causal models, indexed FASTA): whole contigs/regions are spread\n"
    "over the GPUs by length, one worker each; finished ones wait in memory or $TMPDIR until their turn, and the\n"
    "output is the same as on one GPU.";

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
  std::string ref, out, what = "loglik", regions_file, shard_spec, mask = "none";
  int64_t window = 0, overlap = -1;
  std::vector<std::string> regions;
  int out_threads = 1;
  po::options_description d("dnamba track options");
  d.add_options()
      ("ref,r", po::value(&ref)->required()->value_name("FASTA"), "reference FASTA (plain, gzip or bgzip; indexed or not)")
      ("region", po::value(&regions)->composing()->value_name("REG"), "chr, chr:beg or chr:beg-end (1-based inclusive); repeatable")
      ("regions-file,R", po::value(&regions_file)->value_name("BED"), "regions from a BED file (0-based half-open)")
      ("what,w", po::value(&what)->default_value("loglik")->value_name("W"), "loglik or entropy")
      ("output,o", po::value(&out)->required()->value_name("FILE"), "output bedGraph (.bedgraph, .bedgraph.gz, - for stdout) or bigWig (.bw, .bigwig)")
      ("output-threads", po::value(&out_threads)->default_value(1)->value_name("N"), "compression threads for .gz output")
      ("mask", po::value(&mask)->default_value("none")->value_name("M"), "masked-LM models: none or each")
      ("window", po::value(&window)->value_name("N"), "masked-LM models: bases per window (default: the model's training length, else 131072)")
      ("overlap", po::value(&overlap)->value_name("N"), "masked-LM models: bases shared by consecutive windows (default: window/4)");
  add_shard_option(d, shard_spec);
  d.add(common_options(co, true, true));
  po::variables_map vm;
  if (!parse_or_help(argc, argv, d, kUsage, vm)) return 0;
  if (what != "loglik" && what != "entropy") throw Error("--what must be loglik or entropy, not '" + what + "'");
  if (co.chunk < 0) throw Error("--chunk must be positive");
  const Shard shard = shard_spec.empty() ? Shard{} : parse_shard(shard_spec);
  std::string lower = out;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return char(std::tolower(c)); });
  const bool bigwig = (lower.size() > 3 && lower.substr(lower.size() - 3) == ".bw") ||
                      (lower.size() > 7 && lower.substr(lower.size() - 7) == ".bigwig");
  if (co.model.empty()) co.model = default_model_dir();

  io::FastaReader reader(ref);
  std::vector<io::Region> regs;
  for (auto& r : regions)
    regs.push_back(io::parse_region(r, [&](const std::string& name) { return reader.contig_length(name) >= 0; }));
  if (!regions_file.empty()) {
    auto b = io::read_bed(regions_file);
    regs.insert(regs.end(), b.begin(), b.end());
  }
  // --shard: whole segments (cli/shard.h); an empty shard writes an empty bedGraph.
  bool empty_shard = false;
  if (!shard.whole()) {
    regs = shard_segments(resolve_segments(reader, regs), shard);
    empty_shard = regs.empty();
  }
  std::vector<io::ContigInfo> bw_chroms;
  if (bigwig) {
    // bigWig keeps chromosomes sorted by name and needs their sizes in the header, before any value.
    if (!reader.indexed())
      throw Error(ref + ": bigWig output needs the chromosome sizes up front, from a FASTA index: run `samtools faidx " + ref +
                  "` (bgzip the FASTA first if it is gzip-compressed) or write bedGraph instead");
    for (size_t i : io::bigwig_chrom_order(reader.contigs())) bw_chroms.push_back(reader.contigs()[i]);
    // Read in that order too (an indexed FASTA reads in any order): regions sorted, not overlapping.
    auto chrom_rank = [&](const std::string& name) {
      for (size_t k = 0; k < bw_chroms.size(); ++k)
        if (bw_chroms[k].name == name) return k;
      throw Error(ref + ": contig '" + name + "' is not in the index " + ref + ".fai");
    };
    if (regs.empty() && !empty_shard) {
      for (auto& c : bw_chroms) regs.push_back(io::Region{c.name, 0, -1});
    } else {
      for (auto& r : regs) {
        chrom_rank(r.contig);
        if (r.end < 0) r.end = reader.contig_length(r.contig);
      }
      std::stable_sort(regs.begin(), regs.end(), [&](const io::Region& a, const io::Region& b) {
        size_t ra = chrom_rank(a.contig), rb = chrom_rank(b.contig);
        return ra != rb ? ra < rb : a.beg < b.beg;
      });
      for (size_t i = 1; i < regs.size(); ++i)
        if (regs[i].contig == regs[i - 1].contig && regs[i].beg < regs[i - 1].end)
          throw Error("bigWig output cannot hold overlapping regions: " + regs[i - 1].contig + ":" + std::to_string(regs[i - 1].beg + 1) +
                      "-" + std::to_string(regs[i - 1].end) + " and " + regs[i].contig + ":" + std::to_string(regs[i].beg + 1) + "-" +
                      std::to_string(regs[i].end) + " (write bedGraph for overlapping regions)");
    }
  }
  if (!regs.empty()) reader.set_regions(regs);

  // One device: its backend, here. Several (--device cuda:0,1): one worker each (pipeline/track_devices.h).
  const std::vector<std::string> devices = devices_from(co);
  const bool multi = devices.size() > 1;
  co.chunk = auto_chunk(co.chunk, devices[0] != "cpu");
  std::unique_ptr<Backend> be;
  if (!multi) be = make_backend_for(co, devices[0]);
  // Masked-LM (Caduceus) models run windowed through pipeline/caduceus_track; causal ones stream.
  const bool mlm = load_model_config(co.model).layout == CheckpointLayout::Caduceus;
  if (mask != "none" && mask != "each") throw Error("--mask must be none or each, not '" + mask + "'");
  if (!mlm && (mask != "none" || vm.count("window") || vm.count("overlap")))
    throw Error("--mask, --window and --overlap apply to masked-LM (Caduceus) models; " + co.model + " is causal");
  std::vector<io::Region> segments;  // several devices: the whole segments to spread over them
  if (multi) {
    if (mlm)
      throw Error("--device " + co.device + ": several devices are supported for causal models; " + co.model +
                  " is a masked-LM (Caduceus) model (give one device)");
    if (!reader.indexed())
      throw Error(ref + ": several devices (--device " + co.device + ") need an indexed FASTA, to split the work by " +
                  "contig length before reading: run `samtools faidx " + ref + "` (bgzip the FASTA first if it is " +
                  "gzip-compressed)");
    if (!empty_shard) segments = resolve_segments(reader, regs);
  }
  std::optional<CaduceusModel> cad;
  std::optional<MambaLM> causal;
  if (!multi) {  // several devices: the workers load their own copies
    if (mlm) cad.emplace(co.model, *be);
    else causal.emplace(co.model, *be);
  }
  CaduceusTrackOptions cso;
  cso.window = window;
  cso.overlap = overlap;
  cso.mask = mask == "each" ? MaskMode::Each : MaskMode::None;
  cso.tokens_per_call = co.chunk;
  cso.quiet = co.quiet;
  cso.progress_label = "track " + what;
  std::optional<io::BedGraphWriter> bedgraph;
  std::optional<io::BigWigWriter> bw;
  if (bigwig) bw.emplace(out, bw_chroms);
  else bedgraph.emplace(out, out_threads);
  std::vector<float> values;
  CausalStreamOptions so;
  so.chunk = co.chunk;
  so.quiet = co.quiet;
  so.progress_label = "track " + what;
  const bool loglik = what == "loglik";
  auto stream = [&](const std::function<void(const BaseLogProbs&)>& sink) {
    return cad ? stream_caduceus_logprobs(*cad, reader, cso, sink) : stream_causal_logprobs(*causal, reader, so, sink);
  };
  auto to_values = [loglik](const BaseLogProbs& r, std::vector<float>& values) {
    values.resize(size_t(r.n));
    for (int64_t i = 0; i < r.n; ++i) {
      const float* s = r.stats + 5 * i;
      values[size_t(i)] = loglik ? s[0] : float(entropy_acgt(s + 1));
    }
  };
  auto write = [&](const std::string& contig, int64_t start, const float* v, int64_t n) {
    if (bw) bw->add(contig, start, v, n);
    else bedgraph->add_run(contig, start, v, n);  // formatted on several threads
  };
  if (multi) {
    TrackDevicesOptions mo;
    mo.stream = so;
    // Each worker loads its model in its own thread; the values are written here, in input order.
    if (!empty_shard)
      stream_track_values_multi(
          devices,
          [&](size_t i) {
            TrackDevice dev;
            dev.backend = make_backend_for(co, devices[i]);
            dev.model = std::make_unique<MambaLM>(co.model, *dev.backend);
            return dev;
          },
          ref, segments, mo, to_values, write);
  } else if (!empty_shard) {
    stream([&](const BaseLogProbs& r) {
      to_values(r, values);
      write(*r.contig, r.start, values.data(), r.n);
    });
  }
  if (bw) bw->close();
  else bedgraph->close();
  return 0;
}

}  // namespace dnamba::cli
