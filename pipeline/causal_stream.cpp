#include "pipeline/causal_stream.h"

#include <algorithm>
#include <future>
#include <optional>

#include "common/progress.h"
#include "model/tokenizer.h"

namespace dnamba {

namespace {

struct Piece {
  io::SequencePiece seq;
  std::vector<int32_t> tokens;
};

std::optional<Piece> read_piece(io::FastaReader& r, int64_t max_len) {
  Piece p;
  if (!r.next(p.seq, max_len)) return std::nullopt;
  tokenize(p.seq.seq, p.tokens);
  return p;
}

}  // namespace

int64_t stream_causal_logprobs(MambaLM& model, io::FastaReader& reader, const CausalStreamOptions& opt,
                               const std::function<void(const BaseLogProbs&)>& sink) {
  DNAMBA_CHECK(opt.chunk > 0, "chunk must be positive");
  Backend& be = model.backend();
  const int64_t D = model.config().d_model;
  auto state = model.new_state(1);
  int64_t total = 0;
  for (const auto& c : reader.contigs()) total += c.length;
  Progress progress(opt.progress_label, opt.quiet);
  int64_t done = 0;

  std::optional<Piece> cur = read_piece(reader, opt.chunk);
  // The device always has the next piece queued while the host handles the last one:
  //   piece k: queue its forward, log-probs and an asynchronous copy of them into page-locked
  //   memory, and a fence; then wait for piece k-1's fence (the device goes on with piece k) and hand
  //   piece k-1 to the sink, which formats and writes it on another thread. One sink call at a time,
  //   in order. Two result slots: slot k%2 is refilled only after the sink of piece k-2 returned.
  // Page-locked buffers, so that copies in both directions are queued without blocking the host.
  struct Result {
    std::optional<Piece> piece;  // keeps the contig name alive while the sink runs
    float* stats = nullptr;      // [n, 5]
    int32_t* ids = nullptr;      // [n] token ids of the piece
    int32_t* targets = nullptr;  // [n] the next base of each position (-1: none)
    int64_t capacity = 0;        // rows the buffers hold
    int64_t m = 0;               // rows with a prediction
    int64_t fence = -1;          // -1: nothing in flight
  };
  Result slots[2];
  struct Freer {
    Backend& be;
    Result* slots;
    ~Freer() {
      try {
        be.synchronize();  // no copy into the buffers is still in flight (e.g. after an error)
      } catch (...) {
      }
      for (int i = 0; i < 2; ++i) {
        be.host_free(slots[i].stats);
        be.host_free(slots[i].ids);
        be.host_free(slots[i].targets);
      }
    }
  } freer{be, slots};
  int slot = 0;
  std::future<void> writing;  // declared after slots: destroyed (waited for) before them
  // Hands the piece in slot s to the sink once its results have arrived.
  auto hand_over = [&](int s) {
    Result& res = slots[s];
    if (res.fence < 0) return;
    be.wait(res.fence);
    res.fence = -1;
    if (writing.valid()) writing.get();  // the previous piece is written (rethrows its error)
    if (res.m > 0) {
      const Piece& rp = *res.piece;
      BaseLogProbs r{&rp.seq.contig, rp.seq.start + 1, res.m, res.stats, res.targets};
      writing = std::async(std::launch::async, [&sink, r] { sink(r); });
    }
  };
  while (cur) {
    // Prefetch the next piece on another thread while the model runs.
    auto next_f = std::async(std::launch::async, [&] { return read_piece(reader, opt.chunk); });
    Piece& p = *cur;
    const int64_t n = int64_t(p.tokens.size());
    if (p.seq.segment_start) model.reset_state(state);
    std::optional<Piece> next;
    bool next_fetched = false;
    if (n > 0) {
      // This slot last held piece k-2: its copies are done (its fence was waited for last round).
      Result& res = slots[slot];
      if (res.capacity < n) {
        if (writing.valid()) writing.get();  // the sink may still read the old buffers
        for (void* q : {static_cast<void*>(res.stats), static_cast<void*>(res.ids), static_cast<void*>(res.targets)})
          be.host_free(q);
        res.stats = nullptr, res.ids = res.targets = nullptr, res.capacity = 0;
        res.stats = static_cast<float*>(be.host_alloc(size_t(n) * 5 * sizeof(float)));
        res.ids = static_cast<int32_t*>(be.host_alloc(size_t(n) * sizeof(int32_t)));
        res.targets = static_cast<int32_t*>(be.host_alloc(size_t(n) * sizeof(int32_t)));
        res.capacity = n;
      }
      // The model's work is queued first (asynchronous on a GPU), then the next piece is awaited:
      // the last base's target is the first base of the next piece of the same segment.
      std::copy(p.tokens.begin(), p.tokens.end(), res.ids);
      Tensor ids = model.workspace().get("stream_ids", n, 1, DType::I32);
      be.to_device(ids, res.ids);
      Tensor hid = model.workspace().get("stream_hidden", n, D);
      model.forward(ids, 1, n, state, hid);
      if (!p.seq.segment_end) {
        next = next_f.get();
        next_fetched = true;
      }
      // The sink of piece k-2 (handed over last round) reads this slot's targets and stats: it must be
      // done before they are refilled (the device is busy with piece k meanwhile).
      if (writing.valid()) writing.get();
      std::copy(p.tokens.begin() + 1, p.tokens.end(), res.targets);
      res.targets[n - 1] = next && !next->seq.segment_start && !next->tokens.empty() ? next->tokens[0] : -1;
      Tensor tg = model.workspace().get("stream_targets", n, 1, DType::I32);
      be.to_device(tg, res.targets);
      Tensor out = model.workspace().get("stream_stats", n, 5);
      be.token_logprobs(hid, model.lm_head(), tg, out);
      be.to_host_async(out, res.stats);
      res.fence = be.fence();
      // Row t predicts base t+1: results for bases p.start+1 .. p.start+n (the last one only when
      // the next piece continues this segment).
      res.m = res.targets[n - 1] >= 0 ? n : n - 1;
      res.piece = std::move(cur);
      hand_over(slot ^ 1);  // piece k-1, while the device computes piece k
      slot ^= 1;
      done += n;
      progress.update(done, total);
    }
    if (!next_fetched) next = next_f.get();
    cur = std::move(next);
  }
  hand_over(slot ^ 1);
  if (writing.valid()) writing.get();
  progress.finish();
  return done;
}

}  // namespace dnamba
