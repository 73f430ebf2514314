#include "pipeline/caduceus_score.h"

#include <htslib/vcf.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <deque>
#include <memory>
#include <sstream>
#include <unordered_map>

#include "common/progress.h"
#include "model/tokenizer.h"
#include "pipeline/caduceus_track.h"
#include "score/variant_score.h"

namespace dnamba {

namespace {

constexpr const char* kMlmIndel = "MLM_INDEL";

const char* flag_str(score::Flag f) { return score::flag_name(f); }

}  // namespace

std::string CaduceusScoreStats::summary() const {
  std::ostringstream o;
  o << records << " records, " << alleles << " ALT alleles: " << scored << " scored";
  int64_t nflag = 0;
  for (auto& [k, v] : flagged) nflag += v;
  o << ", " << nflag << " flagged";
  std::string sep = " (";
  for (auto& [k, v] : flagged) {
    o << sep << k << " " << v;
    sep = ", ";
  }
  if (nflag) o << ")";
  if (no_alt) o << "; " << no_alt << " records without ALT (NO_ALT)";
  char buf[200];
  std::snprintf(buf, sizeof buf, "; %.2f s, %.1f records/s, %.1f scored alleles/s, %lld masked windows", seconds,
                seconds > 0 ? double(records) / seconds : 0.0, seconds > 0 ? double(scored) / seconds : 0.0,
                static_cast<long long>(queries));
  o << buf;
  return o.str();
}

int64_t caduceus_score_window(const CaduceusModel& m, const CaduceusScoreParams& prm) {
  return prm.window > 0 ? prm.window : caduceus_default_window(m);
}

std::vector<std::string> caduceus_score_header_lines(const CaduceusModel& m, const CaduceusScoreParams& prm,
                                                     const std::string& model_desc, const std::string& command_line) {
  const std::string W = std::to_string(caduceus_score_window(m, prm));
  const bool ps = m.rc_equivariant(), two = !ps && prm.rc;
  const std::string def =
      "ln P(alt) - ln P(ref) at the variant position under the masked-LM (Caduceus) model, the position replaced by "
      "[MASK] in a window of W=" + W + " reference bases centred on the REF allele (shifted inside the contig at its "
      "ends), probabilities renormalised over A,C,G,T; MNPs: the sum over the bases where REF and ALT differ, each "
      "masked on its own with the other bases at the reference";
  std::vector<std::string> l;
  l.push_back("##INFO=<ID=DNAMBA_LLR,Number=A,Type=Float,Description=\"dnamba: " + def +
              (ps ? "; the model (PS) is reverse-complement equivariant, so both strands give this value"
                  : two ? "; mean of the forward strand and the reverse-complement strand (DNAMBA_LLR_FWD, DNAMBA_LLR_REV)"
                        : "; forward strand only") + "\">");
  if (two) {
    l.push_back("##INFO=<ID=DNAMBA_LLR_FWD,Number=A,Type=Float,Description=\"dnamba: DNAMBA_LLR on the forward strand\">");
    l.push_back("##INFO=<ID=DNAMBA_LLR_REV,Number=A,Type=Float,Description=\"dnamba: DNAMBA_LLR on the reverse-complement "
                "strand (the window reverse-complemented, masked at the mirrored position, complemented bases)\">");
  }
  l.push_back("##INFO=<ID=DNAMBA_FLAG,Number=.,Type=String,Description=\"dnamba: why an ALT allele has no DNAMBA_LLR, "
              "one value per ALT ('.' = scored), or NO_ALT for a record without ALT: CONTIG_MISSING, SYMBOLIC, BREAKEND, "
              "SPANNING_DELETION, INVALID_ALLELE, REF_MISMATCH, MLM_INDEL (REF and ALT lengths differ: not scored by a "
              "masked-LM model), TOO_LONG, N_IN_WINDOW\">");
  l.push_back(std::string("##dnamba_scoreVersion=") + DNAMBA_VERSION);
  l.push_back("##dnamba_scoreModel=" + model_desc);
  l.push_back("##dnamba_scoreParameters=method=masked_lm;window=" + W + ";rc=" +
              (ps ? "equivariant" : prm.rc ? "yes" : "no") + ";mnp=sum_of_single_masked_bases;max_allele_length=" +
              std::to_string(prm.max_allele_length));
  l.push_back("##dnamba_scoreCommand=" + command_line);
  return l;
}

namespace {

// The reference around the records (io::ReferenceWindow, blocks from 64 kb before a request) plus,
// per block, prefix counts of the bases other than A,C,G,T.
class RefCache {
 public:
  explicit RefCache(io::FastaReader& r) : win_(r, int64_t(1) << 16) {}
  int64_t length(const std::string& contig) { return win_.length(contig); }
  std::string_view get(const std::string& contig, int64_t beg, int64_t end) {
    const std::string_view v = win_.get(contig, beg, end);
    if (win_.fetches() != counted_) {
      const std::string& seq = win_.block();
      other_.assign(seq.size() + 1, 0);
      for (size_t i = 0; i < seq.size(); ++i) other_[i + 1] = other_[i] + (score::is_acgt(seq[i]) ? 0 : 1);
      counted_ = win_.fetches();
    }
    return v;
  }
  // Whether [beg, end) holds a base other than A,C,G,T (after get() of a range containing it).
  bool has_other(int64_t beg, int64_t end) const {
    const int64_t b0 = win_.block_begin();
    return other_[size_t(end - b0)] != other_[size_t(beg - b0)];
  }

 private:
  io::ReferenceWindow win_;
  std::vector<int64_t> other_;  // other_[i]: bases of the block's [0, i) that are not A,C,G,T
  int64_t counted_ = -1;        // the fetch other_ belongs to
};

struct Site {
  int64_t query = 0;       // index into the batch's query list (forward strand; +1: reverse)
  int32_t ref = 0, alt = 0;  // tokens A..T
};

struct Allele {
  const char* flag = nullptr;  // nullptr: scored
  std::vector<Site> sites;
  double fwd = 0, rev = 0;
};

struct Pending {
  bcf1_t* rec = nullptr;
  std::vector<Allele> alleles;
  bool queued = false;  // has queries in the current batch
  ~Pending() {
    if (rec) bcf_destroy(rec);
  }
};

struct QuerySpec {
  size_t window = 0;  // index into windows_
  int64_t pos = 0;    // masked position within the window (forward strand)
  bool rev = false;
};

class CaduceusScorer {
 public:
  CaduceusScorer(CaduceusModel& m, io::FastaReader& ref, io::VcfReader& in, bcf_hdr_t* hdr, io::VcfWriter& out,
                 const CaduceusScoreParams& prm, bool quiet)
      : m_(m), ref_(ref), in_(in), hdr_(hdr), out_(out), prm_(prm), W_(caduceus_score_window(m, prm)),
        two_(!m.rc_equivariant() && prm.rc), progress_("score", quiet) {
    if (W_ < 1) throw Error("--window must be >= 1");
  }

  CaduceusScoreStats run() {
    const auto t0 = std::chrono::steady_clock::now();
    while (bcf1_t* rec = in_.next_new()) {
      auto p = std::make_unique<Pending>();
      p->rec = rec;
      add_record(std::move(p));
      if (query_tokens_ >= prm_.tokens_per_call || int64_t(fifo_.size()) >= prm_.max_pending_records) run_batch();
      progress_.update(stats_.records, 0, "records");
    }
    run_batch();
    DNAMBA_CHECK(fifo_.empty(), "score: records left unwritten");
    progress_.finish();
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return stats_;
  }

 private:
  std::string where(const bcf1_t* rec) const {
    return in_.path() + ": record " + std::to_string(in_.records_read()) + " (" +
           bcf_hdr_id2name(in_.header(), rec->rid) + ":" + std::to_string(rec->pos + 1) + ")";
  }

  void define_contig(bcf1_t* rec, const std::string& contig) {
    if (bcf_hdr_name2id(hdr_, contig.c_str()) >= 0) return;
    if (out_.is_bcf())
      throw Error(where(rec) + ": contig " + contig + " is not defined in the VCF header; BCF output needs every "
                  "contig in the header (add ##contig lines, e.g. with bcftools reheader --fai, or write VCF)");
    const std::string line = "##contig=<ID=" + contig + ">";
    if (bcf_hdr_append(hdr_, line.c_str()) < 0 || bcf_hdr_sync(hdr_) < 0 ||
        bcf_hdr_name2id(hdr_, contig.c_str()) != rec->rid)
      throw Error(where(rec) + ": contig " + contig + " is not defined in the VCF header (add ##contig lines)");
  }

  void flag(Allele& a, const char* f) {
    a.flag = f;
    ++stats_.flagged[f];
  }

  void add_record(std::unique_ptr<Pending> pr) {
    bcf1_t* rec = pr->rec;
    ++stats_.records;
    const std::string contig = bcf_hdr_id2name(in_.header(), rec->rid);
    if (rec->errcode & BCF_ERR_CTG_UNDEF) define_contig(rec, contig);
    const int n_alt = int(rec->n_allele) - 1;
    if (n_alt <= 0) {
      ++stats_.no_alt;
      push(std::move(pr));
      return;
    }
    stats_.alleles += n_alt;
    pr->alleles.resize(size_t(n_alt));
    const int64_t p = rec->pos, L = win_.length(contig);
    const std::string_view ref_allele = rec->d.allele[0];
    const int64_t lr = int64_t(ref_allele.size());
    const char* ref_flag = nullptr;
    if (L < 0) ref_flag = flag_str(score::Flag::ContigMissing);
    else if (lr == 0) ref_flag = flag_str(score::Flag::InvalidAllele);
    else if (p + lr > L) ref_flag = flag_str(score::Flag::RefMismatch);
    if (!ref_flag) {
      const std::string_view fr = win_.get(contig, p, p + lr);
      for (int64_t i = 0; i < lr; ++i)
        if ((fr[size_t(i)] | 0x20) != (ref_allele[size_t(i)] | 0x20)) ref_flag = flag_str(score::Flag::RefMismatch);
    }
    // The record's window (shared by its ALT alleles), fetched only when an allele needs it.
    const int64_t Wp = L > 0 ? std::min(W_, L) : 0;
    const int64_t b = L > 0 ? std::clamp<int64_t>(p + lr / 2 - W_ / 2, 0, L - Wp) : 0;
    int window_state = 0;  // 0 not fetched, 1 all ACGT, 2 has another base
    std::unordered_map<int64_t, int64_t> site_query;  // position in window -> forward query index
    for (int a = 0; a < n_alt; ++a) {
      Allele& al = pr->alleles[size_t(a)];
      const std::string_view alt = rec->d.allele[a + 1];
      if (L < 0) { flag(al, ref_flag); continue; }
      const score::Flag cf = score::classify_alt(alt);
      if (cf != score::Flag::None) { flag(al, flag_str(cf)); continue; }
      if (ref_flag) { flag(al, ref_flag); continue; }
      if (int64_t(alt.size()) != lr) { flag(al, kMlmIndel); continue; }
      if (lr > prm_.max_allele_length || lr > Wp) { flag(al, flag_str(score::Flag::TooLong)); continue; }
      bool alt_ok = true;
      for (char c : alt) alt_ok = alt_ok && score::is_acgt(c);
      if (window_state == 0) {
        const std::string_view w = win_.get(contig, b, b + Wp);
        window_state = win_.has_other(b, b + Wp) ? 2 : 1;
        if (window_state == 1) {
          auto& wt = windows_.emplace_back();
          tokenize(w, wt.fwd);
          if (two_) wt.rev = caduceus_reverse_complement(m_, wt.fwd.data(), Wp);
        }
      }
      if (window_state == 2 || !alt_ok) { flag(al, flag_str(score::Flag::NInWindow)); continue; }
      ++stats_.scored;
      for (int64_t i = 0; i < lr; ++i) {
        const int32_t rt = base_to_token(ref_allele[size_t(i)]), at = base_to_token(alt[size_t(i)]);
        if (rt == at) continue;
        const int64_t x = p + i - b;  // position in the window
        auto it = site_query.find(x);
        if (it == site_query.end()) {
          it = site_query.emplace(x, int64_t(queries_.size())).first;
          queries_.push_back({windows_.size() - 1, x, false});
          query_tokens_ += Wp;
          if (two_) {
            queries_.push_back({windows_.size() - 1, Wp - 1 - x, true});
            query_tokens_ += Wp;
          }
        }
        al.sites.push_back({it->second, rt, at});
      }
      pr->queued = true;
    }
    push(std::move(pr));
  }

  void push(std::unique_ptr<Pending> pr) {
    fifo_.push_back(std::move(pr));
    if (!fifo_.back()->queued) emit_ready();
  }

  // Writes the records at the front that wait for no model result.
  void emit_ready() {
    while (!fifo_.empty() && !fifo_.front()->queued) {
      annotate(*fifo_.front());
      out_.write(fifo_.front()->rec);
      fifo_.pop_front();
    }
  }

  void run_batch() {
    if (!queries_.empty()) {
      std::vector<MaskedQuery> q(queries_.size());
      for (size_t i = 0; i < queries_.size(); ++i) {
        const auto& w = windows_[queries_[i].window];
        const auto& t = queries_[i].rev ? w.rev : w.fwd;
        q[i] = MaskedQuery{t.data(), int64_t(t.size()), queries_[i].pos};
      }
      lp_.resize(q.size() * 4);
      caduceus_masked_acgt(m_, q, false, prm_.tokens_per_call, lp_.data());
      stats_.queries += int64_t(q.size());
      for (auto& pr : fifo_) {
        if (!pr->queued) continue;
        for (Allele& a : pr->alleles) {
          if (a.flag) continue;
          for (const Site& s : a.sites) {
            const float* f = lp_.data() + s.query * 4;
            a.fwd += double(f[s.alt - kTokA]) - double(f[s.ref - kTokA]);
            if (two_) {
              const float* r = lp_.data() + (s.query + 1) * 4;
              a.rev += double(r[complement_token(s.alt) - kTokA]) - double(r[complement_token(s.ref) - kTokA]);
            }
          }
        }
        pr->queued = false;
      }
    }
    queries_.clear();
    windows_.clear();
    query_tokens_ = 0;
    emit_ready();
  }

  void annotate(Pending& pr) {
    std::vector<io::AlleleScoreInfo> info;
    for (const Allele& a : pr.alleles) info.push_back({a.flag, a.fwd, a.rev});
    io::set_score_info(hdr_, pr.rec, info, two_);
  }


  struct WindowTokens {
    std::vector<int32_t> fwd, rev;
  };

  CaduceusModel& m_;
  io::FastaReader& ref_;
  RefCache win_{ref_};
  io::VcfReader& in_;
  bcf_hdr_t* hdr_;
  io::VcfWriter& out_;
  CaduceusScoreParams prm_;
  int64_t W_;
  bool two_;
  Progress progress_;
  CaduceusScoreStats stats_;
  std::deque<std::unique_ptr<Pending>> fifo_;
  std::deque<WindowTokens> windows_;
  std::vector<QuerySpec> queries_;
  int64_t query_tokens_ = 0;
  std::vector<float> lp_;
};

}  // namespace

CaduceusScoreStats score_variants_caduceus(CaduceusModel& m, io::FastaReader& ref, io::VcfReader& in,
                                           bcf_hdr_t* out_hdr, io::VcfWriter& out, const CaduceusScoreParams& prm,
                                           bool quiet) {
  if (!ref.indexed())
    throw Error(ref.path() + ": dnamba score needs an indexed FASTA for random access (run samtools faidx " +
                ref.path() + "; a gzip FASTA must be bgzip-compressed, with its .fai and .gzi)");
  if (prm.tokens_per_call < 1 || prm.max_pending_records < 1) throw Error("score: batch sizes must be >= 1");
  CaduceusScorer s(m, ref, in, out_hdr, out, prm, quiet);
  return s.run();
}

}  // namespace dnamba
