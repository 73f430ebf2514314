// FastaReader over every way a FASTA arrives: plain/gzip/bgzip, with and without an index, regions,
// CRLF, odd letters, and the inputs that must be refused (stale index, non-letters, not a FASTA).
#include <gtest/gtest.h>
#include <htslib/bgzf.h>
#include <htslib/faidx.h>
#include <stdlib.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/error.h"
#include "io/fasta.h"

namespace fs = std::filesystem;
using dnamba::Error;
using dnamba::io::FastaReader;
using dnamba::io::Region;
using dnamba::io::SequencePiece;

namespace {

struct Record {
  std::string name;
  std::string seq;
};

// Deterministic sequence with soft-masked stretches and IUPAC codes, so both must survive reading.
std::string make_sequence(size_t n, unsigned seed) {
  static const char kLetters[] = "ACGTACGTACGTacgtNRYKMSWnbdhv";
  std::string s(n, 'A');
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1103515245u + 12345u;
    s[i] = kLetters[(seed >> 16) % (sizeof kLetters - 1)];
  }
  return s;
}

std::string format_fasta(const std::vector<Record>& records, size_t width, const std::string& eol = "\n") {
  std::string out;
  for (const Record& r : records) {
    out += ">" + r.name + " some description" + eol;
    for (size_t i = 0; i < r.seq.size(); i += width) out += r.seq.substr(i, width) + eol;
  }
  return out;
}

const std::vector<Record>& test_records() {
  static const std::vector<Record> records = {
      {"chr1", make_sequence(1000, 1)},
      {"chr2", make_sequence(37, 2)},
      {"empty", ""},
      {"chr13:100-200", make_sequence(61, 3)},  // a real contig name containing ':'
      {"chrM", make_sequence(60, 4)},           // exactly one full line
  };
  return records;
}

std::string expected_of(const std::string& name) {
  for (const Record& r : test_records())
    if (r.name == name) return r.seq;
  return {};
}

class FastaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = ::testing::TempDir() + "dnamba_fasta_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string file(const std::string& name) const { return (dir_ / name).string(); }

  std::string write_plain(const std::string& name, const std::string& text) {
    std::ofstream(file(name), std::ios::binary) << text;
    return file(name);
  }
  std::string write_bgzip(const std::string& name, const std::string& text) {
    BGZF* fp = bgzf_open(file(name).c_str(), "w");
    EXPECT_NE(fp, nullptr);
    EXPECT_EQ(bgzf_write(fp, text.data(), text.size()), ssize_t(text.size()));
    EXPECT_EQ(bgzf_close(fp), 0);
    return file(name);
  }
  std::string write_gzip(const std::string& name, const std::string& text) {
    gzFile gz = gzopen(file(name).c_str(), "wb");
    EXPECT_NE(gz, nullptr);
    EXPECT_EQ(gzwrite(gz, text.data(), unsigned(text.size())), int(text.size()));
    EXPECT_EQ(gzclose(gz), Z_OK);
    return file(name);
  }
  static void index(const std::string& path) { ASSERT_EQ(fai_build(path.c_str()), 0) << path; }

  fs::path dir_;
};

// Reads everything, checking the piece invariants on the way, and returns segment texts in order.
std::vector<std::pair<std::string, std::string>> read_segments(FastaReader& reader, int64_t max_len,
                                                               bool expect_lengths) {
  std::vector<std::pair<std::string, std::string>> segments;
  SequencePiece piece;
  bool in_segment = false;
  int64_t next_start = 0, segment_beg = 0;
  while (reader.next(piece, max_len)) {
    EXPECT_GE(int64_t(piece.seq.size()), 1);
    EXPECT_LE(int64_t(piece.seq.size()), max_len);
    EXPECT_EQ(piece.segment_start, !in_segment) << piece.contig << ":" << piece.start;
    if (piece.segment_start) {
      segments.emplace_back(piece.contig, "");
      segment_beg = piece.start;
    } else {
      EXPECT_EQ(piece.contig, segments.back().first);
      EXPECT_EQ(piece.start, next_start) << "pieces of one segment must be contiguous";
    }
    // Only the last piece of a segment may be shorter than max_len.
    if (!piece.segment_end) {
      EXPECT_EQ(int64_t(piece.seq.size()), max_len);
    }
    segments.back().second += piece.seq;
    next_start = piece.start + int64_t(piece.seq.size());
    in_segment = !piece.segment_end;
    // Indexed readers always know the length; scanning ones only for regions with an explicit end.
    if (expect_lengths) {
      EXPECT_NE(piece.segment_length, -1);
    }
    if (piece.segment_end && piece.segment_length != -1) {
      EXPECT_EQ(piece.segment_length, next_start - segment_beg);
    }
    EXPECT_EQ(piece.seq.find_first_of("\r\n \t>"), std::string::npos);
  }
  EXPECT_FALSE(in_segment) << "last piece must carry segment_end";
  EXPECT_FALSE(reader.next(piece, max_len)) << "next() stays false at the end";
  return segments;
}

void expect_whole_file(FastaReader& reader, int64_t max_len) {
  auto segments = read_segments(reader, max_len, reader.indexed());
  std::vector<std::pair<std::string, std::string>> expected;
  for (const Record& r : test_records())
    if (!r.seq.empty()) expected.emplace_back(r.name, r.seq);  // zero-length contigs emit nothing
  EXPECT_EQ(segments, expected) << "max_len " << max_len;
}

TEST_F(FastaTest, PlainIndexed) {
  std::string path = write_plain("a.fa", format_fasta(test_records(), 60));
  index(path);
  for (int64_t max_len : {1, 7, 1000}) {
    FastaReader reader(path);
    ASSERT_TRUE(reader.indexed());
    // htslib leaves zero-length records out of the .fai.
    ASSERT_EQ(reader.contigs().size(), test_records().size() - 1);
    EXPECT_EQ(reader.contigs()[2].name, "chr13:100-200");
    EXPECT_EQ(reader.contig_length("chr1"), 1000);
    EXPECT_EQ(reader.contig_length("empty"), -1);
    EXPECT_EQ(reader.contig_length("nope"), -1);
    expect_whole_file(reader, max_len);
  }
}

TEST_F(FastaTest, PlainUnindexed) {
  std::string path = write_plain("a.fa", format_fasta(test_records(), 60));
  for (int64_t max_len : {1, 7, 1000}) {
    FastaReader reader(path);
    EXPECT_FALSE(reader.indexed());
    EXPECT_TRUE(reader.contigs().empty());
    EXPECT_EQ(reader.contig_length("chr1"), -1);
    expect_whole_file(reader, max_len);
  }
}

TEST_F(FastaTest, GzipIsReadSequentiallyEvenWithAFai) {
  std::string text = format_fasta(test_records(), 50);
  std::string path = write_gzip("a.fa.gz", text);
  // A .fai cannot make plain gzip random-access; the reader must scan and not trust it.
  std::string plain = write_plain("b.fa", text);
  index(plain);
  fs::copy_file(plain + ".fai", path + ".fai");
  for (int64_t max_len : {1, 7, 1000}) {
    FastaReader reader(path);
    EXPECT_FALSE(reader.indexed());
    expect_whole_file(reader, max_len);
  }
}

TEST_F(FastaTest, BgzipIndexedAndUnindexed) {
  std::string text = format_fasta(test_records(), 70);
  std::string unindexed = write_bgzip("u.fa.gz", text);
  std::string indexed = write_bgzip("i.fa.gz", text);
  index(indexed);
  ASSERT_TRUE(fs::exists(indexed + ".gzi"));
  for (int64_t max_len : {1, 7, 1000}) {
    FastaReader a(indexed);
    EXPECT_TRUE(a.indexed());
    expect_whole_file(a, max_len);
    FastaReader b(unindexed);
    EXPECT_FALSE(b.indexed());
    expect_whole_file(b, max_len);
  }
}

TEST_F(FastaTest, BgzipWithFaiButNoGziIsScanned) {
  std::string path = write_bgzip("a.fa.gz", format_fasta(test_records(), 60));
  index(path);
  fs::remove(path + ".gzi");
  FastaReader reader(path);
  EXPECT_FALSE(reader.indexed());
  expect_whole_file(reader, 100);
}

TEST_F(FastaTest, CrlfLineEndings) {
  std::string text = format_fasta(test_records(), 60, "\r\n");
  std::string indexed = write_plain("i.fa", text);
  index(indexed);
  std::string unindexed = write_plain("u.fa", text);
  std::string bgz = write_bgzip("b.fa.gz", text);
  index(bgz);
  for (int64_t max_len : {1, 7, 1000}) {
    for (const std::string& path : {indexed, unindexed, bgz}) {
      FastaReader reader(path);
      EXPECT_EQ(reader.indexed(), path != unindexed);
      expect_whole_file(reader, max_len);
    }
  }
  FastaReader reader(indexed);
  reader.set_regions({{"chr1", 59, 121}});  // crosses two CRLF line ends
  auto segments = read_segments(reader, 1000, true);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].second, expected_of("chr1").substr(59, 62));
}

TEST_F(FastaTest, CaseAndIupacKept) {
  std::string path = write_plain("a.fa", ">x\nACgtNnRYkmSWbdhvU\nacgt\n");
  SequencePiece piece;
  FastaReader seq_reader(path);
  ASSERT_TRUE(seq_reader.next(piece, 100));
  EXPECT_EQ(piece.seq, "ACgtNnRYkmSWbdhvUacgt");
  index(path);
  FastaReader idx_reader(path);
  ASSERT_TRUE(idx_reader.indexed());
  ASSERT_TRUE(idx_reader.next(piece, 100));
  EXPECT_EQ(piece.seq, "ACgtNnRYkmSWbdhvUacgt");
}

TEST_F(FastaTest, SpacesAndBlankLinesIgnoredWhenScanning) {
  std::string path = write_plain("a.fa", "\n\n>x\nAC GT\t\n\nacgt \n>y\n\nGG\n");
  FastaReader reader(path);
  auto segments = read_segments(reader, 3, false);
  std::vector<std::pair<std::string, std::string>> expected = {{"x", "ACGTacgt"}, {"y", "GG"}};
  EXPECT_EQ(segments, expected);
}

// Regions, in an order that is not the file order, with a duplicate and a contig named with ':'.
const std::vector<Region>& test_regions() {
  static const std::vector<Region> regions = {
      {"chr2", 4, 20}, {"chr1", 0, -1}, {"chr13:100-200", 0, -1}, {"chr1", 990, -1},
      {"chr1", 0, 10}, {"chrM", 59, 60}, {"chr2", 0, 0} /* empty: emits nothing */,
      {"chr1", 10, 11}, {"chr1", 500, 1000},
  };
  return regions;
}

std::vector<std::pair<std::string, std::string>> expected_regions() {
  std::vector<std::pair<std::string, std::string>> out;
  for (const Region& r : test_regions()) {
    std::string seq = expected_of(r.contig);
    int64_t end = r.end == -1 ? int64_t(seq.size()) : r.end;
    if (end > r.beg) out.emplace_back(r.contig, seq.substr(r.beg, end - r.beg));
  }
  return out;
}

TEST_F(FastaTest, RegionsIndexedAndSequential) {
  std::string text = format_fasta(test_records(), 60);
  std::string indexed = write_plain("i.fa", text);
  index(indexed);
  std::string unindexed = write_plain("u.fa", text);
  std::string gz = write_gzip("g.fa.gz", text);
  std::string bgz = write_bgzip("b.fa.gz", text);
  index(bgz);
  for (int64_t max_len : {1, 7, 1000}) {
    for (const std::string& path : {indexed, unindexed, gz, bgz}) {
      FastaReader reader(path);
      reader.set_regions(test_regions());
      EXPECT_EQ(read_segments(reader, max_len, reader.indexed()), expected_regions()) << path;
    }
  }
}

TEST_F(FastaTest, ZeroLengthContigRegion) {
  std::string path = write_plain("a.fa", format_fasta(test_records(), 60));
  {
    FastaReader reader(path);  // scanning sees the record: it is a valid, empty region
    reader.set_regions({{"empty", 0, -1}, {"chr2", 0, 3}});
    auto segments = read_segments(reader, 10, false);
    ASSERT_EQ(segments.size(), 1u);
    EXPECT_EQ(segments[0].first, "chr2");
  }
  index(path);
  FastaReader reader(path);  // but it is not in the .fai, so indexed it is unknown
  EXPECT_THROW(reader.set_regions({{"empty", 0, -1}}), Error);
}

TEST_F(FastaTest, SegmentLengthAndStarts) {
  std::string path = write_plain("a.fa", format_fasta(test_records(), 60));
  index(path);
  FastaReader reader(path);
  reader.set_regions({{"chr1", 100, -1}});
  SequencePiece piece;
  ASSERT_TRUE(reader.next(piece, 7));
  EXPECT_EQ(piece.start, 100);
  EXPECT_EQ(piece.segment_length, 900);
  EXPECT_TRUE(piece.segment_start);
  EXPECT_FALSE(piece.segment_end);
}

TEST_F(FastaTest, UnknownContig) {
  std::string text = format_fasta(test_records(), 60);
  std::string indexed = write_plain("i.fa", text);
  index(indexed);
  std::string unindexed = write_plain("u.fa", text);
  {
    FastaReader reader(indexed);
    try {
      reader.set_regions({{"chr1", 0, 10}, {"chrX", 0, -1}});
      FAIL() << "expected Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("chrX"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(indexed), std::string::npos) << e.what();
    }
  }
  {
    FastaReader reader(unindexed);
    reader.set_regions({{"chr1", 0, 10}, {"chrX", 0, -1}});
    SequencePiece piece;
    ASSERT_TRUE(reader.next(piece, 100));  // chr1:1-10 comes first
    try {
      reader.next(piece, 100);
      FAIL() << "expected Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("chrX"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(unindexed), std::string::npos) << e.what();
    }
  }
}

TEST_F(FastaTest, RegionPastContigEnd) {
  std::string text = format_fasta(test_records(), 60);
  std::string indexed = write_plain("i.fa", text);
  index(indexed);
  std::string unindexed = write_plain("u.fa", text);
  for (const Region& bad : {Region{"chr2", 0, 38}, Region{"chr2", 40, 50}, Region{"chr2", 37, -1}}) {
    {
      FastaReader reader(indexed);
      EXPECT_THROW(reader.set_regions({bad}), Error);
    }
    {
      FastaReader reader(unindexed);
      reader.set_regions({bad});
      SequencePiece piece;
      try {
        while (reader.next(piece, 1000)) {
        }
        FAIL() << "expected Error for " << bad.contig << " " << bad.beg << " " << bad.end;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("past the end of contig chr2 (length 37)"), std::string::npos)
            << e.what();
      }
    }
  }
  // Up to the last base is fine.
  FastaReader reader(indexed);
  reader.set_regions({{"chr2", 36, 37}});
  auto segments = read_segments(reader, 10, true);
  ASSERT_EQ(segments.size(), 1u);
  EXPECT_EQ(segments[0].second, expected_of("chr2").substr(36));
}

TEST_F(FastaTest, EmptyOrNotFasta) {
  EXPECT_THROW(FastaReader(write_plain("zero.fa", "")), Error);
  EXPECT_THROW(FastaReader(write_plain("blank.fa", "\n\n  \n")), Error);
  EXPECT_THROW(FastaReader(write_gzip("zero.fa.gz", "")), Error);
  EXPECT_THROW(FastaReader(write_plain("seq.fa", "ACGT\n>x\nACGT\n")), Error);
  EXPECT_THROW(FastaReader(write_plain("fastq.fq", "@r1\nACGT\n+\nIIII\n")), Error);
  EXPECT_THROW(FastaReader(file("missing.fa")), Error);
  EXPECT_THROW(FastaReader(dir_.string()), Error);
  try {
    FastaReader reader(write_plain("seq2.fa", "ACGT\n"));
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seq2.fa:1"), std::string::npos) << e.what();
  }
}

TEST_F(FastaTest, OnlyEmptyRecordsEmitNothing) {
  std::string path = write_plain("a.fa", ">a\n>b\n\n");
  FastaReader reader(path);
  SequencePiece piece;
  EXPECT_FALSE(reader.next(piece, 10));
}

TEST_F(FastaTest, NonLettersRejectedWhenScanning) {
  for (const char* bad : {"-", "*", ".", "1", "@"}) {
    std::string path = write_plain("a.fa", std::string(">x\nACGT\nAC") + bad + "T\n");
    FastaReader reader(path);
    SequencePiece piece;
    try {
      while (reader.next(piece, 1000)) {
      }
      FAIL() << "expected Error for " << bad;
    } catch (const Error& e) {
      std::string msg = e.what();
      EXPECT_NE(msg.find(path + ":3"), std::string::npos) << msg;       // line number
      EXPECT_NE(msg.find("position 7"), std::string::npos) << msg;     // 1-based base position
      EXPECT_NE(msg.find(std::string("'") + bad + "'"), std::string::npos) << msg;
    }
  }
}

TEST_F(FastaTest, NonLettersRejectedWhenIndexed) {
  std::string path = write_plain("a.fa", ">x\nACGT\nAC-T\nACGT\n");
  index(path);
  FastaReader reader(path);
  ASSERT_TRUE(reader.indexed());
  SequencePiece piece;
  try {
    while (reader.next(piece, 1000)) {
    }
    FAIL() << "expected Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'-' in the sequence of x at position 7"), std::string::npos) << e.what();
  }
}

// Reads everything; returns the Error message, or "" when no Error was thrown.
std::string error_of_reading(const std::string& path) {
  try {
    FastaReader reader(path);
    EXPECT_TRUE(reader.indexed());
    SequencePiece piece;
    while (reader.next(piece, 1000)) {
    }
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST_F(FastaTest, StaleIndexDetected) {
  std::vector<Record> records = test_records();
  // Index, then rewrite the file with another line width: every offset after the first line moves.
  std::string path = write_plain("w.fa", format_fasta(records, 60));
  index(path);
  write_plain("w.fa", format_fasta(records, 70));
  std::string msg = error_of_reading(path);
  EXPECT_NE(msg.find("index " + path + ".fai disagrees with the sequence of"), std::string::npos) << msg;
  EXPECT_NE(msg.find("rebuild it with samtools faidx"), std::string::npos) << msg;

  // 60 -> 61 bases per line keeps chr1 at 17 lines, so every contig boundary stays where it was and
  // only the line ends inside contigs move: faidx would silently return shifted bases.
  const std::vector<Record> two = {records[0], records[1]};
  path = write_plain("w61.fa", format_fasta(two, 60));
  index(path);
  const auto size60 = fs::file_size(path);
  write_plain("w61.fa", format_fasta(two, 61));
  ASSERT_EQ(fs::file_size(path), size60) << "the test needs a rewrite that keeps every boundary";
  msg = error_of_reading(path);
  EXPECT_NE(msg.find("disagrees with the sequence of chr1"), std::string::npos) << msg;
  {
    msg.clear();
    try {  // also when asking for a region that does not start at the contig start
      FastaReader reader(path);
      reader.set_regions({{"chr1", 500, 600}});
      SequencePiece piece;
      while (reader.next(piece, 1000)) {
      }
    } catch (const Error& e) {
      msg = e.what();
    }
    EXPECT_NE(msg.find("disagrees"), std::string::npos) << msg;
  }

  // A shorter last sequence.
  path = write_plain("s.fa", format_fasta(records, 60));
  index(path);
  records.back().seq.resize(50);
  write_plain("s.fa", format_fasta(records, 60));
  msg = error_of_reading(path);
  EXPECT_NE(msg.find("disagrees with the sequence of chrM"), std::string::npos) << msg;

  // A shorter middle sequence of the same line count: only the per-contig check can see it.
  records = test_records();
  path = write_plain("m.fa", format_fasta(records, 60));
  index(path);
  records[0].seq.resize(990);
  records[0].seq += "ACGTACGTAC";  // same length, so now make one shorter line instead
  std::string text = format_fasta(records, 60);
  size_t at = text.find('\n', text.find('\n') + 1);  // end of first sequence line
  text.erase(at - 1, 1);                             // the first line loses a base
  write_plain("m.fa", text);
  msg = error_of_reading(path);
  EXPECT_NE(msg.find("disagrees with the sequence of chr1"), std::string::npos) << msg;

  // An index that belongs to another file.
  std::string other = write_plain("other.fa", ">other\nACGT\n");
  index(other);
  path = write_plain("x.fa", format_fasta(test_records(), 60));
  fs::copy_file(other + ".fai", path + ".fai");
  msg = error_of_reading(path);
  EXPECT_NE(msg.find("rebuild it with samtools faidx"), std::string::npos) << msg;

  // Garbage in the .fai.
  path = write_plain("g.fa", ">g\nACGT\n");
  write_plain("g.fa.fai", "g\tfour\t3\t4\t5\n");
  EXPECT_THROW(FastaReader reader(path), Error);
}

TEST_F(FastaTest, SetRegionsRestartsIteration) {
  std::string path = write_plain("a.fa", format_fasta(test_records(), 60));
  FastaReader reader(path);
  SequencePiece piece;
  ASSERT_TRUE(reader.next(piece, 10));
  ASSERT_TRUE(reader.next(piece, 10));
  reader.set_regions({{"chr1", 0, 5}, {"chr1", 3, 8}});  // overlapping: needs a rescan when sequential
  auto segments = read_segments(reader, 100, false);
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0].second, expected_of("chr1").substr(0, 5));
  EXPECT_EQ(segments[1].second, expected_of("chr1").substr(3, 5));
}

TEST_F(FastaTest, MaxLenMustBePositive) {
  FastaReader reader(write_plain("a.fa", ">x\nACGT\n"));
  SequencePiece piece;
  EXPECT_THROW(reader.next(piece, 0), Error);
}

// Real data, when present: indexed and sequential reads of the same file must agree.
TEST(FastaRealData, SarsCov2IndexedMatchesSequential) {
  const std::string path = "/work/shared/data/sarscov2/MN908947.3.fa";
  if (!fs::exists(path) || !fs::exists(path + ".fai")) GTEST_SKIP() << path << " not present";
  FastaReader indexed(path);
  ASSERT_TRUE(indexed.indexed());
  ASSERT_EQ(indexed.contigs().size(), 1u);
  auto a = read_segments(indexed, 4096, true);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(int64_t(a[0].second.size()), indexed.contigs()[0].length);

  std::ifstream in(path);
  std::string line, seq;
  std::getline(in, line);
  while (std::getline(in, line)) seq += line;
  EXPECT_EQ(a[0].second, seq);
}

TEST(FastaRealData, HumanRegionContigNamesWithColons) {
  const std::string path = "/work/shared/data/human/grch38_gene_regions.fa.gz";
  if (!fs::exists(path) || !fs::exists(path + ".gzi")) GTEST_SKIP() << path << " not present";
  FastaReader reader(path);
  ASSERT_TRUE(reader.indexed());
  ASSERT_FALSE(reader.contigs().empty());
  const dnamba::io::ContigInfo first = reader.contigs()[0];
  auto is_contig = [&](const std::string& s) { return reader.contig_length(s) >= 0; };
  Region whole = dnamba::io::parse_region(first.name, is_contig);
  EXPECT_EQ(whole.contig, first.name);
  Region part = dnamba::io::parse_region(first.name + ":1-100", is_contig);
  EXPECT_EQ(part.contig, first.name);
  reader.set_regions({whole, part});
  auto segments = read_segments(reader, 1 << 16, true);
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(int64_t(segments[0].second.size()), first.length);
  EXPECT_EQ(segments[1].second, segments[0].second.substr(0, 100));
}

TEST(FastaRealData, YeastBgzipIndexedMatchesSequential) {
  const std::string path = "/work/shared/data/yeast/yeast_r64.fa.gz";
  if (!fs::exists(path) || !fs::exists(path + ".gzi")) GTEST_SKIP() << path << " not present";
  FastaReader indexed(path);
  ASSERT_TRUE(indexed.indexed());
  ASSERT_GE(indexed.contigs().size(), 2u);
  // Sequential copy of the same file: a symlink without the index beside it.
  std::string tmpl = ::testing::TempDir() + "dnamba_yeast_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
  std::string link = tmpl + "/yeast.fa.gz";
  fs::create_symlink(path, link);
  FastaReader scanned(link);
  ASSERT_FALSE(scanned.indexed());
  const std::vector<Region> regions = {{indexed.contigs()[1].name, 1000, 250000}, {indexed.contigs()[0].name, 0, -1}};
  indexed.set_regions(regions);
  scanned.set_regions(regions);
  EXPECT_EQ(read_segments(indexed, 100000, true), read_segments(scanned, 100000, false));
  fs::remove_all(tmpl);
}

}  // namespace
