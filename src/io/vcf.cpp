#include "io/vcf.h"

#include <new>
#include <string_view>

#include <htslib/hts.h>
#include <htslib/kstring.h>
#include <htslib/vcf.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace dnamba::io {

namespace {
bool ends_with(const std::string& s, const char* suf) {
  size_t n = std::strlen(suf);
  return s.size() >= n && s.compare(s.size() - n, n, suf) == 0;
}
}  // namespace

VcfOutputType vcf_output_type(const std::string& path, const std::string& t) {
  if (!t.empty()) {
    if (t == "v") return VcfOutputType::Vcf;
    if (t == "z") return VcfOutputType::VcfBgzf;
    if (t == "b") return VcfOutputType::Bcf;
    if (t == "u") return VcfOutputType::BcfUncompressed;
    throw Error("bad --output-type '" + t + "' (expected v, z, b or u)");
  }
  if (ends_with(path, ".bcf")) return VcfOutputType::Bcf;
  if (ends_with(path, ".gz") || ends_with(path, ".bgz")) return VcfOutputType::VcfBgzf;
  return VcfOutputType::Vcf;
}

VcfReader::VcfReader(const std::string& path, int threads) : path_(path) {
  fp_ = hts_open(path.c_str(), "r");
  if (!fp_) throw Error(path + ": cannot open VCF/BCF: " + std::strerror(errno));
  const htsFormat* f = hts_get_format(fp_);
  if (f->category != variant_data || (f->format != vcf && f->format != bcf)) {
    hts_close(fp_);
    throw Error(path + ": not a VCF or BCF file");
  }
  if (threads > 1) hts_set_threads(fp_, threads);
  hdr_ = bcf_hdr_read(fp_);
  if (!hdr_) {
    hts_close(fp_);
    throw Error(path + ": cannot read the VCF header");
  }
  if (f->format == vcf && path != "-") {  // for error messages: record n is on line header_lines_ + n
    if (htsFile* h = hts_open(path.c_str(), "r")) {
      kstring_t s = KS_INITIALIZE;
      while (hts_getline(h, '\n', &s) >= 0 && s.l > 0 && s.s[0] == '#') ++header_lines_;
      ks_free(&s);
      hts_close(h);
    }
  }
}

VcfReader::~VcfReader() {
  if (hdr_) bcf_hdr_destroy(hdr_);
  if (fp_) hts_close(fp_);
}

bool VcfReader::is_text() const { return hts_get_format(fp_)->format == vcf; }

bcf1_t* VcfReader::next_new() {
  bcf1_t* rec = bcf_init();
  if (!rec) throw std::bad_alloc();
  try {
    if (next(rec)) return rec;
  } catch (...) {
    bcf_destroy(rec);
    throw;
  }
  bcf_destroy(rec);
  return nullptr;
}

bool VcfReader::next(bcf1_t* rec) {
  const int r = bcf_read(fp_, hdr_, rec);
  if (r == -1 && rec->errcode == 0) return false;
  ++n_;
  auto where = [&] {
    std::string w = path_ + ": record " + std::to_string(n_);
    if (is_text()) {
      if (header_lines_ > 0) w += " (line " + std::to_string(header_lines_ + n_) + ")";
      if (fp_->line.s) {
        std::string line(fp_->line.s, std::min<size_t>(fp_->line.l, 120));
        if (fp_->line.l > 120) line += "...";
        w += " '" + line + "'";
      }
    }
    return w;
  };
  const int bad = rec->errcode & ~BCF_ERR_CTG_UNDEF;
  if (r < -1 || (r == -1 && rec->errcode) || bad) {
    std::string why = "malformed record";
    if (bad & BCF_ERR_TAG_UNDEF) why = "uses an INFO/FORMAT/FILTER tag that the header does not define";
    else if (bad & BCF_ERR_NCOLS) why = "wrong number of columns";
    else if (bad & BCF_ERR_LIMITS) why = "a value is out of range or too large";
    else if (bad & BCF_ERR_CHAR) why = "invalid character";
    else if (bad & BCF_ERR_CTG_INVALID) why = "invalid contig";
    else if (bad & BCF_ERR_TAG_INVALID) why = "invalid tag";
    throw Error(where() + ": " + why);
  }
  if (bcf_unpack(rec, BCF_UN_STR) < 0) throw Error(where() + ": cannot decode the record");
  if (rec->pos < 0) throw Error(where() + ": POS must be >= 1");
  return true;
}

VcfWriter::VcfWriter(const std::string& path, VcfOutputType type, bcf_hdr_t* hdr, bool index, int threads)
    : out_(path), hdr_(hdr), type_(type) {
  const char* mode = "w";
  switch (type) {
    case VcfOutputType::Vcf: mode = "w"; break;
    case VcfOutputType::VcfBgzf: mode = "wz"; break;
    case VcfOutputType::Bcf: mode = "wb"; break;
    case VcfOutputType::BcfUncompressed: mode = "wbu"; break;
  }
  fp_ = hts_open(out_.temp_path().c_str(), mode);
  if (!fp_) throw Error(path + ": cannot create " + out_.temp_path() + ": " + std::strerror(errno));
  const bool indexed = index && !out_.is_stdout() && (type == VcfOutputType::VcfBgzf || type == VcfOutputType::Bcf);
  // Compression threads only without an index: with htslib 1.16 an index built on the fly from a
  // multi-threaded BGZF writer answered region queries wrongly (tested on 2,700 yeast records).
  if (threads > 1 && type != VcfOutputType::Vcf && !indexed) hts_set_threads(fp_, threads);
  if (bcf_hdr_write(fp_, hdr_) < 0) throw Error(path + ": cannot write the VCF header");
  // Only BGZF files can be indexed: plain VCF and uncompressed BCF get no index (as with bcftools).
  if (indexed) {
    const bool tbi = type == VcfOutputType::VcfBgzf;
    idx_ = std::make_unique<AtomicOutput>(path + (tbi ? ".tbi" : ".csi"));
    if (bcf_idx_init(fp_, hdr_, tbi ? 0 : 14, idx_->temp_path().c_str()) < 0)
      throw Error(path + ": cannot start the index " + idx_->final_path());
  }
}

VcfWriter::~VcfWriter() {
  if (fp_) hts_close(fp_);
}

void VcfWriter::write(bcf1_t* rec) {
  if (closed_) throw Error(path() + ": write after close");
  if (bcf_write(fp_, hdr_, rec) < 0)
    throw Error(path() + ": cannot write the record at " + std::string(bcf_hdr_id2name(hdr_, rec->rid)) + ":" +
                std::to_string(rec->pos + 1) + " (disk full? unsorted records cannot be indexed)");
}

void VcfWriter::close() {
  if (closed_) return;
  closed_ = true;
  if (idx_ && bcf_idx_save(fp_) < 0) throw Error(path() + ": cannot write the index " + idx_->final_path());
  htsFile* fp = fp_;
  fp_ = nullptr;
  if (hts_close(fp) < 0) throw Error(path() + ": error finishing the file (disk full?)");
  out_.commit();
  if (idx_) idx_->commit();
}

void set_score_info(bcf_hdr_t* hdr, bcf1_t* rec, const std::vector<AlleleScoreInfo>& alleles,
                    bool both_strands) {
  for (const char* tag : {"DNAMBA_LLR", "DNAMBA_LLR_FWD", "DNAMBA_LLR_REV", "DNAMBA_FLAG"})
    if (bcf_hdr_idinfo_exists(hdr, BCF_HL_INFO, bcf_hdr_id2int(hdr, BCF_DT_ID, tag)))
      bcf_update_info(hdr, rec, tag, nullptr, 0, BCF_HT_REAL);
  if (alleles.empty()) {
    bcf_update_info_string(hdr, rec, "DNAMBA_FLAG", "NO_ALT");
    return;
  }
  const size_t n = alleles.size();
  std::vector<float> llr(n), fwd(n), rev(n);
  std::string flags;
  bool any_scored = false, any_flag = false;
  for (size_t i = 0; i < n; ++i) {
    const AlleleScoreInfo& a = alleles[i];
    const bool scored = !a.flag || std::string_view(a.flag) == ".";
    if (scored) {
      any_scored = true;
      fwd[i] = float(a.fwd);
      rev[i] = float(a.rev);
      llr[i] = both_strands ? float(0.5 * (a.fwd + a.rev)) : float(a.fwd);
    } else {
      any_flag = true;
      bcf_float_set_missing(llr[i]);
      bcf_float_set_missing(fwd[i]);
      bcf_float_set_missing(rev[i]);
    }
    flags += std::string(i ? "," : "") + (scored ? "." : a.flag);
  }
  if (any_scored) {
    bcf_update_info_float(hdr, rec, "DNAMBA_LLR", llr.data(), int(n));
    if (both_strands) {
      bcf_update_info_float(hdr, rec, "DNAMBA_LLR_FWD", fwd.data(), int(n));
      bcf_update_info_float(hdr, rec, "DNAMBA_LLR_REV", rev.data(), int(n));
    }
  }
  if (any_flag) bcf_update_info_string(hdr, rec, "DNAMBA_FLAG", flags.c_str());
}

}  // namespace dnamba::io
