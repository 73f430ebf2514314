#include "io/reads.h"

#include <htslib/hts.h>
#include <htslib/sam.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace dnamba::io {

int parse_sam_flags(const std::string& s, const std::string& option) {
  int v = s.empty() ? -1 : bam_str2flag(s.c_str());
  if (v < 0 || v > 0xffff)
    throw Error(option + " '" + s + "': not a SAM flag value (a number such as 0x900, or names such as SECONDARY,SUPPLEMENTARY)");
  return v;
}

struct ReadsReader::Impl {
  htsFile* fp = nullptr;
  sam_hdr_t* hdr = nullptr;
  bam1_t* b = nullptr;
  ~Impl() {
    if (b) bam_destroy1(b);
    if (hdr) sam_hdr_destroy(hdr);
    if (fp) hts_close(fp);
  }
};

ReadsReader::ReadsReader(const std::string& path, const std::string& ref, const ReadFilter& filter, int threads)
    : impl_(std::make_unique<Impl>()), path_(path), filter_(filter) {
  impl_->fp = hts_open(path.c_str(), "r");
  if (!impl_->fp) throw Error(path + ": cannot open: " + std::strerror(errno));
  const htsFormat* fmt = hts_get_format(impl_->fp);
  if (fmt->category != sequence_data || (fmt->format != sam && fmt->format != bam && fmt->format != cram))
    throw Error(path + ": not a SAM, BAM or CRAM file (found " + std::string(hts_format_description(fmt)) + ")");
  cram_ = fmt->format == cram;
  if (cram_) {
    if (ref.empty())
      throw Error(path + ": a CRAM file needs its reference: give it with --ref FASTA (the reads are stored as differences to it)");
    if (hts_set_fai_filename(impl_->fp, ref.c_str()) != 0)
      throw Error(path + ": cannot use reference " + ref + " for CRAM decoding (is it a FASTA with a .fai index?)");
  }
  if (threads > 1) hts_set_threads(impl_->fp, threads);
  impl_->hdr = sam_hdr_read(impl_->fp);
  if (!impl_->hdr) throw Error(path + ": cannot read the SAM/BAM/CRAM header");
  for (int i = 0; i < sam_hdr_nref(impl_->hdr); ++i) contigs_.emplace_back(sam_hdr_tid2name(impl_->hdr, i));
  impl_->b = bam_init1();
}

ReadsReader::~ReadsReader() = default;

bool ReadsReader::next(ReadRecord& r) {
  bam1_t* b = impl_->b;
  for (;;) {
    int ret = sam_read1(impl_->fp, impl_->hdr, b);
    if (ret == -1) return false;
    if (ret < -1)
      throw Error(path_ + ": cannot read record " + std::to_string(n_records_ + 1) +
                  (cram_ ? " (truncated or corrupt file, or a reference that does not match the CRAM)" : " (truncated or corrupt file)"));
    ++n_records_;
    const uint16_t flag = b->core.flag;
    if ((flag & filter_.include_flags) != filter_.include_flags) {
      ++n_missing_include_;
      continue;
    }
    if (flag & filter_.exclude_flags) {
      ++n_excluded_;
      continue;
    }
    if (int(b->core.qual) < filter_.min_mapq) {
      ++n_low_mapq_;
      continue;
    }
    break;
  }
  ++n_kept_;
  r.name = bam_get_qname(b);
  r.flag = b->core.flag;
  r.mapq = b->core.qual;
  r.record = n_records_;
  const bool mapped = !(r.flag & BAM_FUNMAP) && b->core.tid >= 0;
  r.tid = mapped ? b->core.tid : -1;
  r.ref_start = mapped ? b->core.pos : -1;
  r.ref_end = mapped ? bam_endpos(b) : -1;
  const int64_t n = b->core.l_qseq;
  if (n <= 0)
    throw Error(path_ + ": read '" + r.name + "' (record " + std::to_string(n_records_) +
                ", flag " + std::to_string(r.flag) + ") has no sequence (SEQ is '*'); embedding needs the read bases");
  const uint8_t* s = bam_get_seq(b);
  r.seq.resize(size_t(n));
  if (r.reverse()) {
    // 4-bit codes are one bit per base (A=1 C=2 G=4 T=8): the complement reverses the bit order.
    for (int64_t i = 0; i < n; ++i) {
      int c = bam_seqi(s, n - 1 - i);
      int rc = ((c & 1) << 3) | ((c & 2) << 1) | ((c & 4) >> 1) | ((c & 8) >> 3);
      r.seq[size_t(i)] = seq_nt16_str[rc];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) r.seq[size_t(i)] = seq_nt16_str[bam_seqi(s, i)];
  }
  return true;
}

std::string ReadsReader::filter_summary() const {
  std::string s = std::to_string(n_records_) + " records read, " + std::to_string(n_kept_) + " kept";
  if (n_missing_include_) s += ", " + std::to_string(n_missing_include_) + " without all --include-flags";
  if (n_excluded_)
    s += ", " + std::to_string(n_excluded_) + " with --exclude-flags 0x" +
         [&] { char b[16]; std::snprintf(b, sizeof b, "%x", filter_.exclude_flags); return std::string(b); }() +
         (filter_.exclude_flags == 0x900 ? " (secondary/supplementary; default: primary alignments only)" : "");
  if (n_low_mapq_) s += ", " + std::to_string(n_low_mapq_) + " below --min-mapq " + std::to_string(filter_.min_mapq);
  return s;
}

}  // namespace dnamba::io
