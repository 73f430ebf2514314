// Variant scoring (score/variant_score.h): the windows of the definition, and the fast state-caching
// method against the naive one (both haplotypes from the segment start) on a tiny model.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>
#include <tuple>

#include "backend/cpu/cpu_backend.h"
#include "model/mamba_lm.h"
#include "model/tokenizer.h"
#include "score/variant_score.h"

using namespace dnamba;
using namespace dnamba::score;

using namespace std::string_view_literals;

namespace {

const std::string kTinyModel = std::string(DNAMBA_TESTDATA_DIR) + "/score/tiny_model";

std::string random_dna(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, 'A');
  for (char& c : s) c = "ACGT"[rng() % 4];
  return s;
}

std::vector<int32_t> strand_tokens(const std::string& g, bool reverse) {
  std::vector<int32_t> t(g.size());
  for (size_t i = 0; i < g.size(); ++i)
    t[i] = reverse ? complement_token(base_to_token(g[g.size() - 1 - i])) : base_to_token(g[i]);
  return t;
}

struct TestVariant {
  int64_t p;
  std::string ref, alt;
};

// Scores the variants of several contigs as the pipeline does: groups by (contig, strand, segment),
// all of them handed to one GroupScorer::score_groups call (which runs ref_batch groups in lockstep,
// so with ref_batch > 1 runs of different contigs, strands and lengths share a batch), or one
// GroupScorer::score call per group (`one_by_one`). Returns {fwd, rev} LLR per variant and contig.
std::vector<std::vector<std::pair<double, double>>> score_contigs(MambaLM& m, const std::vector<std::string>& gs,
                                                                  const std::vector<std::vector<TestVariant>>& vss,
                                                                  const ScoreParams& prm, bool one_by_one = false) {
  std::vector<std::vector<AlleleWindows>> w(gs.size());
  std::vector<std::vector<int32_t>> strands;  // per contig: fwd, rev
  std::map<std::tuple<size_t, int, int64_t>, std::pair<int64_t, std::vector<StrandAllele*>>> groups;
  for (size_t c = 0; c < gs.size(); ++c) {
    const std::string& g = gs[c];
    const auto& vs = vss[c];
    const int64_t L = int64_t(g.size());
    for (const auto& v : vs) w[c].push_back(make_windows(v.p, v.ref, v.alt, L, prm));
    for (size_t i = 0; i < vs.size(); ++i) {
      auto& f = groups[{c, 0, vs[i].p / prm.segment}];
      f.first = w[c][i].fwd_segment_start;
      f.second.push_back(&w[c][i].fwd);
      auto& r = groups[{c, 1, (vs[i].p + int64_t(vs[i].ref.size()) - 1) / prm.segment}];
      r.first = w[c][i].rev_segment_start;
      r.second.push_back(&w[c][i].rev);
    }
    strands.push_back(strand_tokens(g, false));
    strands.push_back(strand_tokens(g, true));
  }
  GroupScorer sc(m, prm);
  std::vector<std::vector<int32_t>> seqs;
  seqs.reserve(groups.size());
  std::vector<GroupJob> jobs;
  for (auto& [key, grp] : groups) {
    const auto& t = strands[2 * std::get<0>(key) + size_t(std::get<1>(key))];
    seqs.emplace_back(t.begin() + grp.first, t.end());
    GroupJob j;
    j.s = grp.first;
    j.seq = &seqs.back();
    j.alleles = grp.second;
    if (one_by_one)
      sc.score(j.s, *j.seq, j.alleles);
    else
      jobs.push_back(std::move(j));
  }
  sc.score_groups(jobs);
  std::vector<std::vector<std::pair<double, double>>> r(gs.size());
  for (size_t c = 0; c < gs.size(); ++c)
    for (auto& x : w[c]) r[c].push_back({x.fwd.llr, x.rev.llr});
  return r;
}

std::vector<std::pair<double, double>> score_all(MambaLM& m, const std::string& g, const std::vector<TestVariant>& vs,
                                                 const ScoreParams& prm, bool one_by_one = false) {
  return score_contigs(m, {g}, {vs}, prm, one_by_one)[0];
}

// SNVs, MNPs, insertions, deletions and multi-allelic sites near contig ends and segment boundaries.
std::vector<TestVariant> make_variants(const std::string& g, int64_t S) {
  const int64_t L = int64_t(g.size());
  std::vector<TestVariant> vs;
  auto base = [&](int64_t p) { return std::string(1, g[size_t(p)]); };
  auto other = [&](int64_t p, int k = 1) { return std::string(1, "ACGT"[("ACGT"sv.find(g[size_t(p)]) + size_t(k)) % 4]); };
  auto add = [&](int64_t p, int64_t lr, const std::string& alt) {
    if (p >= 0 && p + lr <= L) vs.push_back({p, g.substr(size_t(p), size_t(lr)), alt});
  };
  std::vector<int64_t> sites = {0, 1, 2, 5, S - 3, S - 1, S, S + 1, 2 * S - 1, 2 * S, 2 * S + 7, L / 2, L - 40, L - 5, L - 2, L - 1};
  for (int64_t p : sites) {
    if (p < 0 || p >= L) continue;
    add(p, 1, other(p));                      // SNV
    add(p, 1, other(p, 2));                   // second ALT at the same site (multi-allelic)
    add(p, 1, base(p) + "GATTACA");           // insertion
    add(p, 1, base(p) + "T");                 // 1-base insertion
    add(p, 4, base(p));                       // 3-base deletion
    add(p, 2, other(p) + other(p + 1 < L ? p + 1 : p));  // MNP
    add(p, 12, base(p) + "CC");               // complex: deletion + insertion
    add(p, 3, g.substr(size_t(p), 1) + "A" + g.substr(size_t(std::min(p + 2, L - 1)), 1));  // middle change
  }
  add(L - 6, 6, base(L - 6));  // deletion to the contig end: nothing after the allele
  add(L - 3, 3, g.substr(size_t(L - 3), 3));  // ALT == REF: score 0
  return vs;
}

}  // namespace

TEST(ScoreWindows, SnvInsertionDeletionDefinitions) {
  ScoreParams prm;
  prm.horizon = 10;
  prm.segment = 100;
  prm.context = 20;
  const int64_t L = 1000;
  // SNV at 0-based 250: q = 250, window ends 10 bases after the REF allele.
  auto w = make_windows(250, "A", "G", L, prm);
  EXPECT_EQ(w.fwd.q, 250);
  EXPECT_EQ(w.fwd.flank, 251);
  EXPECT_EQ(w.fwd.e, 261);
  EXPECT_EQ(w.fwd.alt_insert, std::vector<int32_t>({kTokG}));
  EXPECT_EQ(w.fwd_segment_start, 180);  // segment 2 starts at 200, minus C
  // Reverse strand: REF [250, 251) is at 749 on the reverse strand; its run starts at forward
  // min(L, 300 + 20) = 320, i.e. reverse 680.
  EXPECT_EQ(w.rev.q, 749);
  EXPECT_EQ(w.rev.flank, 750);
  EXPECT_EQ(w.rev.e, 760);
  EXPECT_EQ(w.rev.alt_insert, std::vector<int32_t>({kTokC}));
  EXPECT_EQ(w.rev_segment_start, 680);
  EXPECT_EQ(w.ref_lo, 240);
  EXPECT_EQ(w.ref_hi, 261);
  // Insertion A -> ATT: the alt haplotype scores TT + 10 bases, the ref haplotype the same 10 bases.
  w = make_windows(250, "A", "ATT", L, prm);
  EXPECT_EQ(w.fwd.q, 251);
  EXPECT_EQ(w.fwd.flank, 251);
  EXPECT_EQ(w.fwd.alt_insert, std::vector<int32_t>({kTokT, kTokT}));
  // Reverse: REF A and ALT ATT share no suffix, so all of RC(ATT) = AAT is scored on that strand.
  EXPECT_EQ(w.rev.q, 749);
  EXPECT_EQ(w.rev.alt_insert, std::vector<int32_t>({kTokA, kTokA, kTokT}));
  // Deletion ACG -> A: ref scores CG + 10 bases, alt only the 10 bases after the deleted CG.
  w = make_windows(250, "ACG", "A", L, prm);
  EXPECT_EQ(w.fwd.q, 251);
  EXPECT_EQ(w.fwd.flank, 253);
  EXPECT_EQ(w.fwd.e, 263);
  EXPECT_TRUE(w.fwd.alt_insert.empty());
  // The reverse segment follows the REF allele's last base: 252 is in segment 2 as well.
  EXPECT_EQ(w.rev_segment_start, 680);
  // A deletion crossing a segment boundary: its reverse run starts after the next segment.
  w = make_windows(298, "ACGT", "A", L, prm);
  EXPECT_EQ(w.fwd_segment_start, 180);
  EXPECT_EQ(w.rev_segment_start, L - 420);
  // Clipping at the contig ends and at the start.
  w = make_windows(995, "A", "C", L, prm);
  EXPECT_EQ(w.fwd.e, L);
  w = make_windows(3, "A", "C", L, prm);
  EXPECT_EQ(w.fwd_segment_start, 0);
  EXPECT_EQ(w.rev.e, L);
  EXPECT_EQ(w.ref_lo, 0);
}

TEST(ScoreWindows, ClassifyAlt) {
  EXPECT_EQ(classify_alt("ACGT"), Flag::None);
  EXPECT_EQ(classify_alt("acgN"), Flag::None);  // N is checked later (N_IN_WINDOW)
  EXPECT_EQ(classify_alt("<DEL>"), Flag::Symbolic);
  EXPECT_EQ(classify_alt("<*>"), Flag::Symbolic);
  EXPECT_EQ(classify_alt("*"), Flag::SpanningDeletion);
  EXPECT_EQ(classify_alt("G]17:198982]"), Flag::Breakend);
  EXPECT_EQ(classify_alt("]13:123456]T"), Flag::Breakend);
  EXPECT_EQ(classify_alt(".A"), Flag::Breakend);
  EXPECT_EQ(classify_alt("A."), Flag::Breakend);
  EXPECT_EQ(classify_alt("A-C"), Flag::InvalidAllele);
  EXPECT_EQ(classify_alt(""), Flag::InvalidAllele);
}

class ScoreFastVsNaive : public ::testing::Test {
 protected:
  void SetUp() override {
    be_ = std::make_unique<CpuBackend>(2);
    m_ = std::make_unique<MambaLM>(kTinyModel, *be_);
  }
  std::unique_ptr<CpuBackend> be_;
  std::unique_ptr<MambaLM> m_;
};

TEST_F(ScoreFastVsNaive, SameScoresForEveryKindOfVariantAndExecutionSetting) {
  const std::string g = random_dna(1500, 3);
  ScoreParams base;
  base.horizon = 25;
  base.segment = 400;
  base.context = 90;
  const auto vs = make_variants(g, base.segment);
  ASSERT_GT(vs.size(), 100u);
  ScoreParams naive = base;
  naive.method = Method::Naive;
  naive.batch = 7;
  naive.batch_tokens = 2000;
  const auto want = score_all(*m_, g, vs, naive);
  double max_abs = 0;
  for (auto& w : want) max_abs = std::max(max_abs, std::fabs(w.first));
  EXPECT_GT(max_abs, 0.5) << "the test model must give scores far from 0";
  // ref_batch > 1: the 8 runs (4 segments x 2 strands, of different lengths: the first segment has
  // no context, the last ends at the contig end) advance in lockstep, some of them together.
  struct Setting { int64_t chunk, gap, ref_batch, batch, batch_tokens; };
  for (const Setting& st : {Setting{1 << 14, 1, 1, 64, 1 << 14}, Setting{37, 1, 1, 5, 100},
                            Setting{128, 9, 1, 64, 1 << 14}, Setting{1, 40, 1, 1, 7}, Setting{1 << 14, 4, 8, 64, 1 << 14},
                            Setting{50, 7, 3, 9, 300}, Setting{1 << 14, 32, 5, 1024, 1 << 18}, Setting{3, 2, 8, 2, 40}}) {
    ScoreParams prm = base;
    prm.chunk = st.chunk;
    prm.snapshot_gap = st.gap;
    prm.ref_batch = st.ref_batch;
    prm.batch = st.batch;
    prm.batch_tokens = st.batch_tokens;
    const auto got = score_all(*m_, g, vs, prm);
    for (size_t i = 0; i < vs.size(); ++i) {
      const std::string what = "variant " + std::to_string(vs[i].p) + " " + vs[i].ref + ">" + vs[i].alt +
                                " chunk " + std::to_string(st.chunk) + " gap " + std::to_string(st.gap) +
                                " ref_batch " + std::to_string(st.ref_batch);
      EXPECT_NEAR(got[i].first, want[i].first, 1e-4) << what << " forward";
      EXPECT_NEAR(got[i].second, want[i].second, 1e-4) << what << " reverse";
    }
  }
}

TEST_F(ScoreFastVsNaive, ScoreDoesNotDependOnOtherVariants) {
  const std::string g = random_dna(900, 5);
  ScoreParams prm;
  prm.horizon = 30;
  prm.segment = 300;
  prm.context = 50;
  const auto vs = make_variants(g, prm.segment);
  const auto together = score_all(*m_, g, vs, prm);
  for (size_t i = 0; i < vs.size(); i += 7) {
    const auto alone = score_all(*m_, g, {vs[i]}, prm);
    // fp32 rounding: the alleles sharing a model call change the summation order of the matrix
    // products (~1e-5 on scores of ~20).
    const double tol = 1e-5 + 1e-6 * std::fabs(together[i].first) + 1e-6 * std::fabs(together[i].second);
    EXPECT_NEAR(alone[0].first, together[i].first, tol) << vs[i].p << " " << vs[i].ref << ">" << vs[i].alt;
    EXPECT_NEAR(alone[0].second, together[i].second, tol) << vs[i].p << " " << vs[i].ref << ">" << vs[i].alt;
  }
}

TEST_F(ScoreFastVsNaive, StrandsAreMirrorImages) {
  // The reverse-strand score of a variant equals the forward score of the mirrored variant on the
  // reverse-complemented contig when segments line up (L a multiple of S).
  ScoreParams prm;
  prm.horizon = 20;
  prm.segment = 250;
  prm.context = 40;
  const std::string g = random_dna(1000, 9);
  std::string rc(g.rbegin(), g.rend());
  for (char& c : rc) c = "TGCA"["ACGT"sv.find(c)];
  auto revcomp = [](std::string s) {
    std::string r(s.rbegin(), s.rend());
    for (char& c : r) c = "TGCA"["ACGT"sv.find(c)];
    return r;
  };
  std::vector<TestVariant> vs = {{100, g.substr(100, 1), "T"}, {499, g.substr(499, 3), g.substr(499, 1)},
                                 {700, g.substr(700, 1), g.substr(700, 1) + "GG"}};
  if (vs[0].ref == "T") vs[0].alt = "C";
  const auto a = score_all(*m_, g, vs, prm);
  std::vector<TestVariant> mirrored;
  for (auto& v : vs)
    mirrored.push_back({int64_t(g.size()) - v.p - int64_t(v.ref.size()), revcomp(v.ref), revcomp(v.alt)});
  const auto b = score_all(*m_, rc, mirrored, prm);
  for (size_t i = 0; i < vs.size(); ++i) {
    EXPECT_NEAR(a[i].second, b[i].first, 1e-5) << i;
    EXPECT_NEAR(a[i].first, b[i].second, 1e-5) << i;
  }
}

// Lockstep runs of several contigs of different lengths (one shorter than a segment, one shorter
// than the horizon) in one batch, with dense variants, against the naive method contig by contig.
TEST_F(ScoreFastVsNaive, LockstepRunsOfSeveralContigsMatchNaive) {
  ScoreParams base;
  base.horizon = 20;
  base.segment = 300;
  base.context = 60;
  const std::vector<std::string> gs = {random_dna(700, 11), random_dna(250, 12), random_dna(15, 13), random_dna(401, 14)};
  std::vector<std::vector<TestVariant>> vss;
  for (const auto& g : gs) {
    auto vs = make_variants(g, base.segment);
    for (int64_t p = 3; p + 2 < int64_t(g.size()); p += 11)  // dense SNVs: several per snapshot gap
      vs.push_back({p, g.substr(size_t(p), 1), g[size_t(p)] == 'A' ? "C" : "A"});
    vss.push_back(vs);
  }
  ScoreParams naive = base;
  naive.method = Method::Naive;
  naive.batch = 16;
  naive.batch_tokens = 4000;
  const auto want = score_contigs(*m_, gs, vss, naive);
  struct Setting { int64_t gap, ref_batch, batch, chunk; };
  for (const Setting& st : {Setting{8, 64, 64, 1 << 14}, Setting{16, 5, 7, 1 << 14}, Setting{3, 2, 1000, 10}}) {
    ScoreParams prm = base;
    prm.snapshot_gap = st.gap;
    prm.ref_batch = st.ref_batch;
    prm.batch = st.batch;
    prm.chunk = st.chunk;
    const auto got = score_contigs(*m_, gs, vss, prm);
    for (size_t c = 0; c < gs.size(); ++c)
      for (size_t i = 0; i < vss[c].size(); ++i) {
        const auto& v = vss[c][i];
        const std::string what = "contig " + std::to_string(c) + " variant " + std::to_string(v.p) + " " + v.ref + ">" +
                                  v.alt + " gap " + std::to_string(st.gap) + " ref_batch " + std::to_string(st.ref_batch);
        EXPECT_NEAR(got[c][i].first, want[c][i].first, 1e-4) << what << " forward";
        EXPECT_NEAR(got[c][i].second, want[c][i].second, 1e-4) << what << " reverse";
      }
  }
}

// With ref_batch 1 a group's numbers do not depend on how groups are handed over (what --shard relies
// on): one score_groups call for all of them and one score call per group agree bit for bit.
TEST_F(ScoreFastVsNaive, RefBatchOneIsBitIdenticalGroupByGroup) {
  ScoreParams prm;
  prm.horizon = 25;
  prm.segment = 400;
  prm.context = 90;
  prm.snapshot_gap = 8;
  const std::string g = random_dna(1500, 21);
  const auto vs = make_variants(g, prm.segment);
  const auto a = score_all(*m_, g, vs, prm), b = score_all(*m_, g, vs, prm, true);
  for (size_t i = 0; i < vs.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first) << i;
    EXPECT_EQ(a[i].second, b[i].second) << i;
  }
}
