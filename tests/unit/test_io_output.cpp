// Atomic outputs, text/bgzip writers and bedGraph lines.
#include <gtest/gtest.h>
#include <htslib/bgzf.h>
#include <stdlib.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "common/error.h"
#include "io/bedgraph.h"
#include "io/output_file.h"

namespace fs = std::filesystem;
using dnamba::Error;
using dnamba::io::AtomicOutput;
using dnamba::io::BedGraphWriter;
using dnamba::io::TextWriter;

namespace {

class OutputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "dnamba_out_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string file(const std::string& name) const { return (dir_ / name).string(); }
  size_t files_in_dir() const { return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator())); }
  fs::path dir_;
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads a (b)gzip or plain file back through BGZF.
std::string read_bgzf(const std::string& path, int* compression = nullptr) {
  BGZF* fp = bgzf_open(path.c_str(), "r");
  EXPECT_NE(fp, nullptr) << path;
  if (!fp) return {};
  if (compression) *compression = bgzf_compression(fp);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = bgzf_read(fp, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  EXPECT_EQ(n, 0);
  EXPECT_EQ(bgzf_close(fp), 0);
  return out;
}

TEST_F(OutputTest, AtomicOutputWithoutCommitLeavesNothing) {
  std::string path = file("out.txt");
  {
    AtomicOutput out(path);
    EXPECT_EQ(out.final_path(), path);
    EXPECT_NE(out.temp_path(), path);
    EXPECT_EQ(fs::path(out.temp_path()).parent_path(), fs::path(path).parent_path());
    std::ofstream(out.temp_path()) << "partial";
    EXPECT_TRUE(fs::exists(out.temp_path()));
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(files_in_dir(), 0u);
}

TEST_F(OutputTest, AtomicOutputCommitRenames) {
  std::string path = file("out.txt");
  std::string temp;
  {
    AtomicOutput out(path);
    temp = out.temp_path();
    std::ofstream(out.temp_path()) << "done";
    EXPECT_FALSE(fs::exists(path));
    out.commit();
  }
  EXPECT_EQ(slurp(path), "done");
  EXPECT_FALSE(fs::exists(temp));
  EXPECT_EQ(files_in_dir(), 1u);
}

TEST_F(OutputTest, AtomicOutputCommitWithoutTemporaryFails) {
  AtomicOutput out(file("never_written.txt"));
  EXPECT_THROW(out.commit(), Error);
}

TEST_F(OutputTest, AtomicOutputStdout) {
  AtomicOutput out("-");
  EXPECT_TRUE(out.is_stdout());
  out.commit();  // nothing to rename
}

TEST_F(OutputTest, TextWriterPlain) {
  std::string path = file("a.txt");
  std::string expected;
  {
    TextWriter w(path);
    EXPECT_FALSE(w.compressed());
    for (int i = 0; i < 100000; ++i) {  // many tiny writes cross the internal buffer many times
      std::string line = "line " + std::to_string(i) + "\n";
      w.write(line);
      expected += line;
    }
    std::string big(200000, 'x');  // one write larger than the buffer
    w.write(big.data(), big.size());
    expected += big;
    EXPECT_FALSE(fs::exists(path));
    w.close();
  }
  EXPECT_EQ(slurp(path), expected);  // plain text, not BGZF-framed
  EXPECT_EQ(files_in_dir(), 1u);
}

TEST_F(OutputTest, TextWriterBgzipReadsBack) {
  for (const char* name : {"a.txt.gz", "a.txt.bgz"}) {
    for (int threads : {1, 3}) {
      std::string path = file(name);
      std::string expected;
      {
        TextWriter w(path, threads);
        EXPECT_TRUE(w.compressed());
        for (int i = 0; i < 50000; ++i) {
          std::string line = "chr1\t" + std::to_string(i) + "\n";
          w.write(line.data(), line.size());
          expected += line;
        }
        w.close();
      }
      int compression = -1;
      EXPECT_EQ(read_bgzf(path, &compression), expected);
      EXPECT_EQ(compression, 2) << "must be BGZF, so tabix can index it";
      BGZF* fp = bgzf_open(path.c_str(), "r");
      EXPECT_EQ(bgzf_check_EOF(fp), 1) << "BGZF EOF marker written";
      bgzf_close(fp);
      fs::remove(path);
    }
  }
}

TEST_F(OutputTest, TextWriterWithoutCloseDiscards) {
  {
    TextWriter w(file("a.txt.gz"));
    w.write("some text\n");
  }
  {
    TextWriter w(file("b.txt"));
    w.write(std::string(300000, 'y'));
  }
  EXPECT_EQ(files_in_dir(), 0u);
}

TEST_F(OutputTest, TextWriterWriteAfterCloseThrows) {
  TextWriter w(file("a.txt"));
  w.write("x");
  w.close();
  EXPECT_THROW(w.write("y"), Error);
  w.close();  // idempotent
  EXPECT_EQ(slurp(file("a.txt")), "x");
}

TEST_F(OutputTest, TextWriterMissingDirectory) {
  EXPECT_THROW(TextWriter(file("no/such/dir/a.txt")), Error);
}

TEST_F(OutputTest, TextWriterStdout) {
  ::testing::internal::CaptureStdout();
  {
    TextWriter w("-");
    w.write("to stdout\n");
    w.close();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStdout(), "to stdout\n");
}

std::string value_text(float v) {
  char buf[32];
  return std::string(buf, dnamba::io::format_track_value(buf, v));
}

TEST(TrackValue, SevenSignificantDigits) {
  EXPECT_EQ(value_text(0.0f), "0");
  EXPECT_EQ(value_text(-0.0f), "0");
  EXPECT_EQ(value_text(1.0f), "1");
  EXPECT_EQ(value_text(-2.5f), "-2.5");
  EXPECT_EQ(value_text(0.123456789f), "0.1234568");
  EXPECT_EQ(value_text(1234567.0f), "1234567");
  EXPECT_EQ(value_text(12345678.0f), "1.234568e+07");
  EXPECT_EQ(value_text(1e-5f), "1e-05");
  EXPECT_EQ(value_text(std::numeric_limits<float>::quiet_NaN()), "nan");
  EXPECT_EQ(value_text(-std::numeric_limits<float>::quiet_NaN()), "nan");
  EXPECT_EQ(value_text(std::numeric_limits<float>::infinity()), "inf");
  EXPECT_EQ(value_text(-std::numeric_limits<float>::infinity()), "-inf");
  EXPECT_EQ(value_text(-std::numeric_limits<float>::denorm_min()), "-1.401298e-45");
  // Every value reads back within 7 significant digits.
  for (float v : {3.14159265f, -1.0e30f, 6.0221409e23f, 1.17549435e-38f}) {
    float back = std::strtof(value_text(v).c_str(), nullptr);
    EXPECT_NEAR(back, v, std::fabs(v) * 1e-6f) << value_text(v);
  }
}

TEST_F(OutputTest, BedGraphLines) {
  std::string path = file("t.bedgraph");
  {
    BedGraphWriter w(path);
    w.add("chr1", 0, 0.5f);
    w.add("chr1", 1, 0.5f);  // equal neighbours are not merged
    w.add("chr13:32315508-32400268", 9999999999LL, -0.0f);
    w.add("chrM", 5, std::numeric_limits<float>::quiet_NaN());
    EXPECT_THROW(w.add("chrM", -1, 1.0f), Error);
    w.close();
  }
  EXPECT_EQ(slurp(path),
            "chr1\t0\t1\t0.5\n"
            "chr1\t1\t2\t0.5\n"
            "chr13:32315508-32400268\t9999999999\t10000000000\t0\n"
            "chrM\t5\t6\tnan\n");
}

// add_run formats on several threads: the text must be exactly that of add(), in order.
TEST_F(OutputTest, BedGraphRunEqualsLines) {
  std::vector<float> v(100003);
  for (size_t i = 0; i < v.size(); ++i) v[i] = -std::log(float(i % 997 + 1) / 998.0f) * 1.37f;
  v[5] = -0.0f;
  v[77777] = std::numeric_limits<float>::quiet_NaN();
  const std::string a = file("a.bedgraph"), b = file("b.bedgraph");
  {
    BedGraphWriter w(a);
    for (size_t i = 0; i < v.size(); ++i) w.add("chrX", 1000 + int64_t(i), v[i]);
    w.add("chrY", 0, 2.5f);
    w.close();
  }
  {
    BedGraphWriter w(b);
    w.add_run("chrX", 1000, v.data(), 3);
    w.add_run("chrX", 1003, v.data() + 3, int64_t(v.size()) - 3);
    w.add_run("chrY", 0, std::vector<float>{2.5f}.data(), 1);
    w.add_run("chrY", 1, v.data(), 0);
    EXPECT_THROW(w.add_run("chrY", -1, v.data(), 1), Error);
    w.close();
  }
  EXPECT_EQ(slurp(a), slurp(b));
}

TEST_F(OutputTest, BedGraphBgzipAndDiscard) {
  std::string path = file("t.bedgraph.gz");
  {
    BedGraphWriter w(path, 2);
    for (int i = 0; i < 1000; ++i) w.add("chr2", i, float(i) / 4);
    w.close();
  }
  std::string text = read_bgzf(path);
  EXPECT_EQ(text.substr(0, 25), "chr2\t0\t1\t0\nchr2\t1\t2\t0.25\n");
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1000);
  {
    BedGraphWriter w(file("discarded.bedgraph"));
    w.add("chr1", 0, 1.0f);
  }
  EXPECT_FALSE(fs::exists(file("discarded.bedgraph")));
  EXPECT_EQ(files_in_dir(), 1u);
}

}  // namespace
