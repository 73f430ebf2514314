#include "pipeline/embed_stream.h"

#include <algorithm>
#include <charconv>
#include <future>
#include <optional>

#include "common/progress.h"
#include "model/tokenizer.h"

namespace dnamba {

// ---------------------------------------------------------------- pooling

std::string EmbedPooling::str() const {
  switch (kind) {
    case Kind::None: return "none";
    case Kind::Mean: return "mean";
    case Kind::Window: return "window:" + std::to_string(window) + ":" + std::to_string(step);
  }
  return "?";
}

EmbedPooling parse_pooling(const std::string& s) {
  EmbedPooling p;
  if (s == "none") return p;
  if (s == "mean") {
    p.kind = EmbedPooling::Kind::Mean;
    return p;
  }
  auto bad = [&]() { return Error("--pool '" + s + "': expected none, mean, window:W or window:W:S (W, S >= 1 bases)"); };
  if (s.rfind("window:", 0) != 0) throw bad();
  auto num = [&](std::string_view t) {
    int64_t v = 0;
    auto [ptr, ec] = std::from_chars(t.data(), t.data() + t.size(), v);
    if (ec != std::errc() || ptr != t.data() + t.size() || v < 1) throw bad();
    return v;
  };
  std::string_view rest(s);
  rest.remove_prefix(7);
  auto colon = rest.find(':');
  p.kind = EmbedPooling::Kind::Window;
  p.window = num(rest.substr(0, colon));
  p.step = colon == std::string_view::npos ? p.window : num(rest.substr(colon + 1));
  return p;
}

SegmentPooler::SegmentPooler(EmbedPooling pool, int64_t d, EmbedSink sink)
    : pool_(pool), d_(d), sink_(std::move(sink)) {}

void SegmentPooler::begin(const EmbedRow& meta) {
  DNAMBA_CHECK(!open_, "pooler: begin() inside a segment");
  meta_ = meta;
  open_ = true;
  pos_ = 0;
  next_window_ = 0;
  if (pool_.kind == EmbedPooling::Kind::Mean) {
    // The whole segment is one window that never closes before end().
    Window w{0, std::vector<double>(size_t(d_), 0.0)};
    windows_.assign(1, std::move(w));
  }
}

void SegmentPooler::emit_window(const Window& w, int64_t end) {
  EmbedRow r = meta_;
  r.start = meta_.start + w.start;
  r.end = meta_.start + end;
  out_rows_.push_back(r);
  const double inv = 1.0 / double(end - w.start);
  for (int64_t c = 0; c < d_; ++c) out_vals_.push_back(float(w.sum[size_t(c)] * inv));
}

void SegmentPooler::flush() {
  if (out_rows_.empty()) return;
  sink_(out_rows_.data(), out_vals_.data(), int64_t(out_rows_.size()));
  rows_emitted_ += int64_t(out_rows_.size());
  out_rows_.clear();
  out_vals_.clear();
}

void SegmentPooler::add(const float* h, int64_t n) {
  DNAMBA_CHECK(open_, "pooler: add() outside a segment");
  if (n <= 0) return;
  switch (pool_.kind) {
    case EmbedPooling::Kind::None: {
      out_rows_.resize(size_t(n));
      for (int64_t i = 0; i < n; ++i) {
        EmbedRow& r = out_rows_[size_t(i)];
        r = meta_;
        r.start = meta_.start + pos_ + i;
        r.end = r.start + 1;
      }
      sink_(out_rows_.data(), h, n);  // values straight from the caller's buffer
      rows_emitted_ += n;
      out_rows_.clear();
      break;
    }
    case EmbedPooling::Kind::Mean: {
      auto& s = windows_[0].sum;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t c = 0; c < d_; ++c) s[size_t(c)] += h[i * d_ + c];
      break;
    }
    case EmbedPooling::Kind::Window: {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t p = pos_ + i;
        if (p == next_window_) {
          Window w;
          if (!spare_.empty()) {
            w = std::move(spare_.back());
            spare_.pop_back();
          }
          w.start = p;
          w.sum.assign(size_t(d_), 0.0);
          windows_.push_back(std::move(w));
          next_window_ += pool_.step;
        }
        const float* row = h + i * d_;
        for (auto& w : windows_)
          for (int64_t c = 0; c < d_; ++c) w.sum[size_t(c)] += row[c];
        // Windows all have width W and open in order, so they close in order.
        while (!windows_.empty() && windows_.front().start + pool_.window == p + 1) {
          emit_window(windows_.front(), p + 1);
          spare_.push_back(std::move(windows_.front()));
          windows_.erase(windows_.begin());
        }
      }
      flush();
      break;
    }
  }
  pos_ += n;
}

void SegmentPooler::end() {
  DNAMBA_CHECK(open_, "pooler: end() outside a segment");
  if (pool_.kind != EmbedPooling::Kind::None && pos_ > 0)
    for (auto& w : windows_) emit_window(w, pos_);  // mean, or windows cut short by the segment end
  for (auto& w : windows_) spare_.push_back(std::move(w));
  windows_.clear();
  flush();
  open_ = false;
}

// ---------------------------------------------------------------- model runs

namespace {

int64_t resolve_layer(const MambaLM& model, int64_t layer) {
  const int64_t n = model.config().n_layer;
  if (layer < 0) layer = n;
  DNAMBA_CHECK(layer <= n, "embed: layer out of range");
  return layer;
}

// Runs ids [batch*len] through the model into the host buffer out [batch*len, D].
void run_hidden(MambaLM& model, const int32_t* ids, int64_t batch, int64_t len, std::vector<LayerState>& state,
                int64_t layer, std::vector<float>& out) {
  const int64_t T = batch * len, D = model.config().d_model;
  Tensor t = model.workspace().get("embed_ids", T, 1, DType::I32);
  model.backend().to_device(t, ids);
  Tensor hid = model.workspace().get("embed_hidden", T, D);  // [T, D]
  model.forward_layer(t, batch, len, state, layer, hid);
  out.resize(size_t(T * D));
  model.backend().to_host(hid, out.data());
}

struct FastaPiece {
  io::SequencePiece seq;
  std::vector<int32_t> tokens;
};

std::optional<FastaPiece> read_fasta_piece(io::FastaReader& r, int64_t max_len) {
  FastaPiece p;
  if (!r.next(p.seq, max_len)) return std::nullopt;
  tokenize(p.seq.seq, p.tokens);
  return p;
}

}  // namespace

EmbedStats embed_fasta(MambaLM& model, io::FastaReader& reader,
                       const std::function<int32_t(const std::string&)>& contig_index,
                       const EmbedOptions& opt, const EmbedSink& sink) {
  DNAMBA_CHECK(opt.chunk > 0, "chunk must be positive");
  const int64_t D = model.config().d_model, layer = resolve_layer(model, opt.layer);
  auto state = model.new_state(1);
  SegmentPooler pooler(opt.pool, D, sink);
  EmbedStats st;
  int64_t total = 0;
  for (const auto& c : reader.contigs()) total += c.length;
  Progress progress("embed", opt.quiet);
  std::vector<float> hidden;
  std::optional<FastaPiece> cur = read_fasta_piece(reader, opt.chunk);
  while (cur) {
    auto next_f = std::async(std::launch::async, [&] { return read_fasta_piece(reader, opt.chunk); });
    FastaPiece& p = *cur;
    if (p.seq.segment_start) {
      model.reset_state(state);
      pooler.begin(EmbedRow{contig_index(p.seq.contig), p.seq.start, 0, '+', -1});
      ++st.segments;
    }
    const int64_t n = int64_t(p.tokens.size());
    if (n > 0) {
      run_hidden(model, p.tokens.data(), 1, n, state, layer, hidden);
      pooler.add(hidden.data(), n);
      st.bases += n;
      progress.update(st.bases, total);
    }
    if (p.seq.segment_end) pooler.end();
    cur = next_f.get();
  }
  progress.finish();
  st.rows = pooler.rows_emitted();
  return st;
}

namespace {

struct ReadItem {
  io::ReadRecord rec;
  std::vector<int32_t> tokens;
};

// Reads the next batch: up to max_batch reads while batch * longest <= chunk (a read longer than
// chunk is a batch of its own). `carry` holds a read that did not fit the previous batch.
std::vector<ReadItem> read_batch(io::ReadsReader& r, std::optional<ReadItem>& carry, int64_t max_batch, int64_t chunk) {
  std::vector<ReadItem> batch;
  int64_t longest = 0;
  for (;;) {
    ReadItem it;
    if (carry) {
      it = std::move(*carry);
      carry.reset();
    } else {
      if (!r.next(it.rec)) break;
      tokenize(it.rec.seq, it.tokens);
    }
    const int64_t len = int64_t(it.tokens.size());
    const int64_t l2 = std::max(longest, len);
    if (!batch.empty() && (int64_t(batch.size()) + 1) * l2 > chunk) {
      carry = std::move(it);
      break;
    }
    longest = l2;
    batch.push_back(std::move(it));
    if (int64_t(batch.size()) >= max_batch || len > chunk) break;
  }
  return batch;
}

}  // namespace

EmbedStats embed_reads(MambaLM& model, io::ReadsReader& reader, const EmbedOptions& opt, const EmbedSink& sink,
                       const std::function<void(const io::ReadRecord&, int64_t)>& on_read) {
  DNAMBA_CHECK(opt.chunk > 0 && opt.max_batch > 0, "chunk and batch must be positive");
  const int64_t D = model.config().d_model, layer = resolve_layer(model, opt.layer);
  SegmentPooler pooler(opt.pool, D, sink);
  EmbedStats st;
  Progress progress("embed reads", opt.quiet);
  std::vector<float> hidden;
  std::vector<int32_t> ids;
  std::optional<ReadItem> carry;
  std::vector<std::vector<LayerState>> states;  // by batch size, allocated once each
  auto state_for = [&](int64_t b) -> std::vector<LayerState>& {
    if (int64_t(states.size()) < b + 1) states.resize(size_t(b + 1));
    if (states[size_t(b)].empty()) states[size_t(b)] = model.new_state(b);
    else model.reset_state(states[size_t(b)]);
    return states[size_t(b)];
  };
  auto begin_read = [&](const ReadItem& it) {
    on_read(it.rec, st.segments);
    const char strand = it.rec.tid < 0 ? '.' : (it.rec.reverse() ? '-' : '+');
    pooler.begin(EmbedRow{it.rec.tid, 0, 0, strand, st.segments});
    ++st.segments;
  };

  std::vector<ReadItem> cur = read_batch(reader, carry, opt.max_batch, opt.chunk);
  while (!cur.empty()) {
    auto next_f = std::async(std::launch::async, [&] { return read_batch(reader, carry, opt.max_batch, opt.chunk); });
    const int64_t B = int64_t(cur.size());
    if (B == 1) {
      // One read, in pieces of at most `chunk` bases with the state carried between them.
      const ReadItem& it = cur[0];
      auto& state = state_for(1);
      begin_read(it);
      const int64_t n = int64_t(it.tokens.size());
      for (int64_t c0 = 0; c0 < n; c0 += opt.chunk) {
        const int64_t w = std::min(opt.chunk, n - c0);
        run_hidden(model, it.tokens.data() + c0, 1, w, state, layer, hidden);
        pooler.add(hidden.data(), w);
      }
      pooler.end();
      st.bases += n;
    } else {
      // Several whole reads in one call, right-padded with N to the longest.
      int64_t L = 0;
      for (auto& it : cur) L = std::max(L, int64_t(it.tokens.size()));
      ids.assign(size_t(B * L), kTokN);
      for (int64_t b = 0; b < B; ++b) std::copy(cur[size_t(b)].tokens.begin(), cur[size_t(b)].tokens.end(), ids.begin() + b * L);
      auto& state = state_for(B);
      run_hidden(model, ids.data(), B, L, state, layer, hidden);
      for (int64_t b = 0; b < B; ++b) {
        const ReadItem& it = cur[size_t(b)];
        begin_read(it);
        pooler.add(hidden.data() + b * L * D, int64_t(it.tokens.size()));
        pooler.end();
        st.bases += int64_t(it.tokens.size());
      }
    }
    progress.update(st.bases, 0);
    cur = next_f.get();
  }
  progress.finish();
  st.rows = pooler.rows_emitted();
  return st;
}

}  // namespace dnamba
