// BigWigWriter: values read back through libBigWig, order checks, atomic output.
#include <bigWig.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "io/bigwig.h"

using namespace dnamba;
namespace fs = std::filesystem;

TEST(BigWig, ChromOrderIsByName) {
  std::vector<io::ContigInfo> c = {{"chr2", 5}, {"chr10", 5}, {"chr1", 5}};
  auto o = io::bigwig_chrom_order(c);
  EXPECT_EQ(c[o[0]].name, "chr1");
  EXPECT_EQ(c[o[1]].name, "chr10");
  EXPECT_EQ(c[o[2]].name, "chr2");
}

TEST(BigWig, WritesReadableValuesInOrderOnly) {
  const std::string path = (fs::temp_directory_path() / ("dnamba_test_" + std::to_string(::getpid()) + ".bw")).string();
  {
    io::BigWigWriter w(path, {{"a", 100000}, {"b", 50}});
    std::vector<float> v(100000);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i % 1000) * 0.5f;
    w.add("a", 1, v.data(), 40000);            // several libBigWig blocks
    w.add("a", 40001, v.data() + 40000, 10);   // continues the previous run
    w.add("a", 50000, v.data() + 50000, 100);  // a gap
    EXPECT_THROW(w.add("a", 10, v.data(), 5), Error);     // backwards
    EXPECT_THROW(w.add("b", 45, v.data(), 10), Error);    // past the end
    EXPECT_THROW(w.add("zz", 0, v.data(), 1), Error);     // unknown
    w.add("b", 0, v.data(), 3);
    EXPECT_THROW(w.add("a", 60000, v.data(), 1), Error);  // chromosome order
    EXPECT_FALSE(fs::exists(path));
    w.close();
  }
  bigWigFile_t* bw = bwOpen(const_cast<char*>(path.c_str()), nullptr, "r");
  ASSERT_NE(bw, nullptr);
  bwOverlappingIntervals_t* o = bwGetValues(bw, const_cast<char*>("a"), 0, 50100, 1);
  ASSERT_NE(o, nullptr);
  EXPECT_TRUE(std::isnan(o->value[0]));
  // position p holds v[p - 1] up to 40010, then v[p] from 50000
  EXPECT_EQ(o->value[1], 0.0f);
  EXPECT_EQ(o->value[3], 1.0f);
  EXPECT_EQ(o->value[39999], float(39998 % 1000) * 0.5f);
  EXPECT_EQ(o->value[40010], float(40009 % 1000) * 0.5f);
  EXPECT_TRUE(std::isnan(o->value[40011]));
  EXPECT_EQ(o->value[50099], float(50099 % 1000) * 0.5f);
  bwDestroyOverlappingIntervals(o);
  bwClose(bw);
  fs::remove(path);
}
