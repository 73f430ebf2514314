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
  std::vector<float> stats;
  std::vector<int32_t> targets;
  while (cur) {
    // Prefetch the next piece on another thread while the model runs.
    auto next_f = std::async(std::launch::async, [&] { return read_piece(reader, opt.chunk); });
    Piece& p = *cur;
    const int64_t n = int64_t(p.tokens.size());
    if (p.seq.segment_start) model.reset_state(state);
    std::optional<Piece> next;
    bool next_fetched = false;
    if (n > 0) {
      // The last base's target is the first base of the next piece of the same segment.
      if (!p.seq.segment_end) {
        next = next_f.get();
        next_fetched = true;
      }
      targets.assign(p.tokens.begin() + 1, p.tokens.end());
      targets.push_back(next && !next->seq.segment_start && !next->tokens.empty() ? next->tokens[0] : -1);
      Tensor hid = model.workspace().get("stream_hidden", n, D);
      model.forward_host(p.tokens.data(), 1, n, state, hid);
      Tensor tg = model.workspace().get("stream_targets", n, 1, DType::I32);
      be.to_device(tg, targets.data());
      Tensor out = model.workspace().get("stream_stats", n, 5);
      be.token_logprobs(hid, model.lm_head(), tg, out);
      stats.resize(size_t(n * 5));
      be.to_host(out, stats.data());
      // Row t predicts base t+1: results for bases p.start+1 .. p.start+n (the last one only when
      // the next piece continues this segment).
      int64_t m = targets.back() >= 0 ? n : n - 1;
      if (m > 0) {
        BaseLogProbs r{&p.seq.contig, p.seq.start + 1, m, stats.data(), targets.data()};
        sink(r);
      }
      done += n;
      progress.update(done, total);
    }
    if (!next_fetched) next = next_f.get();
    cur = std::move(next);
  }
  progress.finish();
  return done;
}

}  // namespace dnamba
