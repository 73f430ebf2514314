#include "pipeline/causal_stream.h"

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
  // Double-buffered results: the sink (formatting and writing) of one piece runs on another thread
  // while the model computes the next. One sink call at a time, in order: each waits for the last.
  struct Result {
    std::optional<Piece> piece;  // keeps the contig name alive while the sink runs
    std::vector<float> stats;
    std::vector<int32_t> targets;
  };
  Result slots[2];
  int slot = 0;
  std::future<void> writing;  // declared after slots: destroyed (waited for) before them
  while (cur) {
    // Prefetch the next piece on another thread while the model runs.
    auto next_f = std::async(std::launch::async, [&] { return read_piece(reader, opt.chunk); });
    Piece& p = *cur;
    const int64_t n = int64_t(p.tokens.size());
    if (p.seq.segment_start) model.reset_state(state);
    std::optional<Piece> next;
    bool next_fetched = false;
    if (n > 0) {
      Result& res = slots[slot];  // free: its sink finished before the last one started
      std::vector<int32_t>& targets = res.targets;
      std::vector<float>& stats = res.stats;
      // The model's work is queued first (asynchronous on a GPU), then the next piece is awaited:
      // the last base's target is the first base of the next piece of the same segment.
      Tensor hid = model.workspace().get("stream_hidden", n, D);
      model.forward_host(p.tokens.data(), 1, n, state, hid);
      if (!p.seq.segment_end) {
        next = next_f.get();
        next_fetched = true;
      }
      targets.assign(p.tokens.begin() + 1, p.tokens.end());
      targets.push_back(next && !next->seq.segment_start && !next->tokens.empty() ? next->tokens[0] : -1);
      Tensor tg = model.workspace().get("stream_targets", n, 1, DType::I32);
      be.to_device(tg, targets.data());
      Tensor out = model.workspace().get("stream_stats", n, 5);
      be.token_logprobs(hid, model.lm_head(), tg, out);
      stats.resize(size_t(n * 5));
      be.to_host(out, stats.data());
      // Row t predicts base t+1: results for bases p.start+1 .. p.start+n (the last one only when
      // the next piece continues this segment).
      const int64_t m = targets.back() >= 0 ? n : n - 1;
      if (writing.valid()) writing.get();  // the previous piece is written (rethrows its error)
      if (m > 0) {
        res.piece = std::move(cur);
        const Piece& rp = *res.piece;
        BaseLogProbs r{&rp.seq.contig, rp.seq.start + 1, m, stats.data(), targets.data()};
        writing = std::async(std::launch::async, [&sink, r] { sink(r); });
        slot ^= 1;
      }
      done += n;
      progress.update(done, total);
    }
    if (!next_fetched) next = next_f.get();
    cur = std::move(next);
  }
  if (writing.valid()) writing.get();
  progress.finish();
  return done;
}

}  // namespace dnamba
