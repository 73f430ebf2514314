#include "io/fasta.h"

#include <htslib/bgzf.h>
#include <htslib/faidx.h>
#include <htslib/kstring.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <unordered_map>
#include <unordered_set>

#include "common/error.h"

namespace dnamba::io {

namespace {

// Indexed reads fetch this many bases at once, so that small pieces do not each pay for a seek.
constexpr int64_t kFetchChunk = int64_t(1) << 20;

bool is_base_letter(unsigned char c) { return (c | 0x20) >= 'a' && (c | 0x20) <= 'z'; }
bool is_blank(unsigned char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }

// One line of a .fai: NAME LENGTH OFFSET LINEBASES LINEWIDTH.
struct FaiEntry {
  std::string name;
  int64_t length = 0;
  int64_t offset = 0;      // byte offset (uncompressed) of the first base
  int64_t line_bases = 0;  // bases per full line
  int64_t line_bytes = 0;  // bytes per full line, line ending included
};

std::string quoted_char(unsigned char c) {
  char buf[16];
  if (c >= 0x20 && c < 0x7f)
    std::snprintf(buf, sizeof buf, "'%c'", c);
  else
    std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
  return buf;
}

// The contig name of a header line: text after '>' up to the first whitespace.
std::string header_name(std::string_view line) {
  line.remove_prefix(1);
  size_t stop = 0;
  while (stop < line.size() && !is_blank(line[stop])) ++stop;
  return std::string(line.substr(0, stop));
}

bool parse_int64(std::string_view text, int64_t& value) {
  if (text.empty()) return false;
  int64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
    if (v > (std::numeric_limits<int64_t>::max() - (c - '0')) / 10) return false;
    v = v * 10 + (c - '0');
  }
  value = v;
  return true;
}

// Reads and sanity-checks a .fai; any line that could not come from faidx is an Error.
std::vector<FaiEntry> read_fai(const std::string& fai_path) {
  std::ifstream in(fai_path);
  if (!in) throw Error(fai_path + ": cannot open index: " + std::strerror(errno));
  std::vector<FaiEntry> entries;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    std::vector<std::string_view> fields;
    std::string_view rest(line);
    for (;;) {
      size_t tab = rest.find('\t');
      fields.push_back(rest.substr(0, tab));
      if (tab == std::string_view::npos) break;
      rest.remove_prefix(tab + 1);
    }
    auto bad = [&](const std::string& why) {
      return Error(fai_path + ":" + std::to_string(line_no) + ": " + why +
                   " (not a FASTA index? rebuild it with samtools faidx)");
    };
    if (fields.size() != 5) throw bad("expected 5 tab-separated columns, found " + std::to_string(fields.size()));
    FaiEntry e;
    e.name = std::string(fields[0]);
    if (e.name.empty()) throw bad("empty contig name");
    for (unsigned char c : e.name)
      if (c <= 0x20 || c == 0x7f) throw bad("contig name contains whitespace or a control character");
    if (!parse_int64(fields[1], e.length) || !parse_int64(fields[2], e.offset) ||
        !parse_int64(fields[3], e.line_bases) || !parse_int64(fields[4], e.line_bytes))
      throw bad("length, offset or line width is not a non-negative integer");
    if (e.offset < 2) throw bad("offset " + std::to_string(e.offset) + " leaves no room for a header");
    if (e.length > 0 && (e.line_bases < 1 || e.line_bytes < e.line_bases + 1 || e.line_bytes > e.line_bases + 2))
      throw bad("inconsistent line width " + std::to_string(e.line_bases) + "/" + std::to_string(e.line_bytes));
    entries.push_back(std::move(e));
  }
  return entries;
}

}  // namespace

struct FastaReader::Impl {
  std::string path;
  BGZF* fp = nullptr;          // sequential reading; in indexed mode, raw byte checks of the layout
  kstring_t line = KS_INITIALIZE;
  int64_t line_no = 0;         // 1-based number of the line in `line`
  bool has_index = false;

  // ---- indexed mode ----
  faidx_t* fai = nullptr;
  std::string fai_path;
  std::vector<FaiEntry> fai_entries;
  std::vector<ContigInfo> contig_infos;
  std::unordered_map<std::string, size_t> contig_index;
  std::vector<char> layout_checked;  // per contig
  struct IndexedSegment {
    size_t contig;
    int64_t beg, end;
  };
  std::vector<IndexedSegment> indexed_segments;
  size_t next_segment = 0;
  IndexedSegment segment{};
  int64_t segment_pos = 0;
  std::string chunk;  // fetched bases [chunk_beg, chunk_beg + chunk.size()) of the current contig
  int64_t chunk_beg = 0;

  // ---- sequential mode ----
  std::vector<Region> regions;  // requested regions; empty with all_contigs
  bool all_contigs = true;
  size_t next_region = 0;
  bool header_pending = false;  // `pending_name` was read from a header not yet entered
  std::string pending_name;
  int64_t pending_line_no = 0;
  bool in_record = false;       // inside the sequence lines of record `record_name`
  std::string record_name;
  int64_t record_pos = 0;       // bases of the record consumed so far
  int64_t record_ordinal = 0;   // 1-based number of the record in the file
  std::string seq_line;         // letters of the current sequence line
  size_t seq_line_off = 0;      // letters of seq_line already consumed
  std::unordered_set<std::string> names_seen;
  bool all_names_seen = false;  // a scan reached the end of the file, so names_seen is complete
  Region seq_segment;           // current segment (end == -1: to the record end)
  bool segment_input_done = false;
  std::string pending_bases;    // read ahead so the last piece can be flagged segment_end

  // ---- both ----
  bool segment_active = false;
  bool first_piece = false;
  int64_t piece_start = 0;

  ~Impl() {
    if (fai) fai_destroy(fai);
    if (fp) bgzf_close(fp);
    ks_free(&line);
  }

  std::string where() const { return path + ":" + std::to_string(line_no); }

  // Reads the next line (without '\n' and a trailing '\r'); false at end of file.
  bool read_line() {
    int ret = bgzf_getline(fp, '\n', &line);
    if (ret == -1) return false;
    if (ret < -1) throw Error(path + ": read error after line " + std::to_string(line_no) +
                              " (truncated or corrupt compressed file?)");
    ++line_no;
    if (line.l > 0 && line.s[line.l - 1] == '\r') line.s[--line.l] = '\0';
    return true;
  }
  std::string_view line_view() const { return {line.s ? line.s : "", line.l}; }

  // Opens (or reopens) the file and reads up to the first header, which becomes pending.
  void open_at_first_header() {
    if (fp) bgzf_close(fp);
    fp = bgzf_open(path.c_str(), "r");
    if (!fp) throw Error(path + ": cannot open: " + std::strerror(errno));
    line_no = 0;
    for (;;) {
      if (!read_line()) throw Error(path + ": empty FASTA file (no '>' record)");
      std::string_view text = line_view();
      size_t first = text.find_first_not_of(" \t\v\f");
      if (first == std::string_view::npos) continue;
      if (text[0] != '>') throw Error(where() + ": not a FASTA file (first line does not start with '>')");
      break;
    }
    set_pending_header();
    in_record = false;
    record_ordinal = 0;
    seq_line.clear();
    seq_line_off = 0;
  }

  void set_pending_header() {
    pending_name = header_name(line_view());
    if (pending_name.empty()) throw Error(where() + ": FASTA header without a name");
    pending_line_no = line_no;
    header_pending = true;
  }

  // ---------------------------------------------------------------- indexed mode

  // Reads up to n bytes at uncompressed offset off into buf (one seek: on bgzip each seek inflates a
  // block); returns how many there were before the end of the file.
  int bytes_at(int64_t off, int n, unsigned char* buf) {
    if (bgzf_useek(fp, off, SEEK_SET) < 0) return 0;
    ssize_t got = bgzf_read(fp, buf, size_t(n));
    return got < 0 ? 0 : int(got);
  }
  int byte_at(int64_t off) {
    unsigned char c;
    return bytes_at(off, 1, &c) == 1 ? c : -1;
  }

  [[noreturn]] void index_disagrees(const std::string& contig, int64_t pos1) const {
    throw Error(path + ": index " + fai_path + " disagrees with the sequence of " + contig + " near position " +
                std::to_string(pos1) + " (rebuild it with samtools faidx)");
  }

  // faidx trusts the .fai blindly: with a stale one it returns other bases, without any error. So
  // before a contig is first read we compare the .fai's layout with the file's bytes: the header ends
  // just before the first base (offset), the first line ends where the line width says (width; this
  // catches a rewrap even when the number of lines, and so every contig boundary, stayed the same),
  // and the last base is followed by a line end (length). A FASTA that faidx can index has lines of
  // one width per contig, so these three points fix its whole layout. Not per fetch: on bgzip every
  // check is a seek that inflates a block, doubling the cost of small random reads.
  void check_layout(size_t i) {
    if (layout_checked[i]) return;
    const FaiEntry& e = fai_entries[i];
    if (byte_at(e.offset - 1) != '\n') index_disagrees(e.name, 1);
    if (e.length > 0) {
      int64_t last = e.length - 1;
      int64_t last_off = e.offset + (last / e.line_bases) * e.line_bytes + last % e.line_bases;
      if (!is_base_letter(byte_at(e.offset))) index_disagrees(e.name, 1);
      unsigned char tail[2];
      int n = bytes_at(last_off, 2, tail);
      if (n < 1 || !is_base_letter(tail[0]) || (n == 2 && tail[1] != '\n' && tail[1] != '\r'))
        index_disagrees(e.name, e.length);
      check_line_end(e, 0);
    }
    layout_checked[i] = 1;
  }

  void check_line_end(const FaiEntry& e, int64_t pos) {
    int64_t line_index = pos / e.line_bases;
    if ((line_index + 1) * e.line_bases >= e.length) return;  // the last line may be short
    // The last base of the line, then "\n" or "\r\n".
    const int want = int(e.line_bytes - e.line_bases) + 1;
    unsigned char end[3];
    if (bytes_at(e.offset + line_index * e.line_bytes + e.line_bases - 1, want, end) != want ||
        !is_base_letter(end[0]) || end[want - 1] != '\n' || (want == 3 && end[1] != '\r'))
      index_disagrees(e.name, line_index * e.line_bases + e.line_bases);
  }

  void open_indexed() {
    fai_path = path + ".fai";
    fai_entries = read_fai(fai_path);
    if (fai_entries.empty()) throw Error(path + ": index " + fai_path + " lists no sequences (rebuild it with samtools faidx)");
    if (bgzf_compression(fp) == 2 && bgzf_index_load(fp, path.c_str(), ".gzi") < 0)
      throw Error(path + ": cannot load " + path + ".gzi");
    fai = fai_load3(path.c_str(), nullptr, nullptr, 0);
    if (!fai) throw Error(path + ": cannot load index " + fai_path + " (rebuild it with samtools faidx)");
    if (faidx_nseq(fai) != int(fai_entries.size()))
      throw Error(path + ": index " + fai_path + " has duplicate contig names (rebuild it with samtools faidx)");
    if (fai_entries[0].name != pending_name)
      throw Error(path + ": index " + fai_path + " starts with contig '" + fai_entries[0].name +
                  "' but the file starts with '" + pending_name + "' (stale index? rebuild it with samtools faidx)");
    for (size_t i = 0; i < fai_entries.size(); ++i) {
      contig_infos.push_back({fai_entries[i].name, fai_entries[i].length});
      contig_index.emplace(fai_entries[i].name, i);
    }
    layout_checked.assign(fai_entries.size(), 0);
    check_layout(0);  // cheap, and the last contig catches a truncated or extended file
    check_layout(fai_entries.size() - 1);
    for (size_t i = 0; i < fai_entries.size(); ++i) indexed_segments.push_back({i, 0, fai_entries[i].length});
  }

  void fetch_chunk(int64_t beg, int64_t end) {
    const std::string& name = fai_entries[segment.contig].name;
    hts_pos_t len = 0;
    char* s = faidx_fetch_seq64(fai, name.c_str(), beg, end - 1, &len);
    if (!s) throw Error(path + ": cannot read " + name + ":" + std::to_string(beg + 1) + "-" + std::to_string(end) +
                        " through index " + fai_path);
    std::string_view got(s, len > 0 ? size_t(len) : 0);
    for (size_t k = 0; k < got.size(); ++k) {
      unsigned char c = got[k];
      if (is_base_letter(c)) continue;
      std::free(s);
      if (c == '>') index_disagrees(name, beg + int64_t(k) + 1);
      throw Error(path + ": invalid character " + quoted_char(c) + " in the sequence of " + name + " at position " +
                  std::to_string(beg + int64_t(k) + 1) + " (or index " + fai_path +
                  " is stale: rebuild it with samtools faidx)");
    }
    if (int64_t(got.size()) != end - beg) {
      std::free(s);
      index_disagrees(name, beg + int64_t(got.size()) + 1);
    }
    chunk.assign(got);
    chunk_beg = beg;
    std::free(s);
  }

  bool next_indexed(SequencePiece& out, int64_t max_len) {
    while (!segment_active) {
      if (next_segment >= indexed_segments.size()) return false;
      segment = indexed_segments[next_segment++];
      if (segment.end <= segment.beg) continue;  // zero-length contig or empty region: nothing to emit
      check_layout(segment.contig);
      segment_active = true;
      first_piece = true;
      segment_pos = segment.beg;
      chunk.clear();
      chunk_beg = 0;
    }
    int64_t n = std::min(max_len, segment.end - segment_pos);
    if (segment_pos < chunk_beg || segment_pos + n > chunk_beg + int64_t(chunk.size()))
      fetch_chunk(segment_pos, std::min(segment.end, segment_pos + std::max(n, kFetchChunk)));
    out.contig = fai_entries[segment.contig].name;
    out.start = segment_pos;
    out.seq.assign(chunk, size_t(segment_pos - chunk_beg), size_t(n));
    out.segment_start = first_piece;
    out.segment_length = segment.end - segment.beg;
    segment_pos += n;
    out.segment_end = segment_pos == segment.end;
    first_piece = false;
    if (out.segment_end) segment_active = false;
    return true;
  }

  // ---------------------------------------------------------------- sequential mode

  // Enters the next record (header already read or found by skipping lines); false at end of file.
  bool enter_next_record() {
    while (!header_pending) {
      if (!read_line()) {
        all_names_seen = true;
        in_record = false;
        return false;
      }
      if (line.l > 0 && line.s[0] == '>') set_pending_header();
    }
    header_pending = false;
    in_record = true;
    record_name = pending_name;
    record_pos = 0;
    ++record_ordinal;
    seq_line.clear();
    seq_line_off = 0;
    names_seen.insert(record_name);
    return true;
  }

  // Loads the next sequence line of the current record into seq_line, keeping letters only; false when
  // the record ends (next header or end of file).
  bool load_sequence_line() {
    for (;;) {
      if (!read_line()) {
        all_names_seen = true;
        in_record = false;
        return false;
      }
      std::string_view text = line_view();
      if (!text.empty() && text[0] == '>') {
        set_pending_header();
        in_record = false;
        return false;
      }
      seq_line.clear();
      seq_line_off = 0;
      for (size_t k = 0; k < text.size(); ++k) {
        unsigned char c = text[k];
        if (is_base_letter(c)) {
          seq_line.push_back(char(c));
        } else if (!is_blank(c)) {
          throw Error(where() + ": invalid character " + quoted_char(c) + " in the sequence of " + record_name +
                      " at position " + std::to_string(record_pos + int64_t(seq_line.size()) + 1));
        }
      }
      if (!seq_line.empty()) return true;
    }
  }

  std::string region_text(const Region& r) const {
    return r.contig + ":" + std::to_string(r.beg + 1) + "-" + (r.end < 0 ? std::string() : std::to_string(r.end));
  }

  [[noreturn]] void unknown_contig(const Region& r) const {
    // htslib leaves zero-length records out of a .fai, so name the index as the place we looked.
    throw Error(path + ": contig '" + r.contig + "' (region " + region_text(r) + ") is not in " +
                (has_index ? "the index " + fai_path : std::string("the file")));
  }

  // Positions the scan at record r.contig with at most r.beg bases consumed, rescanning from the top
  // of the file when the record lies behind the current position.
  void find_record(const Region& r) {
    if (in_record && record_name == r.contig && record_pos <= r.beg) return;
    if (all_names_seen && !names_seen.count(r.contig)) unknown_contig(r);
    const int64_t search_from = record_ordinal;
    bool wrapped = false;
    for (;;) {
      if (!enter_next_record()) {
        if (wrapped) unknown_contig(r);
        if (path == "-") throw Error("-: regions out of file order need a seekable FASTA file, not stdin");
        open_at_first_header();
        wrapped = true;
        continue;
      }
      if (wrapped && record_ordinal > search_from) unknown_contig(r);
      if (record_name == r.contig) return;
    }
  }

  [[noreturn]] void region_past_end(const Region& r, int64_t length) const {
    throw Error(path + ": region " + region_text(r) + " is past the end of contig " + r.contig + " (length " +
                std::to_string(length) + ")");
  }

  // Starts the next segment; false when all are done.
  bool start_sequential_segment() {
    if (all_contigs) {
      if (!enter_next_record()) return false;
      seq_segment = Region{record_name, 0, -1};
    } else {
      if (next_region >= regions.size()) return false;
      seq_segment = regions[next_region++];
      find_record(seq_segment);
      while (record_pos < seq_segment.beg) {  // skip to the region start
        if (seq_line_off == seq_line.size() && !load_sequence_line()) region_past_end(seq_segment, record_pos);
        int64_t n = std::min<int64_t>(seq_segment.beg - record_pos, int64_t(seq_line.size() - seq_line_off));
        seq_line_off += size_t(n);
        record_pos += n;
      }
    }
    segment_input_done = seq_segment.end != -1 && record_pos == seq_segment.end;
    pending_bases.clear();
    piece_start = seq_segment.beg;
    return true;
  }

  // Moves up to `want` more bases of the current segment into pending_bases.
  void pull_bases(int64_t want) {
    while (want > 0 && !segment_input_done) {
      if (seq_line_off == seq_line.size()) {
        if (!in_record || !load_sequence_line()) {  // the record ended
          const Region& r = seq_segment;
          if (r.end != -1 ? record_pos < r.end : (r.beg > 0 && r.beg >= record_pos)) region_past_end(r, record_pos);
          segment_input_done = true;
        }
        continue;
      }
      int64_t n = std::min<int64_t>(want, int64_t(seq_line.size() - seq_line_off));
      if (seq_segment.end != -1) n = std::min(n, seq_segment.end - record_pos);
      pending_bases.append(seq_line, seq_line_off, size_t(n));
      seq_line_off += size_t(n);
      record_pos += n;
      want -= n;
      if (seq_segment.end != -1 && record_pos == seq_segment.end) segment_input_done = true;
    }
  }

  bool next_sequential(SequencePiece& out, int64_t max_len) {
    for (;;) {
      if (!segment_active) {
        if (!start_sequential_segment()) return false;
        segment_active = true;
        first_piece = true;
      }
      // Read one base beyond the piece so that we know whether more follows (segment_end).
      while (!segment_input_done && int64_t(pending_bases.size()) <= max_len)
        pull_bases(max_len + 1 - int64_t(pending_bases.size()));
      if (pending_bases.empty()) {  // zero-length record or empty region: nothing to emit
        segment_active = false;
        continue;
      }
      size_t n = size_t(std::min<int64_t>(max_len, int64_t(pending_bases.size())));
      out.contig = seq_segment.contig;
      out.start = piece_start;
      out.seq.assign(pending_bases, 0, n);
      pending_bases.erase(0, n);
      out.segment_start = first_piece;
      out.segment_end = segment_input_done && pending_bases.empty();
      out.segment_length = seq_segment.end != -1 ? seq_segment.end - seq_segment.beg : -1;
      piece_start += int64_t(n);
      first_piece = false;
      if (out.segment_end) segment_active = false;
      return true;
    }
  }
};

FastaReader::FastaReader(const std::string& path) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = path;
  std::error_code ec;
  if (path != "-") {
    if (!std::filesystem::exists(path, ec)) throw Error(path + ": FASTA file does not exist");
    if (std::filesystem::is_directory(path, ec)) throw Error(path + ": is a directory, not a FASTA file");
  }
  m.open_at_first_header();
  // Random access needs a .fai, plus a .gzi for bgzip; plain gzip can only be scanned.
  int compression = bgzf_compression(m.fp);
  bool fai_exists = path != "-" && std::filesystem::exists(path + ".fai", ec);
  bool gzi_ok = compression != 2 || std::filesystem::exists(path + ".gzi", ec);
  if (fai_exists && compression != 1 && gzi_ok) {
    m.open_indexed();
    m.has_index = true;
  }
}

FastaReader::~FastaReader() = default;

bool FastaReader::indexed() const { return impl_->has_index; }

const std::vector<ContigInfo>& FastaReader::contigs() const { return impl_->contig_infos; }

int64_t FastaReader::contig_length(const std::string& name) const {
  auto it = impl_->contig_index.find(name);
  return it == impl_->contig_index.end() ? -1 : impl_->fai_entries[it->second].length;
}

const std::string& FastaReader::path() const { return impl_->path; }

void FastaReader::set_regions(std::vector<Region> regions) {
  Impl& m = *impl_;
  m.segment_active = false;
  m.next_segment = 0;
  m.next_region = 0;
  m.pending_bases.clear();
  for (const Region& r : regions) {
    if (r.contig.empty() || r.beg < 0 || r.end < -1 || (r.end != -1 && r.end < r.beg))
      throw Error(m.path + ": invalid region " + m.region_text(r));
  }
  if (m.has_index) {
    m.indexed_segments.clear();
    for (const Region& r : regions) {
      auto it = m.contig_index.find(r.contig);
      if (it == m.contig_index.end()) m.unknown_contig(r);
      int64_t length = m.fai_entries[it->second].length;
      // "chr:1001" on a 1000-base contig is a mistake, but an explicit empty range at the end is not.
      if (r.beg > length || r.end > length || (r.end == -1 && r.beg > 0 && r.beg >= length))
        m.region_past_end(r, length);
      m.indexed_segments.push_back({it->second, r.beg, r.end == -1 ? length : r.end});
    }
  } else {
    m.all_contigs = false;
    m.regions = std::move(regions);
  }
}

bool FastaReader::next(SequencePiece& out, int64_t max_len) {
  if (max_len < 1) throw Error(impl_->path + ": FastaReader::next needs max_len >= 1, got " + std::to_string(max_len));
  return impl_->has_index ? impl_->next_indexed(out, max_len) : impl_->next_sequential(out, max_len);
}

int64_t ReferenceWindow::length(const std::string& contig) {
  auto it = len_.find(contig);
  if (it == len_.end()) it = len_.emplace(contig, reader_.contig_length(contig)).first;
  return it->second;
}

std::string_view ReferenceWindow::get(const std::string& contig, int64_t beg, int64_t end) {
  if (contig != contig_ || beg < beg_ || end > beg_ + int64_t(seq_.size())) {
    const int64_t L = length(contig);
    const int64_t b = std::max<int64_t>(0, beg - back_);
    const int64_t e = std::min(L, std::max(end, beg + (int64_t(1) << 21)));
    reader_.set_regions({Region{contig, b, e}});
    seq_.clear();
    SequencePiece piece;
    while (reader_.next(piece, e - b)) seq_ += piece.seq;
    DNAMBA_CHECK(int64_t(seq_.size()) == e - b, "reference fetch returned a short sequence");
    contig_ = contig;
    beg_ = b;
    ++fetches_;
  }
  return std::string_view(seq_).substr(size_t(beg - beg_), size_t(end - beg));
}

}  // namespace dnamba::io
