// SAM/BAM/CRAM reads: sequenced orientation, samtools-style filters, clear errors.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "io/reads.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {
std::string write_sam(const std::string& name, const std::string& body) {
  fs::path p = fs::temp_directory_path() / ("dnamba_test_reads_" + std::to_string(::getpid()) + "_" + name + ".sam");
  std::ofstream(p) << "@SQ\tSN:c1\tLN:1000\n@SQ\tSN:c2\tLN:1000\n" << body;
  return p.string();
}
std::vector<io::ReadRecord> read_all(const std::string& path, io::ReadFilter f = {}) {
  io::ReadsReader r(path, "", f);
  std::vector<io::ReadRecord> v;
  io::ReadRecord rec;
  while (r.next(rec)) v.push_back(rec);
  return v;
}
}  // namespace

TEST(SamFlags, Parse) {
  EXPECT_EQ(io::parse_sam_flags("0x900", "-F"), 0x900);
  EXPECT_EQ(io::parse_sam_flags("2304", "-F"), 0x900);
  EXPECT_EQ(io::parse_sam_flags("SECONDARY,SUPPLEMENTARY", "-F"), 0x900);
  EXPECT_EQ(io::parse_sam_flags("0", "-F"), 0);
  EXPECT_THROW(io::parse_sam_flags("BOGUS", "--exclude-flags"), Error);
  EXPECT_THROW(io::parse_sam_flags("", "--exclude-flags"), Error);
}

TEST(ReadsReader, OrientationFiltersAndCoordinates) {
  auto p = write_sam("a",
                     "f\t0\tc1\t11\t60\t4M2S\t*\t0\t0\tACGTNA\t*\n"
                     "r\t16\tc2\t21\t30\t3M\t*\t0\t0\tAAC\t*\n"
                     "sec\t256\tc1\t1\t0\t3M\t*\t0\t0\t*\t*\n"
                     "sup\t2048\tc1\t1\t60\t2M\t*\t0\t0\tGG\t*\n"
                     "u\t4\t*\t0\t0\t*\t*\t0\t0\tTTRG\t*\n");
  auto v = read_all(p);
  ASSERT_EQ(v.size(), 3u);
  EXPECT_EQ(v[0].seq, "ACGTNA");
  EXPECT_EQ(v[0].tid, 0);
  EXPECT_EQ(v[0].ref_start, 10);
  EXPECT_EQ(v[0].ref_end, 14);
  EXPECT_EQ(v[1].seq, "GTT");  // reverse complement of the stored AAC
  EXPECT_TRUE(v[1].reverse());
  EXPECT_EQ(v[1].tid, 1);
  EXPECT_EQ(v[2].seq, "TTRG");  // unmapped: as stored
  EXPECT_EQ(v[2].name, "u");
  EXPECT_EQ(v[2].tid, -1);
  EXPECT_EQ(v[2].ref_start, -1);
  // samtools-style filters: -F 0x100 keeps the supplementary record; -q 30; -f 16.
  EXPECT_EQ(read_all(p, {0, 0x100, 0}).size(), 4u);
  EXPECT_EQ(read_all(p, {0, 0x900, 30}).size(), 2u);
  auto rev = read_all(p, {16, 0x900, 0});
  ASSERT_EQ(rev.size(), 1u);
  EXPECT_EQ(rev[0].name, "r");
  // Keeping every record reaches the secondary one, stored without SEQ: an error naming it.
  try {
    read_all(p, {0, 0, 0});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'sec'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no sequence"), std::string::npos) << e.what();
  }
  fs::remove(p);
}

TEST(ReadsReader, SecondaryOnlyAndBadFiles) {
  auto p = write_sam("sec", "s1\t256\tc1\t1\t0\t3M\t*\t0\t0\tACG\t*\n");
  io::ReadsReader r(p, "", io::ReadFilter{});
  io::ReadRecord rec;
  EXPECT_FALSE(r.next(rec));
  EXPECT_EQ(r.records_read(), 1);
  EXPECT_NE(r.filter_summary().find("secondary"), std::string::npos) << r.filter_summary();
  fs::remove(p);
  fs::path fa = fs::temp_directory_path() / ("dnamba_test_reads_" + std::to_string(::getpid()) + ".fa");
  std::ofstream(fa) << ">x\nACGT\n";
  EXPECT_THROW(io::ReadsReader(fa.string(), "", io::ReadFilter{}), Error);
  fs::remove(fa);
  EXPECT_THROW(io::ReadsReader("/nonexistent/x.bam", "", io::ReadFilter{}), Error);
}
