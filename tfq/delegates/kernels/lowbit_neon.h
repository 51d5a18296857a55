// Helpers shared by the two aarch64 kernel files (lowbit_neon.cc, plain NEON;
// lowbit_dotprod_neon.cc, compiled with the dot-product extension). Every
// function here is `static inline`, so each file gets its own copy compiled
// with its own flags (no ODR mix-up between the two instruction sets).
//
// DecodeField turns codes into signed int8 levels with one table lookup per
// 16 codes (vqtbl1q_s8 over a 16-entry code -> level table), so the products
// are level * q directly: no offset correction, and the accumulators are the
// exact sums the scalar reference computes. (The dot-product GEMM uses it for
// the power-of-two schemes; binary and ternary multiply raw codes there.)
#ifndef TFQ_DELEGATES_KERNELS_LOWBIT_NEON_H_
#define TFQ_DELEGATES_KERNELS_LOWBIT_NEON_H_

#include <arm_neon.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels_internal.h"

namespace tfq {
namespace internal {
namespace neon {

// Code -> level tables (docs/format.md, "Codes and levels"). Invalid codes are
// refused when a node is prepared; they map to 0 here.
static inline int8x16_t LevelTable(Scheme s) {
  static const int8_t kBinary[16] = {-1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  static const int8_t kTernary[16] = {-1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  static const int8_t kPow2_3[16] = {0, 1, 2, 4, 0, 0, 0, 0, 0, -1, -2, -4, 0, 0, 0, 0};
  static const int8_t kPow2_4[16] = {0, 1, 2, 4, 8, 16, 32, 64, 0, -1, -2, -4, -8, -16, -32, -64};
  switch (s) {
    case Scheme::kBinary: return vld1q_s8(kBinary);
    case Scheme::kTernary: return vld1q_s8(kTernary);
    case Scheme::kPow2_3bit: return vld1q_s8(kPow2_3);
    case Scheme::kPow2_4bit: return vld1q_s8(kPow2_4);
  }
  return vdupq_n_s8(0);
}

// Levels of the 32 positions of field t of one block: lo = bytes 0-15,
// hi = bytes 16-31 (positions block*wpb + t*32 + j).
struct Levels32 {
  int8x16_t lo, hi;
};

static inline Levels32 DecodeField(uint8x16_t raw_lo, uint8x16_t raw_hi, int bits, int t,
                                   int8x16_t table) {
  const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-bits * t));  // right shift
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << bits) - 1));
  const uint8x16_t f_lo = vandq_u8(vshlq_u8(raw_lo, shift), mask);
  const uint8x16_t f_hi = vandq_u8(vshlq_u8(raw_hi, shift), mask);
  Levels32 l;
  l.lo = vqtbl1q_s8(table, f_lo);
  l.hi = vqtbl1q_s8(table, f_hi);
  return l;
}

// Templates get internal linkage too (an unnamed namespace in this header):
// a shared out-of-line instantiation could otherwise carry the other file's
// instruction set.
namespace {

// Unsigned field T of every byte: (raw >> T*bits) & mask, leaving out the
// shift or the mask where it does nothing.
template <int kBits, int T>
inline uint8x16_t Field(uint8x16_t raw) {
  constexpr int kShift = T * kBits;
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << kBits) - 1));
  if constexpr (kShift == 0) {
    return vandq_u8(raw, mask);
  } else if constexpr (kShift + kBits == 8) {
    return vshrq_n_u8(raw, kShift);
  } else {
    return vandq_u8(vshrq_n_u8(raw, kShift), mask);
  }
}

// The 32 multiplicands of field T of a block: the raw codes (binary and
// ternary, whose offset the caller removes with the activation sum) or the
// signed levels from the lookup table.
template <int kBits, bool kOffsetCodes, int T>
inline Levels32 Operand(uint8x16_t raw_lo, uint8x16_t raw_hi, int8x16_t table) {
  const uint8x16_t f_lo = Field<kBits, T>(raw_lo);
  const uint8x16_t f_hi = Field<kBits, T>(raw_hi);
  Levels32 l;
  if constexpr (kOffsetCodes) {
    l.lo = vreinterpretq_s8_u8(f_lo);
    l.hi = vreinterpretq_s8_u8(f_hi);
  } else {
    l.lo = vqtbl1q_s8(table, f_lo);
    l.hi = vqtbl1q_s8(table, f_hi);
  }
  return l;
}

// f(std::integral_constant<int, T>) for T = 0 .. N-1, unrolled.
template <int... Ts, class F>
inline void ForFields(std::integer_sequence<int, Ts...>, F&& f) {
  (f(std::integral_constant<int, Ts>()), ...);
}

}  // namespace
}  // namespace neon

// Defined in lowbit_dotprod_neon.cc (built with the dot-product extension);
// only called after run-time detection.
void GemmNeonDotprod(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act,
                     int64_t nblocks, int32_t* c, int64_t ldc);

}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_LOWBIT_NEON_H_
