// The hand-written Zarr v2 writer and the npy writer: metadata, chunk files, atomic commit.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "io/npy.h"
#include "io/zarr.h"

using namespace dnamba;
namespace fs = std::filesystem;

namespace {
std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}
std::string tmpdir(const std::string& name) {
  fs::path p = fs::temp_directory_path() / ("dnamba_test_zarr_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}
}  // namespace

TEST(Zstd, RoundTrip) {
  std::string s(100000, 'x');
  for (size_t i = 0; i < s.size(); i += 7) s[i] = char(i);
  auto z = io::zstd_compress(s.data(), s.size(), 3);
  EXPECT_LT(z.size(), s.size());
  EXPECT_EQ(io::zstd_decompress(z.data(), z.size()), s);
}

TEST(ZarrWriter, ChunksMetadataAndCommit) {
  const std::string d = tmpdir("store");
  const std::string path = d + "/x.zarr";
  {
    io::ZarrStoreWriter w(path, 5);
    auto& e = w.add_array("embedding", "<f4", 3, 4);
    auto& s = w.add_array("strand", "|S1", 0, 4);
    std::vector<float> v(10 * 3);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(i);
    e.append(v.data(), 3);
    e.append(v.data() + 9, 7);
    s.append("++-++-++-+", 10);
    w.attrs["contigs"] = {"a", "b"};
    EXPECT_FALSE(fs::exists(path));  // nothing under the final name before commit
    w.commit();
  }
  EXPECT_FALSE(fs::exists(path + ".tmp." + std::to_string(::getpid())));
  auto za = nlohmann::json::parse(slurp(path + "/embedding/.zarray"));
  EXPECT_EQ(za["zarr_format"], 2);
  EXPECT_EQ(za["shape"], nlohmann::json::array({10, 3}));
  EXPECT_EQ(za["chunks"], nlohmann::json::array({4, 3}));
  EXPECT_EQ(za["dtype"], "<f4");
  EXPECT_EQ(za["compressor"]["id"], "zstd");
  EXPECT_EQ(za["compressor"]["level"], 5);
  EXPECT_EQ(nlohmann::json::parse(slurp(path + "/.zgroup"))["zarr_format"], 2);
  EXPECT_EQ(nlohmann::json::parse(slurp(path + "/.zattrs"))["contigs"][1], "b");
  // 3 chunks; the last holds rows 8, 9 and zero padding to the full chunk shape.
  for (int c = 0; c < 3; ++c) ASSERT_TRUE(fs::exists(path + "/embedding/" + std::to_string(c) + ".0"));
  EXPECT_FALSE(fs::exists(path + "/embedding/3.0"));
  auto raw = slurp(path + "/embedding/2.0");
  auto chunk = io::zstd_decompress(raw.data(), raw.size());
  ASSERT_EQ(chunk.size(), size_t(4 * 3 * 4));
  std::vector<float> f(12);
  std::memcpy(f.data(), chunk.data(), chunk.size());
  EXPECT_EQ(f[0], 24.0f);
  EXPECT_EQ(f[5], 29.0f);
  EXPECT_EQ(f[6], 0.0f);
  raw = slurp(path + "/strand/1");
  EXPECT_EQ(io::zstd_decompress(raw.data(), raw.size()), "+-++");
  // Replacing an existing store works; a non-store path is refused.
  {
    io::ZarrStoreWriter w(path, 3);
    w.add_array("a", "<i8", 0, 2);
    w.commit();
  }
  EXPECT_FALSE(fs::exists(path + "/embedding"));
  EXPECT_TRUE(fs::exists(path + "/a/.zarray"));
  fs::create_directories(d + "/plain.zarr");
  std::ofstream(d + "/plain.zarr/keep.txt") << "x";
  EXPECT_THROW(io::ZarrStoreWriter(d + "/plain.zarr"), Error);
  EXPECT_TRUE(fs::exists(d + "/plain.zarr/keep.txt"));
  fs::remove_all(d);
}

TEST(ZarrWriter, NotCommittedLeavesNothing) {
  const std::string d = tmpdir("abort");
  {
    io::ZarrStoreWriter w(d + "/y.zarr");
    float x[2] = {1, 2};
    w.add_array("e", "<f4", 2, 8).append(x, 1);
  }
  EXPECT_TRUE(fs::is_empty(d));
  EXPECT_THROW(io::zarr_dtype_size("<c8"), Error);
  EXPECT_EQ(io::zarr_dtype_size("|S17"), 17u);
  fs::remove_all(d);
}

TEST(NpyWriter, HeaderAndLimit) {
  const std::string d = tmpdir("npy");
  {
    io::NpyWriter w(d + "/a.npy", "<f4", 2);
    float v[6] = {1, 2, 3, 4, 5, 6};
    w.append(v, 3);
    w.close();
  }
  auto s = slurp(d + "/a.npy");
  ASSERT_EQ(s.size(), 128u + 24u);
  EXPECT_EQ(s.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_NE(s.find("'shape': (3, 2)"), std::string::npos);
  EXPECT_EQ(s[127], '\n');
  {
    io::NpyWriter w(d + "/b.npy", "<f2", 2, 2);
    uint16_t v[6] = {};
    w.append(v, 2);
    EXPECT_THROW(w.append(v, 1), Error);
  }
  EXPECT_FALSE(fs::exists(d + "/b.npy"));
  fs::remove_all(d);
}
