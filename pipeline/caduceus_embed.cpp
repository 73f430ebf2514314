#include "pipeline/caduceus_embed.h"

#include <algorithm>
#include <vector>

#include "common/progress.h"
#include "model/tokenizer.h"
#include "pipeline/caduceus_track.h"

namespace dnamba {

namespace {

void resolve(const CaduceusModel& m, const CaduceusEmbedOptions& opt, int64_t& W, int64_t& O) {
  W = opt.window > 0 ? opt.window : caduceus_default_window(m);
  O = opt.overlap >= 0 ? opt.overlap : caduceus_default_overlap(W);
  if (O >= W)
    throw Error("--overlap (" + std::to_string(O) + ") must be smaller than --window (" + std::to_string(W) + ")");
}

// Runs one window (seq[i] = token at segment position base + i) and hands its kept rows to the pooler.
void run_window(CaduceusModel& m, const int32_t* seq, int64_t base, const WindowSpan& w, bool rc_average,
                std::vector<float>& buf, SegmentPooler& pooler) {
  const int64_t D = m.config().d_model;
  buf.resize(size_t(w.len * D));
  caduceus_embed_window(m, seq + (w.start - base), w.len, rc_average, buf.data());
  pooler.add(buf.data() + (w.keep_begin - w.start) * D, w.keep_end - w.keep_begin);
}

// caduceus_embed_window over B sequences of `len` tokens each (ids [B*len]) in one model call:
// out [B*len, D], the same values (rows of sequence b at b*len).
void embed_batch(CaduceusModel& m, const std::vector<int32_t>& ids, int64_t B, int64_t len, bool rc_average,
                 std::vector<float>& out) {
  const int64_t D = m.config().d_model, H = m.hidden_size(), T = B * len;
  out.resize(size_t(T * D));
  const bool ph_rc = rc_average && !m.rc_equivariant();
  std::vector<int32_t> all(ids);
  if (ph_rc)
    for (int64_t b = 0; b < B; ++b) {
      auto rc = caduceus_reverse_complement(m, ids.data() + b * len, len);
      all.insert(all.end(), rc.begin(), rc.end());
    }
  const int64_t nseq = ph_rc ? 2 * B : B;
  Tensor hid = m.workspace().get("emb_hidden", nseq * len, H);  // [nseq*len, H]
  m.forward(all.data(), nseq, len, hid);
  std::vector<float> h(size_t(nseq * len * H));
  m.backend().to_host(hid, h.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < len; ++t) {
      const float* f = h.data() + (b * len + t) * H;
      float* o = out.data() + (b * len + t) * D;
      if (m.rc_equivariant()) {  // PS: forward half, and the RC half with its channels reversed
        for (int64_t c = 0; c < D; ++c) o[c] = rc_average ? 0.5f * (f[c] + f[D + (D - 1 - c)]) : f[c];
      } else if (ph_rc) {  // Ph: the RC pass of sequence b, position-mirrored
        const float* r = h.data() + ((B + b) * len + (len - 1 - t)) * H;
        for (int64_t c = 0; c < D; ++c) o[c] = 0.5f * (f[c] + r[c]);
      } else {
        for (int64_t c = 0; c < D; ++c) o[c] = f[c];
      }
    }
}

}  // namespace

EmbedStats caduceus_embed_fasta(CaduceusModel& m, io::FastaReader& reader,
                                const std::function<int32_t(const std::string&)>& contig_index,
                                const CaduceusEmbedOptions& opt, const EmbedSink& sink) {
  int64_t W, O;
  resolve(m, opt, W, O);
  const int64_t stride = W - O, D = m.config().d_model;
  SegmentPooler pooler(opt.pool, D, sink);
  EmbedStats st;
  int64_t total = 0;
  for (const auto& c : reader.contigs()) total += c.length;
  Progress progress("embed", opt.quiet);
  std::vector<int32_t> buf;  // tokens of segment positions [buf_off, buf_off + buf.size())
  std::vector<float> hid;
  int64_t buf_off = 0, n_read = 0, done = 0, next_k = 0;
  bool open = false;
  io::SequencePiece p;
  const int64_t piece_len = std::max<int64_t>(stride, int64_t(1) << 16);
  while (reader.next(p, piece_len)) {
    if (p.segment_start) {
      pooler.begin(EmbedRow{contig_index(p.contig), p.start, 0, '+', -1});
      open = true;
      ++st.segments;
      buf.clear();
      buf_off = n_read = done = next_k = 0;
    }
    const size_t old = buf.size();
    buf.resize(old + p.seq.size());
    for (size_t i = 0; i < p.seq.size(); ++i) buf[old + i] = base_to_token(p.seq[i]);
    n_read += int64_t(p.seq.size());
    if (!p.segment_end) {
      // Regular windows whose successor is known to be regular too can run now (as plan_windows has them).
      while ((next_k + 1) * stride + W < n_read) {
        const int64_t s = next_k * stride;
        const WindowSpan w{s, W, done, ((next_k + 1) * stride + s + W) / 2};
        run_window(m, buf.data(), buf_off, w, opt.rc_average, hid, pooler);
        st.bases += w.keep_end - w.keep_begin;
        done = w.keep_end;
        ++next_k;
        progress.update(st.bases, total);
      }
      const int64_t drop = std::min(next_k * stride, n_read) - buf_off;
      if (drop > 0) {
        buf.erase(buf.begin(), buf.begin() + drop);
        buf_off += drop;
      }
    } else {
      for (const auto& w : plan_windows(n_read, W, O)) {
        if (w.keep_end <= done) continue;
        DNAMBA_CHECK(w.keep_begin == done && w.start >= buf_off, "embed: window plan out of step");
        run_window(m, buf.data(), buf_off, w, opt.rc_average, hid, pooler);
        st.bases += w.keep_end - w.keep_begin;
        done = w.keep_end;
      }
      progress.update(st.bases, total);
      pooler.end();
      open = false;
    }
  }
  DNAMBA_CHECK(!open, "embed: a FASTA segment without its end");
  progress.finish();
  st.rows = pooler.rows_emitted();
  return st;
}

EmbedStats caduceus_embed_reads(CaduceusModel& m, io::ReadsReader& reader, const CaduceusEmbedOptions& opt,
                                const EmbedSink& sink,
                                const std::function<void(const io::ReadRecord&, int64_t)>& on_read) {
  int64_t W, O;
  resolve(m, opt, W, O);
  SegmentPooler pooler(opt.pool, m.config().d_model, sink);
  EmbedStats st;
  Progress progress("embed reads", opt.quiet);
  const int64_t D = m.config().d_model;
  std::vector<int32_t> tokens, ids;
  std::vector<float> hid;
  std::vector<io::ReadRecord> batch;
  int64_t blen = -1;
  // Consecutive reads of one length (at most the window) run together, unpadded: same values.
  auto flush = [&]() {
    if (batch.empty()) return;
    const int64_t B = int64_t(batch.size());
    if (blen > 0) embed_batch(m, ids, B, blen, opt.rc_average, hid);
    for (int64_t b = 0; b < B; ++b) {
      const io::ReadRecord& r = batch[size_t(b)];
      on_read(r, st.segments);
      const char strand = r.tid < 0 ? '.' : (r.reverse() ? '-' : '+');
      pooler.begin(EmbedRow{r.tid, 0, 0, strand, st.segments});
      ++st.segments;
      if (blen > 0) pooler.add(hid.data() + b * blen * D, blen);
      pooler.end();
      st.bases += blen;
    }
    batch.clear();
    ids.clear();
    progress.update(st.bases, 0);
  };
  io::ReadRecord r;
  while (reader.next(r)) {
    tokenize(r.seq, tokens);
    const int64_t n = int64_t(tokens.size());
    if (n > W) {  // windowed, on its own
      flush();
      on_read(r, st.segments);
      const char strand = r.tid < 0 ? '.' : (r.reverse() ? '-' : '+');
      pooler.begin(EmbedRow{r.tid, 0, 0, strand, st.segments});
      ++st.segments;
      for (const auto& w : plan_windows(n, W, O)) run_window(m, tokens.data(), 0, w, opt.rc_average, hid, pooler);
      pooler.end();
      st.bases += n;
      progress.update(st.bases, 0);
      continue;
    }
    if (!batch.empty() && (n != blen || int64_t(batch.size()) >= opt.max_batch ||
                           (int64_t(batch.size()) + 1) * n > opt.tokens_per_call))
      flush();
    blen = n;
    batch.push_back(std::move(r));
    r = io::ReadRecord();
    ids.insert(ids.end(), tokens.begin(), tokens.end());
  }
  flush();
  progress.finish();
  st.rows = pooler.rows_emitted();
  return st;
}

}  // namespace dnamba
