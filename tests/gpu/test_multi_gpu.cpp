// dnamba score on several GPUs in one process (--device cuda:0,0 / cuda:all) against one GPU
// (--device cuda:0): the VCF records must be identical, byte for byte. cuda:0,0 runs two workers on
// one GPU, so the multi-worker path is tested on a one-GPU machine too. dnamba track likewise (MultiGpuTrack).
#include <gtest/gtest.h>
#include <htslib/faidx.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>

#include "gpu_test_util.h"

namespace fs = std::filesystem;

namespace {

std::string dnamba_bin() {
  const char* e = std::getenv("DNAMBA_BIN");
  return e && *e ? e : DNAMBA_BINARY;
}

// The score tests' tiny model: $DNAMBA_TESTDATA_DIR, the source tree's testdata, or ./testdata (the
// repository root on a GPU machine whose checkout lies elsewhere).
std::string tiny_model() {
  const char* e = std::getenv("DNAMBA_TESTDATA_DIR");
  for (const std::string d : {std::string(e ? e : ""), std::string(DNAMBA_TESTDATA_DIR), std::string("testdata")})
    if (!d.empty() && fs::exists(d + "/score/tiny_model/config.json")) return fs::absolute(d + "/score/tiny_model").string();
  return std::string(DNAMBA_TESTDATA_DIR) + "/score/tiny_model";
}

// Exit status of a shell command; its stdout+stderr in *out.
int run_cmd(const std::string& cmd, std::string* out = nullptr) {
  const std::string log = (fs::temp_directory_path() / ("dnamba_mgpu_log_" + std::to_string(::getpid()))).string();
  const int rc = std::system((cmd + " > " + log + " 2>&1").c_str());
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  if (out) *out = ss.str();
  fs::remove(log);
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// The lines of a plain VCF without the ##dnamba_score lines that name the device and the command.
std::string vcf_body(const std::string& path, int* records = nullptr) {
  std::ifstream f(path);
  std::string line, body;
  int n = 0;
  while (std::getline(f, line)) {
    if (line.rfind("##dnamba_scoreCommand=", 0) == 0 || line.rfind("##dnamba_scoreModel=", 0) == 0) continue;
    if (!line.empty() && line[0] != '#') ++n;
    body += line + "\n";
  }
  if (records) *records = n;
  return body;
}

class MultiGpuScore : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dnamba_gpu_multi_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::mt19937 rng(5);
    const std::vector<std::pair<std::string, int>> contigs = {{"chrA", 40000}, {"chrB", 17000}, {"chrC", 3000}};
    std::ofstream fa(dir_ / "ref.fa");
    std::vector<std::string> seqs;
    for (auto& [name, n] : contigs) {
      std::string s(size_t(n), 'A');
      for (char& c : s) c = "ACGTacgt"[rng() % 8];
      seqs.push_back(s);
      fa << ">" << name << "\n";
      for (size_t i = 0; i < s.size(); i += 70) fa << s.substr(i, 70) << "\n";
    }
    fa.close();
    ASSERT_EQ(fai_build((dir_ / "ref.fa").c_str()), 0);
    std::ofstream v(dir_ / "in.vcf");
    v << "##fileformat=VCFv4.2\n";
    for (auto& [name, n] : contigs) v << "##contig=<ID=" << name << ",length=" << n << ">\n";
    v << "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n";
    for (size_t c = 0; c < contigs.size(); ++c) {
      const std::string& s = seqs[c];
      for (int64_t p = 3; p + 8 < int64_t(s.size()); p += 1 + int64_t(rng() % 120)) {
        const char r = char(std::toupper(s[size_t(p)]));
        const char a = "ACGT"[(std::string("ACGT").find(r) + 1 + rng() % 3) % 4];
        std::string ref(1, r), alt(1, a);
        switch (rng() % 6) {
          case 0: ref = s.substr(size_t(p), 5); alt = std::string(1, s[size_t(p)]); break;  // deletion
          case 1: alt = std::string(1, r) + "TTAGGC"; break;                              // insertion
          case 2: alt += std::string(",") + (a == 'A' ? "G" : "A"); break;                // two ALTs
          default: break;
        }
        v << contigs[c].first << "\t" << p + 1 << "\t.\t" << ref << "\t" << alt << "\t.\t.\t.\n";
      }
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs score on `device` with `opts`; returns the output VCF's body (see vcf_body).
  std::string score(const std::string& device, const std::string& opts, int* records = nullptr) {
    const std::string out = (dir_ / ("out_" + std::to_string(n_++) + ".vcf")).string();
    const std::string cmd = dnamba_bin() + " score -q --ref " + (dir_ / "ref.fa").string() + " --vcf " +
                            (dir_ / "in.vcf").string() + " -o " + out + " --model " + tiny_model() + " --device " +
                            device + " " + opts;
    std::string log;
    EXPECT_EQ(run_cmd(cmd, &log), 0) << cmd << "\n" << log;
    return vcf_body(out, records);
  }

  fs::path dir_;
  int n_ = 0;
};

}  // namespace

// Few lockstep batches (the GPU defaults) and many (--ref-batch 4, short segments: batches span contigs
// and strands), bf16 and fp32, naive: every multi-GPU run equals cuda:0.
TEST_F(MultiGpuScore, SameRecordsAsOneGpu) {
  SKIP_WITHOUT_GPU();
  for (const std::string opts : {std::string("--dtype bf16"),
                                 std::string("--dtype bf16 --ref-batch 4 --segment 2000 --context 500 --batch 64"),
                                 std::string("--dtype fp32 --ref-batch 3 --segment 1500 --context 300 --snapshot-gap 8"),
                                 std::string("--dtype fp32 --method naive --segment 3000 --context 200")}) {
    int n = 0;
    const std::string one = score("cuda:0", opts, &n);
    ASSERT_GT(n, 400) << opts;
    ASSERT_NE(one.find("DNAMBA_LLR="), std::string::npos) << opts;
    EXPECT_EQ(score("cuda:0,0", opts), one) << opts << ": cuda:0,0";
    EXPECT_EQ(score("cuda:0,0,0", opts), one) << opts << ": cuda:0,0,0";
    EXPECT_EQ(score("cuda:all", opts), one) << opts << ": cuda:all";
    if (dnamba::cuda_device_total() > 1) EXPECT_EQ(score("cuda:1,0", opts), one) << opts << ": cuda:1,0";
  }
}

TEST_F(MultiGpuScore, BadIndexNamesTheDeviceCount) {
  SKIP_WITHOUT_GPU();
  const int n = dnamba::cuda_device_total();
  const std::string cmd = dnamba_bin() + " score -q --ref " + (dir_ / "ref.fa").string() + " --vcf " +
                          (dir_ / "in.vcf").string() + " -o " + (dir_ / "bad.vcf").string() + " --model " + tiny_model() +
                          " --device cuda:0," + std::to_string(n);
  std::string log;
  EXPECT_EQ(run_cmd(cmd, &log), 1) << log;
  EXPECT_NE(log.find("no CUDA device " + std::to_string(n) + " (this machine has " + std::to_string(n) + " CUDA device"),
            std::string::npos)
      << log;
  EXPECT_FALSE(fs::exists(dir_ / "bad.vcf"));
}

// ---- dnamba track on several GPUs: whole contigs/regions spread over the workers by length, values written
// in input order; bedGraph, bgzip bedGraph, bigWig and stdout must equal cuda:0's byte for byte.

namespace {

class MultiGpuTrack : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("dnamba_gpu_multi_track_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::mt19937 rng(9);
    // File order is not name order (bigWig sorts by name); a one-base contig (no output), soft-masked and N bases.
    const std::vector<std::pair<std::string, int>> contigs = {{"chr2", 45000}, {"chr10", 12000}, {"chr1", 30000},
                                                              {"chrM", 1},     {"scaf_b", 800},  {"scaf_a", 20000},
                                                              {"chr3", 7000}};
    std::ofstream fa(dir_ / "ref.fa");
    for (auto& [name, n] : contigs) {
      std::string s(size_t(n), 'A');
      for (char& c : s) c = "ACGTACGTacgtN"[rng() % 13];
      fa << ">" << name << "\n";
      for (size_t i = 0; i < s.size(); i += 70) fa << s.substr(i, 70) << "\n";
    }
    fa.close();
    ASSERT_EQ(fai_build((dir_ / "ref.fa").c_str()), 0);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs track on `device` with `opts`, output `ext` (".bedgraph", ".bedgraph.gz", ".bw", or "-" for
  // stdout); returns the output's bytes.
  std::string track(const std::string& device, const std::string& ext, const std::string& opts) {
    const std::string out = (dir_ / ("out_" + std::to_string(n_++) + (ext == "-" ? ".stdout" : ext))).string();
    const std::string cmd = "(" + dnamba_bin() + " track -q --ref " + (dir_ / "ref.fa").string() + " --model " +
                            tiny_model() + " --device " + device + " " + opts +
                            (ext == "-" ? " -o - > " + out : " -o " + out) + ")";
    std::string log;
    EXPECT_EQ(run_cmd(cmd, &log), 0) << cmd << "\n" << log;
    std::ifstream f(out, std::ios::binary);
    std::stringstream ss;
    ss << f.rdbuf();
    return ss.str();
  }

  fs::path dir_;
  int n_ = 0;
};

}  // namespace

TEST_F(MultiGpuTrack, SameOutputAsOneGpu) {
  SKIP_WITHOUT_GPU();
  const std::vector<std::pair<std::string, std::vector<std::string>>> cases = {
      {"--dtype bf16 --chunk 4096", {".bedgraph", ".bedgraph.gz", ".bw", "-"}},
      {"--dtype fp32 --what entropy --chunk 3000", {".bedgraph", ".bw"}},
      {"--dtype bf16", {".bedgraph.gz"}},  // default chunk: one piece per contig
      // Regions out of order, overlapping, repeated (bedGraph keeps the given order).
      {"--dtype bf16 --chunk 2048 --region chr1:101-20000 --region chr2 --region chr1:5001-9000 --region scaf_b "
       "--region chr2",
       {".bedgraph"}},
      {"--dtype fp32 --chunk 2048 --region chr2:1001-30000 --region chr1:101-20000 --region scaf_a", {".bw"}},
  };
  for (const auto& [opts, exts] : cases)
    for (const std::string& ext : exts) {
      const std::string one = track("cuda:0", ext, opts);
      ASSERT_GT(one.size(), 1000u) << opts << " " << ext;
      EXPECT_EQ(track("cuda:0,0", ext, opts), one) << opts << " " << ext << ": cuda:0,0";
      EXPECT_EQ(track("cuda:0,0,0", ext, opts), one) << opts << " " << ext << ": cuda:0,0,0";
      EXPECT_EQ(track("cuda:all", ext, opts), one) << opts << " " << ext << ": cuda:all";
      if (dnamba::cuda_device_total() > 1) EXPECT_EQ(track("cuda:1,0", ext, opts), one) << opts << " " << ext << ": cuda:1,0";
    }
}

TEST_F(MultiGpuTrack, RefusesCaduceusAndUnindexedFasta) {
  SKIP_WITHOUT_GPU();
  std::string log;
  const std::string cad = dnamba::test::golden("caduceus_ps_tiny");
  if (fs::exists(cad + "/config.json")) {
    const std::string cmd = dnamba_bin() + " track -q --ref " + (dir_ / "ref.fa").string() + " --model " + cad +
                            " --device cuda:0,0 -o " + (dir_ / "cad.bedgraph").string();
    EXPECT_EQ(run_cmd(cmd, &log), 1) << log;
    EXPECT_NE(log.find("several devices are supported for causal models"), std::string::npos) << log;
    EXPECT_FALSE(fs::exists(dir_ / "cad.bedgraph"));
  }
  fs::copy_file(dir_ / "ref.fa", dir_ / "noidx.fa");
  const std::string cmd = dnamba_bin() + " track -q --ref " + (dir_ / "noidx.fa").string() + " --model " + tiny_model() +
                          " --device cuda:0,0 -o " + (dir_ / "noidx.bedgraph").string();
  EXPECT_EQ(run_cmd(cmd, &log), 1) << log;
  EXPECT_NE(log.find("need an indexed FASTA"), std::string::npos) << log;
  EXPECT_FALSE(fs::exists(dir_ / "noidx.bedgraph"));
}
