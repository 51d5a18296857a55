// The fields of a block-sparse tensor 1 (docs/format.md, version 2): the
// uint16 count of a block row, the uint8/uint16 column index of a stored
// block, and code i of a stored block. One home for the scalar reader
// (ref.cc), the prepare step (pack.cc) and the SIMD kernels (simd.h,
// neon_tile.h). Internal linkage (the rule in kernels_internal.h): every
// file that includes it gets its own copy, compiled with its own flags.
#ifndef TFQ_DELEGATES_KERNELS_SPARSE_FIELDS_H_
#define TFQ_DELEGATES_KERNELS_SPARSE_FIELDS_H_

#include <cstdint>
#include <cstring>

namespace tfq {
namespace {

// Stored blocks of block row br (little-endian uint16).
inline int64_t SparseCount(const uint8_t* counts, int64_t br) {
  return counts[2 * br] | (counts[2 * br + 1] << 8);
}

// Block column of stored block b, with the index width known at run time.
inline int64_t SparseIndex(const uint8_t* indices, int index_bytes, int64_t b) {
  return index_bytes == 1 ? indices[b] : (indices[2 * b] | (indices[2 * b + 1] << 8));
}

// The same with the width known at compile time (the kernels' inner loops).
template <int kIndexBytes>
inline int64_t SparseIndexAt(const uint8_t* indices, int64_t b) {
  if constexpr (kIndexBytes == 1) {
    return indices[b];
  } else {
    uint16_t v;
    std::memcpy(&v, indices + 2 * b, 2);
    return v;
  }
}

// Code i (= r * C + c) of a stored block: field i mod (8 / bits) of byte i div (8 / bits).
inline int SparseBlockCode(const uint8_t* block, int bits, int64_t i) {
  const int per_byte = 8 / bits;
  return (block[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1);
}

}  // namespace
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_SPARSE_FIELDS_H_
