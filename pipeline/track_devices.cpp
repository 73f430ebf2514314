#include "pipeline/track_devices.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>
#include <numeric>
#include <thread>

#include "backend/device_list.h"
#include "common/error.h"
#include "common/progress.h"
#include "io/fasta.h"

namespace dnamba {

std::vector<size_t> assign_track_segments(const std::vector<int64_t>& lengths, size_t workers) {
  DNAMBA_CHECK(workers > 0, "assign_track_segments: no workers");
  std::vector<size_t> order(lengths.size());
  std::iota(order.begin(), order.end(), size_t(0));
  auto len = [&](size_t k) { return std::max<int64_t>(0, lengths[k]); };
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return len(a) > len(b); });
  std::vector<int64_t> load(workers, 0);
  std::vector<size_t> owner(lengths.size(), 0);
  for (size_t k : order) {
    const size_t w = size_t(std::min_element(load.begin(), load.end()) - load.begin());  // first minimum
    owner[k] = w;
    load[w] += len(k);
  }
  return owner;
}

namespace {


struct Cancelled {};  // thrown out of a worker's stream once the run has failed elsewhere

std::string temp_dir() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

// One segment's results: the (start, n) of every sink call and their values. Values sit in memory while
// the pool's budget allows, else in a temporary file that is unlinked as soon as it is made (nothing is
// left behind, however the run ends). The file always holds a prefix of the runs.
class ValueSpool {
 public:
  ValueSpool(std::atomic<int64_t>& pool_mem, int64_t budget) : pool_mem_(pool_mem), budget_(budget) {}
  ~ValueSpool() {
    pool_mem_ -= int64_t(mem_.size());
    if (file_) std::fclose(file_);
  }
  ValueSpool(const ValueSpool&) = delete;
  ValueSpool& operator=(const ValueSpool&) = delete;

  void add(const std::string& contig, int64_t start, const float* v, int64_t n) {
    if (runs_.empty()) contig_ = contig;
    DNAMBA_CHECK(contig == contig_, "track spool: one segment, one contig (" + contig_ + ", " + contig + ")");
    if (n <= 0) return;
    if (pool_mem_.load() + n > budget_) {  // over the budget: this segment's values go to its file
      write_file(mem_.data(), int64_t(mem_.size()));
      pool_mem_ -= int64_t(mem_.size());
      mem_.clear();
      mem_.shrink_to_fit();
      file_runs_ = runs_.size();
      write_file(v, n);
      runs_.push_back({start, n});
      file_runs_ = runs_.size();
      return;
    }
    mem_.insert(mem_.end(), v, v + n);
    pool_mem_ += n;
    runs_.push_back({start, n});
  }

  // Hands every run to sink, in order.
  void replay(const TrackRunSink& sink) {
    if (file_ && (std::fflush(file_) != 0 || std::fseek(file_, 0, SEEK_SET) != 0)) fail("read back");
    std::vector<float> buf;
    size_t off = 0;
    for (size_t i = 0; i < runs_.size(); ++i) {
      const Run& r = runs_[i];
      if (i < file_runs_) {
        buf.resize(size_t(r.n));
        if (std::fread(buf.data(), sizeof(float), size_t(r.n), file_) != size_t(r.n)) fail("read back");
        sink(contig_, r.start, buf.data(), r.n);
      } else {
        sink(contig_, r.start, mem_.data() + off, r.n);
        off += size_t(r.n);
      }
    }
  }

 private:
  struct Run {
    int64_t start, n;
  };

  void write_file(const float* v, int64_t n) {
    if (n <= 0) return;
    if (!file_) {
      std::string path = temp_dir() + "/dnamba_track_XXXXXX";
      const int fd = ::mkstemp(path.data());
      if (fd < 0) fail("create");
      ::unlink(path.c_str());
      file_ = ::fdopen(fd, "w+b");
      if (!file_) {
        ::close(fd);
        fail("open");
      }
    }
    if (std::fwrite(v, sizeof(float), size_t(n), file_) != size_t(n)) fail("write");
  }

  [[noreturn]] void fail(const char* what) const {
    throw Error("cannot " + std::string(what) + " a temporary file of track values (" + contig_ + ") in " + temp_dir() +
                ": " + std::strerror(errno) + " (set TMPDIR to a folder with room)");
  }

  std::atomic<int64_t>& pool_mem_;
  const int64_t budget_;
  std::string contig_;
  std::vector<Run> runs_;
  size_t file_runs_ = 0;    // runs_[0, file_runs_) are in file_, the others in mem_
  std::vector<float> mem_;  // values of runs_[file_runs_, ...), in order
  std::FILE* file_ = nullptr;
};

struct SegmentSlot {
  std::unique_ptr<ValueSpool> spool;
  bool done = false;
};

}  // namespace

int64_t stream_track_values_multi(const std::vector<std::string>& names, const TrackDeviceLoader& load,
                                  const std::string& fasta_path, const std::vector<io::Region>& segments,
                                  const TrackDevicesOptions& opt, const TrackValueFn& values, const TrackRunSink& sink) {
  DNAMBA_CHECK(!names.empty(), "stream_track_values_multi: no devices");
  DNAMBA_CHECK(opt.stream.chunk > 0, "chunk must be positive");
  std::vector<int64_t> lengths;
  int64_t total = 0;
  for (const auto& s : segments) {
    DNAMBA_CHECK(s.end >= 0 && s.beg >= 0, "stream_track_values_multi: segment " + s.contig + " has no resolved end");
    lengths.push_back(s.end - s.beg);
    total += std::max<int64_t>(0, s.end - s.beg);
  }
  const size_t nw = names.size();
  const std::vector<size_t> owner = assign_track_segments(lengths, nw);
  std::vector<std::vector<size_t>> mine(nw);  // each worker's segments, in input order
  for (size_t k = 0; k < segments.size(); ++k) mine[owner[k]].push_back(k);

  std::atomic<int64_t> pool_mem{0}, bases_read{0}, progress_bases{0};  // before slots: spools use pool_mem
  std::atomic<bool> cancel{false};
  std::mutex mu;  // guards slots, error
  std::condition_variable cv;
  std::vector<SegmentSlot> slots(segments.size());
  std::exception_ptr error;  // the first error of the run
  const int64_t budget = std::max<int64_t>(0, opt.memory_values);

  auto fail = [&](std::exception_ptr e) {
    {
      std::lock_guard<std::mutex> lk(mu);
      if (!error) error = e;
    }
    cancel = true;
    cv.notify_all();
  };

  auto worker = [&](size_t i) {
    try {
      TrackDevice dev = load(i);  // destroyed in this thread, on its device: model, then backend
      DNAMBA_CHECK(dev.model != nullptr, "stream_track_values_multi: the loader returned no model");
      io::FastaReader reader(fasta_path);
      CausalStreamOptions so = opt.stream;
      so.quiet = true;  // one progress line, shown by the calling thread
      std::vector<float> vals;
      for (size_t k : mine[i]) {
        if (cancel) return;
        auto spool = std::make_unique<ValueSpool>(pool_mem, budget);
        reader.set_regions({segments[k]});
        bases_read += stream_causal_logprobs(*dev.model, reader, so, [&](const BaseLogProbs& r) {
          if (cancel) throw Cancelled{};
          values(r, vals);
          DNAMBA_CHECK(int64_t(vals.size()) == r.n, "track values: " + std::to_string(vals.size()) + " values for " +
                                                        std::to_string(r.n) + " bases");
          spool->add(*r.contig, r.start, vals.data(), r.n);
          progress_bases += r.n;
        });
        {
          std::lock_guard<std::mutex> lk(mu);
          slots[k].spool = std::move(spool);
          slots[k].done = true;
        }
        cv.notify_all();
      }
    } catch (const Cancelled&) {
    } catch (...) {
      fail(error_on_device(names[i], std::current_exception()));
    }
  };

  // Stops and joins the workers however this function ends.
  std::vector<std::thread> threads;
  struct Joiner {
    std::vector<std::thread>& threads;
    std::atomic<bool>& cancel;
    std::condition_variable& cv;
    ~Joiner() {
      cancel = true;
      cv.notify_all();
      for (auto& t : threads)
        if (t.joinable()) t.join();
    }
  } joiner{threads, cancel, cv};
  for (size_t i = 0; i < nw; ++i) threads.emplace_back(worker, i);

  Progress progress(opt.stream.progress_label, opt.stream.quiet);
  for (size_t k = 0; k < segments.size(); ++k) {
    std::unique_ptr<ValueSpool> spool;
    {
      std::unique_lock<std::mutex> lk(mu);
      while (!slots[k].done && !error) {
        cv.wait_for(lk, std::chrono::milliseconds(250));
        progress.update(progress_bases.load(), total);
      }
      if (error) break;
      spool = std::move(slots[k].spool);
    }
    try {
      spool->replay(sink);
    } catch (...) {
      fail(std::current_exception());
      break;
    }
    spool.reset();  // frees its memory budget / file now
    progress.update(progress_bases.load(), total);
  }
  cancel = true;
  cv.notify_all();
  for (auto& t : threads)
    if (t.joinable()) t.join();
  if (error) std::rethrow_exception(error);
  progress.finish();
  return bases_read.load();
}

}  // namespace dnamba
