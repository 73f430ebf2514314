// VCF/BCF reading and writing through HTSlib, bcftools style: plain, bgzip or BCF in (`-` = stdin);
// output type from -O (v|z|b|u) or the file name; index beside the output (tabix .tbi for bgzip VCF,
// CSI for BCF); written to a temporary name and renamed when complete (see AtomicOutput).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "io/output_file.h"

typedef struct htsFile htsFile;
typedef struct bcf_hdr_t bcf_hdr_t;
typedef struct bcf1_t bcf1_t;

namespace dnamba::io {

enum class VcfOutputType : char { Vcf = 'v', VcfBgzf = 'z', Bcf = 'b', BcfUncompressed = 'u' };

// -O value (v, z, b, u; empty: from the name as bcftools does: .bcf -> b, .vcf.gz/.vcf.bgz/.gz -> z,
// anything else and `-` -> v). A bad -O value -> Error.
VcfOutputType vcf_output_type(const std::string& path, const std::string& type_opt);

// One ALT allele's scores for the DNAMBA_* INFO fields.
struct AlleleScoreInfo {
  const char* flag = nullptr;  // why the allele has no score; nullptr or "." when scored
  double fwd = 0, rev = 0;     // per-strand log-likelihood ratios
};
// Replaces rec's DNAMBA_LLR / _FWD / _REV / DNAMBA_FLAG with one value per ALT (Number=A):
// LLR = (fwd+rev)/2 with both strands, else fwd; unscored alleles get '.', and DNAMBA_FLAG is set
// only when some allele is flagged. A record without ALT gets DNAMBA_FLAG=NO_ALT.
void set_score_info(bcf_hdr_t* hdr, bcf1_t* rec, const std::vector<AlleleScoreInfo>& alleles,
                    bool both_strands);

class VcfReader {
 public:
  // Opens and reads the header; not a VCF/BCF, unreadable or bad header -> Error naming the file.
  explicit VcfReader(const std::string& path, int threads = 0);
  ~VcfReader();
  VcfReader(const VcfReader&) = delete;
  VcfReader& operator=(const VcfReader&) = delete;

  bcf_hdr_t* header() const { return hdr_; }
  // Reads the next record (unpacked through ALT); false at end of file. A malformed record -> Error
  // naming the file, the record number and (for text VCF) the line.
  bool next(bcf1_t* rec);
  // The next record in a new bcf1_t the caller owns (free with bcf_destroy); nullptr at end of file.
  bcf1_t* next_new();
  int64_t records_read() const { return n_; }
  const std::string& path() const { return path_; }
  bool is_text() const;

 private:
  std::string path_;
  htsFile* fp_ = nullptr;
  bcf_hdr_t* hdr_ = nullptr;
  int64_t n_ = 0;
  int64_t header_lines_ = 0;
};

class VcfWriter {
 public:
  // Writes `hdr` at once. index: write .tbi (VcfBgzf) or .csi (Bcf) beside the output; ignored for
  // stdout, plain VCF and uncompressed BCF (not BGZF, so not indexable).
  VcfWriter(const std::string& path, VcfOutputType type, bcf_hdr_t* hdr, bool index, int threads = 0);
  ~VcfWriter();  // without close(): the output and index are discarded
  VcfWriter(const VcfWriter&) = delete;
  VcfWriter& operator=(const VcfWriter&) = delete;

  void write(bcf1_t* rec);
  void close();
  bool is_bcf() const { return type_ == VcfOutputType::Bcf || type_ == VcfOutputType::BcfUncompressed; }
  const std::string& path() const { return out_.final_path(); }
  // The index file name, empty when none is written.
  std::string index_path() const { return idx_ ? idx_->final_path() : std::string(); }

 private:
  AtomicOutput out_;
  std::unique_ptr<AtomicOutput> idx_;
  htsFile* fp_ = nullptr;
  bcf_hdr_t* hdr_;
  VcfOutputType type_;
  bool closed_ = false;
};

}  // namespace dnamba::io
