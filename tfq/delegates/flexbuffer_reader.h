// A bounds-checked reader for the FlexBuffer maps tfq writes as custom options
// (docs/format.md). Written for untrusted input: every offset, width and
// length is checked against the buffer before it is read; nothing recurses.
// Supports what the options use: a root map whose values are ints (inline or
// indirect, signed or unsigned, bool), strings, and int vectors (untyped,
// typed, fixed-length typed).
#ifndef TFQ_DELEGATES_FLEXBUFFER_READER_H_
#define TFQ_DELEGATES_FLEXBUFFER_READER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace tfq {

class FlexMapReader {
 public:
  enum class Result { kOk, kMissing, kWrongType };

  // Parses the root; returns false and sets *error when it is not a valid map.
  bool Parse(const uint8_t* data, size_t size, std::string* error);

  Result GetInt(const char* key, int64_t* out) const;
  Result GetString(const char* key, std::string* out) const;
  Result GetIntVector(const char* key, std::vector<int64_t>* out) const;
  const std::vector<std::string>& keys() const { return keys_; }

 private:
  struct Value {
    size_t pos;          // where the value (or its offset) is stored
    int parent_width;    // width of that slot
    int type;            // FlexBuffer type
    int child_width;     // 1 << (packed_type & 3)
  };
  bool ReadUInt(size_t pos, int width, uint64_t* out) const;
  bool ReadInt(size_t pos, int width, int64_t* out) const;
  bool Indirect(size_t pos, int width, size_t* target) const;
  bool ScalarInt(const Value& v, int64_t* out) const;
  const Value* Find(const char* key) const;

  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::vector<std::string> keys_;
  std::vector<Value> values_;
};

}  // namespace tfq

#endif  // TFQ_DELEGATES_FLEXBUFFER_READER_H_
