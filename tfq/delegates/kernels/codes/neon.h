// NEON decoding of packed codes (aarch64), for gemm/neon.cc,
// gemm/neon_dotprod.cc (compiled with the dot-product extension) and
// dwconv/neon.cc. Internal linkage (kernels_internal.h, linkage rule): each
// file gets its own copy compiled with its own flags.
//
// DecodeField turns codes into signed int8 levels with one table lookup per
// 16 codes (vqtbl1q_s8 over the 16-entry SignedLevels table), so the
// products are level * q directly: no offset correction, and the
// accumulators are the exact sums the scalar reference computes. The GEMMs
// use it for the power-of-two schemes; binary and ternary multiply raw codes
// there (Operand).
#ifndef TFQ_DELEGATES_KERNELS_CODES_NEON_H_
#define TFQ_DELEGATES_KERNELS_CODES_NEON_H_

#include <arm_neon.h>

#include <cstdint>
#include <type_traits>
#include <utility>

#include "kernels/kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

// Code -> level lookup table of a scheme.
inline int8x16_t LevelTable(Scheme s) {
  static constexpr CodeTable16 kTables[4] = {SignedLevels(Scheme::kBinary), SignedLevels(Scheme::kTernary),
                                             SignedLevels(Scheme::kPow2_3bit), SignedLevels(Scheme::kPow2_4bit)};
  return vld1q_s8(kTables[static_cast<int>(s)].v);
}

// Levels of the 32 positions of field t of one block: lo = bytes 0-15,
// hi = bytes 16-31 (positions block*wpb + t*32 + j).
struct Levels32 {
  int8x16_t lo, hi;
};

inline Levels32 DecodeField(uint8x16_t raw_lo, uint8x16_t raw_hi, int bits, int t, int8x16_t table) {
  const int8x16_t shift = vdupq_n_s8(static_cast<int8_t>(-bits * t));  // right shift
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << bits) - 1));
  const uint8x16_t f_lo = vandq_u8(vshlq_u8(raw_lo, shift), mask);
  const uint8x16_t f_hi = vandq_u8(vshlq_u8(raw_hi, shift), mask);
  Levels32 l;
  l.lo = vqtbl1q_s8(table, f_lo);
  l.hi = vqtbl1q_s8(table, f_hi);
  return l;
}

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

// Per-lane right shifts (negative vshlq_u8 counts) that bring position
// first + i of a mini-block to lane i: its field (first + i) / (4 * bits).
struct LaneShifts {
  int8_t v[16];
};
constexpr LaneShifts MiniShifts(int bits, int first) {
  LaneShifts t{};
  for (int i = 0; i < 16; ++i) t.v[i] = static_cast<int8_t>(-((first + i) / (4 * bits)) * bits);
  return t;
}

// The 32 multiplicands of a mini-block (the end of a version-2 dense row:
// 4 * bits bytes at p, byte j field t holding position t * 4 * bits + j), in
// position order like Operand: the bytes repeated across a register, each
// lane shifted by its field, masked, and looked up for the power-of-two
// schemes. Reads exactly 4 * bits bytes.
template <int kBits, bool kOffsetCodes>
inline Levels32 MiniOperand(const uint8_t* p, int8x16_t table) {
  uint8x16_t rep;
  if constexpr (kBits == 1) {
    uint32_t v;
    __builtin_memcpy(&v, p, 4);
    rep = vreinterpretq_u8_u32(vdupq_n_u32(v));
  } else if constexpr (kBits == 2) {
    uint64_t v;
    __builtin_memcpy(&v, p, 8);
    rep = vreinterpretq_u8_u64(vdupq_n_u64(v));
  } else {
    rep = vld1q_u8(p);
  }
  static constexpr LaneShifts kLo = MiniShifts(kBits, 0), kHi = MiniShifts(kBits, 16);
  const uint8x16_t mask = vdupq_n_u8(static_cast<uint8_t>((1 << kBits) - 1));
  const uint8x16_t f_lo = vandq_u8(vshlq_u8(rep, vld1q_s8(kLo.v)), mask);
  const uint8x16_t f_hi = vandq_u8(vshlq_u8(rep, vld1q_s8(kHi.v)), mask);
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
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_CODES_NEON_H_
