#include "pipeline/variant_stream.h"

#include <htslib/vcf.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <deque>
#include <exception>
#include <iterator>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "backend/device_list.h"
#include "common/progress.h"
#include "model/tokenizer.h"

namespace dnamba {

using score::Flag;
using score::StrandAllele;

std::string VariantStreamStats::summary() const {
  std::ostringstream o;
  o << records << " records, " << alleles << " ALT alleles: " << scored << " scored";
  int64_t nflag = 0;
  for (size_t i = 1; i < flagged.size(); ++i)
    if (Flag(i) != Flag::NoAlt) nflag += flagged[i];
  o << ", " << nflag << " flagged";
  std::string sep = " (";
  for (size_t i = 1; i < flagged.size(); ++i) {
    if (!flagged[i] || Flag(i) == Flag::NoAlt) continue;
    o << sep << score::flag_name(Flag(i)) << " " << flagged[i];
    sep = ", ";
  }
  if (nflag) o << ")";
  if (flagged[size_t(Flag::NoAlt)]) o << "; " << flagged[size_t(Flag::NoAlt)] << " records without ALT (NO_ALT)";
  char buf[200];
  std::snprintf(buf, sizeof buf, "; %.2f s, %.1f records/s, %.1f scored alleles/s, %.3g model positions in %lld model calls",
                seconds, seconds > 0 ? double(records) / seconds : 0.0, seconds > 0 ? double(scored) / seconds : 0.0,
                double(model_tokens), (long long)model_calls);
  o << buf;
  return o.str();
}

std::vector<std::string> score_header_lines(const score::ScoreParams& prm, const std::string& model_desc,
                                            const std::string& command_line) {
  const std::string H = std::to_string(prm.horizon), S = std::to_string(prm.segment), C = std::to_string(prm.context);
  const std::string def =
      "ln P(alt haplotype) - ln P(ref haplotype) under the causal model, summed from the first base where ALT and REF "
      "differ through the H=" + H + " reference bases after the REF allele (the same bases on both haplotypes), each "
      "base conditioned on everything since the start of the variant's segment (segments tile each contig every S=" + S +
      " bases and start C=" + C + " bases before their first base)";
  std::vector<std::string> l;
  l.push_back("##INFO=<ID=DNAMBA_LLR,Number=A,Type=Float,Description=\"dnamba: " + def +
              (prm.rc ? "; mean of the forward strand and the reverse-complement strand (DNAMBA_LLR_FWD, DNAMBA_LLR_REV)"
                      : "; forward strand only") + "\">");
  if (prm.rc) {
    l.push_back("##INFO=<ID=DNAMBA_LLR_FWD,Number=A,Type=Float,Description=\"dnamba: DNAMBA_LLR on the forward strand\">");
    l.push_back("##INFO=<ID=DNAMBA_LLR_REV,Number=A,Type=Float,Description=\"dnamba: DNAMBA_LLR on the reverse-complement "
                "strand, where the model reads right to left: the first differing base from the right, the H bases "
                "before POS, segments ending C bases after their last base\">");
  }
  std::string flags;
  for (size_t i = 1; i < size_t(Flag::kCount); ++i) flags += std::string(i > 1 ? ", " : "") + score::flag_name(Flag(i));
  l.push_back("##INFO=<ID=DNAMBA_FLAG,Number=.,Type=String,Description=\"dnamba: why an ALT allele has no DNAMBA_LLR, "
              "one value per ALT ('.' = scored), or NO_ALT for a record without ALT: " + flags + "\">");
  l.push_back(std::string("##dnamba_scoreVersion=") + DNAMBA_VERSION);
  l.push_back("##dnamba_scoreModel=" + model_desc);
  l.push_back("##dnamba_scoreParameters=horizon=" + H + ";context=" + C + ";segment=" + S + ";rc=" +
              (prm.rc ? "yes" : "no") + ";method=" + (prm.method == score::Method::Fast ? "fast" : "naive") +
              ";max_allele_length=" + std::to_string(prm.max_allele_length));
  l.push_back("##dnamba_scoreCommand=" + command_line);
  return l;
}

namespace {

struct Allele {
  Flag flag = Flag::None;
  StrandAllele fwd, rev;
};

struct Pending {
  bcf1_t* rec = nullptr;
  std::vector<Allele> alleles;  // one per ALT; fixed size once created (groups point into it)
  int64_t jobs_left = 0;
  ~Pending() {
    if (rec) bcf_destroy(rec);
  }
};

struct Group {
  int64_t s = 0;    // run start, strand coordinates
  int64_t end = 0;  // max window end, strand coordinates
  std::vector<StrandAllele*> alleles;
  std::vector<Pending*> owners;
  std::vector<int32_t> seq;  // the strand's reference tokens [s, end), filled when the group is complete
};

// One lockstep batch: complete groups that run in one GroupScorer::score_groups call.
struct Batch {
  std::vector<Group> groups;
  std::vector<score::GroupJob> jobs;  // point into groups
  // Set by the worker that ran it, under the pool's mutex.
  bool done = false;
  std::exception_ptr error;
};


}  // namespace

struct ScoreDevicePool::Impl {
  std::vector<std::string> names;
  score::ScoreParams prm;
  std::vector<std::thread> threads;
  std::mutex mu;  // guards everything below and Batch::done/error
  std::condition_variable work_cv, done_cv;
  std::vector<std::deque<Batch*>> queues;  // per worker, in submission order
  std::vector<MambaLM*> models;
  std::vector<std::exception_ptr> load_errors;
  size_t loaded = 0, next = 0;
  bool stop = false, cancel = false, any_error = false;
  int64_t tokens = 0, calls = 0;

  void worker(size_t i, const ScoreDeviceLoader& load) {
    ScoreDevice dev;
    std::unique_ptr<score::GroupScorer> scorer;
    std::exception_ptr err;
    try {
      dev = load(i);
      DNAMBA_CHECK(dev.model != nullptr, "ScoreDevicePool: the loader returned no model");
      scorer = std::make_unique<score::GroupScorer>(*dev.model, prm);
    } catch (...) {
      err = error_on_device(names[i], std::current_exception());
    }
    {
      std::lock_guard<std::mutex> lk(mu);
      models[i] = dev.model.get();
      load_errors[i] = err;
      ++loaded;
    }
    done_cv.notify_all();
    std::exception_ptr failed = err;  // after a failure this worker runs nothing more
    while (true) {
      Batch* b = nullptr;
      {
        std::unique_lock<std::mutex> lk(mu);
        work_cv.wait(lk, [&] { return stop || !queues[i].empty(); });
        if (queues[i].empty()) break;
        b = queues[i].front();
        queues[i].pop_front();
        if (cancel || failed) {
          b->error = cancel ? nullptr : failed;
          any_error = any_error || b->error;
          b->done = true;
          done_cv.notify_all();
          continue;
        }
      }
      std::exception_ptr e;
      const int64_t t0 = scorer->tokens_run(), c0 = scorer->model_calls();
      try {
        scorer->score_groups(b->jobs);
      } catch (...) {
        e = error_on_device(names[i], std::current_exception());
        failed = e;
      }
      {
        std::lock_guard<std::mutex> lk(mu);
        tokens += scorer->tokens_run() - t0;
        calls += scorer->model_calls() - c0;
        b->error = e;
        any_error = any_error || e;
        b->done = true;
      }
      done_cv.notify_all();
    }
    // Device memory goes in this thread, on its device: scorer, then model, then backend.
    scorer.reset();
    dev.model.reset();
    dev.backend.reset();
  }

  void shut_down() {
    {
      std::lock_guard<std::mutex> lk(mu);
      stop = true;
    }
    work_cv.notify_all();
    for (auto& t : threads)
      if (t.joinable()) t.join();
  }

  // Round robin: batch k of the run goes to worker k mod n.
  void submit(Batch* b) {
    {
      std::lock_guard<std::mutex> lk(mu);
      queues[next].push_back(b);
      next = (next + 1) % queues.size();
    }
    work_cv.notify_all();
  }
};

ScoreDevicePool::ScoreDevicePool(const std::vector<std::string>& names, const ScoreDeviceLoader& load,
                                 const score::ScoreParams& prm)
    : impl_(std::make_unique<Impl>()) {
  DNAMBA_CHECK(!names.empty(), "ScoreDevicePool: no devices");
  Impl& m = *impl_;
  m.names = names;
  m.prm = prm;
  m.queues.resize(names.size());
  m.models.assign(names.size(), nullptr);
  m.load_errors.resize(names.size());
  try {
    for (size_t i = 0; i < names.size(); ++i) m.threads.emplace_back([&m, i, &load] { m.worker(i, load); });
  } catch (...) {
    m.shut_down();  // started workers finish loading (they use `load`) before they stop
    throw;
  }
  {
    std::unique_lock<std::mutex> lk(m.mu);
    m.done_cv.wait(lk, [&] { return m.loaded == names.size(); });
  }
  for (auto& e : m.load_errors)
    if (e) {
      m.shut_down();
      std::rethrow_exception(e);
    }
}

ScoreDevicePool::~ScoreDevicePool() { impl_->shut_down(); }

size_t ScoreDevicePool::size() const { return impl_->names.size(); }

MambaLM& ScoreDevicePool::model(size_t i) {
  DNAMBA_CHECK(i < impl_->models.size() && impl_->models[i], "ScoreDevicePool: no model " + std::to_string(i));
  return *impl_->models[i];
}

namespace {

class Streamer {
 public:
  // Exactly one of model (one device, run in this thread) and pool (several workers).
  Streamer(MambaLM* model, ScoreDevicePool::Impl* pool, io::FastaReader& ref, io::VcfReader& in,
           bcf_hdr_t* out_hdr, io::VcfWriter& out, const score::ScoreParams& prm, bool quiet)
      : ref_(ref), win_(ref, int64_t(1) << 17), in_(in), hdr_(out_hdr), out_(out), prm_(prm), pool_(pool),
        progress_("score", quiet) {
    if (model) scorer_ = std::make_unique<score::GroupScorer>(*model, prm);
    DNAMBA_CHECK((model != nullptr) != (pool != nullptr), "score: one model or one device pool");
  }

  // Batches still on the workers point into this object: stop them and wait (after an error).
  ~Streamer() {
    if (!pool_ || inflight_.empty()) return;
    std::unique_lock<std::mutex> lk(pool_->mu);
    pool_->cancel = true;
    pool_->work_cv.notify_all();
    pool_->done_cv.wait(lk, [&] {
      for (auto& b : inflight_)
        if (!b->done) return false;
      return true;
    });
    pool_->cancel = false;
  }

  VariantStreamStats run() {
    const auto t0 = std::chrono::steady_clock::now();
    if (pool_) {
      std::lock_guard<std::mutex> lk(pool_->mu);
      tokens0_ = pool_->tokens;
      calls0_ = pool_->calls;
    }
    while (bcf1_t* rec = in_.next_new()) {
      auto p = std::make_unique<Pending>();
      p->rec = rec;
      add_record(std::move(p));
      progress_.update(stats_.records, 0, "records");
    }
    flush_groups(INT64_MAX);
    run_ready(true);
    DNAMBA_CHECK(fifo_.empty() && inflight_.empty(), "score: records left unwritten");
    progress_.finish();
    if (scorer_) {
      stats_.model_tokens = scorer_->tokens_run();
      stats_.model_calls = scorer_->model_calls();
    } else {
      std::lock_guard<std::mutex> lk(pool_->mu);
      stats_.model_tokens = pool_->tokens - tokens0_;
      stats_.model_calls = pool_->calls - calls0_;
    }
    stats_.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return stats_;
  }

 private:
  std::string where(const bcf1_t* rec) const {
    return in_.path() + ": record " + std::to_string(in_.records_read()) + " (" +
           bcf_hdr_id2name(in_.header(), rec->rid) + ":" + std::to_string(rec->pos + 1) + ")";
  }

  void add_record(std::unique_ptr<Pending> pr) {
    bcf1_t* rec = pr->rec;
    ++stats_.records;
    const std::string contig = bcf_hdr_id2name(in_.header(), rec->rid);
    if (rec->errcode & BCF_ERR_CTG_UNDEF) define_contig(rec, contig);
    const int64_t p = rec->pos;
    if (contig != contig_) {
      if (seen_.count(contig))
        throw Error(where(rec) + ": unsorted input: contig " + contig + " appears again after other contigs "
                    "(sort it with bcftools sort)");
      flush_groups(INT64_MAX);
      seen_.insert(contig);
      contig_ = contig;
      L_ = ref_.contig_length(contig);
    } else if (p < last_pos_) {
      throw Error(where(rec) + ": unsorted input: POS " + std::to_string(p + 1) + " comes after " +
                  std::to_string(last_pos_ + 1) + " on " + contig + " (sort it with bcftools sort)");
    }
    last_pos_ = p;
    flush_groups(p);

    const int n_alt = int(rec->n_allele) - 1;
    if (n_alt <= 0) {
      ++stats_.flagged[size_t(Flag::NoAlt)];
      fifo_.push_back(std::move(pr));
      emit_ready();
      return;
    }
    stats_.alleles += n_alt;
    pr->alleles.resize(size_t(n_alt));
    const std::string_view ref_allele = rec->d.allele[0];
    const int64_t lr = int64_t(ref_allele.size());
    Flag ref_flag = Flag::None;
    if (L_ < 0) ref_flag = Flag::ContigMissing;
    else if (lr == 0) ref_flag = Flag::InvalidAllele;
    else if (p + lr > L_) ref_flag = Flag::RefMismatch;  // REF runs past the contig end
    std::string_view fasta_ref;
    if (ref_flag == Flag::None) {
      fasta_ref = win_.get(contig, p, p + lr);
      for (int64_t i = 0; i < lr; ++i)
        if ((fasta_ref[size_t(i)] | 0x20) != (ref_allele[size_t(i)] | 0x20)) ref_flag = Flag::RefMismatch;
    }
    for (int a = 0; a < n_alt; ++a) {
      Allele& al = pr->alleles[size_t(a)];
      const std::string_view alt = rec->d.allele[a + 1];
      Flag f = ref_flag == Flag::ContigMissing ? ref_flag : score::classify_alt(alt);
      if (f == Flag::None && (lr > prm_.max_allele_length || int64_t(alt.size()) > prm_.max_allele_length))
        f = Flag::TooLong;
      if (f == Flag::None) f = ref_flag;
      score::AlleleWindows w;
      if (f == Flag::None) {
        w = score::make_windows(p, ref_allele, alt, L_, prm_);
        std::string_view win = win_.get(contig, w.ref_lo, w.ref_hi);
        for (char c : win)
          if (!score::is_acgt(c)) f = Flag::NInWindow;
        for (char c : alt)
          if (!score::is_acgt(c)) f = Flag::NInWindow;
      }
      al.flag = f;
      if (f != Flag::None) {
        ++stats_.flagged[size_t(f)];
        continue;
      }
      ++stats_.scored;
      al.fwd = std::move(w.fwd);
      add_job(0, p / prm_.segment, w.fwd_segment_start, &al.fwd, pr.get());
      if (prm_.rc) {
        al.rev = std::move(w.rev);
        add_job(1, (p + lr - 1) / prm_.segment, w.rev_segment_start, &al.rev, pr.get());
      }
    }
    fifo_.push_back(std::move(pr));
    emit_ready();
  }

  // htslib added a contig the header lacked to the input header; mirror it into the output header.
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

  void add_job(int strand, int64_t seg, int64_t s, StrandAllele* a, Pending* owner) {
    Group& g = groups_[{seg, strand}];
    if (g.alleles.empty()) g.s = s;
    DNAMBA_CHECK(g.s == s, "score: a segment with two run starts");
    g.end = std::max(g.end, a->e);
    g.alleles.push_back(a);
    g.owners.push_back(owner);
    ++owner->jobs_left;
  }

  // Completes every group whose segment ends at or before `pos` (all of them for INT64_MAX): the
  // input is sorted, so no later record can join it. Complete groups run ref_batch at a time.
  void flush_groups(int64_t pos) {
    while (!groups_.empty()) {
      auto it = groups_.begin();
      const int64_t seg = it->first.first;
      if (pos != INT64_MAX && (seg + 1) * prm_.segment > pos) break;
      complete_group(it->first.second, it->second);
      groups_.erase(it);
    }
    run_ready(false);
  }

  void complete_group(int strand, Group& g) {
    std::string_view fwd = strand == 0 ? win_.get(contig_, g.s, g.end) : win_.get(contig_, L_ - g.end, L_ - g.s);
    const size_t n = fwd.size();
    g.seq.resize(n);
    if (strand == 0)
      for (size_t i = 0; i < n; ++i) g.seq[i] = base_to_token(fwd[i]);
    else
      for (size_t i = 0; i < n; ++i) g.seq[i] = complement_token(base_to_token(fwd[n - 1 - i]));
    ready_.push_back(std::move(g));
  }

  // Runs the complete groups once ref_batch of them wait (or all of them at the end): here with one
  // device, else on the pool's workers (see variant_stream.h). Either way batch k holds the same groups.
  void run_ready(bool all) {
    const size_t rb = size_t(prm_.method == score::Method::Fast ? prm_.ref_batch : 1);
    while (!ready_.empty() && (all || ready_.size() >= rb)) {
      const size_t n = std::min(rb, ready_.size());
      auto b = std::make_unique<Batch>();
      b->groups.assign(std::make_move_iterator(ready_.begin()), std::make_move_iterator(ready_.begin() + std::ptrdiff_t(n)));
      ready_.erase(ready_.begin(), ready_.begin() + std::ptrdiff_t(n));
      b->jobs.resize(n);
      for (size_t i = 0; i < n; ++i) {
        b->jobs[i].s = b->groups[i].s;
        b->jobs[i].seq = &b->groups[i].seq;
        b->jobs[i].alleles = b->groups[i].alleles;
      }
      if (scorer_) {
        scorer_->score_groups(b->jobs);
        finish(*b);
        emit_ready();
        continue;
      }
      pool_->submit(b.get());
      inflight_.push_back(std::move(b));
      collect(false);
    }
    if (all && pool_) collect(true);
    emit_ready();
  }

  void finish(const Batch& b) {
    for (const Group& g : b.groups)
      for (Pending* o : g.owners) --o->jobs_left;
  }

  // Takes the pool's finished batches and writes the records they complete. Waits for all batches
  // (all), or for the oldest when more than two per worker are in flight; a failed batch -> its error
  // (the earliest failed one in submission order).
  void collect(bool all) {
    std::vector<std::unique_ptr<Batch>> finished;
    {
      std::unique_lock<std::mutex> lk(pool_->mu);
      const size_t max_inflight = 2 * pool_->queues.size();
      if (all)
        pool_->done_cv.wait(lk, [&] {
          if (pool_->any_error) return true;
          for (auto& b : inflight_)
            if (!b->done) return false;
          return true;
        });
      else if (inflight_.size() > max_inflight)
        pool_->done_cv.wait(lk, [&] { return pool_->any_error || inflight_.front()->done; });
      for (auto it = inflight_.begin(); it != inflight_.end();) {
        if ((*it)->done) {
          finished.push_back(std::move(*it));
          it = inflight_.erase(it);
        } else {
          ++it;
        }
      }
    }
    for (auto& b : finished)
      if (b->error) std::rethrow_exception(b->error);
    for (auto& b : finished) finish(*b);
    if (all && !inflight_.empty()) collect(true);  // woken by an error elsewhere that is not yet done
    emit_ready();
  }

  void emit_ready() {
    while (!fifo_.empty() && fifo_.front()->jobs_left == 0) {
      annotate(*fifo_.front());
      out_.write(fifo_.front()->rec);
      fifo_.pop_front();
    }
  }

  void annotate(Pending& pr) {
    std::vector<io::AlleleScoreInfo> info;
    for (const Allele& a : pr.alleles)
      info.push_back({score::flag_name(a.flag), a.fwd.llr, prm_.rc ? a.rev.llr : 0.0});
    io::set_score_info(hdr_, pr.rec, info, prm_.rc);
  }


  io::FastaReader& ref_;
  io::ReferenceWindow win_;  // blocks from 128 kb before a request
  io::VcfReader& in_;
  bcf_hdr_t* hdr_;
  io::VcfWriter& out_;
  score::ScoreParams prm_;
  std::unique_ptr<score::GroupScorer> scorer_;  // one device
  ScoreDevicePool::Impl* pool_ = nullptr;       // several
  std::deque<std::unique_ptr<Batch>> inflight_;  // on the pool, in submission order
  int64_t tokens0_ = 0, calls0_ = 0;
  Progress progress_;
  VariantStreamStats stats_;
  std::string contig_;
  int64_t L_ = -1, last_pos_ = -1;
  std::unordered_set<std::string> seen_;
  std::map<std::pair<int64_t, int>, Group> groups_;  // (segment, strand) of the current contig
  std::deque<std::unique_ptr<Pending>> fifo_;
  std::deque<Group> ready_;  // complete groups waiting to run
};

}  // namespace

VariantStreamStats score_variants_streaming(MambaLM& model, io::FastaReader& ref, io::VcfReader& in,
                                            bcf_hdr_t* out_hdr, io::VcfWriter& out,
                                            const score::ScoreParams& prm, bool quiet) {
  if (!ref.indexed())
    throw Error(ref.path() + ": dnamba score needs an indexed FASTA for random access (run samtools faidx " +
                ref.path() + "; a gzip FASTA must be bgzip-compressed, with its .fai and .gzi)");
  Streamer s(&model, nullptr, ref, in, out_hdr, out, prm, quiet);
  return s.run();
}

VariantStreamStats score_variants_streaming(ScoreDevicePool& pool, io::FastaReader& ref, io::VcfReader& in,
                                            bcf_hdr_t* out_hdr, io::VcfWriter& out,
                                            const score::ScoreParams& prm, bool quiet) {
  if (!ref.indexed())
    throw Error(ref.path() + ": dnamba score needs an indexed FASTA for random access (run samtools faidx " +
                ref.path() + "; a gzip FASTA must be bgzip-compressed, with its .fai and .gzi)");
  const score::ScoreParams& pp = pool.impl()->prm;
  DNAMBA_CHECK(pp.method == prm.method && pp.ref_batch == prm.ref_batch && pp.batch == prm.batch &&
                   pp.batch_tokens == prm.batch_tokens && pp.chunk == prm.chunk && pp.snapshot_gap == prm.snapshot_gap &&
                   pp.segment == prm.segment && pp.context == prm.context && pp.horizon == prm.horizon && pp.rc == prm.rc,
               "score: the device pool was made with other parameters");
  Streamer s(nullptr, pool.impl(), ref, in, out_hdr, out, prm, quiet);
  return s.run();
}

}  // namespace dnamba
