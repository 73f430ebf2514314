// dnamba score: variant-effect scores (INFO DNAMBA_LLR) for every ALT allele of a VCF/BCF.
#include <htslib/vcf.h>

#include <iostream>
#include <memory>

#include "backend/device_list.h"
#include "cli/common.h"
#include "cli/shard.h"
#include "io/fasta.h"
#include "io/vcf.h"
#include "model/caduceus.h"
#include "model/mamba_lm.h"
#include "pipeline/caduceus_score.h"
#include "pipeline/variant_stream.h"

namespace dnamba::cli {

namespace {

const char* kUsage =
    "Usage: dnamba score --ref FASTA --vcf IN [-o OUT] [-O z|b|v|u] [--model DIR] [--threads N]\n"
    "                    [--horizon 128] [--context 8192] [--segment 65536] [--no-rc] [--method fast|naive]\n\n"
    "Adds the causal model's variant-effect score to every ALT allele of a VCF/BCF; every record is written,\n"
    "in input order, with the header kept and lines recording the model and parameters added.\n"
    "  DNAMBA_LLR      ln P(alt haplotype) - ln P(ref haplotype), summed from the first base where ALT and\n"
    "                  REF differ through H (--horizon) reference bases after the REF allele - the same bases\n"
    "                  on both haplotypes, so indels compare fairly - each base conditioned on everything\n"
    "                  since the start of the variant's segment. Segments tile each contig every S (--segment)\n"
    "                  bases and start C (--context) bases before their first base, so a score never depends\n"
    "                  on the other variants of the file. Mean of both strands unless --no-rc.\n"
    "  DNAMBA_LLR_FWD, DNAMBA_LLR_REV  the forward and reverse-complement strand values.\n"
    "  DNAMBA_FLAG     why an allele has no score: REF_MISMATCH, CONTIG_MISSING, SYMBOLIC, BREAKEND,\n"
    "                  SPANNING_DELETION, INVALID_ALLELE, TOO_LONG, N_IN_WINDOW, NO_ALT.\n"
    "The reference must be indexed (samtools faidx; bgzip FASTA with .fai and .gzi). The input must be\n"
    "sorted (contigs together, POS ascending). Output type from -O or the name (.vcf.gz: bgzip VCF + .tbi,\n"
    ".bcf: BCF + .csi, else VCF); `-` is stdin/stdout. A summary goes to stderr.\n\n"
    "Masked-LM (Caduceus) models (pipeline/caduceus_score.h): DNAMBA_LLR = ln P(alt) - ln P(ref) at the variant\n"
    "position, masked, in a window of W (--window; default the model's training length) reference bases centred on\n"
    "the variant, over A,C,G,T; Ph models: mean of both strands (DNAMBA_LLR_FWD/_REV; --no-rc: forward only);\n"
    "PS models are reverse-complement equivariant (one value). MNPs: sum over their differing bases, each masked\n"
    "alone. Indels: DNAMBA_FLAG=MLM_INDEL. Records may come in any order; --chunk is window tokens per model call\n"
    "(default 1048576). --horizon, --context, --method, --batch, --batch-tokens, --snapshot-gap, --ref-batch are\n"
    "causal-only.\n\n"
    "Several GPUs (causal models): --device cuda:0,1 or cuda:all runs one worker thread per GPU, each with its own\n"
    "model copy and stream; the work is split by whole model batches (--ref-batch reference runs and their alleles,\n"
    "cut as in a one-GPU run), so the records equal a one-GPU run's bit for bit on GPUs of one kind. An index may\n"
    "repeat (cuda:0,0: two workers on one GPU).";

bcf_hdr_t* make_output_header(bcf_hdr_t* in, const std::vector<std::string>& lines, const std::string& path) {
  bcf_hdr_t* h = bcf_hdr_dup(in);
  if (!h) throw Error(path + ": cannot copy the VCF header");
  for (const auto& l : lines)
    if (bcf_hdr_append(h, l.c_str()) < 0) {
      bcf_hdr_destroy(h);
      throw Error("cannot add the header line " + l);
    }
  if (bcf_hdr_sync(h) < 0) {
    bcf_hdr_destroy(h);
    throw Error(path + ": cannot update the VCF header");
  }
  // An input scored before keeps its definitions; they must be the ones we write.
  struct Want { const char* id; int type; int vl; };
  for (const Want& w : {Want{"DNAMBA_LLR", BCF_HT_REAL, BCF_VL_A}, Want{"DNAMBA_LLR_FWD", BCF_HT_REAL, BCF_VL_A},
                        Want{"DNAMBA_LLR_REV", BCF_HT_REAL, BCF_VL_A}, Want{"DNAMBA_FLAG", BCF_HT_STR, BCF_VL_VAR}}) {
    const int id = bcf_hdr_id2int(h, BCF_DT_ID, w.id);
    if (!bcf_hdr_idinfo_exists(h, BCF_HL_INFO, id)) continue;
    if (bcf_hdr_id2type(h, BCF_HL_INFO, id) != uint32_t(w.type) || bcf_hdr_id2length(h, BCF_HL_INFO, id) != uint32_t(w.vl)) {
      bcf_hdr_destroy(h);
      throw Error(path + ": the header already defines INFO/" + std::string(w.id) +
                  " differently from dnamba (remove it with bcftools annotate -x INFO/" + w.id + ")");
    }
  }
  return h;
}

}  // namespace

int cmd_score(int argc, char** argv) {
  CommonOptions co;
  co.chunk = int64_t(1) << 14;
  score::ScoreParams prm;
  std::string ref, vcf, out = "-", otype, method = "fast", shard_spec;
  bool no_index = false, no_rc = false;
  int64_t mlm_window = 0;
  po::options_description d("dnamba score options");
  d.add_options()
      ("ref,r", po::value(&ref)->required()->value_name("FASTA"), "reference FASTA, indexed (.fai; bgzip also .gzi)")
      ("vcf,i", po::value(&vcf)->required()->value_name("IN"), "input VCF/BCF (plain, bgzip or BCF; - for stdin)")
      ("output,o", po::value(&out)->default_value("-")->value_name("OUT"), "output file (- for stdout)")
      ("output-type,O", po::value(&otype)->value_name("T"), "z: bgzip VCF, b: BCF, v: VCF, u: uncompressed BCF (default: from the name)")
      ("no-index", po::bool_switch(&no_index), "do not write the .tbi/.csi index")
      ("horizon,H", po::value(&prm.horizon)->default_value(prm.horizon)->value_name("H"), "reference bases after the allele scored on both haplotypes")
      ("context,C", po::value(&prm.context)->default_value(prm.context)->value_name("C"), "bases of context before each segment")
      ("segment,S", po::value(&prm.segment)->default_value(prm.segment)->value_name("S"), "segment length: segments tile each contig every S bases")
      ("no-rc", po::bool_switch(&no_rc), "forward strand only (no reverse-complement averaging)")
      ("method", po::value(&method)->default_value(method)->value_name("M"), "fast (state caching) or naive (both haplotypes from the segment start; reference)")
      ("max-allele-length", po::value(&prm.max_allele_length)->default_value(prm.max_allele_length)->value_name("N"), "longer REF or ALT alleles are flagged TOO_LONG")
      ("batch", po::value(&prm.batch)->default_value(prm.batch)->value_name("N"), "alleles per model call")
      ("batch-tokens", po::value(&prm.batch_tokens)->default_value(prm.batch_tokens)->value_name("N"), "padded positions per model call")
      ("window", po::value(&mlm_window)->value_name("W"), "masked-LM (Caduceus) models: reference bases around each variant (default: the model's training length)")
      ("snapshot-gap", po::value(&prm.snapshot_gap)->default_value(prm.snapshot_gap)->value_name("N"), "fast method: state snapshots at multiples of N bases from the run start (alleles replay < N reference bases; GPU default 32)")
      ("ref-batch", po::value(&prm.ref_batch)->default_value(prm.ref_batch)->value_name("N"), "fast method: reference runs (segment, strand) advanced together in one batch (GPU default 256; > 1 lets scores differ between --shard runs at rounding level)");
  add_shard_option(d, shard_spec);
  d.add(common_options(co, true, true));
  po::variables_map vm;
  if (!parse_or_help(argc, argv, d, kUsage, vm)) return 0;
  if (method == "fast") prm.method = score::Method::Fast;
  else if (method == "naive") prm.method = score::Method::Naive;
  else throw Error("--method must be fast or naive, not '" + method + "'");
  prm.rc = !no_rc;
  prm.chunk = co.chunk;
  if (prm.horizon < 0) throw Error("--horizon must be >= 0");
  if (prm.context < 0) throw Error("--context must be >= 0");
  if (prm.segment < 1) throw Error("--segment must be >= 1");
  if (prm.max_allele_length < 1) throw Error("--max-allele-length must be >= 1");
  if (prm.batch < 1 || prm.batch_tokens < 1 || prm.snapshot_gap < 1 || prm.chunk < 1)
    throw Error("--batch, --batch-tokens, --snapshot-gap and --chunk must be >= 1");
  if (co.model.empty()) co.model = default_model_dir();
  const auto type = io::vcf_output_type(out, otype);
  const Shard shard = shard_spec.empty() ? Shard{} : parse_shard(shard_spec);

  io::FastaReader fasta(ref);
  if (!fasta.indexed())
    throw Error(ref + ": dnamba score needs an indexed FASTA for random access (samtools faidx " + ref +
                "; a compressed FASTA must be bgzip, with .fai and .gzi)");
  const int io_threads = co.threads > 1 ? std::min(co.threads, 4) : 0;
  // --shard: a contiguous block of the records (cli/shard.h), read from a temporary copy.
  std::unique_ptr<VcfShardCopy> shard_copy;
  if (!shard.whole()) shard_copy = std::make_unique<VcfShardCopy>(vcf, shard, prm.segment);
  io::VcfReader in(shard_copy ? shard_copy->path() : vcf, io_threads);
  // One device: its backend, here. Several (--device cuda:0,1): a worker pool, made below.
  const std::vector<std::string> devices = devices_from(co);
  const bool multi = devices.size() > 1;
  std::unique_ptr<Backend> be;
  if (!multi) be = make_backend_for(co, devices[0]);
  std::string cmdline = "dnamba";
  for (int i = 0; i < argc; ++i) cmdline += std::string(" ") + argv[i];
  if (is_caduceus_model(co.model)) {  // masked-LM models: pipeline/caduceus_score
    if (multi)
      throw Error("--device " + co.device + ": several devices are supported for causal models; " + co.model +
                  " is a masked-LM (Caduceus) model (give one device)");
    for (const char* o : {"horizon", "context", "method", "batch", "batch-tokens", "snapshot-gap", "ref-batch"})
      if (vm.count(o) && !vm[o].defaulted()) throw Error(std::string("--") + o + " applies to causal models; " + co.model + " is a masked-LM (Caduceus) model");
    if (vm.count("window") && mlm_window < 1) throw Error("--window must be >= 1");
    CaduceusModel cm(co.model, *be);
    CaduceusScoreParams cp;
    cp.window = mlm_window;
    cp.rc = !no_rc;
    cp.max_allele_length = prm.max_allele_length;
    cp.tokens_per_call = vm["chunk"].defaulted() ? int64_t(1) << 20 : co.chunk;
    const std::string desc = cm.dir() + " (Caduceus " + (cm.rc_equivariant() ? "PS" : "Ph") + ", d_model " +
                             std::to_string(cm.config().d_model) + ", n_layer " + std::to_string(cm.config().n_layer) +
                             "; device " + be->name() + ", compute " + dtype_name(be->compute_dtype()) + ")";
    bcf_hdr_t* h = make_output_header(in.header(), caduceus_score_header_lines(cm, cp, desc, cmdline), vcf);
    struct HFree { bcf_hdr_t* h; ~HFree() { bcf_hdr_destroy(h); } } h_free{h};
    io::VcfWriter w(out, type, h, !no_index, io_threads);
    auto st = score_variants_caduceus(cm, fasta, in, h, w, cp, co.quiet);
    w.close();
    if (!co.quiet) std::cerr << "dnamba score: " << st.summary() << "\n";
    return 0;
  }
  if (vm.count("window")) throw Error("--window applies to masked-LM (Caduceus) models; " + co.model + " is causal");
  if (multi || be->is_gpu()) {  // small model calls are launch-bound on a GPU: batch reference runs and alleles
    if (vm["batch"].defaulted()) prm.batch = 1024;
    if (vm["batch-tokens"].defaulted()) prm.batch_tokens = int64_t(1) << 18;
    if (vm["snapshot-gap"].defaulted()) prm.snapshot_gap = 32;
    if (vm["ref-batch"].defaulted()) prm.ref_batch = 256;
  }
  if (prm.ref_batch < 1) throw Error("--ref-batch must be >= 1");
  std::unique_ptr<ScoreDevicePool> pool;
  std::unique_ptr<MambaLM> one_model;
  if (multi)
    pool = std::make_unique<ScoreDevicePool>(
        devices,
        [&](size_t i) {  // in worker i's thread
          ScoreDevice dev;
          dev.backend = make_backend_for(co, devices[i]);
          dev.model = std::make_unique<MambaLM>(co.model, *dev.backend);
          return dev;
        },
        prm);
  else
    one_model = std::make_unique<MambaLM>(co.model, *be);
  MambaLM& model = multi ? pool->model(0) : *one_model;

  const std::string dev_name = multi ? device_list_name(devices) + " (" + std::to_string(devices.size()) + " workers)"
                                     : be->name();
  const std::string model_desc = model.dir() + " (" + model.config().describe() + "; device " + dev_name +
                                 ", compute " + dtype_name(model.backend().compute_dtype()) + ")";
  bcf_hdr_t* hdr = make_output_header(in.header(), score_header_lines(prm, model_desc, cmdline), vcf);
  struct HdrFree {
    bcf_hdr_t* h;
    ~HdrFree() { bcf_hdr_destroy(h); }
  } hdr_free{hdr};
  io::VcfWriter writer(out, type, hdr, !no_index, io_threads);
  auto stats = multi ? score_variants_streaming(*pool, fasta, in, hdr, writer, prm, co.quiet)
                     : score_variants_streaming(model, fasta, in, hdr, writer, prm, co.quiet);
  writer.close();
  if (!co.quiet) std::cerr << "dnamba score: " << stats.summary() << "\n";
  return 0;
}

}  // namespace dnamba::cli
