#include "score/variant_score.h"

#include <algorithm>
#include <numeric>

#include "model/tokenizer.h"

namespace dnamba::score {

const char* flag_name(Flag f) {
  switch (f) {
    case Flag::None: return ".";
    case Flag::NoAlt: return "NO_ALT";
    case Flag::ContigMissing: return "CONTIG_MISSING";
    case Flag::Symbolic: return "SYMBOLIC";
    case Flag::Breakend: return "BREAKEND";
    case Flag::SpanningDeletion: return "SPANNING_DELETION";
    case Flag::InvalidAllele: return "INVALID_ALLELE";
    case Flag::TooLong: return "TOO_LONG";
    case Flag::RefMismatch: return "REF_MISMATCH";
    case Flag::NInWindow: return "N_IN_WINDOW";
    case Flag::kCount: break;
  }
  return "?";
}

bool is_acgt(char c) {
  switch (c | 0x20) {
    case 'a': case 'c': case 'g': case 't': return true;
    default: return false;
  }
}

Flag classify_alt(std::string_view alt) {
  if (alt.empty()) return Flag::InvalidAllele;
  if (alt == "*") return Flag::SpanningDeletion;
  if (alt.front() == '<') return Flag::Symbolic;
  // Breakends: t[p[, t]p], ]p]t, [p[t, and single breakends .t / t.
  if (alt.find_first_of("[]") != std::string_view::npos) return Flag::Breakend;
  if (alt.size() > 1 && (alt.front() == '.' || alt.back() == '.')) return Flag::Breakend;
  for (char c : alt)
    if (!((c | 0x20) >= 'a' && (c | 0x20) <= 'z')) return Flag::InvalidAllele;
  return Flag::None;
}

namespace {

int64_t common_prefix(std::string_view a, std::string_view b) {
  int64_t n = int64_t(std::min(a.size(), b.size())), k = 0;
  while (k < n && (a[size_t(k)] | 0x20) == (b[size_t(k)] | 0x20)) ++k;
  return k;
}

std::string reverse_complement(std::string_view s) {
  std::string r(s.rbegin(), s.rend());
  for (char& c : r) {
    switch (c | 0x20) {
      case 'a': c = 'T'; break;
      case 'c': c = 'G'; break;
      case 'g': c = 'C'; break;
      case 't': c = 'A'; break;
      default: c = 'N';
    }
  }
  return r;
}

std::vector<int32_t> tokens_of(std::string_view s) {
  std::vector<int32_t> t;
  tokenize(s, t);
  return t;
}

}  // namespace

AlleleWindows make_windows(int64_t p, std::string_view ref, std::string_view alt, int64_t L,
                           const ScoreParams& prm) {
  const int64_t lr = int64_t(ref.size()), H = prm.horizon, S = prm.segment, C = prm.context;
  DNAMBA_CHECK(lr >= 1 && p >= 0 && p + lr <= L, "make_windows: REF outside the contig");
  AlleleWindows w;
  const int64_t k = common_prefix(ref, alt);
  w.fwd.q = p + k;
  w.fwd.flank = p + lr;
  w.fwd.e = std::min(L, p + lr + H);
  w.fwd.alt_insert = tokens_of(alt.substr(size_t(k)));
  w.fwd_segment_start = std::max<int64_t>(0, (p / S) * S - C);

  const std::string rr = reverse_complement(ref), ra = reverse_complement(alt);
  const int64_t k2 = common_prefix(rr, ra), pr = L - p - lr;  // REF starts at pr on the reverse strand
  w.rev.q = pr + k2;
  w.rev.flank = pr + lr;
  w.rev.e = std::min(L, pr + lr + H);
  w.rev.alt_insert = tokens_of(std::string_view(ra).substr(size_t(k2)));
  const int64_t j = (p + lr - 1) / S;
  w.rev_segment_start = L - std::min(L, (j + 1) * S + C);

  w.ref_lo = prm.rc ? std::max<int64_t>(0, p - H) : p;
  w.ref_hi = w.fwd.e;
  return w;
}

GroupScorer::GroupScorer(MambaLM& model, const ScoreParams& prm) : model_(model), prm_(prm) {
  DNAMBA_CHECK(prm_.batch >= 1 && prm_.batch_tokens >= 1 && prm_.chunk >= 1 && prm_.snapshot_gap >= 1 &&
                   prm_.max_snapshots >= 1,
               "GroupScorer: batch, batch_tokens, chunk, snapshot_gap and max_snapshots must be >= 1");
}

void GroupScorer::score(int64_t s, const std::vector<int32_t>& seq, const std::vector<StrandAllele*>& alleles) {
  for (const StrandAllele* a : alleles)
    DNAMBA_CHECK(a->q >= s && a->q <= a->flank + int64_t(a->alt_insert.size()) && a->flank <= a->e &&
                     a->e - s <= int64_t(seq.size()),
                 "GroupScorer: allele window outside the group's sequence");
  if (alleles.empty()) return;
  if (prm_.method == Method::Naive)
    score_naive(s, seq, alleles);
  else
    score_fast(s, seq, alleles);
}

// Both haplotypes of every allele from the run start; nothing shared.
void GroupScorer::score_naive(int64_t s, const std::vector<int32_t>& seq, const std::vector<StrandAllele*>& alleles) {
  std::vector<double> ref_sum(alleles.size()), alt_sum(alleles.size());
  std::vector<Run> runs;
  runs.reserve(2 * alleles.size());
  for (size_t i = 0; i < alleles.size(); ++i) {
    const StrandAllele& a = *alleles[i];
    Run r;
    r.tokens.assign(seq.begin(), seq.begin() + (a.e - s));
    r.score_from = a.q - s;
    r.sum = &ref_sum[i];
    runs.push_back(std::move(r));
    Run t;
    t.tokens.assign(seq.begin(), seq.begin() + (a.q - s));
    t.tokens.insert(t.tokens.end(), a.alt_insert.begin(), a.alt_insert.end());
    t.tokens.insert(t.tokens.end(), seq.begin() + (a.flank - s), seq.begin() + (a.e - s));
    t.score_from = a.q - s;
    t.sum = &alt_sum[i];
    runs.push_back(std::move(t));
  }
  run_batched(runs);
  for (size_t i = 0; i < alleles.size(); ++i) alleles[i]->llr = alt_sum[i] - ref_sum[i];
}

// One reference pass with state snapshots just before each allele's first differing base (or up to
// snapshot_gap-1 bases earlier, then replayed); each allele runs only its own bases and the horizon.
void GroupScorer::score_fast(int64_t s, const std::vector<int32_t>& seq, const std::vector<StrandAllele*>& alleles) {
  Backend& be = model_.backend();
  const ModelConfig& cfg = model_.config();
  const int64_t D = cfg.d_model;
  std::vector<size_t> order(alleles.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) { return alleles[x]->q < alleles[y]->q; });

  // Snapshot positions c (state after the reference bases [s, c)) and each allele's snapshot.
  std::vector<int64_t> snap_pos;
  std::vector<size_t> snap_of(alleles.size());
  for (size_t i : order) {
    const int64_t q = alleles[i]->q;
    const int64_t want = q > s ? q - 1 : s;  // replay at least the base before q: it predicts q
    if (snap_pos.empty() || want - snap_pos.back() >= prm_.snapshot_gap) snap_pos.push_back(want);
    snap_of[i] = snap_pos.size() - 1;
  }
  int64_t n = 0;
  for (const StrandAllele* a : alleles) n = std::max(n, a->e - s);

  if (ref_state_.empty()) ref_state_ = model_.new_state(1);
  else model_.reset_state(ref_state_);
  if (snapshots_.empty()) {
    snapshots_.resize(size_t(cfg.n_layer));
    for (auto& l : snapshots_) {
      l.conv = be.alloc(prm_.max_snapshots, cfg.d_inner * (cfg.d_conv - 1));
      l.ssm = be.alloc(prm_.max_snapshots, cfg.d_inner * cfg.d_state);
    }
  }
  // cum[t] = sum of ln P(seq[u] | seq[<u]) for 1 <= u < t (relative positions).
  std::vector<double> cum(size_t(n) + 1, 0.0);
  std::vector<float> stats;
  std::vector<int32_t> targets;
  int64_t pos = 0;
  auto advance = [&](int64_t to) {
    while (pos < to) {
      const int64_t len = std::min(prm_.chunk, to - pos);
      Tensor hid = model_.workspace().get("score_ref_hidden", len, D);  // [len, D]
      model_.forward_host(seq.data() + pos, 1, len, ref_state_, hid);
      targets.assign(seq.begin() + pos + 1, seq.begin() + std::min(n, pos + len + 1));
      targets.resize(size_t(len), -1);
      Tensor tg = model_.workspace().get("score_ref_targets", len, 1, DType::I32);
      be.to_device(tg, targets.data());
      Tensor out = model_.workspace().get("score_ref_stats", len, 5);  // [len, 5]
      be.token_logprobs(hid, model_.lm_head(), tg, out);
      stats.resize(size_t(len * 5));
      be.to_host(out, stats.data());
      for (int64_t r = 0; r < len && pos + r + 1 < n; ++r)
        cum[size_t(pos + r + 2)] = cum[size_t(pos + r + 1)] + double(stats[size_t(r * 5)]);
      tokens_run_ += len;
      pos += len;
    }
  };

  std::vector<double> alt_sum(alleles.size(), 0.0);
  std::vector<std::vector<size_t>> by_snap(snap_pos.size());
  for (size_t i = 0; i < alleles.size(); ++i) by_snap[snap_of[i]].push_back(i);
  for (size_t w0 = 0; w0 < snap_pos.size(); w0 += size_t(prm_.max_snapshots)) {
    const size_t w1 = std::min(snap_pos.size(), w0 + size_t(prm_.max_snapshots));
    std::vector<Run> runs;
    for (size_t si = w0; si < w1; ++si) {
      advance(snap_pos[si] - s);
      const int64_t slot = int64_t(si - w0);
      for (size_t l = 0; l < snapshots_.size(); ++l) {
        Tensor dc = snapshots_[l].conv.rows_view(slot, 1), ds = snapshots_[l].ssm.rows_view(slot, 1);
        be.copy(dc, ref_state_[l].conv);
        be.copy(ds, ref_state_[l].ssm);
      }
      for (size_t i : by_snap[si]) {
        const StrandAllele& a = *alleles[i];
        Run r;
        r.tokens.assign(seq.begin() + (snap_pos[si] - s), seq.begin() + (a.q - s));  // replay
        r.score_from = int64_t(r.tokens.size());
        if (r.score_from == 0) r.score_from = 1;  // q == s: the run's first base has no prediction
        r.tokens.insert(r.tokens.end(), a.alt_insert.begin(), a.alt_insert.end());
        r.tokens.insert(r.tokens.end(), seq.begin() + (a.flank - s), seq.begin() + (a.e - s));
        r.slot = slot;
        r.sum = &alt_sum[i];
        runs.push_back(std::move(r));
      }
    }
    run_batched(runs);
  }
  advance(n);
  for (size_t i = 0; i < alleles.size(); ++i) {
    const StrandAllele& a = *alleles[i];
    const double ref = cum[size_t(a.e - s)] - cum[size_t(a.q - s)];
    alleles[i]->llr = alt_sum[i] - ref;
  }
}

void GroupScorer::run_batched(std::vector<Run>& runs) {
  std::vector<Run*> todo;
  for (Run& r : runs) {
    *r.sum = 0.0;
    if (r.tokens.size() >= 2 && r.score_from < int64_t(r.tokens.size())) todo.push_back(&r);
  }
  std::stable_sort(todo.begin(), todo.end(), [](const Run* a, const Run* b) { return a->tokens.size() > b->tokens.size(); });
  for (size_t i = 0; i < todo.size();) {
    const size_t nb = std::min(todo.size() - i, size_t(prm_.batch));
    std::vector<Run*> batch(todo.begin() + i, todo.begin() + i + nb);
    run_batch(batch);
    i += nb;
  }
}

// Runs rows from their start states in chunks along the length; rows are padded at the end (the
// model is causal, so padding after a row's last scored base cannot change it).
void GroupScorer::run_batch(std::vector<Run*>& rows) {
  Backend& be = model_.backend();
  const ModelConfig& cfg = model_.config();
  const int64_t nb = int64_t(rows.size()), D = cfg.d_model;
  if (batch_state_.empty()) {
    batch_state_.resize(size_t(cfg.n_layer));
    for (auto& l : batch_state_) {
      l.conv = be.alloc(prm_.batch, cfg.d_inner * (cfg.d_conv - 1));
      l.ssm = be.alloc(prm_.batch, cfg.d_inner * cfg.d_state);
    }
  }
  std::vector<LayerState> st(batch_state_.size());
  for (size_t l = 0; l < st.size(); ++l) {
    st[l].conv = batch_state_[l].conv.rows_view(0, nb);
    st[l].ssm = batch_state_[l].ssm.rows_view(0, nb);
  }
  // Start states: consecutive rows from consecutive snapshot slots are copied together.
  for (int64_t b = 0; b < nb;) {
    int64_t e = b + 1;
    const int64_t slot = rows[size_t(b)]->slot;
    while (e < nb && (slot < 0 ? rows[size_t(e)]->slot < 0 : rows[size_t(e)]->slot == slot + (e - b))) ++e;
    for (size_t l = 0; l < st.size(); ++l) {
      Tensor dc = st[l].conv.rows_view(b, e - b), ds = st[l].ssm.rows_view(b, e - b);
      if (slot < 0) {
        be.zero(dc);
        be.zero(ds);
      } else {
        be.copy(dc, snapshots_[l].conv.rows_view(slot, e - b));
        be.copy(ds, snapshots_[l].ssm.rows_view(slot, e - b));
      }
    }
    b = e;
  }
  int64_t lmax = 0;  // positions to run: a row's last token is only a target
  for (const Run* r : rows) lmax = std::max(lmax, int64_t(r->tokens.size()) - 1);
  const int64_t cl = std::max<int64_t>(1, std::min(lmax, prm_.batch_tokens / nb));
  std::vector<int32_t> ids, targets;
  std::vector<float> stats;
  for (int64_t off = 0; off < lmax; off += cl) {
    const int64_t len = std::min(cl, lmax - off), T = nb * len;
    ids.assign(size_t(T), kTokN);
    targets.assign(size_t(T), -1);
    for (int64_t b = 0; b < nb; ++b) {
      const Run& r = *rows[size_t(b)];
      const int64_t rl = int64_t(r.tokens.size());
      for (int64_t t = 0; t < len; ++t) {
        const int64_t u = off + t;
        if (u + 1 >= rl) break;
        ids[size_t(b * len + t)] = r.tokens[size_t(u)];
        if (u + 1 >= r.score_from) targets[size_t(b * len + t)] = r.tokens[size_t(u + 1)];
      }
    }
    Tensor hid = model_.workspace().get("score_alt_hidden", T, D);  // [nb*len, D]
    model_.forward_host(ids.data(), nb, len, st, hid);
    Tensor tg = model_.workspace().get("score_alt_targets", T, 1, DType::I32);
    be.to_device(tg, targets.data());
    Tensor out = model_.workspace().get("score_alt_stats", T, 5);  // [nb*len, 5]
    be.token_logprobs(hid, model_.lm_head(), tg, out);
    stats.resize(size_t(T * 5));
    be.to_host(out, stats.data());
    for (int64_t b = 0; b < nb; ++b) {
      double acc = 0;
      for (int64_t t = 0; t < len; ++t)
        if (targets[size_t(b * len + t)] >= 0) acc += double(stats[size_t((b * len + t) * 5)]);
      *rows[size_t(b)]->sum += acc;
    }
    tokens_run_ += T;
  }
}

}  // namespace dnamba::score
