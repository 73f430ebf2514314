// safetensors files: an 8-byte little-endian header length, a JSON header, then raw tensor data.
// The reader maps the file and validates the header before anything is read through it: a header
// that lies (bad JSON, offsets out of range or overlapping, sizes that disagree with dtype x shape,
// a header longer than the file) is an Error naming the file and tensor, never an out-of-bounds read.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace dnamba::io {

enum class StDType { F32, F16, BF16, F64, I64, I32, I16, I8, U8, BOOL };

struct StTensorInfo {
  std::string name;
  StDType dtype;
  std::string dtype_str;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;  // byte offsets relative to the data area
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  const StTensorInfo& info(const std::string& name) const;
  std::vector<std::string> names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Tensor converted to float32 (from F32, F16, BF16, F64, I64, I32).
  std::vector<float> read_f32(const std::string& name) const;
  std::vector<int64_t> read_i64(const std::string& name) const;  // integer tensors
  const uint8_t* raw(const std::string& name) const;

 private:
  std::string path_;
  void* map_ = nullptr;
  size_t size_ = 0;
  const uint8_t* data_ = nullptr;  // start of the data area
  std::map<std::string, StTensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes tensors (all float32 here, or bf16 when asked) to `path` atomically.
struct StWriteTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data;
};
void write_safetensors(const std::string& path, const std::vector<StWriteTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {}, bool as_bf16 = false);

float bf16_to_f32(uint16_t v);
uint16_t f32_to_bf16(float f);  // round to nearest even
float f16_to_f32(uint16_t v);

}  // namespace dnamba::io
