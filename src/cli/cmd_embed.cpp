// dnamba embed: hidden states of a model layer over a reference or over reads, to Zarr or npy.
#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>

#include "cli/common.h"
#include "cli/shard.h"
#include "io/fasta.h"
#include "io/npy.h"
#include "io/reads.h"
#include "io/region.h"
#include "io/zarr.h"
#include "model/caduceus.h"
#include "model/mamba_lm.h"
#include "pipeline/caduceus_embed.h"
#include "pipeline/caduceus_track.h"
#include "pipeline/embed_stream.h"

namespace dnamba::cli {

namespace {

const char* kUsage =
    "Usage: dnamba embed --ref FASTA [--region chr:beg-end ...] [--regions-file BED] -o OUT.zarr|OUT.npy\n"
    "       dnamba embed --reads BAM|CRAM|SAM [--ref FASTA (CRAM)] -o OUT.zarr|OUT.npy\n"
    "                    [--layer K] [--pool none|mean|window:W[:S]] [--out-dtype float32|float16]\n\n"
    "Hidden states of one layer of the model, per base or pooled, for every contig of a FASTA (or its\n"
    "regions), or for every read of a SAM/BAM/CRAM file in the orientation it was sequenced in.\n"
    "The model reads each contig, region or read from its start (causal: a base's vector depends on the\n"
    "bases before it in the same contig/region/read).\n\n"
    "  --layer K   0..n_layer as Hugging Face output_hidden_states: 0 = token embeddings, K = residual\n"
    "              stream after K blocks, n_layer (default, also 'last' or -1) = after the final norm.\n"
    "  --pool      none: one row per base; mean: one row per contig/region/read;\n"
    "              window:W[:S]: means over windows of W bases starting every S bases (default S = W)\n"
    "              from each contig/region/read start; the last windows may be shorter (bedtools\n"
    "              makewindows). Regions and reads are pooled separately.\n"
    "Reads: primary alignments by default (--exclude-flags 0x900); --include-flags/--exclude-flags/\n"
    "--min-mapq select records as samtools view -f/-F/-q do. Unaligned BAM works.\n\n"
    "Output .zarr (Zarr v2, zstd chunks; written chunk by chunk):\n"
    "  embedding [n, d_model]   float32 or float16\n"
    "  contig [n] int32         index into the 'contigs' list of the store attributes (-1: unaligned read)\n"
    "  start, end [n] int64     FASTA: 0-based half-open genomic coordinates;\n"
    "                           reads: positions in the read, in sequenced orientation\n"
    "  strand [n] |S1           '+' (FASTA); reads: strand of the alignment, '.' when unaligned\n"
    "  reads only: read [n] int64 (index into the per-read arrays) and per read: read_name, read_length,\n"
    "  read_flag, read_mapq, read_contig, read_ref_start, read_ref_end (-1 when unaligned)\n"
    "Output .npy: the embedding matrix only, rows in the same order (refused above --max-npy-rows).\n\n"
    "Masked-LM (Caduceus) models (pipeline/caduceus_embed.h) see each base from both sides: inputs longer than\n"
    "--window (default the model's training length) run as windows overlapping by --overlap (default window/4),\n"
    "each base taken from the window where it is farthest from an edge; reads of equal length run together\n"
    "(--batch, default 8 on CPU, 256 on GPU; never padded). --rc-average\n"
    "(default; --no-rc-average to turn off): PS = mean of the forward half and the channel-reversed RC half,\n"
    "Ph = mean of the forward pass and the mirrored reverse-complement pass; rows are d_model wide. Only the\n"
    "last layer (after the final norm) is available for them: another --layer is an error.";

bool ends_with(const std::string& s, const std::string& suf) {
  return s.size() >= suf.size() && s.compare(s.size() - suf.size(), suf.size(), suf) == 0;
}

int64_t resolve_layer(const std::string& s, int64_t n_layer) {
  if (s == "last") return n_layer;
  int64_t k;
  try {
    size_t used = 0;
    k = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
  } catch (const std::exception&) {
    throw Error("--layer '" + s + "': expected an integer in 0.." + std::to_string(n_layer) + ", a negative index, or 'last'");
  }
  if (k < 0) k += n_layer + 1;
  if (k < 0 || k > n_layer)
    throw Error("--layer " + s + ": the model has " + std::to_string(n_layer) + " layers; use 0.." +
                std::to_string(n_layer) + " (0 = embeddings, " + std::to_string(n_layer) + " = after the final norm)");
  return k;
}

// Rows of a segment of `len` bases under `pool`.
int64_t pooled_rows(const EmbedPooling& p, int64_t len) {
  if (len <= 0) return 0;
  switch (p.kind) {
    case EmbedPooling::Kind::None: return len;
    case EmbedPooling::Kind::Mean: return 1;
    case EmbedPooling::Kind::Window: return (len + p.step - 1) / p.step;
  }
  return 0;
}

// The output: a Zarr store (embedding + coordinates + per-read arrays) or an npy matrix.
class EmbedOutput {
 public:
  EmbedOutput(const std::string& path, bool f16, int64_t d, bool reads, int64_t chunk_rows, int zstd_level,
              int64_t max_npy_rows)
      : f16_(f16), d_(d), reads_(reads) {
    const std::string dt = f16 ? "<f2" : "<f4";
    if (ends_with(path, ".npy")) {
      npy_.emplace(path, dt, d, max_npy_rows);
      return;
    }
    std::string p = path;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    if (!ends_with(p, ".zarr")) throw Error(path + ": the output must end in .zarr (a Zarr v2 store) or .npy");
    const size_t row_bytes = size_t(d) * (f16 ? 2 : 4);
    if (chunk_rows <= 0) chunk_rows = std::clamp<int64_t>(int64_t((size_t(2) << 20) / row_bytes), 256, 1 << 16);
    zarr_.emplace(p, zstd_level);
    auto row_dims = nlohmann::json{{"_ARRAY_DIMENSIONS", {"row", "feature"}}};
    zarr_->add_array("embedding", dt, d, chunk_rows).attrs = row_dims;
    for (auto [name, type] : std::vector<std::pair<const char*, const char*>>{
             {"contig", "<i4"}, {"start", "<i8"}, {"end", "<i8"}, {"strand", "|S1"}})
      zarr_->add_array(name, type, 0, chunk_rows).attrs = {{"_ARRAY_DIMENSIONS", {"row"}}};
    if (reads) {
      zarr_->add_array("read", "<i8", 0, chunk_rows).attrs = {{"_ARRAY_DIMENSIONS", {"row"}}};
      for (auto [name, type] : std::vector<std::pair<const char*, const char*>>{
               {"read_length", "<i8"}, {"read_flag", "<i4"}, {"read_mapq", "<i4"}, {"read_contig", "<i4"},
               {"read_ref_start", "<i8"}, {"read_ref_end", "<i8"}})
        zarr_->add_array(name, type, 0, 1 << 16).attrs = {{"_ARRAY_DIMENSIONS", {"read"}}};
      std::filesystem::create_directories(zarr_->scratch_dir());
      names_path_ = zarr_->scratch_dir() + "/read_names";
      names_.open(names_path_, std::ios::binary);
      if (!names_) throw Error(names_path_ + ": cannot create");
    }
  }

  bool is_zarr() const { return zarr_.has_value(); }
  io::ZarrStoreWriter& store() { return *zarr_; }

  void add_rows(const EmbedRow* rows, const float* v, int64_t n) {
    if (f16_) {
      half_.resize(size_t(n * d_));
      for (size_t i = 0; i < half_.size(); ++i) {
        half_[i] = _Float16(v[i]);
        if (std::isinf(float(half_[i])) && std::isfinite(v[i])) ++f16_overflow_;
      }
      append_embedding(half_.data(), n);
    } else {
      append_embedding(v, n);
    }
    rows_ += n;
    if (!zarr_) return;
    i32_.resize(size_t(n));
    i64_.resize(size_t(n));
    bytes_.resize(size_t(n));
    for (int64_t i = 0; i < n; ++i) i32_[size_t(i)] = rows[i].contig;
    zarr_->array("contig").append(i32_.data(), n);
    for (int64_t i = 0; i < n; ++i) i64_[size_t(i)] = rows[i].start;
    zarr_->array("start").append(i64_.data(), n);
    for (int64_t i = 0; i < n; ++i) i64_[size_t(i)] = rows[i].end;
    zarr_->array("end").append(i64_.data(), n);
    for (int64_t i = 0; i < n; ++i) bytes_[size_t(i)] = rows[i].strand;
    zarr_->array("strand").append(bytes_.data(), n);
    if (reads_) {
      for (int64_t i = 0; i < n; ++i) i64_[size_t(i)] = rows[i].read;
      zarr_->array("read").append(i64_.data(), n);
    }
  }

  void add_read(const io::ReadRecord& r, int64_t len) {
    ++n_reads_;
    if (!zarr_) return;
    auto app32 = [&](const char* a, int32_t v) { zarr_->array(a).append(&v, 1); };
    auto app64 = [&](const char* a, int64_t v) { zarr_->array(a).append(&v, 1); };
    app64("read_length", len);
    app32("read_flag", r.flag);
    app32("read_mapq", r.mapq);
    app32("read_contig", r.tid);
    app64("read_ref_start", r.ref_start);
    app64("read_ref_end", r.ref_end);
    names_ << r.name << '\n';
    max_name_ = std::max(max_name_, r.name.size());
  }

  void commit() {
    if (npy_) {
      npy_->close();
      return;
    }
    if (reads_) {
      // Names are fixed-width bytes, so their width is known only now: they were spooled to a file.
      names_.close();
      auto& a = zarr_->add_array("read_name", "|S" + std::to_string(std::max<size_t>(max_name_, 1)), 0, 1 << 16);
      a.attrs = {{"_ARRAY_DIMENSIONS", {"read"}}};
      std::ifstream in(names_path_, std::ios::binary);
      std::string line, rec;
      while (std::getline(in, line)) {
        rec.assign(a.row_bytes(), '\0');
        rec.replace(0, line.size(), line);
        a.append(rec.data(), 1);
      }
      DNAMBA_CHECK(a.rows() == n_reads_, "embed: read name spool is short");
    }
    zarr_->attrs["rows"] = rows_;
    if (reads_) zarr_->attrs["reads"] = n_reads_;
    zarr_->commit();
  }

  int64_t rows() const { return rows_; }
  int64_t f16_overflow() const { return f16_overflow_; }

 private:
  void append_embedding(const void* p, int64_t n) {
    if (npy_) npy_->append(p, n);
    else zarr_->array("embedding").append(p, n);
  }

  bool f16_;
  int64_t d_;
  bool reads_;
  std::optional<io::NpyWriter> npy_;
  std::optional<io::ZarrStoreWriter> zarr_;
  std::string names_path_;
  std::ofstream names_;
  size_t max_name_ = 0;
  int64_t rows_ = 0, n_reads_ = 0, f16_overflow_ = 0;
  std::vector<_Float16> half_;
  std::vector<int32_t> i32_;
  std::vector<int64_t> i64_;
  std::vector<char> bytes_;
};

}  // namespace

int cmd_embed(int argc, char** argv) {
  CommonOptions co;
  std::string ref, reads, out, regions_file, layer_s = "last", pool_s = "none", out_dtype = "float32";
  std::string shard_spec;
  std::string include_s = "0", exclude_s = "0x900";
  std::vector<std::string> regions;
  int min_mapq = 0, zstd_level = 3;
  int64_t max_npy_rows = 1000000, chunk_rows = 0, batch = 0, mlm_window = 0, mlm_overlap = -1;
  bool rc_avg_on = false, rc_avg_off = false;
  po::options_description d("dnamba embed options");
  d.add_options()
      ("ref,r", po::value(&ref)->value_name("FASTA"), "reference FASTA to embed; with --reads: the reference of a CRAM")
      ("reads", po::value(&reads)->value_name("FILE"), "embed the reads of a SAM, BAM or CRAM file instead")
      ("region", po::value(&regions)->composing()->value_name("REG"), "chr, chr:beg or chr:beg-end (1-based inclusive); repeatable")
      ("regions-file,R", po::value(&regions_file)->value_name("BED"), "regions from a BED file (0-based half-open)")
      ("output,o", po::value(&out)->required()->value_name("OUT"), "OUT.zarr (Zarr v2 store) or OUT.npy")
      ("layer", po::value(&layer_s)->default_value("last")->value_name("K"), "layer 0..n_layer (see above); negative counts from the end")
      ("pool", po::value(&pool_s)->default_value("none")->value_name("P"), "none, mean or window:W[:S]")
      ("out-dtype", po::value(&out_dtype)->default_value("float32")->value_name("T"), "float32 or float16")
      ("min-mapq", po::value(&min_mapq)->default_value(0)->value_name("Q"), "reads: skip records with MAPQ < Q")
      ("include-flags,f", po::value(&include_s)->default_value("0")->value_name("F"), "reads: keep records with all bits of F (samtools -f)")
      ("exclude-flags,F", po::value(&exclude_s)->default_value("0x900")->value_name("F"), "reads: skip records with any bit of F (samtools -F); default: secondary, supplementary")
      ("batch", po::value(&batch)->default_value(0)->value_name("N"), "reads per model call (0: 1 on CPU, 64 on GPU); results do not depend on it")
      ("max-npy-rows", po::value(&max_npy_rows)->default_value(max_npy_rows)->value_name("N"), "refuse .npy outputs with more rows")
      ("chunk-rows", po::value(&chunk_rows)->default_value(0)->value_name("N"), "Zarr rows per chunk (0: about 2 MiB of embedding per chunk)")
      ("window", po::value(&mlm_window)->value_name("W"), "masked-LM (Caduceus) models: window length (default: the model's training length)")
      ("overlap", po::value(&mlm_overlap)->value_name("O"), "masked-LM models: overlap of consecutive windows (default: window/4)")
      ("rc-average", po::bool_switch(&rc_avg_on), "masked-LM models: average both strands (the default)")
      ("no-rc-average", po::bool_switch(&rc_avg_off), "masked-LM models: forward strand only")
      ("zstd-level", po::value(&zstd_level)->default_value(3)->value_name("L"), "Zarr zstd compression level");
  add_shard_option(d, shard_spec);
  d.add(common_options(co, true));
  po::variables_map vm;
  if (!parse_or_help(argc, argv, d, kUsage, vm)) return 0;

  const bool from_reads = !reads.empty();
  if (!from_reads && ref.empty()) throw Error("give --ref FASTA or --reads BAM/CRAM/SAM (see --help)");
  if (from_reads && (!regions.empty() || !regions_file.empty()))
    throw Error("--region/--regions-file select parts of a reference; they do not apply to --reads");
  if (co.chunk < 0) throw Error("--chunk must be positive");
  if (out_dtype != "float32" && out_dtype != "float16") throw Error("--out-dtype must be float32 or float16, not '" + out_dtype + "'");
  if (batch < 0) throw Error("--batch must be >= 0");
  if (min_mapq < 0 || min_mapq > 255) throw Error("--min-mapq must be in 0..255");
  if (max_npy_rows < 1) throw Error("--max-npy-rows must be >= 1");
  const EmbedPooling pool = parse_pooling(pool_s);
  io::ReadFilter filter;
  filter.include_flags = io::parse_sam_flags(include_s, "--include-flags");
  filter.exclude_flags = io::parse_sam_flags(exclude_s, "--exclude-flags");
  filter.min_mapq = min_mapq;
  if (co.model.empty()) co.model = default_model_dir();

  // Open inputs before the model so that bad inputs fail fast.
  std::optional<io::FastaReader> fasta;
  std::optional<io::ReadsReader> bam;
  std::vector<std::string> contigs;
  std::map<std::string, int32_t> contig_ids;
  int64_t expected_rows = -1;  // known up front for an indexed FASTA
  bool empty_shard = false;
  if (from_reads && !shard_spec.empty()) throw Error("--shard splits a --ref FASTA's contigs/regions; it does not apply to --reads");
  if (from_reads) {
    bam.emplace(reads, ref, filter);
    contigs = bam->contig_names();
  } else {
    fasta.emplace(ref);
    std::vector<io::Region> regs;
    for (auto& r : regions)
      regs.push_back(io::parse_region(r, [&](const std::string& name) { return fasta->contig_length(name) >= 0; }));
    if (!regions_file.empty()) {
      auto b = io::read_bed(regions_file);
      regs.insert(regs.end(), b.begin(), b.end());
    }
    // --shard: whole segments (cli/shard.h); an empty shard writes an empty store.
    if (!shard_spec.empty()) {
      const Shard shard = parse_shard(shard_spec);
      if (!shard.whole()) {
        regs = shard_segments(resolve_segments(*fasta, regs), shard);
        empty_shard = regs.empty();
      }
    }
    if (!regs.empty()) fasta->set_regions(regs);
    for (auto& c : fasta->contigs()) {
      contig_ids.emplace(c.name, int32_t(contigs.size()));
      contigs.push_back(c.name);
    }
    if (fasta->indexed()) {
      expected_rows = 0;
      if (regs.empty() && !empty_shard)
        for (auto& c : fasta->contigs()) expected_rows += pooled_rows(pool, c.length);
      else
        for (auto& r : regs) expected_rows += pooled_rows(pool, (r.end < 0 ? fasta->contig_length(r.contig) : r.end) - r.beg);
    }
  }
  if (ends_with(out, ".npy") && expected_rows > max_npy_rows)
    throw Error(out + ": the output would have " + std::to_string(expected_rows) + " rows, more than --max-npy-rows " +
                std::to_string(max_npy_rows) + "; write .zarr instead (or raise the limit)");

  auto be = make_backend_from(co);
  co.chunk = auto_chunk(co.chunk, be->is_gpu());
  // Masked-LM (Caduceus) models run windowed through pipeline/caduceus_embed; causal ones stream.
  std::optional<CaduceusModel> cad;
  std::optional<MambaLM> causal;
  const bool mlm = is_caduceus_model(co.model);
  if (!mlm && (vm.count("window") || vm.count("overlap") || rc_avg_on || rc_avg_off))
    throw Error("--window, --overlap and --rc-average/--no-rc-average apply to masked-LM (Caduceus) models; " + co.model + " is causal");
  if (rc_avg_on && rc_avg_off) throw Error("give --rc-average or --no-rc-average, not both");
  if (mlm) cad.emplace(co.model, *be);
  else causal.emplace(co.model, *be);
  const ModelConfig& mcfg = cad ? cad->config() : causal->config();
  const int64_t D = mcfg.d_model;
  EmbedOptions eo;
  eo.chunk = co.chunk;
  eo.layer = resolve_layer(layer_s, mcfg.n_layer);
  if (cad && eo.layer != mcfg.n_layer)
    throw Error("--layer " + layer_s + ": masked-LM (Caduceus) models give the last layer only (--layer last, -1 or " +
                std::to_string(mcfg.n_layer) + ": after the final norm)");
  CaduceusEmbedOptions ceo;
  ceo.window = mlm_window;
  ceo.overlap = mlm_overlap;
  ceo.rc_average = !rc_avg_off;
  ceo.pool = pool;
  ceo.quiet = co.quiet;
  ceo.max_batch = batch > 0 ? batch : (be->is_gpu() ? 256 : 8);
  ceo.tokens_per_call = co.chunk;
  if (cad) {
    if (vm.count("window") && mlm_window < 1) throw Error("--window must be >= 1");
    if (vm.count("overlap") && mlm_overlap < 0) throw Error("--overlap must be >= 0");
    ceo.window = mlm_window > 0 ? mlm_window : caduceus_default_window(*cad);
    ceo.overlap = mlm_overlap >= 0 ? mlm_overlap : caduceus_default_overlap(ceo.window);
    if (ceo.overlap >= ceo.window)
      throw Error("--overlap (" + std::to_string(ceo.overlap) + ") must be smaller than --window (" + std::to_string(ceo.window) + ")");
  }
  eo.pool = pool;
  eo.max_batch = batch > 0 ? batch : (be->is_gpu() ? 64 : 1);
  eo.quiet = co.quiet;

  EmbedOutput output(out, out_dtype == "float16", D, from_reads, chunk_rows, zstd_level, max_npy_rows);
  EmbedSink sink = [&](const EmbedRow* rows, const float* v, int64_t n) { output.add_rows(rows, v, n); };
  EmbedStats st;
  if (from_reads) {
    auto on_read = [&](const io::ReadRecord& r, int64_t) { output.add_read(r, int64_t(r.seq.size())); };
    st = cad ? caduceus_embed_reads(*cad, *bam, ceo, sink, on_read) : embed_reads(*causal, *bam, eo, sink, on_read);
    if (st.segments == 0)
      throw Error(reads + ": no reads to embed: " + bam->filter_summary());
  } else {
    auto contig_index = [&](const std::string& name) {
      auto [it, added] = contig_ids.emplace(name, int32_t(contigs.size()));
      if (added) contigs.push_back(name);  // an unindexed FASTA: contigs as they come
      return it->second;
    };
    if (!empty_shard)
      st = cad ? caduceus_embed_fasta(*cad, *fasta, contig_index, ceo, sink) : embed_fasta(*causal, *fasta, contig_index, eo, sink);
    if (st.rows == 0 && !empty_shard) throw Error(ref + ": nothing to embed (no bases in the selected contigs/regions)");
  }
  if (output.is_zarr()) {
    auto& a = output.store().attrs;
    a["dnamba_version"] = DNAMBA_VERSION;
    a["input"] = from_reads ? reads : ref;
    a["input_type"] = from_reads ? "reads" : "fasta";
    a["model"] = co.model;
    a["d_model"] = D;
    a["n_layer"] = mcfg.n_layer;
    a["layer"] = eo.layer;
    if (cad) {
      a["model_type"] = std::string("caduceus_") + (cad->rc_equivariant() ? "ps" : "ph");
      a["rc_average"] = ceo.rc_average;
      a["window"] = ceo.window;
      a["overlap"] = ceo.overlap;
    }
    a["layer_meaning"] = eo.layer == mcfg.n_layer ? "after the final norm"
                         : eo.layer == 0 ? "token embeddings"
                         : "residual stream after " + std::to_string(eo.layer) + " blocks";
    a["pool"] = pool.str();
    a["out_dtype"] = out_dtype;
    a["contigs"] = contigs;
    a["coordinates"] = from_reads ? "start/end: 0-based half-open positions in the read, sequenced orientation"
                                  : "start/end: 0-based half-open genomic positions";
    if (from_reads) {
      a["include_flags"] = filter.include_flags;
      a["exclude_flags"] = filter.exclude_flags;
      a["min_mapq"] = filter.min_mapq;
    }
  }
  output.commit();
  if (output.f16_overflow() > 0)
    std::cerr << "dnamba embed: warning: " << output.f16_overflow()
              << " values were outside the float16 range and were written as +-inf (use --out-dtype float32)\n";
  if (!co.quiet)
    std::cerr << "dnamba embed: " << st.segments << (from_reads ? " reads, " : " sequences, ") << st.bases << " bases, "
              << output.rows() << " rows x " << D << " -> " << out << "\n";
  return 0;
}

}  // namespace dnamba::cli
