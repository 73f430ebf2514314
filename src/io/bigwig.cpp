#include "io/bigwig.h"

#include <bigWig.h>

#include <algorithm>
#include <limits>
#include <mutex>
#include <numeric>

#include "common/error.h"

namespace dnamba::io {

namespace {
void init_libbigwig() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (bwInit(size_t(1) << 17) != 0) throw Error("libBigWig: initialisation failed");
  });
}
}  // namespace

std::vector<size_t> bigwig_chrom_order(const std::vector<ContigInfo>& chroms) {
  std::vector<size_t> idx(chroms.size());
  std::iota(idx.begin(), idx.end(), size_t(0));
  std::stable_sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return chroms[a].name < chroms[b].name; });
  return idx;
}

BigWigWriter::BigWigWriter(const std::string& path, const std::vector<ContigInfo>& chroms)
    : output_(path), chroms_(chroms) {
  if (output_.is_stdout()) throw Error("bigWig output needs a file name, not '-'");
  if (chroms_.empty()) throw Error(path + ": a bigWig file needs at least one chromosome");
  init_libbigwig();
  std::vector<const char*> names;
  std::vector<uint32_t> lens;
  for (auto& c : chroms_) {
    if (c.length > int64_t(std::numeric_limits<uint32_t>::max()))
      throw Error(path + ": chromosome " + c.name + " is longer than bigWig allows (2^32-1 bases)");
    names.push_back(c.name.c_str());
    lens.push_back(uint32_t(c.length));
    names_.push_back(c.name);
  }
  std::string tmp = output_.temp_path();
  bigWigFile_t* fp = bwOpen(tmp.data(), nullptr, "w");
  if (!fp) throw Error(path + ": cannot create " + tmp);
  fp_ = fp;
  if (bwCreateHdr(fp, 10) != 0) throw Error(path + ": libBigWig could not create the header");
  fp->cl = bwCreateChromList(names.data(), lens.data(), int64_t(names.size()));
  if (!fp->cl) throw Error(path + ": libBigWig could not create the chromosome list");
  if (bwWriteHdr(fp) != 0) throw Error(path + ": libBigWig could not write the header");
}

BigWigWriter::~BigWigWriter() {
  if (fp_) bwClose(static_cast<bigWigFile_t*>(fp_));  // the temporary is removed by ~AtomicOutput
}

void BigWigWriter::add(const std::string& chrom, int64_t start, const float* values, int64_t n) {
  DNAMBA_CHECK(fp_, "bigWig: add after close");
  if (n <= 0) return;
  int64_t tid = tid_ >= 0 && names_[size_t(tid_)] == chrom ? tid_ : -1;
  if (tid < 0) {
    auto it = std::find(names_.begin(), names_.end(), chrom);
    if (it == names_.end()) throw Error(output_.final_path() + ": chromosome '" + chrom + "' is not in the bigWig header");
    tid = it - names_.begin();
  }
  if (start < 0 || start + n > chroms_[size_t(tid)].length)
    throw Error(output_.final_path() + ": values past the end of " + chrom);
  if (tid < tid_ || (tid == tid_ && start < end_))
    throw Error(output_.final_path() + ": bigWig values must be added in order (" + chrom + ":" + std::to_string(start) +
                " comes after " + names_[size_t(tid_)] + ":" + std::to_string(end_) + ")");
  const bool extend = tid == tid_ && start == end_;
  int64_t done = 0;
  while (done < n) {
    // libBigWig takes uint32 counts.
    uint32_t m = uint32_t(std::min<int64_t>(n - done, int64_t(1) << 30));
    int rc = (extend || done > 0) ? bwAppendIntervalSpanSteps(static_cast<bigWigFile_t*>(fp_), values + done, m)
                                  : bwAddIntervalSpanSteps(static_cast<bigWigFile_t*>(fp_), chrom.c_str(), uint32_t(start), 1, 1, values + done, m);
    if (rc != 0) throw Error(output_.final_path() + ": libBigWig could not add values at " + chrom + ":" + std::to_string(start + done));
    done += m;
  }
  tid_ = tid;
  end_ = start + n;
}

void BigWigWriter::close() {
  if (!fp_) return;
  bwClose(static_cast<bigWigFile_t*>(fp_));  // flushes the last block, writes the index and the zoom levels
  fp_ = nullptr;
  output_.commit();
}

}  // namespace dnamba::io
