#include "pipeline/caduceus_track.h"

#include <algorithm>
#include <cmath>
#include <future>
#include <limits>
#include <optional>

#include "common/progress.h"
#include "model/tokenizer.h"

namespace dnamba {

namespace {

int64_t batch_for(int64_t len, int64_t tokens_per_call) {
  return std::max<int64_t>(1, tokens_per_call / std::max<int64_t>(len, 1));
}

void resolve(const CaduceusModel& m, const CaduceusTrackOptions& opt, int64_t& W, int64_t& O) {
  W = opt.window > 0 ? opt.window : caduceus_default_window(m);
  O = opt.overlap >= 0 ? opt.overlap : caduceus_default_overlap(W);
  if (O >= W)
    throw Error("--overlap (" + std::to_string(O) + ") must be smaller than --window (" + std::to_string(W) + ")");
}

// Rows `rows[i]` of hidden [T, H] -> token statistics [rows.size(), 5] on the host.
void row_stats(CaduceusModel& m, const Tensor& hidden, const std::vector<int32_t>& rows,
               const std::vector<int32_t>& targets, float* out) {
  Backend& be = m.backend();
  Workspace& ws = m.workspace();
  const int64_t n = int64_t(rows.size()), H = hidden.cols;
  Tensor idx = ws.get("trk_rows", n, 1, DType::I32);
  be.to_device(idx, rows.data());
  Tensor sel = ws.get("trk_sel", n, H);
  be.embedding(idx, hidden, sel);  // row gather
  Tensor tg = ws.get("trk_targets", n, 1, DType::I32);
  be.to_device(tg, targets.data());
  Tensor st = ws.get("trk_stats", n, 5);
  be.token_logprobs(sel, m.lm_head(), tg, st);
  be.to_host(st, out);
}

// Runs `wins` (all of one segment; seq[i] is the token at segment position base + i) and writes the
// statistics of each window's kept bases to stats (stats[0] = the first window's keep_begin).
void run_windows(CaduceusModel& m, const int32_t* seq, int64_t base, const std::vector<WindowSpan>& wins,
                 const CaduceusTrackOptions& opt, float* stats, const std::function<void(int64_t)>& progress) {
  if (wins.empty()) return;
  Workspace& ws = m.workspace();
  const int64_t H = m.hidden_size(), origin = wins.front().keep_begin;
  int64_t done = 0;
  std::vector<int32_t> ids, rows, targets;
  std::vector<float> st;
  if (opt.mask == MaskMode::None) {
    for (size_t w0 = 0; w0 < wins.size();) {
      const int64_t len = wins[w0].len, bmax = batch_for(len, opt.tokens_per_call);
      size_t w1 = w0;
      while (w1 < wins.size() && wins[w1].len == len && int64_t(w1 - w0) < bmax) ++w1;
      const int64_t B = int64_t(w1 - w0);
      ids.resize(size_t(B * len));
      rows.clear();
      targets.clear();
      for (int64_t b = 0; b < B; ++b) {
        const WindowSpan& w = wins[w0 + size_t(b)];
        std::copy_n(seq + (w.start - base), len, ids.begin() + b * len);
        for (int64_t p = w.keep_begin; p < w.keep_end; ++p) {
          rows.push_back(int32_t(b * len + (p - w.start)));
          targets.push_back(seq[p - base]);
        }
      }
      Tensor hid = ws.get("trk_hidden", B * len, H);
      m.forward(ids.data(), B, len, hid);
      // All kept bases of these windows are consecutive: one gather, one stats call.
      row_stats(m, hid, rows, targets, stats + (wins[w0].keep_begin - origin) * 5);
      done += int64_t(rows.size());
      if (progress) progress(done);
      w0 = w1;
    }
    return;
  }
  // MaskMode::Each: one masked copy of the window per kept base, batched.
  for (const WindowSpan& w : wins) {
    const int64_t len = w.len, bmax = batch_for(len, opt.tokens_per_call);
    for (int64_t p0 = w.keep_begin; p0 < w.keep_end; p0 += bmax) {
      const int64_t B = std::min(bmax, w.keep_end - p0);
      ids.resize(size_t(B * len));
      rows.resize(size_t(B));
      targets.resize(size_t(B));
      for (int64_t b = 0; b < B; ++b) {
        std::copy_n(seq + (w.start - base), len, ids.begin() + b * len);
        const int64_t rel = p0 + b - w.start;
        ids[size_t(b * len + rel)] = kTokMask;
        rows[size_t(b)] = int32_t(b * len + rel);
        targets[size_t(b)] = seq[p0 + b - base];
      }
      Tensor hid = ws.get("trk_hidden", B * len, H);
      m.forward(ids.data(), B, len, hid);
      row_stats(m, hid, rows, targets, stats + (p0 - origin) * 5);
      done += B;
      if (progress) progress(done);
    }
  }
}

}  // namespace

int64_t caduceus_default_window(const CaduceusModel& m) {
  return m.training_length() > 0 ? m.training_length() : kCaduceusDefaultWindow;
}

std::vector<WindowSpan> plan_windows(int64_t n, int64_t window, int64_t overlap) {
  if (window <= 0) throw Error("--window must be positive");
  if (overlap < 0 || overlap >= window)
    throw Error("--overlap (" + std::to_string(overlap) + ") must be in [0, --window) (window " + std::to_string(window) + ")");
  std::vector<WindowSpan> w;
  if (n <= 0) return w;
  if (n <= window) return {WindowSpan{0, n, 0, n}};
  const int64_t stride = window - overlap;
  for (int64_t s = 0; s + window < n; s += stride) w.push_back({s, window, 0, 0});
  w.push_back({n - window, window, 0, 0});
  for (size_t k = 0; k < w.size(); ++k) {
    w[k].keep_begin = k == 0 ? 0 : w[k - 1].keep_end;
    w[k].keep_end = k + 1 == w.size() ? n : (w[k + 1].start + w[k].start + window) / 2;
  }
  return w;
}

void caduceus_sequence_logprobs(CaduceusModel& m, const int32_t* tokens, int64_t n, const CaduceusTrackOptions& opt,
                                float* stats, const std::function<void(int64_t)>& progress) {
  int64_t W, O;
  resolve(m, opt, W, O);
  run_windows(m, tokens, 0, plan_windows(n, W, O), opt, stats, progress);
}

int64_t stream_caduceus_logprobs(CaduceusModel& m, io::FastaReader& reader, const CaduceusTrackOptions& opt,
                                 const std::function<void(const BaseLogProbs&)>& sink) {
  int64_t W, O;
  resolve(m, opt, W, O);
  const int64_t stride = W - O;
  const int64_t piece_len = std::max<int64_t>(stride * batch_for(W, opt.tokens_per_call), 1024);
  int64_t total = 0;
  for (const auto& c : reader.contigs()) total += c.length;
  Progress progress(opt.progress_label, opt.quiet);
  int64_t read_total = 0, emitted_total = 0;

  std::string contig;
  int64_t seg_start = 0;     // genomic position of segment position 0
  std::vector<int32_t> buf;  // tokens of segment positions [buf_off, buf_off + buf.size())
  int64_t buf_off = 0, n_read = 0, done = 0, next_k = 0;

  // The sink of one group of windows (formatting, compressing, writing) runs on its own thread while
  // the model runs the next group: two result slots, one sink call at a time, in order. A slot is
  // refilled only after the sink that read it has returned (the wait before each new sink call).
  struct Slot {
    std::string contig;
    std::vector<float> stats;
    std::vector<int32_t> toks;
  };
  Slot slots[2];
  int slot = 0;
  std::future<void> pending;  // the sink call in flight (rethrows its error on get())
  auto emit = [&](const std::vector<WindowSpan>& wins) {
    if (wins.empty()) return;
    Slot& sl = slots[slot];
    slot ^= 1;
    const int64_t b = wins.front().keep_begin, e = wins.back().keep_end;
    sl.stats.resize(size_t((e - b) * 5));
    const int64_t before = emitted_total;
    run_windows(m, buf.data(), buf_off, wins, opt, sl.stats.data(), [&](int64_t k) {
      emitted_total = before + k;
      progress.update(emitted_total, total);
    });
    sl.toks.assign(buf.begin() + (b - buf_off), buf.begin() + (e - buf_off));
    sl.contig = contig;
    if (pending.valid()) pending.get();
    const int64_t start = seg_start + b;
    pending = std::async(std::launch::async, [&sink, &sl, start, n = e - b] {
      BaseLogProbs r{&sl.contig, start, n, sl.stats.data(), sl.toks.data()};
      sink(r);
    });
    done = e;
  };

  auto fetch = [&]() -> std::optional<io::SequencePiece> {
    io::SequencePiece p;
    if (!reader.next(p, piece_len)) return std::nullopt;
    return p;
  };
  std::optional<io::SequencePiece> cur = fetch();
  while (cur) {
    auto next_f = std::async(std::launch::async, fetch);  // read ahead while the model runs
    io::SequencePiece& p = *cur;
    if (p.segment_start) {
      contig = p.contig;
      seg_start = p.start;
      buf.clear();
      buf_off = n_read = done = next_k = 0;
    }
    const size_t old = buf.size();
    buf.resize(old + p.seq.size());
    for (size_t i = 0; i < p.seq.size(); ++i) buf[old + i] = base_to_token(p.seq[i]);
    n_read += int64_t(p.seq.size());
    read_total += int64_t(p.seq.size());
    if (!p.segment_end) {
      // Regular windows whose successor is known to be regular too can run now.
      std::vector<WindowSpan> ready;
      while ((next_k + 1) * stride + W < n_read) {
        const int64_t s = next_k * stride;
        WindowSpan w{s, W, done, ((next_k + 1) * stride + s + W) / 2};
        if (!ready.empty()) w.keep_begin = ready.back().keep_end;
        ready.push_back(w);
        ++next_k;
      }
      emit(ready);
      // Tokens before the next window's start are no longer needed.
      const int64_t drop = std::min(next_k * stride, n_read) - buf_off;
      if (drop > 0) {
        buf.erase(buf.begin(), buf.begin() + drop);
        buf_off += drop;
      }
    } else {
      std::vector<WindowSpan> rest;
      for (const auto& w : plan_windows(n_read, W, O))
        if (w.keep_end > done) rest.push_back(w);
      emit(rest);
    }
    cur = next_f.get();
  }
  if (pending.valid()) pending.get();
  progress.finish();
  return read_total;
}

void caduceus_masked_acgt(CaduceusModel& m, const std::vector<MaskedQuery>& queries, bool rc_average,
                          int64_t tokens_per_call, float* out) {
  const bool both = rc_average && !m.rc_equivariant();
  const int64_t H = m.hidden_size();
  const auto& comp = m.complement_map();
  auto base_index = [&](int32_t tok) { return tok - kTokA; };
  std::vector<int32_t> ids, rows, targets;
  std::vector<float> st;
  for (size_t q0 = 0; q0 < queries.size();) {
    const int64_t len = queries[q0].len;
    const int64_t per = both ? 2 : 1;
    const int64_t qmax = std::max<int64_t>(1, batch_for(len, tokens_per_call) / per);
    size_t q1 = q0;
    while (q1 < queries.size() && queries[q1].len == len && int64_t(q1 - q0) < qmax) ++q1;
    const int64_t Q = int64_t(q1 - q0), B = Q * per;
    ids.resize(size_t(B * len));
    rows.resize(size_t(B));
    targets.assign(size_t(B), -1);
    for (int64_t q = 0; q < Q; ++q) {
      const MaskedQuery& mq = queries[q0 + size_t(q)];
      if (mq.pos < 0 || mq.pos >= len) throw Error("masked query position " + std::to_string(mq.pos) + " outside its window");
      int32_t* f = ids.data() + q * per * len;
      std::copy_n(mq.tokens, len, f);
      f[mq.pos] = kTokMask;
      rows[size_t(q * per)] = int32_t(q * per * len + mq.pos);
      if (both) {
        int32_t* r = f + len;
        for (int64_t i = 0; i < len; ++i) {
          int32_t t = mq.tokens[len - 1 - i];
          r[i] = (t >= 0 && t < int32_t(comp.size())) ? comp[size_t(t)] : t;
        }
        r[len - 1 - mq.pos] = kTokMask;
        rows[size_t(q * per + 1)] = int32_t((q * per + 1) * len + (len - 1 - mq.pos));
      }
    }
    Tensor hid = m.workspace().get("trk_hidden", B * len, H);
    m.forward(ids.data(), B, len, hid);
    st.resize(size_t(B * 5));
    row_stats(m, hid, rows, targets, st.data());
    for (int64_t q = 0; q < Q; ++q) {
      float lp[4];
      for (int k = 0; k < 4; ++k) {
        double v = st[size_t(q * per * 5 + 1 + k)];
        if (both) {
          const int32_t ck = comp[size_t(kTokA + k)];
          const int idx = base_index(ck);
          v = 0.5 * (v + ((idx >= 0 && idx < 4) ? st[size_t((q * per + 1) * 5 + 1 + idx)] : v));
        }
        lp[k] = float(v);
      }
      double mx = *std::max_element(lp, lp + 4), s = 0;
      for (float v : lp) s += std::exp(double(v) - mx);
      const double lse = mx + std::log(s);
      for (int k = 0; k < 4; ++k) out[(q0 + size_t(q)) * 4 + size_t(k)] = float(lp[k] - lse);
    }
    q0 = q1;
  }
}

std::vector<float> caduceus_masked_llr(CaduceusModel& m, const std::vector<MaskedQuery>& queries,
                                       const std::vector<int32_t>& ref, const std::vector<int32_t>& alt,
                                       int64_t tokens_per_call) {
  DNAMBA_CHECK(ref.size() == queries.size() && alt.size() == queries.size(), "caduceus_masked_llr: sizes differ");
  std::vector<float> lp(queries.size() * 4);
  caduceus_masked_acgt(m, queries, true, tokens_per_call, lp.data());
  std::vector<float> llr(queries.size());
  for (size_t i = 0; i < queries.size(); ++i) {
    const int32_t r = ref[i] - kTokA, a = alt[i] - kTokA;
    llr[i] = (r >= 0 && r < 4 && a >= 0 && a < 4) ? lp[i * 4 + size_t(a)] - lp[i * 4 + size_t(r)]
                                                  : std::numeric_limits<float>::quiet_NaN();
  }
  return llr;
}

std::vector<int32_t> caduceus_reverse_complement(const CaduceusModel& m, const int32_t* tokens, int64_t len) {
  const auto& comp = m.complement_map();
  std::vector<int32_t> r(size_t(std::max<int64_t>(len, 0)));
  for (int64_t i = 0; i < len; ++i) {
    int32_t t = tokens[len - 1 - i];
    r[size_t(i)] = (t >= 0 && t < int32_t(comp.size())) ? comp[size_t(t)] : t;
  }
  return r;
}

void caduceus_embed_window(CaduceusModel& m, const int32_t* tokens, int64_t len, bool rc_average, float* out) {
  if (len <= 0) return;
  const int64_t D = m.config().d_model, H = m.hidden_size();
  Backend& be = m.backend();
  if (m.rc_equivariant()) {
    Tensor hid = m.workspace().get("emb_hidden", len, H);
    m.forward(tokens, 1, len, hid);
    std::vector<float> h(size_t(len * H));
    be.to_host(hid, h.data());
    for (int64_t t = 0; t < len; ++t)
      for (int64_t c = 0; c < D; ++c)
        out[t * D + c] = rc_average ? 0.5f * (h[size_t(t * H + c)] + h[size_t(t * H + D + (D - 1 - c))]) : h[size_t(t * H + c)];
    return;
  }
  const int64_t B = rc_average ? 2 : 1;
  std::vector<int32_t> ids(tokens, tokens + len);
  if (rc_average) {
    auto rc = caduceus_reverse_complement(m, tokens, len);
    ids.insert(ids.end(), rc.begin(), rc.end());
  }
  Tensor hid = m.workspace().get("emb_hidden", B * len, H);
  m.forward(ids.data(), B, len, hid);
  std::vector<float> h(size_t(B * len * H));
  be.to_host(hid, h.data());
  for (int64_t t = 0; t < len; ++t)
    for (int64_t c = 0; c < D; ++c)
      out[t * D + c] = rc_average ? 0.5f * (h[size_t(t * D + c)] + h[size_t((len + len - 1 - t) * D + c)]) : h[size_t(t * D + c)];
}

}  // namespace dnamba
