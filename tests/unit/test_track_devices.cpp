// dnamba track on several devices (pipeline/track_devices.h) against the one-device path, on CPU
// workers: whole segments go to workers by length, their values wait in spools (memory or temporary
// files) and reach the writer in input order, so bedGraph, bgzip bedGraph and bigWig files are
// identical byte for byte.
#include <gtest/gtest.h>
#include <htslib/faidx.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>

#include "backend/cpu/cpu_backend.h"
#include "common/error.h"
#include "io/bedgraph.h"
#include "io/bigwig.h"
#include "io/fasta.h"
#include "model/mamba_lm.h"
#include "pipeline/causal_stream.h"
#include "pipeline/track_devices.h"
#include "test_util.h"

using namespace dnamba;
using dnamba::test::error_of;
namespace fs = std::filesystem;

namespace {

std::string tiny_model() { return test::golden("hf_mamba_tiny"); }

std::string slurp(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// As dnamba track computes them: loglik, or the entropy over A,C,G,T.
void track_values(bool loglik, const BaseLogProbs& r, std::vector<float>& values) {
  values.resize(size_t(r.n));
  for (int64_t i = 0; i < r.n; ++i) {
    const float* s = r.stats + 5 * i;
    if (loglik) {
      values[size_t(i)] = s[0];
      continue;
    }
    double p[4], t = 0, h = 0;
    for (int k = 0; k < 4; ++k) t += (p[k] = std::exp(double(s[1 + k])));
    for (int k = 0; k < 4; ++k)
      if (p[k] / t > 0) h -= p[k] / t * std::log(p[k] / t);
    values[size_t(i)] = float(h);
  }
}

class MultiDeviceTrack : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(tiny_model() + "/config.json")) GTEST_SKIP() << "no golden model at " << tiny_model();
    dir_ = fs::temp_directory_path() / ("dnamba_track_multidev_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::mt19937 rng(11);
    // File order differs from name order (bigWig writes chromosomes by name); one contig of one base
    // (no prediction: no output), soft-masked and N bases, lengths that are not chunk multiples.
    const std::vector<std::pair<std::string, int>> contigs = {
        {"chr2", 2600}, {"chr10", 900}, {"chr1", 3100}, {"chrM", 1}, {"scaf_b", 450}, {"scaf_a", 1700}, {"chr3", 700}};
    std::ofstream fa(dir_ / "ref.fa");
    for (auto& [name, n] : contigs) {
      std::string s(size_t(n), 'A');
      for (char& c : s) c = "ACGTACGTacgtN"[rng() % 13];
      fa << ">" << name << " test contig\n";
      for (size_t i = 0; i < s.size(); i += 61) fa << s.substr(i, 61) << "\n";
      contigs_.push_back({name, n});
    }
    fa.close();
    ASSERT_EQ(fai_build((dir_ / "ref.fa").c_str()), 0);
    opt_.stream.chunk = 256;  // several pieces per segment
    opt_.stream.quiet = true;
  }
  void TearDown() override {
    if (!dir_.empty()) fs::remove_all(dir_);
  }

  // Writes the track of `segs` (empty: every contig) to `name` with `workers` CPU workers (0: the
  // one-device path, stream_causal_logprobs over one reader); returns the file's bytes.
  std::string track(size_t workers, const std::string& name, std::vector<io::Region> segs, bool loglik) {
    const fs::path out = dir_ / name;
    const bool bigwig = name.size() > 3 && name.substr(name.size() - 3) == ".bw";
    std::optional<io::BedGraphWriter> bg;
    std::optional<io::BigWigWriter> bw;
    if (bigwig) {
      std::vector<io::ContigInfo> chroms;
      for (size_t i : io::bigwig_chrom_order(contigs_)) chroms.push_back(contigs_[i]);
      bw.emplace(out.string(), chroms);
    } else {
      bg.emplace(out.string(), 2);
    }
    auto write = [&](const std::string& contig, int64_t start, const float* v, int64_t n) {
      if (bw) bw->add(contig, start, v, n);
      else bg->add_run(contig, start, v, n);
    };
    const std::string ref = (dir_ / "ref.fa").string();
    if (segs.empty())
      for (auto& c : contigs_) segs.push_back({c.name, 0, c.length});
    if (workers == 0) {
      CpuBackend be(1);
      MambaLM m(tiny_model(), be);
      io::FastaReader reader(ref);
      reader.set_regions(segs);
      std::vector<float> vals;
      stream_causal_logprobs(m, reader, opt_.stream, [&](const BaseLogProbs& r) {
        track_values(loglik, r, vals);
        write(*r.contig, r.start, vals.data(), r.n);
      });
    } else {
      std::vector<std::string> names;
      for (size_t i = 0; i < workers; ++i) names.push_back("cpu#" + std::to_string(i));
      bases_ = stream_track_values_multi(
          names,
          [&](size_t) {
            TrackDevice d;
            d.backend = std::make_unique<CpuBackend>(1);
            d.model = std::make_unique<MambaLM>(tiny_model(), *d.backend);
            return d;
          },
          ref, segs, opt_, [loglik](const BaseLogProbs& r, std::vector<float>& v) { track_values(loglik, r, v); },
          write);
    }
    if (bw) bw->close();
    else bg->close();
    return slurp(out);
  }

  fs::path dir_;
  std::vector<io::ContigInfo> contigs_;
  TrackDevicesOptions opt_;
  int64_t bases_ = 0;
};

}  // namespace

TEST(MultiDeviceTrackAssign, LargestFirstOntoLeastLoaded) {
  using V = std::vector<size_t>;
  // 7 -> w0, 5 -> w1, 3 -> w1 (5 < 7), 3 -> w0 (7 < 8), 1 -> w1 (8 < 10)
  EXPECT_EQ(assign_track_segments({5, 1, 7, 3, 3}, 2), (V{1, 1, 0, 1, 0}));
  EXPECT_EQ(assign_track_segments({5, 1, 7, 3, 3}, 1), (V{0, 0, 0, 0, 0}));
  EXPECT_EQ(assign_track_segments({4, 4, 4}, 4), (V{0, 1, 2}));  // equal lengths: input order, lowest worker
  EXPECT_EQ(assign_track_segments({0, -1, 10}, 2), (V{1, 1, 0}));
  EXPECT_TRUE(assign_track_segments({}, 3).empty());
  EXPECT_THROW(assign_track_segments({1}, 0), Error);
}

TEST_F(MultiDeviceTrack, BedGraphEqualsOneDevice) {
  const std::string one = track(0, "one.bedgraph", {}, true);
  ASSERT_GT(std::count(one.begin(), one.end(), '\n'), 9000);
  EXPECT_EQ(one.find("chrM"), std::string::npos);  // one base: no prediction
  for (size_t w : {1, 2, 3, 8}) {
    EXPECT_EQ(track(w, "multi.bedgraph", {}, true), one) << w << " workers";
    EXPECT_EQ(bases_, 2600 + 900 + 3100 + 1 + 450 + 1700 + 700);
  }
  opt_.memory_values = 0;  // every value through temporary files
  EXPECT_EQ(track(3, "spilled.bedgraph", {}, true), one);
  opt_.memory_values = 1000;  // some segments in memory, some spilled part way
  EXPECT_EQ(track(2, "mixed.bedgraph", {}, true), one);
  // bgzip output: the same calls in the same order give the same compressed bytes.
  const std::string gz = track(0, "one.bedgraph.gz", {}, false);
  EXPECT_EQ(track(3, "multi.bedgraph.gz", {}, false), gz);
}

TEST_F(MultiDeviceTrack, RegionsInGivenOrderEqualOneDevice) {
  // Out of order, overlapping, repeated, an empty one and a one-base one, a whole contig.
  const std::vector<io::Region> regs = {{"chr1", 1000, 2900}, {"chr2", 0, 300}, {"chr1", 900, 1500}, {"scaf_a", 5, 5},
                                        {"chr2", 0, 300},     {"chr3", 9, 10},  {"scaf_b", 0, 450}};
  const std::string one = track(0, "one.bedgraph", regs, true);
  ASSERT_GT(std::count(one.begin(), one.end(), '\n'), 3000);
  for (size_t w : {2, 4}) EXPECT_EQ(track(w, "multi.bedgraph", regs, true), one) << w << " workers";
  opt_.memory_values = 300;
  EXPECT_EQ(track(3, "spilled.bedgraph", regs, true), one);
}

TEST_F(MultiDeviceTrack, BigWigEqualsOneDevice) {
  // bigWig: chromosomes in name order, regions sorted and not overlapping (as dnamba track orders them).
  std::vector<io::Region> segs;
  for (size_t i : io::bigwig_chrom_order(contigs_)) segs.push_back({contigs_[i].name, 0, contigs_[i].length});
  for (bool loglik : {true, false}) {
    const std::string one = track(0, "one.bw", segs, loglik);
    ASSERT_GT(one.size(), 1000u);
    for (size_t w : {2, 3}) EXPECT_EQ(track(w, "multi.bw", segs, loglik), one) << w << " workers, loglik " << loglik;
    opt_.memory_values = 0;
    EXPECT_EQ(track(2, "spilled.bw", segs, loglik), one);
    opt_.memory_values = TrackDevicesOptions().memory_values;
  }
  const std::vector<io::Region> regs = {{"chr1", 10, 800}, {"chr1", 900, 3100}, {"chr10", 0, 500}, {"chr2", 100, 2000}};
  const std::string one = track(0, "one_regions.bw", regs, true);
  EXPECT_EQ(track(3, "multi_regions.bw", regs, true), one);
}

TEST_F(MultiDeviceTrack, LoadErrorNamesTheDevice) {
  const std::string e = error_of([&] {
    stream_track_values_multi(
        {"cpu#0", "cpu#1"},
        [&](size_t i) {
          if (i == 1) throw Error("cannot load");
          TrackDevice d;
          d.backend = std::make_unique<CpuBackend>(1);
          d.model = std::make_unique<MambaLM>(tiny_model(), *d.backend);
          return d;
        },
        (dir_ / "ref.fa").string(), {{"chr1", 0, 3100}, {"chr2", 0, 2600}}, opt_,
        [](const BaseLogProbs& r, std::vector<float>& v) { track_values(true, r, v); },
        [](const std::string&, int64_t, const float*, int64_t) {});
  });
  EXPECT_EQ(e, "cannot load (worker on device cpu#1)");
}

TEST_F(MultiDeviceTrack, InputAndSinkErrorsStopTheRun) {
  // A bad character in one contig: the worker that reads it names itself; nothing hangs.
  {
    std::ofstream fa(dir_ / "bad.fa");
    fa << ">good\n" << std::string(600, 'A') << "\n>bad\nACGT1ACGT\n>good2\n" << std::string(800, 'C') << "\n";
  }
  ASSERT_EQ(fai_build((dir_ / "bad.fa").c_str()), 0);
  auto loader = [&](size_t) {
    TrackDevice d;
    d.backend = std::make_unique<CpuBackend>(1);
    d.model = std::make_unique<MambaLM>(tiny_model(), *d.backend);
    return d;
  };
  auto vals = [](const BaseLogProbs& r, std::vector<float>& v) { track_values(true, r, v); };
  int64_t written = 0;
  const std::string e = error_of([&] {
    stream_track_values_multi({"cpu#0", "cpu#1"}, loader, (dir_ / "bad.fa").string(),
                              {{"good", 0, 600}, {"bad", 0, 9}, {"good2", 0, 800}}, opt_, vals,
                              [&](const std::string&, int64_t, const float*, int64_t n) { written += n; });
  });
  EXPECT_NE(e.find("bad"), std::string::npos) << e;
  EXPECT_NE(e.find("(worker on device cpu#"), std::string::npos) << e;
  // The sink fails on the second segment: its error comes back as it is, and the workers stop.
  int calls = 0;
  const std::string e2 = error_of([&] {
    stream_track_values_multi({"cpu#0", "cpu#1", "cpu#2"}, loader, (dir_ / "ref.fa").string(),
                              {{"chr1", 0, 3100}, {"chr2", 0, 2600}, {"chr3", 0, 700}, {"scaf_a", 0, 1700}}, opt_, vals,
                              [&](const std::string& c, int64_t, const float*, int64_t) {
                                ++calls;
                                if (c == "chr2") throw Error("disk full");
                              });
  });
  EXPECT_EQ(e2, "disk full");
  EXPECT_GT(calls, 1);
  // A segment without a resolved end is a programming error, caught before anything runs.
  EXPECT_THROW(stream_track_values_multi({"cpu#0"}, loader, (dir_ / "ref.fa").string(), {{"chr1", 0, -1}}, opt_, vals,
                                         [](const std::string&, int64_t, const float*, int64_t) {}),
               Error);
}
