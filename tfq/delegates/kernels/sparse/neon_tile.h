// The block-sparse NEON kernels (KernelTable::sparse_gemm), shared by
// sparse/neon.cc (plain NEON: smull/smlal, every ARMv8-A core) and
// sparse/neon_dotprod.cc (sdot, compiled with the dot-product extension).
// Internal linkage (the rule in kernels_internal.h): each file gets its own
// copy compiled with its own flags.
//
// Register layout: a 128-bit register holds the signed levels of 4 output
// channels x 4 positions (lane i = the 4 levels of channel i), which is what
// `sdot v.4s, v.16b, v.4b[i]` multiplies with one activation dword. The
// repacked codes of SparsePrepared (sparse/sparse.h) are already in this
// order: a unit of 8 rows x 4 positions is two such registers (4 rows: one),
// decoded with one load, one or two byte shifts, a mask and a 16-entry table
// lookup (vqtbl1q_s8). Weights and activations are both signed, so there is
// no +128 offset and the level sums (SparseWeights::level_sums) are not
// needed: the accumulators are the exact sums of the scalar reference
// (the activations arrive biased, u = q + 128, and are unbiased per load).
//
// A tile of NP activation rows (pixels) shares each decoded weight register.
// The per-ISA part is the Tile class template (sparse/neon.cc,
// sparse/neon_dotprod.cc); this header holds the decoding, the row driver
// and the shape dispatch.
#ifndef TFQ_DELEGATES_KERNELS_SPARSE_NEON_TILE_H_
#define TFQ_DELEGATES_KERNELS_SPARSE_NEON_TILE_H_

#include <arm_neon.h>

#include <algorithm>
#include <cstring>

#include "kernels/kernels_internal.h"
#include "kernels/sparse/fields.h"
#include "kernels/sparse/sparse.h"

namespace tfq {
namespace internal {
namespace {

inline int8x16_t SpNeonLevelTable(Scheme s) {
  static constexpr CodeTable16 kTables[4] = {SignedLevels(Scheme::kBinary), SignedLevels(Scheme::kTernary),
                                             SignedLevels(Scheme::kPow2_3bit), SignedLevels(Scheme::kPow2_4bit)};
  return vld1q_s8(kTables[static_cast<int>(s)].v);
}

// The kernels get biased activations u = q + 128 (SparseGemmFn, the x86
// kernels' unsigned operand); sdot and smull take signed bytes, so each
// activation load turns them back into q = u ^ 0x80 (one eor per register).
// The 4 activations of one quad as q, read without alignment assumptions.
inline int32_t SpNeonLoadQ32(const uint8_t* p) {
  uint32_t x;
  std::memcpy(&x, p, 4);
  return static_cast<int32_t>(x ^ 0x80808080u);
}

// Decodes one unit (U = 4 or 8 rows x 4 positions, kBits per code) of the
// repacked codes into U / 4 registers of signed levels. Field t of unit byte
// s holds level byte t * nb + s (nb = 4 U kBits / 8 bytes per unit).
template <int kBits, int U>
inline void SpNeonDecode(const uint8_t* p, int8x16_t lut, int8x16_t* out) {
  if constexpr (kBits == 2 && U == 8) {
    // nb = 8: register 0 = fields 0, 1 of the 8 bytes, register 1 = fields 2, 3.
    const uint8x8_t x = vld1_u8(p);
    const uint8x16_t xx = vcombine_u8(x, x);
    const uint8x16_t m = vdupq_n_u8(3);
    const int8x16_t s01 = vcombine_s8(vdup_n_s8(0), vdup_n_s8(-2));
    const int8x16_t s23 = vcombine_s8(vdup_n_s8(-4), vdup_n_s8(-6));
    out[0] = vqtbl1q_s8(lut, vandq_u8(vshlq_u8(xx, s01), m));
    out[1] = vqtbl1q_s8(lut, vandq_u8(vshlq_u8(xx, s23), m));
  } else if constexpr (kBits == 2 && U == 4) {
    // nb = 4: the register is fields 0, 1, 2, 3 of the 4 bytes.
    uint32_t x;
    std::memcpy(&x, p, 4);
    const int32x4_t shift = {0, -2, -4, -6};
    const uint32x4_t y = vshlq_u32(vdupq_n_u32(x), shift);
    out[0] = vqtbl1q_s8(lut, vandq_u8(vreinterpretq_u8_u32(y), vdupq_n_u8(3)));
  } else if constexpr (kBits == 4 && U == 8) {
    // nb = 16: register 0 = low nibbles, register 1 = high nibbles.
    const uint8x16_t x = vld1q_u8(p);
    out[0] = vqtbl1q_s8(lut, vandq_u8(x, vdupq_n_u8(15)));
    out[1] = vqtbl1q_s8(lut, vshrq_n_u8(x, 4));
  } else {
    static_assert(kBits == 4 && U == 4, "2- or 4-bit codes, units of 4 or 8 rows");
    // nb = 8: the register is the low nibbles of the 8 bytes, then the high ones.
    const uint8x8_t x = vld1_u8(p);
    out[0] = vqtbl1q_s8(lut, vcombine_u8(vand_u8(x, vdup_n_u8(15)), vshr_n_u8(x, 4)));
  }
}

// What a Tile's Run gets: one block row's stored blocks.
struct SpNeonBlockRow {
  const uint8_t* codes;  // repacked codes of the row's first stored block
  const uint8_t* idx;    // its block-column indices
  int64_t n;             // stored blocks
  int nq;                // quads per block (C / 4)
  int64_t block_bytes;
  const int64_t* coloff;
};

// Activation rows [p, n_act) of one block row (G registers = 4 G rows), in
// tiles of NP rows, the rest in tiles of NP / 2, ..., 1. Tile<...>::Run
// writes out[q * ldo + r] for q < NP, r < 4 G.
template <template <int, int, int, int, int> class Tile, int kBits, int kIndexBytes, int G, int NP,
          int kQ>
inline void SpNeonRows(int64_t p, const SpNeonBlockRow& br, const uint8_t* const* a, int64_t n_act,
                       int8x16_t lut, int32_t* c, int64_t ldc, int64_t row_off, int r0, int r1) {
  constexpr int R = 4 * G;
  const bool whole = r0 == 0 && r1 == R;
  alignas(16) int32_t tmp[NP * R];
  for (; p + NP <= n_act; p += NP) {
    int32_t* dst = whole ? c + p * ldc + row_off : tmp;
    Tile<kBits, kIndexBytes, G, NP, kQ>::Run(br, a + p, lut, dst, whole ? ldc : R);
    if (!whole)
      for (int q = 0; q < NP; ++q)
        for (int r = r0; r < r1; ++r) c[(p + q) * ldc + row_off + r] = tmp[q * R + r];
  }
  if constexpr (NP > 1) {
    if (p < n_act)
      SpNeonRows<Tile, kBits, kIndexBytes, G, NP / 2, kQ>(p, br, a, n_act, lut, c, ldc, row_off, r0,
                                                         r1);
  }
}

template <template <int, int, int, int, int> class Tile, int kBits, int kIndexBytes, int G, int NP,
          int kQ>
void SpNeonGemm(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                const int64_t* coloff, int64_t n_act, int32_t* c, int64_t ldc) {
  const SparseWeights& sw = *w.sparse;
  constexpr int R = 4 * G;
  const int8x16_t lut = SpNeonLevelTable(w.scheme);
  for (int64_t b = o0 / R; b * R < o1 && b < sw.block_row_count; ++b) {
    const int64_t row0 = b * R;
    const int r0 = static_cast<int>(std::max(o0, row0) - row0);
    const int r1 = static_cast<int>(std::min({o1, w.rows, row0 + R}) - row0);
    const int64_t begin = sw.row_start[b];
    const SpNeonBlockRow br{sw.simd_codes + begin * sw.block_bytes, sw.indices + begin * kIndexBytes,
                            SparseCount(sw.counts, b), sw.block_cols / 4, sw.block_bytes, coloff};
    SpNeonRows<Tile, kBits, kIndexBytes, G, NP, kQ>(0, br, a, n_act, lut, c, ldc, row0 - o0, r0, r1);
  }
}

// The instantiation for one call: G from R, NP from the accumulator budget
// (kAccRegs registers for G x NP accumulators, each kAccPerGroup registers),
// code bits, index width, and kQ: 1 (C = 4), 2 (C = 8) or 0 (C a multiple
// of 16: nq a multiple of 4, read 4 quads at a time).
template <template <int, int, int, int, int> class Tile, int G, int kAccRegs>
void SpNeonShape(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                 const int64_t* coloff, int64_t n_act, int32_t* c, int64_t ldc) {
  constexpr int NP = kAccRegs / G >= 8 ? 8 : (kAccRegs / G >= 4 ? 4 : (kAccRegs / G >= 2 ? 2 : 1));
  const SparseWeights& sw = *w.sparse;
  const bool four = SchemeBits(w.scheme) == 4;
  const bool wide = sw.index_bytes == 2;
  const int C = sw.block_cols;
#define TFQ_SP_NEON(B, I)                                                                       \
  (C == 4   ? SpNeonGemm<Tile, B, I, G, NP, 1>(w, o0, o1, a, coloff, n_act, c, ldc)            \
   : C == 8 ? SpNeonGemm<Tile, B, I, G, NP, 2>(w, o0, o1, a, coloff, n_act, c, ldc)            \
            : SpNeonGemm<Tile, B, I, G, NP, 0>(w, o0, o1, a, coloff, n_act, c, ldc))
  if (!four && !wide) TFQ_SP_NEON(2, 1);
  else if (!four) TFQ_SP_NEON(2, 2);
  else if (!wide) TFQ_SP_NEON(4, 1);
  else TFQ_SP_NEON(4, 2);
#undef TFQ_SP_NEON
}

// Whether a call can take a fast path (else the scalar SparseGemm runs):
// repacked codes exist (R >= 4, C a multiple of 4, a scheme with a zero
// level; binary has none and is never block-sparse). The int8 levels of
// the x86 delegate's 8-bit convolutions have no NEON path: the delegate
// does not claim those convolutions on ARM.
inline bool SpNeonFast(const PackedWeights& w) {
  const SparseWeights& sw = *w.sparse;
  return sw.simd_codes != nullptr && SimdSparseShape(sw.block_rows, sw.block_cols) &&
         w.scheme != Scheme::kBinary && w.scheme != Scheme::kInt8;
}

// R = 4, 8, 16, 32 -> G = 1, 2, 4, 8 registers per quad.
template <template <int, int, int, int, int> class Tile, int kAccRegs>
void SpNeonDispatch(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                    const int64_t* coloff, int64_t n_act, int32_t* c, int64_t ldc) {
  if (!SpNeonFast(w)) return SparseGemm(w, o0, o1, a, coloff, n_act, c, ldc);
  switch (w.sparse->block_rows) {
    case 4: return SpNeonShape<Tile, 1, kAccRegs>(w, o0, o1, a, coloff, n_act, c, ldc);
    case 8: return SpNeonShape<Tile, 2, kAccRegs>(w, o0, o1, a, coloff, n_act, c, ldc);
    case 16: return SpNeonShape<Tile, 4, kAccRegs>(w, o0, o1, a, coloff, n_act, c, ldc);
    default: return SpNeonShape<Tile, 8, kAccRegs>(w, o0, o1, a, coloff, n_act, c, ldc);
  }
}

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_SPARSE_NEON_TILE_H_
