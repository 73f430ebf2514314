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
                   prm_.ref_batch >= 1,
               "GroupScorer: batch, batch_tokens, chunk, snapshot_gap and ref_batch must be >= 1");
}

namespace {

// States of many rows for every layer in one tensor: layer l, row r at row l*cap + r, so that one
// layer's rows [0, n) are a contiguous LayerState and rows [r, r+k) of every layer are one 2-D copy.
std::vector<LayerState> layer_views(const Tensor& conv, const Tensor& ssm, int64_t cap, int64_t n, int64_t n_layer) {
  std::vector<LayerState> st(static_cast<size_t>(n_layer));
  for (int64_t l = 0; l < n_layer; ++l) {
    st[size_t(l)].conv = conv.rows_view(l * cap, n);
    st[size_t(l)].ssm = ssm.rows_view(l * cap, n);
  }
  return st;
}

// Rows [r, r+k) of every layer: [n_layer, k*cols] with row stride cap*cols.
Tensor rows_of_every_layer(const Tensor& all, int64_t cap, int64_t r, int64_t k, int64_t n_layer) {
  DNAMBA_CHECK(all.ld == all.cols, "score: state tensors must be contiguous");
  Tensor t = all;
  t.offset = all.offset + r * all.ld;
  t.rows = n_layer;
  t.cols = k * all.cols;
  t.ld = cap * all.ld;
  return t;
}

}  // namespace

void GroupScorer::alloc_states(Tensor& conv, Tensor& ssm, int64_t cap) {
  const ModelConfig& cfg = model_.config();
  Backend& be = model_.backend();
  conv = be.alloc(cfg.n_layer * cap, cfg.d_inner * (cfg.d_conv - 1));
  ssm = be.alloc(cfg.n_layer * cap, cfg.d_inner * cfg.d_state);
  be.zero(conv);
  be.zero(ssm);
}

void GroupScorer::score(int64_t s, const std::vector<int32_t>& seq, const std::vector<StrandAllele*>& alleles) {
  GroupJob g;
  g.s = s;
  g.seq = &seq;
  g.alleles = alleles;
  score_groups({g});
}

void GroupScorer::score_groups(const std::vector<GroupJob>& groups) {
  std::vector<const GroupJob*> todo;
  for (const GroupJob& g : groups) {
    DNAMBA_CHECK(g.seq != nullptr, "GroupScorer: group without a sequence");
    for (const StrandAllele* a : g.alleles)
      DNAMBA_CHECK(a->q >= g.s && a->q <= a->flank + int64_t(a->alt_insert.size()) && a->flank <= a->e &&
                       a->e - g.s <= int64_t(g.seq->size()),
                   "GroupScorer: allele window outside the group's sequence");
    if (!g.alleles.empty()) todo.push_back(&g);
  }
  if (prm_.method == Method::Naive) {
    for (const GroupJob* g : todo) score_naive(*g);
    return;
  }
  for (size_t i = 0; i < todo.size(); i += size_t(prm_.ref_batch)) {
    const size_t j = std::min(todo.size(), i + size_t(prm_.ref_batch));
    score_lockstep(std::vector<const GroupJob*>(todo.begin() + i, todo.begin() + j));
  }
}

// Both haplotypes of every allele from the run start; nothing shared.
void GroupScorer::score_naive(const GroupJob& g) {
  const int64_t s = g.s;
  const std::vector<int32_t>& seq = *g.seq;
  const auto& alleles = g.alleles;
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

// The lockstep reference pass of up to ref_batch groups (see the header) and the allele runs from
// its snapshots.
void GroupScorer::score_lockstep(const std::vector<const GroupJob*>& groups) {
  Backend& be = model_.backend();
  const ModelConfig& cfg = model_.config();
  const int64_t D = cfg.d_model, NL = cfg.n_layer, g = prm_.snapshot_gap;
  const int64_t R = int64_t(groups.size());

  struct Snap { int64_t c; size_t allele; };
  struct Row {
    const GroupJob* job;
    int64_t n = 1;    // tokens of the run: [0, n) relative to s
    int64_t len = 0;  // positions to run (the last token is only a target)
    std::vector<Snap> snaps;  // sorted by c
    size_t next = 0;
    std::vector<double> cum;   // cum[t] = sum of ln P(seq[u] | seq[<u]) for 1 <= u < t
    std::vector<double> alt;   // per allele
  };
  std::vector<Row> rows(static_cast<size_t>(R));
  for (int64_t b = 0; b < R; ++b) {
    Row& r = rows[size_t(b)];
    r.job = groups[size_t(b)];
    const int64_t s = r.job->s;
    for (size_t i = 0; i < r.job->alleles.size(); ++i) {
      const StrandAllele& a = *r.job->alleles[i];
      r.n = std::max(r.n, a.e - s);
      const int64_t want = a.q > s ? a.q - 1 - s : 0;  // replay at least the base before q: it predicts q
      r.snaps.push_back({want / g * g, i});
    }
    std::stable_sort(r.snaps.begin(), r.snaps.end(), [](const Snap& x, const Snap& y) { return x.c < y.c; });
    r.len = std::max(r.n - 1, r.snaps.back().c);
    r.cum.assign(size_t(r.n) + 1, 0.0);
    r.alt.assign(r.job->alleles.size(), 0.0);
  }
  // Longest first: the rows still running are always a prefix of the batch.
  std::stable_sort(rows.begin(), rows.end(), [](const Row& x, const Row& y) { return x.len > y.len; });

  // The calls: every row advances by `step` positions, stopping at each snapshot position any row needs.
  struct Call { int64_t pos, step, nact, off; };
  std::vector<Call> calls;
  {
    const int64_t tok_cap = std::max(prm_.chunk, prm_.batch_tokens);
    std::vector<size_t> ptr(rows.size(), 0);
    int64_t pos = 0, nact = R, off = 0;
    while (nact > 0 && rows[size_t(nact - 1)].len <= pos) --nact;
    while (nact > 0) {
      int64_t step = std::min({prm_.chunk, rows[0].len - pos, std::max<int64_t>(1, tok_cap / nact)});
      for (int64_t b = 0; b < nact; ++b) {
        const Row& r = rows[size_t(b)];
        size_t& p = ptr[size_t(b)];
        while (p < r.snaps.size() && r.snaps[p].c <= pos) ++p;
        if (p < r.snaps.size()) step = std::min(step, r.snaps[p].c - pos);
      }
      calls.push_back({pos, step, nact, off});
      off += nact * step;
      pos += step;
      while (nact > 0 && rows[size_t(nact - 1)].len <= pos) --nact;
    }
  }

  if (ref_conv_.rows < NL * R) alloc_states(ref_conv_, ref_ssm_, std::max(R, prm_.ref_batch));
  const int64_t ref_cap = ref_conv_.rows / NL;
  for (int64_t l = 0; l < NL; ++l) {
    Tensor c = ref_conv_.rows_view(l * ref_cap, R), h = ref_ssm_.rows_view(l * ref_cap, R);
    be.zero(c);
    be.zero(h);
  }
  for (Pool& p : pools_)
    if (p.cap == 0) {
      p.cap = prm_.batch;
      alloc_states(p.conv, p.ssm, p.cap);
    }
  const int64_t short_len = g + prm_.horizon + 32;  // longer allele runs go to the second pool

  // Snapshot copies, merged while consecutive ref rows go to consecutive rows of one pool.
  struct PendingCopy { Pool* pool = nullptr; int64_t src = 0, dst = 0, k = 0; } pc;
  auto emit_copy = [&]() {
    if (!pc.pool || pc.k == 0) return;
    Tensor d1 = rows_of_every_layer(pc.pool->conv, pc.pool->cap, pc.dst, pc.k, NL);
    Tensor d2 = rows_of_every_layer(pc.pool->ssm, pc.pool->cap, pc.dst, pc.k, NL);
    be.copy(d1, rows_of_every_layer(ref_conv_, ref_cap, pc.src, pc.k, NL));
    be.copy(d2, rows_of_every_layer(ref_ssm_, ref_cap, pc.src, pc.k, NL));
    pc = PendingCopy{};
  };
  auto take_snapshots = [&](int64_t pos, int64_t nact) {
    for (int64_t b = 0; b < nact; ++b) {
      Row& r = rows[size_t(b)];
      const int64_t s = r.job->s;
      const std::vector<int32_t>& seq = *r.job->seq;
      while (r.next < r.snaps.size() && r.snaps[r.next].c == pos) {
        const size_t i = r.snaps[r.next++].allele;
        const StrandAllele& a = *r.job->alleles[i];
        Run run;
        run.tokens.assign(seq.begin() + pos, seq.begin() + (a.q - s));  // replay
        run.score_from = std::max<int64_t>(1, int64_t(run.tokens.size()));  // q == s: no prediction for the first base
        run.tokens.insert(run.tokens.end(), a.alt_insert.begin(), a.alt_insert.end());
        run.tokens.insert(run.tokens.end(), seq.begin() + (a.flank - s), seq.begin() + (a.e - s));
        if (int64_t(run.tokens.size()) < 2 || run.score_from >= int64_t(run.tokens.size())) continue;  // sum 0
        run.sum = &r.alt[i];
        Pool& pool = pools_[int64_t(run.tokens.size()) <= short_len ? 0 : 1];
        if (int64_t(pool.runs.size()) == pool.cap) {
          emit_copy();
          flush_pool(pool);
        }
        const int64_t slot = int64_t(pool.runs.size());
        pool.runs.push_back(std::move(run));
        if (pc.pool == &pool && pc.src + pc.k == b && pc.dst + pc.k == slot) {
          ++pc.k;
        } else {
          emit_copy();
          pc = PendingCopy{&pool, b, slot, 1};
        }
      }
    }
    emit_copy();
  };

  take_snapshots(0, R);  // alleles at a contig start: the zero state
  const int64_t win_cap = std::max<int64_t>(be.is_gpu() ? int64_t(1) << 21 : int64_t(1) << 16,
                                            std::max(prm_.chunk, prm_.batch_tokens));
  std::vector<int32_t> ids, targets;
  std::vector<float> stats;
  for (size_t c0 = 0; c0 < calls.size();) {
    size_t c1 = c0 + 1;
    while (c1 < calls.size() && calls[c1].off + calls[c1].nact * calls[c1].step - calls[c0].off <= win_cap) ++c1;
    const int64_t base = calls[c0].off, W = calls[c1 - 1].off + calls[c1 - 1].nact * calls[c1 - 1].step - base;
    ids.assign(size_t(W), kTokN);
    targets.assign(size_t(W), -1);
    for (size_t ci = c0; ci < c1; ++ci) {
      const Call& k = calls[ci];
      for (int64_t b = 0; b < k.nact; ++b) {
        const Row& r = rows[size_t(b)];
        const std::vector<int32_t>& seq = *r.job->seq;
        const int64_t o = k.off - base + b * k.step;
        for (int64_t t = 0; t < k.step && k.pos + t < r.n; ++t) {
          ids[size_t(o + t)] = seq[size_t(k.pos + t)];
          if (k.pos + t + 1 < r.n) targets[size_t(o + t)] = seq[size_t(k.pos + t + 1)];
        }
      }
    }
    Tensor tid = model_.workspace().get("score_ref_ids", W, 1, DType::I32);
    be.to_device(tid, ids.data());
    Tensor ttg = model_.workspace().get("score_ref_targets", W, 1, DType::I32);
    be.to_device(ttg, targets.data());
    Tensor tst = model_.workspace().get("score_ref_stats", W, 5);  // [W, 5]
    for (size_t ci = c0; ci < c1; ++ci) {
      const Call& k = calls[ci];
      const int64_t T = k.nact * k.step, o = k.off - base;
      std::vector<LayerState> st = layer_views(ref_conv_, ref_ssm_, ref_cap, k.nact, NL);
      Tensor hid = model_.workspace().get("score_ref_hidden", T, D);  // [nact*step, D]
      model_.forward(tid.rows_view(o, T), k.nact, k.step, st, hid);
      Tensor out = tst.rows_view(o, T);
      be.token_logprobs(hid, model_.lm_head(), ttg.rows_view(o, T), out);
      tokens_run_ += T;
      ++calls_;
      take_snapshots(k.pos + k.step, k.nact);
    }
    stats.resize(size_t(W * 5));
    be.to_host(tst, stats.data());
    for (size_t ci = c0; ci < c1; ++ci) {
      const Call& k = calls[ci];
      for (int64_t b = 0; b < k.nact; ++b) {
        Row& r = rows[size_t(b)];
        const int64_t o = k.off - base + b * k.step;
        for (int64_t t = 0; t < k.step && k.pos + t + 1 < r.n; ++t)
          r.cum[size_t(k.pos + t + 2)] = r.cum[size_t(k.pos + t + 1)] + double(stats[size_t((o + t) * 5)]);
      }
    }
    c0 = c1;
  }
  for (Pool& p : pools_) flush_pool(p);
  for (Row& r : rows) {
    DNAMBA_CHECK(r.next == r.snaps.size(), "score: a snapshot was not taken");
    const int64_t s = r.job->s;
    for (size_t i = 0; i < r.job->alleles.size(); ++i) {
      StrandAllele& a = *r.job->alleles[i];
      a.llr = r.alt[i] - (r.cum[size_t(a.e - s)] - r.cum[size_t(a.q - s)]);
    }
  }
}

void GroupScorer::flush_pool(Pool& p) {
  if (p.runs.empty()) return;
  std::vector<Run*> rows;
  for (Run& r : p.runs) rows.push_back(&r);
  run_rows(rows, p.conv, p.ssm, p.cap);
  p.runs.clear();
}

void GroupScorer::run_batched(std::vector<Run>& runs) {
  std::vector<Run*> todo;
  for (Run& r : runs) {
    *r.sum = 0.0;
    if (r.tokens.size() >= 2 && r.score_from < int64_t(r.tokens.size())) todo.push_back(&r);
  }
  std::stable_sort(todo.begin(), todo.end(), [](const Run* a, const Run* b) { return a->tokens.size() > b->tokens.size(); });
  if (!naive_conv_.defined()) alloc_states(naive_conv_, naive_ssm_, prm_.batch);
  Backend& be = model_.backend();
  const int64_t NL = model_.config().n_layer;
  for (size_t i = 0; i < todo.size();) {
    const size_t nb = std::min(todo.size() - i, size_t(prm_.batch));
    std::vector<Run*> batch(todo.begin() + i, todo.begin() + i + nb);
    Tensor c = rows_of_every_layer(naive_conv_, prm_.batch, 0, int64_t(nb), NL);
    Tensor h = rows_of_every_layer(naive_ssm_, prm_.batch, 0, int64_t(nb), NL);
    be.zero(c);
    be.zero(h);
    run_rows(batch, naive_conv_, naive_ssm_, prm_.batch);
    i += nb;
  }
}

// Runs rows from their start states in chunks along the length; rows are padded at the end (the
// model is causal, so padding after a row's last scored base cannot change it).
void GroupScorer::run_rows(std::vector<Run*>& rows, Tensor& conv, Tensor& ssm, int64_t cap) {
  Backend& be = model_.backend();
  const ModelConfig& cfg = model_.config();
  const int64_t nb = int64_t(rows.size()), D = cfg.d_model;
  std::vector<LayerState> st = layer_views(conv, ssm, cap, nb, cfg.n_layer);
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
    ++calls_;
  }
}

}  // namespace dnamba::score
