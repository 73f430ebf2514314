// `dnamba embed` with a masked-LM (Caduceus) model: per-base embeddings of the last layer (after the
// final norm), windowed like `dnamba track` (caduceus_track.h: windows of W bases overlapping by O,
// each base taken from the window where it is farthest from an edge), pooled by SegmentPooler.
//
// rc_average (default): PS - mean of the forward half and the channel-reversed RC half of the hidden
// state (the model is RC-equivariant, so this is the RC-invariant part); Ph - mean of the forward pass
// and the position-mirrored pass over the reverse complement. Without it: PS the forward half, Ph the
// forward pass. Rows are d_model wide in both cases. Only the last layer is offered (a bidirectional
// model's intermediate residual streams are not exposed as a stable output).
#pragma once
#include <cstdint>
#include <functional>
#include <string>

#include "io/fasta.h"
#include "io/reads.h"
#include "model/caduceus.h"
#include "pipeline/embed_stream.h"

namespace dnamba {

struct CaduceusEmbedOptions {
  int64_t window = 0;    // 0: caduceus_default_window()
  int64_t overlap = -1;  // -1: caduceus_default_overlap(window)
  bool rc_average = true;
  EmbedPooling pool;
  int64_t max_batch = 64;                      // reads: most reads of one length per model call
  int64_t tokens_per_call = int64_t(1) << 20;  // reads: most tokens per model call
  bool quiet = false;
};

// FASTA input: every segment the reader yields (contigs or regions), about two windows held at a time.
EmbedStats caduceus_embed_fasta(CaduceusModel& m, io::FastaReader& reader,
                                const std::function<int32_t(const std::string&)>& contig_index,
                                const CaduceusEmbedOptions& opt, const EmbedSink& sink);

// Reads input: consecutive reads of the same length run together (never padded: a bidirectional
// model's outputs depend on padding); a read longer than the window runs on its own, windowed. on_read(read, index) comes before the read's rows.
EmbedStats caduceus_embed_reads(CaduceusModel& m, io::ReadsReader& reader, const CaduceusEmbedOptions& opt,
                                const EmbedSink& sink,
                                const std::function<void(const io::ReadRecord&, int64_t)>& on_read);

}  // namespace dnamba
