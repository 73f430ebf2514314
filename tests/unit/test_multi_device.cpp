// Several devices in one process: --device lists (backend/device_list.h), and score's worker pool
// (pipeline/variant_stream.h) against the one-device path, on CPU workers: the batches are cut as in a
// one-device run and the records come out in input order, so the VCF text is identical.
#include <gtest/gtest.h>
#include <htslib/faidx.h>
#include <htslib/vcf.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "backend/cpu/cpu_backend.h"
#include "backend/device_list.h"
#include "common/error.h"
#include "io/fasta.h"
#include "io/vcf.h"
#include "model/mamba_lm.h"
#include "pipeline/variant_stream.h"
#include "test_util.h"

using namespace dnamba;
using dnamba::test::error_of;
namespace fs = std::filesystem;

namespace {

const std::string kTinyModel = std::string(DNAMBA_TESTDATA_DIR) + "/score/tiny_model";

}  // namespace

TEST(DeviceList, SingleDevicesUnchanged) {
  for (const char* d : {"cpu", "cuda", "cuda:0", "cuda:3"}) {
    EXPECT_EQ(parse_device_list(d, 2), std::vector<std::string>{d}) << d;
    EXPECT_EQ(parse_device_list(d, 0), std::vector<std::string>{d}) << d;
  }
}

TEST(DeviceList, ListsAndAll) {
  using V = std::vector<std::string>;
  EXPECT_EQ(parse_device_list("cuda:0,1", 2), (V{"cuda:0", "cuda:1"}));
  EXPECT_EQ(parse_device_list("cuda:1,0", 2), (V{"cuda:1", "cuda:0"}));
  EXPECT_EQ(parse_device_list("cuda:0,0", 1), (V{"cuda:0", "cuda:0"}));  // duplicates: two workers on one GPU
  EXPECT_EQ(parse_device_list("cuda:0,1,0,1", 2), (V{"cuda:0", "cuda:1", "cuda:0", "cuda:1"}));
  EXPECT_EQ(parse_device_list("cuda:all", 1), (V{"cuda:0"}));
  EXPECT_EQ(parse_device_list("cuda:all", 4), (V{"cuda:0", "cuda:1", "cuda:2", "cuda:3"}));
  EXPECT_EQ(parse_device_list("cuda:007,1", 8), (V{"cuda:7", "cuda:1"}));
  // No GPU: returned unchecked; make_backend then says there is no GPU (or no CUDA support).
  EXPECT_EQ(parse_device_list("cuda:0,5", 0), (V{"cuda:0", "cuda:5"}));
  EXPECT_EQ(device_list_name({"cuda:0", "cuda:1"}), "cuda:0,1");
  EXPECT_EQ(device_list_name({"cuda:0", "cuda:0", "cuda:2"}), "cuda:0,0,2");
  EXPECT_EQ(device_list_name({"cuda:3"}), "cuda:3");
}

TEST(DeviceList, Errors) {
  auto err = [](const std::string& s, int n) { return error_of([&] { parse_device_list(s, n); }); };
  EXPECT_NE(err("cuda:0,2", 2).find("no CUDA device 2 (this machine has 2 CUDA devices, numbered 0 to 1)"),
            std::string::npos) << err("cuda:0,2", 2);
  EXPECT_NE(err("cuda:1,1", 1).find("has 1 CUDA device, numbered 0 to 0"), std::string::npos) << err("cuda:1,1", 1);
  EXPECT_NE(err("cuda:all", 0).find("no CUDA GPU"), std::string::npos);
  for (const char* bad : {"cuda:0,", "cuda:,1", "cuda:0,,1", "cuda:0,x", "cuda:0,-1", "cuda:0, 1", "cuda:0,1.5",
                          "cuda:0,12345678"}) {
    const std::string e = err(bad, 2);
    EXPECT_NE(e.find(std::string("bad --device '") + bad + "'"), std::string::npos) << bad << ": " << e;
  }
  std::string many = "cuda:0";
  for (int i = 0; i < 64; ++i) many += ",0";
  EXPECT_NE(err(many, 1).find("more than 64"), std::string::npos);
}

namespace {

// A scoring fixture: three contigs (one missing from the FASTA), SNVs, indels, multi-allelic records,
// flagged alleles, variants near segment edges, so that lockstep batches span contigs and strands.
class MultiDeviceScore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dnamba_multidev_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::mt19937 rng(7);
    const std::vector<std::pair<std::string, int>> contigs = {{"c1", 5200}, {"c2", 2300}, {"c3", 700}};
    std::ofstream fa(dir_ / "ref.fa");
    for (auto& [name, n] : contigs) {
      std::string s(size_t(n), 'A');
      for (char& c : s) c = "ACGT"[rng() % 4];
      seqs_.push_back(s);
      fa << ">" << name << "\n";
      for (size_t i = 0; i < s.size(); i += 60) fa << s.substr(i, 60) << "\n";
    }
    fa.close();
    ASSERT_EQ(fai_build((dir_ / "ref.fa").c_str()), 0);

    std::ofstream v(dir_ / "in.vcf");
    v << "##fileformat=VCFv4.2\n";
    for (auto& [name, n] : contigs) v << "##contig=<ID=" << name << ",length=" << n << ">\n";
    v << "##contig=<ID=cX,length=1000>\n";
    v << "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n";
    const char* bases = "ACGT";
    for (size_t c = 0; c < contigs.size(); ++c) {
      const std::string& s = seqs_[c];
      for (int64_t p = 1; p + 6 < int64_t(s.size()); p += 1 + int64_t(rng() % 37)) {
        const char r = s[size_t(p)];
        char a = bases[rng() % 4];
        if (a == r) a = bases[(std::string("ACGT").find(r) + 1) % 4];
        std::string ref(1, r), alt(1, a);
        switch (rng() % 8) {
          case 0: ref = s.substr(size_t(p), 4); alt = std::string(1, r); break;     // deletion
          case 1: alt = std::string(1, r) + "GATTACA"; break;                        // insertion
          case 2: alt += std::string(",") + (a == 'A' ? "C" : "A"); break;           // multi-allelic
          case 3: if (rng() % 4 == 0) alt = "<DEL>"; break;                          // flagged
          default: break;
        }
        v << contigs[c].first << "\t" << p + 1 << "\t.\t" << ref << "\t" << alt << "\t.\t.\t.\n";
      }
    }
    v << "cX\t10\t.\tA\tG\t.\t.\t.\n";  // CONTIG_MISSING
    v.close();

    prm_.horizon = 16;
    prm_.context = 150;
    prm_.segment = 400;
    prm_.batch = 7;
    prm_.batch_tokens = 300;
    prm_.chunk = 64;
    prm_.snapshot_gap = 4;
    prm_.ref_batch = 3;  // many lockstep batches, spanning contigs and strands
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Scores in.vcf to a plain VCF with `workers` CPU workers (0: the one-device path); returns the text.
  std::string score(size_t workers, const std::string& vcf = "in.vcf") {
    io::FastaReader fasta((dir_ / "ref.fa").string());
    io::VcfReader in((dir_ / vcf).string());
    bcf_hdr_t* hdr = bcf_hdr_dup(in.header());
    struct HdrFree { bcf_hdr_t* h; ~HdrFree() { bcf_hdr_destroy(h); } } hdr_free{hdr};
    for (const auto& l : score_header_lines(prm_, "tiny", "test")) bcf_hdr_append(hdr, l.c_str());
    EXPECT_EQ(bcf_hdr_sync(hdr), 0);
    const std::string out = (dir_ / ("out" + std::to_string(workers) + ".vcf")).string();
    {
      io::VcfWriter w(out, io::VcfOutputType::Vcf, hdr, false);
      if (workers == 0) {
        CpuBackend be(1);
        MambaLM m(kTinyModel, be);
        score_variants_streaming(m, fasta, in, hdr, w, prm_, true);
      } else {
        std::vector<std::string> names;
        for (size_t i = 0; i < workers; ++i) names.push_back("cpu#" + std::to_string(i));
        ScoreDevicePool pool(
            names,
            [&](size_t) {
              ScoreDevice d;
              d.backend = std::make_unique<CpuBackend>(1);
              d.model = std::make_unique<MambaLM>(kTinyModel, *d.backend);
              return d;
            },
            prm_);
        EXPECT_EQ(pool.size(), workers);
        EXPECT_EQ(pool.model(workers - 1).config().n_layer, 2);
        const auto st = score_variants_streaming(pool, fasta, in, hdr, w, prm_, true);
        stats_ = st;
      }
      w.close();
    }
    std::ifstream f(out);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  fs::path dir_;
  std::vector<std::string> seqs_;
  score::ScoreParams prm_;
  VariantStreamStats stats_;
};

int count_records(const std::string& vcf) {
  int n = 0;
  std::istringstream in(vcf);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty() && line[0] != '#') ++n;
  return n;
}

}  // namespace

TEST_F(MultiDeviceScore, PoolEqualsOneDevice) {
  const std::string one = score(0);
  ASSERT_GT(count_records(one), 200);
  EXPECT_NE(one.find("DNAMBA_LLR="), std::string::npos);
  EXPECT_NE(one.find("CONTIG_MISSING"), std::string::npos);
  for (size_t w : {1, 2, 3}) {
    const std::string multi = score(w);
    EXPECT_EQ(multi, one) << w << " workers";
    EXPECT_EQ(stats_.records, count_records(one));
    EXPECT_GT(stats_.model_calls, 0);
  }
  prm_.ref_batch = 1;  // one group per batch
  const std::string one1 = score(0);
  // (On the CPU too, which groups share a batch changes scores at rounding level: the test above would
  // see batches cut differently from the one-device run.)
  EXPECT_NE(one1, one);
  EXPECT_EQ(score(2), one1);
  prm_.method = score::Method::Naive;
  const std::string naive = score(0);
  EXPECT_EQ(score(3), naive);
}

TEST_F(MultiDeviceScore, LoadErrorNamesTheDevice) {
  const std::string e = error_of([&] {
    ScoreDevicePool pool(
        {"cpu#0", "cpu#1"},
        [&](size_t i) {
          if (i == 1) throw Error("cannot load");
          ScoreDevice d;
          d.backend = std::make_unique<CpuBackend>(1);
          d.model = std::make_unique<MambaLM>(kTinyModel, *d.backend);
          return d;
        },
        prm_);
  });
  EXPECT_EQ(e, "cannot load (worker on device cpu#1)");
}

TEST_F(MultiDeviceScore, ReaderErrorWhileBatchesRun) {
  // An unsorted record after many batches: the reading thread's error ends the run cleanly (the
  // workers' batches are drained first) and names the record.
  {
    std::ifstream in(dir_ / "in.vcf");
    std::ofstream out(dir_ / "bad.vcf");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("cX", 0) != 0) out << line << "\n";
    out << "c1\t5\t.\t" << seqs_[0][4] << "\tT\t.\t.\t.\n";  // c1 again after c2, c3
  }
  const std::string e = error_of([&] { score(2, "bad.vcf"); });
  EXPECT_NE(e.find("unsorted input: contig c1 appears again"), std::string::npos) << e;
}
