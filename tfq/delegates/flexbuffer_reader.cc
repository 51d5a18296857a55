#include "flexbuffer_reader.h"

#include <cstring>

namespace tfq {
namespace {

// FlexBuffer type codes (from the published format description).
enum : int {
  kNull = 0, kInt = 1, kUInt = 2, kFloat = 3, kKey = 4, kString = 5, kIndirectInt = 6,
  kIndirectUInt = 7, kIndirectFloat = 8, kMap = 9, kVector = 10, kVectorInt = 11,
  kVectorUInt = 12, kVectorFloat = 13, kVectorKey = 14, kVectorInt2 = 16, kVectorUInt2 = 17,
  kVectorInt3 = 19, kVectorUInt3 = 20, kVectorInt4 = 22, kVectorUInt4 = 23, kBool = 26,
};

constexpr uint64_t kMaxElements = 1 << 20;

bool ValidWidth(uint64_t w) { return w == 1 || w == 2 || w == 4 || w == 8; }

}  // namespace

bool FlexMapReader::ReadUInt(size_t pos, int width, uint64_t* out) const {
  if (!ValidWidth(width) || pos > size_ || size_ - pos < static_cast<size_t>(width)) return false;
  uint64_t v = 0;
  std::memcpy(&v, data_ + pos, width);  // little-endian hosts only (x86-64, aarch64)
  *out = v;
  return true;
}

bool FlexMapReader::ReadInt(size_t pos, int width, int64_t* out) const {
  uint64_t u;
  if (!ReadUInt(pos, width, &u)) return false;
  if (width < 8) {
    const uint64_t sign = uint64_t{1} << (width * 8 - 1);
    if (u & sign) u |= ~((sign << 1) - 1);
  }
  *out = static_cast<int64_t>(u);
  return true;
}

bool FlexMapReader::Indirect(size_t pos, int width, size_t* target) const {
  uint64_t off;
  if (!ReadUInt(pos, width, &off)) return false;
  if (off == 0 || off > pos) return false;  // offsets point strictly backwards
  *target = pos - static_cast<size_t>(off);
  return true;
}

bool FlexMapReader::Parse(const uint8_t* data, size_t size, std::string* error) {
  data_ = data;
  size_ = size;
  keys_.clear();
  values_.clear();
  auto fail = [&](const char* what) {
    if (error) *error = std::string("malformed custom options (FlexBuffer): ") + what;
    return false;
  };
  if (data == nullptr || size < 3) return fail("buffer too small");
  const int root_width = data[size - 1];
  const int packed = data[size - 2];
  if (!ValidWidth(root_width) || size < static_cast<size_t>(2 + root_width))
    return fail("bad root width");
  if ((packed >> 2) != kMap) return fail("root is not a map");
  const int bw = 1 << (packed & 3);
  const size_t root_pos = size - 2 - root_width;
  size_t map;
  if (!Indirect(root_pos, root_width, &map)) return fail("bad root offset");
  if (map < 3 * static_cast<size_t>(bw)) return fail("map header out of bounds");
  uint64_t count, keys_width;
  if (!ReadUInt(map - bw, bw, &count) || !ReadUInt(map - 2 * bw, bw, &keys_width))
    return fail("map header out of bounds");
  if (count > kMaxElements || !ValidWidth(keys_width)) return fail("bad map size");
  // values: count slots of bw bytes, then count type bytes
  if (map > size_ || (size_ - map) / (bw + 1) < count) return fail("map values out of bounds");
  size_t keys;
  if (!Indirect(map - 3 * bw, bw, &keys)) return fail("bad keys offset");
  uint64_t key_count;
  if (keys < keys_width || !ReadUInt(keys - keys_width, static_cast<int>(keys_width), &key_count))
    return fail("keys out of bounds");
  if (key_count != count) return fail("key and value counts differ");
  if (keys > size_ || (size_ - keys) / keys_width < count) return fail("keys out of bounds");
  for (uint64_t i = 0; i < count; ++i) {
    size_t key;
    if (!Indirect(keys + i * keys_width, static_cast<int>(keys_width), &key))
      return fail("bad key offset");
    const void* nul = std::memchr(data_ + key, 0, size_ - key);
    if (nul == nullptr) return fail("unterminated key");
    keys_.emplace_back(reinterpret_cast<const char*>(data_ + key),
                       static_cast<const uint8_t*>(nul) - (data_ + key));
    const int vpacked = data_[map + count * bw + i];
    values_.push_back(Value{map + i * bw, bw, vpacked >> 2, 1 << (vpacked & 3)});
  }
  return true;
}

const FlexMapReader::Value* FlexMapReader::Find(const char* key) const {
  for (size_t i = 0; i < keys_.size(); ++i)
    if (keys_[i] == key) return &values_[i];
  return nullptr;
}

bool FlexMapReader::ScalarInt(const Value& v, int64_t* out) const {
  switch (v.type) {
    case kInt: return ReadInt(v.pos, v.parent_width, out);
    case kUInt:
    case kBool: {
      uint64_t u;
      if (!ReadUInt(v.pos, v.parent_width, &u) || u > static_cast<uint64_t>(INT64_MAX)) return false;
      *out = static_cast<int64_t>(u);
      return true;
    }
    case kIndirectInt:
    case kIndirectUInt: {
      size_t target;
      if (!Indirect(v.pos, v.parent_width, &target)) return false;
      if (v.type == kIndirectInt) return ReadInt(target, v.child_width, out);
      uint64_t u;
      if (!ReadUInt(target, v.child_width, &u) || u > static_cast<uint64_t>(INT64_MAX)) return false;
      *out = static_cast<int64_t>(u);
      return true;
    }
    default: return false;
  }
}

FlexMapReader::Result FlexMapReader::GetInt(const char* key, int64_t* out) const {
  const Value* v = Find(key);
  if (v == nullptr) return Result::kMissing;
  return ScalarInt(*v, out) ? Result::kOk : Result::kWrongType;
}

FlexMapReader::Result FlexMapReader::GetString(const char* key, std::string* out) const {
  const Value* v = Find(key);
  if (v == nullptr) return Result::kMissing;
  if (v->type != kString && v->type != kKey) return Result::kWrongType;
  size_t target;
  if (!Indirect(v->pos, v->parent_width, &target)) return Result::kWrongType;
  if (v->type == kKey) {
    const void* nul = std::memchr(data_ + target, 0, size_ - target);
    if (nul == nullptr) return Result::kWrongType;
    out->assign(reinterpret_cast<const char*>(data_ + target),
                static_cast<const uint8_t*>(nul) - (data_ + target));
    return Result::kOk;
  }
  uint64_t len;
  if (target < static_cast<size_t>(v->child_width) ||
      !ReadUInt(target - v->child_width, v->child_width, &len))
    return Result::kWrongType;
  if (len > size_ - target) return Result::kWrongType;
  out->assign(reinterpret_cast<const char*>(data_ + target), static_cast<size_t>(len));
  return Result::kOk;
}

FlexMapReader::Result FlexMapReader::GetIntVector(const char* key,
                                                  std::vector<int64_t>* out) const {
  const Value* v = Find(key);
  if (v == nullptr) return Result::kMissing;
  out->clear();
  size_t target;
  if (!Indirect(v->pos, v->parent_width, &target)) return Result::kWrongType;
  const int w = v->child_width;
  uint64_t n = 0;
  int fixed = 0;
  bool is_unsigned = false;
  switch (v->type) {
    case kVector: case kVectorInt: case kVectorUInt: break;
    case kVectorInt2: fixed = 2; break;
    case kVectorUInt2: fixed = 2; is_unsigned = true; break;
    case kVectorInt3: fixed = 3; break;
    case kVectorUInt3: fixed = 3; is_unsigned = true; break;
    case kVectorInt4: fixed = 4; break;
    case kVectorUInt4: fixed = 4; is_unsigned = true; break;
    default: return Result::kWrongType;
  }
  if (v->type == kVectorUInt) is_unsigned = true;
  if (fixed) {
    n = fixed;
  } else if (target < static_cast<size_t>(w) || !ReadUInt(target - w, w, &n) || n > kMaxElements) {
    return Result::kWrongType;
  }
  const size_t slot_bytes = static_cast<size_t>(w) + (v->type == kVector ? 1 : 0);
  if (target > size_ || (size_ - target) / slot_bytes < n) return Result::kWrongType;
  for (uint64_t i = 0; i < n; ++i) {
    int64_t x;
    if (v->type == kVector) {
      const int packed = data_[target + n * w + i];
      const Value e{target + i * w, w, packed >> 2, 1 << (packed & 3)};
      if (!ScalarInt(e, &x)) return Result::kWrongType;
    } else if (is_unsigned) {
      uint64_t u;
      if (!ReadUInt(target + i * w, w, &u) || u > static_cast<uint64_t>(INT64_MAX))
        return Result::kWrongType;
      x = static_cast<int64_t>(u);
    } else if (!ReadInt(target + i * w, w, &x)) {
      return Result::kWrongType;
    }
    out->push_back(x);
  }
  return Result::kOk;
}

}  // namespace tfq
