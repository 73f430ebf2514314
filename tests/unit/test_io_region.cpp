// Region strings (samtools syntax) and BED files.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <set>
#include <string>

#include "common/error.h"
#include "io/region.h"

namespace fs = std::filesystem;
using dnamba::Error;
using dnamba::io::parse_region;
using dnamba::io::read_bed;
using dnamba::io::Region;

namespace {

void expect_region(const Region& r, const std::string& contig, int64_t beg, int64_t end) {
  EXPECT_EQ(r.contig, contig);
  EXPECT_EQ(r.beg, beg);
  EXPECT_EQ(r.end, end);
}

TEST(ParseRegion, OneBasedInclusiveBecomesZeroBasedHalfOpen) {
  expect_region(parse_region("chr1"), "chr1", 0, -1);
  expect_region(parse_region("chr1:100"), "chr1", 99, -1);
  expect_region(parse_region("chr1:100-"), "chr1", 99, -1);
  expect_region(parse_region("chr1:100-200"), "chr1", 99, 200);
  expect_region(parse_region("chr1:1-1"), "chr1", 0, 1);
  expect_region(parse_region("chr1:-200"), "chr1", 0, 200);
  expect_region(parse_region("chr1:1,000-2,000"), "chr1", 999, 2000);
  expect_region(parse_region("NC_045512.2:5-5"), "NC_045512.2", 4, 5);
}

TEST(ParseRegion, ContigNamesWithColons) {
  const std::set<std::string> contigs = {"chr13:32315508-32400268", "HLA-A*01:01:01:01", "chr1"};
  auto is_contig = [&](const std::string& s) { return contigs.count(s) > 0; };
  // The whole string is a contig: taken as is, like samtools.
  expect_region(parse_region("chr13:32315508-32400268", is_contig), "chr13:32315508-32400268", 0, -1);
  expect_region(parse_region("HLA-A*01:01:01:01", is_contig), "HLA-A*01:01:01:01", 0, -1);
  // A range of such a contig: the last ':' splits.
  expect_region(parse_region("chr13:32315508-32400268:1-100", is_contig), "chr13:32315508-32400268", 0, 100);
  expect_region(parse_region("chr1:5-6", is_contig), "chr1", 4, 6);
  // Braces quote the name without needing a predicate.
  expect_region(parse_region("{chr13:32315508-32400268}"), "chr13:32315508-32400268", 0, -1);
  expect_region(parse_region("{chr13:32315508-32400268}:10-20"), "chr13:32315508-32400268", 9, 20);
  // Without a predicate the same string is a range of "chr13".
  expect_region(parse_region("chr13:32315508-32400268"), "chr13", 32315507, 32400268);
}

TEST(ParseRegion, BadSyntaxNamesTheString) {
  for (const char* bad : {"", "chr1:0-10", "chr1:200-100", "chr1:abc", "chr1:10-x", "chr1:", "chr1:-", ":1-10",
                          "chr1:1-2-3", "chr1:1.5-3", "chr1:99999999999999999999", "{chr1", "{chr1}x"}) {
    try {
      parse_region(bad);
      ADD_FAILURE() << "expected Error for '" << bad << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(std::string("'") + bad + "'"), std::string::npos) << e.what();
    }
  }
}

class BedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "dnamba_bed_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string write(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    std::ofstream(path, std::ios::binary) << text;
    return path;
  }
  std::string write_gzip(const std::string& name, const std::string& text) {
    std::string path = (dir_ / name).string();
    gzFile gz = gzopen(path.c_str(), "wb");
    EXPECT_EQ(gzwrite(gz, text.data(), unsigned(text.size())), int(text.size()));
    EXPECT_EQ(gzclose(gz), Z_OK);
    return path;
  }
  fs::path dir_;
};

const char kBed[] =
    "# a comment\n"
    "track name=x description=\"y\"\n"
    "browser position chr1:1-100\n"
    "\n"
    "chr1\t0\t100\tname\t0\t+\n"
    "chr13:32315508-32400268\t5\t10\r\n"
    "chrM 7 7\n";  // spaces and an empty interval

TEST_F(BedTest, PlainAndGzip) {
  for (const std::string& path : {write("a.bed", kBed), write_gzip("a.bed.gz", kBed)}) {
    std::vector<Region> regions = read_bed(path);
    ASSERT_EQ(regions.size(), 3u) << path;
    expect_region(regions[0], "chr1", 0, 100);
    expect_region(regions[1], "chr13:32315508-32400268", 5, 10);
    expect_region(regions[2], "chrM", 7, 7);
  }
}

TEST_F(BedTest, EmptyFileGivesNoRegions) { EXPECT_TRUE(read_bed(write("e.bed", "")).empty()); }

TEST_F(BedTest, BadLinesNameFileAndLine) {
  const std::pair<const char*, const char*> cases[] = {
      {"chr1\t0\t10\nchr1\t20\n", ":2:"},           {"chr1\t0\t10\n\nchr1\t-1\t5\n", ":3:"},
      {"chr1\t10\t5\n", ":1:"},                      {"chr1\tx\t5\n", ":1:"},
      {"# c\nchr1\t1,000\t2000\n", ":2:"},           {"trackline\t0\t1\nchr1\t0\t1e3\n", ":2:"},
  };
  int i = 0;
  for (const auto& [text, where] : cases) {
    std::string path = write("bad" + std::to_string(i++) + ".bed", text);
    try {
      read_bed(path);
      ADD_FAILURE() << "expected Error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path + where), std::string::npos) << e.what();
    }
  }
}

TEST_F(BedTest, MissingFile) { EXPECT_THROW(read_bed((dir_ / "missing.bed").string()), Error); }

}  // namespace
