// Per-base track values of a causal model on several devices in one process (`dnamba track --device
// cuda:0,1`, `cuda:all`).
//
// The unit of work is one whole segment (a contig, or one region). stream_causal_logprobs resets the
// state at every segment start and cuts a segment into the same chunks whatever else its reader holds,
// so a segment's values are the same bits whichever worker runs it (on devices of one kind) and the
// same as in a one-device run. Segments are assigned before anything runs, from their lengths alone
// (assign_track_segments): the assignment never depends on timing. Every worker has its own thread,
// backend, model copy and FASTA reader, and runs its segments in input order. A segment's values wait
// in a spool (memory; past a memory budget, an unlinked temporary file in $TMPDIR) until every segment
// before it has been handed on; the caller's sink then gets exactly the calls of a one-device run, in
// the same order, on the calling thread.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "io/region.h"
#include "model/mamba_lm.h"
#include "pipeline/causal_stream.h"

namespace dnamba {

// A model on one device, made and used only by its worker thread (CUDA's current device is per thread).
struct TrackDevice {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<MambaLM> model;  // on *backend; destroyed first
};
// Makes worker i's device (called in worker i's thread, all workers at once).
using TrackDeviceLoader = std::function<TrackDevice(size_t worker)>;

// The values of r's n bases into values (resized to r.n). Called on the workers' threads, concurrently.
using TrackValueFn = std::function<void(const BaseLogProbs& r, std::vector<float>& values)>;
// Values of the bases [start, start + n) of contig, in input order, on the calling thread: the calls the
// one-device sink gets, one per stream_causal_logprobs result.
using TrackRunSink = std::function<void(const std::string& contig, int64_t start, const float* values, int64_t n)>;

// The worker of each segment: largest first (equal lengths: input order), each to the worker with the
// fewest bases so far (ties: the lowest index). lengths[k] < 0 counts as 0.
std::vector<size_t> assign_track_segments(const std::vector<int64_t>& lengths, size_t workers);

struct TrackDevicesOptions {
  CausalStreamOptions stream;  // chunk, and the progress (shown by the calling thread for all workers)
  // Values of waiting segments held in memory, all segments together (4 bytes each); beyond it a
  // segment's values go to a temporary file.
  int64_t memory_values = int64_t(1) << 25;
};

// Streams `segments` (regions of fasta_path with resolved ends, end != -1; read through an index) on one
// worker per entry of `names` (names[i]: worker i's device, for messages). The first error - a failed
// load, a bad input, a failing sink - stops every worker and is thrown; a worker's error ends in
// " (worker on device NAME)". Returns the number of bases read.
int64_t stream_track_values_multi(const std::vector<std::string>& names, const TrackDeviceLoader& load,
                                  const std::string& fasta_path, const std::vector<io::Region>& segments,
                                  const TrackDevicesOptions& opt, const TrackValueFn& values, const TrackRunSink& sink);

}  // namespace dnamba
