#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace dnamba::io {

namespace {

size_t st_dtype_size(StDType t) {
  switch (t) {
    case StDType::F64: case StDType::I64: return 8;
    case StDType::F32: case StDType::I32: return 4;
    case StDType::F16: case StDType::BF16: case StDType::I16: return 2;
    case StDType::I8: case StDType::U8: case StDType::BOOL: return 1;
  }
  return 0;
}

bool parse_dtype(const std::string& s, StDType& out) {
  static const std::map<std::string, StDType> m = {
      {"F32", StDType::F32}, {"F16", StDType::F16}, {"BF16", StDType::BF16}, {"F64", StDType::F64},
      {"I64", StDType::I64}, {"I32", StDType::I32}, {"I16", StDType::I16}, {"I8", StDType::I8},
      {"U8", StDType::U8},   {"BOOL", StDType::BOOL}};
  auto it = m.find(s);
  if (it == m.end()) return false;
  out = it->second;
  return true;
}

}  // namespace

float bf16_to_f32(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t u;
  if (exp == 0) {
    if (mant == 0) {
      u = sign;
    } else {  // subnormal
      exp = 127 - 15 + 1;
      while (!(mant & 0x400)) { mant <<= 1; --exp; }
      mant &= 0x3ff;
      u = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (mant << 13);
  } else {
    u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

int64_t StTensorInfo::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) throw Error(path + ": cannot open: " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) { ::close(fd); throw Error(path + ": cannot stat"); }
  size_ = size_t(st.st_size);
  if (size_ < 8) { ::close(fd); throw Error(path + ": not a safetensors file (shorter than its 8-byte header length)"); }
  map_ = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) { map_ = nullptr; throw Error(path + ": cannot map file"); }
  try {
    const uint8_t* base = static_cast<const uint8_t*>(map_);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | base[i];
    if (hlen > size_ - 8)
      throw Error(path + ": safetensors header claims " + std::to_string(hlen) + " bytes but the file has only " +
                  std::to_string(size_ - 8) + " after the length");
    if (hlen > (100u << 20)) throw Error(path + ": safetensors header of " + std::to_string(hlen) + " bytes is implausibly large");
    data_ = base + 8 + hlen;
    const uint64_t data_size = size_ - 8 - hlen;
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(reinterpret_cast<const char*>(base + 8), reinterpret_cast<const char*>(base + 8 + hlen));
    } catch (const std::exception& e) {
      throw Error(path + ": safetensors header is not valid JSON: " + e.what());
    }
    if (!h.is_object()) throw Error(path + ": safetensors header is not a JSON object");
    std::vector<std::pair<uint64_t, uint64_t>> spans;
    std::vector<std::string> span_names;
    for (auto& [name, v] : h.items()) {
      if (name == "__metadata__") {
        if (v.is_object())
          for (auto& [k, mv] : v.items())
            if (mv.is_string()) metadata_[k] = mv.get<std::string>();
        continue;
      }
      const std::string where = path + ": tensor '" + name + "': ";
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        throw Error(where + "header entry must have dtype, shape and data_offsets");
      StTensorInfo ti;
      ti.name = name;
      if (!v["dtype"].is_string() || !parse_dtype(v["dtype"].get<std::string>(), ti.dtype))
        throw Error(where + "unknown dtype " + v["dtype"].dump());
      ti.dtype_str = v["dtype"].get<std::string>();
      if (!v["shape"].is_array()) throw Error(where + "shape is not an array");
      uint64_t numel = 1;
      for (auto& d : v["shape"]) {
        if (!d.is_number_integer() || d.get<int64_t>() < 0) throw Error(where + "shape has a bad dimension " + d.dump());
        uint64_t dv = d.get<uint64_t>();
        if (dv != 0 && numel > (uint64_t(1) << 62) / dv) throw Error(where + "shape is too large");
        numel *= dv;
        ti.shape.push_back(int64_t(dv));
      }
      auto& off = v["data_offsets"];
      if (!off.is_array() || off.size() != 2 || !off[0].is_number_unsigned() || !off[1].is_number_unsigned())
        throw Error(where + "data_offsets must be two non-negative integers");
      ti.begin = off[0].get<uint64_t>();
      ti.end = off[1].get<uint64_t>();
      if (ti.begin > ti.end) throw Error(where + "data_offsets begin after they end");
      if (ti.end > data_size)
        throw Error(where + "data_offsets [" + std::to_string(ti.begin) + ", " + std::to_string(ti.end) +
                    ") run past the end of the data (" + std::to_string(data_size) + " bytes)");
      if (ti.end - ti.begin != numel * st_dtype_size(ti.dtype))
        throw Error(where + "holds " + std::to_string(ti.end - ti.begin) + " bytes but dtype " + ti.dtype_str +
                    " x shape needs " + std::to_string(numel * st_dtype_size(ti.dtype)));
      spans.push_back({ti.begin, ti.end});
      span_names.push_back(name);
      tensors_[name] = std::move(ti);
    }
    std::vector<size_t> order(spans.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return spans[a] < spans[b]; });
    for (size_t i = 1; i < order.size(); ++i) {
      auto& p = spans[order[i - 1]];
      auto& q = spans[order[i]];
      if (q.first < p.second && q.first != q.second && p.first != p.second)
        throw Error(path + ": tensors '" + span_names[order[i - 1]] + "' and '" + span_names[order[i]] +
                    "' overlap in the data area");
    }
  } catch (...) {
    munmap(map_, size_);
    map_ = nullptr;
    throw;
  }
}

SafetensorsFile::~SafetensorsFile() {
  if (map_) munmap(map_, size_);
}

const StTensorInfo& SafetensorsFile::info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw Error(path_ + ": missing tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> v;
  for (auto& [k, _] : tensors_) v.push_back(k);
  return v;
}

const uint8_t* SafetensorsFile::raw(const std::string& name) const { return data_ + info(name).begin; }

std::vector<float> SafetensorsFile::read_f32(const std::string& name) const {
  const StTensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.begin;
  const int64_t n = ti.numel();
  std::vector<float> out(static_cast<size_t>(n));
  switch (ti.dtype) {
    case StDType::F32: std::memcpy(out.data(), p, size_t(n) * 4); break;
    case StDType::F16:
      for (int64_t i = 0; i < n; ++i) { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = f16_to_f32(v); }
      break;
    case StDType::BF16:
      for (int64_t i = 0; i < n; ++i) { uint16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = bf16_to_f32(v); }
      break;
    case StDType::F64:
      for (int64_t i = 0; i < n; ++i) { double v; std::memcpy(&v, p + 8 * i, 8); out[i] = float(v); }
      break;
    case StDType::I64:
      for (int64_t i = 0; i < n; ++i) { int64_t v; std::memcpy(&v, p + 8 * i, 8); out[i] = float(v); }
      break;
    case StDType::I32:
      for (int64_t i = 0; i < n; ++i) { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = float(v); }
      break;
    default: throw Error(path_ + ": tensor '" + name + "' has dtype " + ti.dtype_str + ", expected a float type");
  }
  return out;
}

std::vector<int64_t> SafetensorsFile::read_i64(const std::string& name) const {
  const StTensorInfo& ti = info(name);
  const uint8_t* p = data_ + ti.begin;
  const int64_t n = ti.numel();
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    switch (ti.dtype) {
      case StDType::I64: std::memcpy(&out[i], p + 8 * i, 8); break;
      case StDType::I32: { int32_t v; std::memcpy(&v, p + 4 * i, 4); out[i] = v; break; }
      case StDType::I16: { int16_t v; std::memcpy(&v, p + 2 * i, 2); out[i] = v; break; }
      case StDType::I8: out[i] = int8_t(p[i]); break;
      case StDType::U8: case StDType::BOOL: out[i] = p[i]; break;
      default: throw Error(path_ + ": tensor '" + name + "' has dtype " + ti.dtype_str + ", expected an integer type");
    }
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata, bool as_bf16) {
  nlohmann::json h = nlohmann::json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t off = 0;
  const size_t es = as_bf16 ? 2 : 4;
  for (auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    h[t.name] = {{"dtype", as_bf16 ? "BF16" : "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + uint64_t(n) * es}}};
    off += uint64_t(n) * es;
  }
  std::string hs = h.dump();
  while ((hs.size() + 8) % 8) hs.push_back(' ');
  const std::string tmp = path + ".tmp." + std::to_string(getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": cannot write: " + std::strerror(errno));
  uint8_t len[8];
  uint64_t hl = hs.size();
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(hl >> (8 * i));
  bool ok = std::fwrite(len, 1, 8, f) == 8 && std::fwrite(hs.data(), 1, hs.size(), f) == hs.size();
  for (auto& t : tensors) {
    int64_t n = 1;
    for (auto d : t.shape) n *= d;
    if (as_bf16) {
      std::vector<uint16_t> b(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) b[i] = f32_to_bf16(t.data[i]);
      ok = ok && std::fwrite(b.data(), 2, size_t(n), f) == size_t(n);
    } else {
      ok = ok && std::fwrite(t.data, 4, size_t(n), f) == size_t(n);
    }
  }
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    throw Error(path + ": write failed");
  }
}

}  // namespace dnamba::io
