// The NEON GEMM micro-kernel shared by gemm/neon.cc (vmlal_s8 into int16
// lanes) and gemm/neon_dotprod.cc (vdotq_s32): the block loads, the decoding
// of each field (codes/neon.h) and the offset removal are the same; only the
// accumulation differs, supplied as Acc<S, MR, NR> with
//   void Add(int r, int p, const Levels32& l, int8x16_t q_lo, int8x16_t q_hi);
//       the 32 products of field l with activations q into tile entry (r, p);
//   void EndField();   after each field of a block;
//   uint32_t Sum(int r, int p) const;  sum of u*q (wrap-around) of (r, p).
// Binary and ternary multiply the raw codes u (level = mul*u - off, the
// offset removed once per row with the activation sum), the power-of-two
// schemes the signed levels (off 0). Tiling: gemm/panels.h. Internal linkage
// (kernels_internal.h, linkage rule).
#ifndef TFQ_DELEGATES_KERNELS_GEMM_NEON_TILE_H_
#define TFQ_DELEGATES_KERNELS_GEMM_NEON_TILE_H_

#include <arm_neon.h>

#include "kernels/codes/neon.h"
#include "kernels/gemm/panels.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S, template <Scheme, int, int> class Acc>
struct NeonGemm {
  using C = SchemeCodes<S>;
  static constexpr int kPanelRows = 2, kGemvRows = 4;
  static constexpr bool kOwnGemv = false;
  int8x16_t table = LevelTable(S);

  template <int MR, int NR>
  void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda, const int32_t* sumq,
            int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) const {
    Acc<S, MR, NR> acc;
    for (int64_t b = 0; b < nblocks; ++b) {
      uint8x16_t raw_lo[MR], raw_hi[MR];
      for (int r = 0; r < MR; ++r) {
        const uint8_t* blk = w + r * row_bytes + b * 32;
        raw_lo[r] = vld1q_u8(blk);
        raw_hi[r] = vld1q_u8(blk + 16);
      }
      const int8_t* ab = a + b * C::kWpb;
      ForFields(std::make_integer_sequence<int, C::kFields>(), [&](auto tc) {
        constexpr int t = decltype(tc)::value;
        Levels32 l[MR];
        for (int r = 0; r < MR; ++r) l[r] = Operand<C::kBits, C::kAffine, t>(raw_lo[r], raw_hi[r], table);
        for (int p = 0; p < NR; ++p) {
          const int8x16_t q_lo = vld1q_s8(ab + p * lda + t * 32);
          const int8x16_t q_hi = vld1q_s8(ab + p * lda + t * 32 + 16);
          for (int r = 0; r < MR; ++r) acc.Add(r, p, l[r], q_lo, q_hi);
        }
        acc.EndField();
      });
    }
    // Mini-blocks (version-2 dense rows): 32 consecutive positions each, like one field.
    for (int64_t m = 0; m < ntail; ++m) {
      Levels32 l[MR];
      for (int r = 0; r < MR; ++r)
        l[r] = MiniOperand<C::kBits, C::kAffine>(w + r * row_bytes + nblocks * 32 + m * MiniBlockBytes(S),
                                                 table);
      const int8_t* am = a + nblocks * C::kWpb + m * kMiniWeights;
      for (int p = 0; p < NR; ++p) {
        const int8x16_t q_lo = vld1q_s8(am + p * lda);
        const int8x16_t q_hi = vld1q_s8(am + p * lda + 16);
        for (int r = 0; r < MR; ++r) acc.Add(r, p, l[r], q_lo, q_hi);
      }
      acc.EndField();
    }
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p) c[p * ldc + r] = RemoveOffset(acc.Sum(r, p), C::kMul, C::kOff, sumq[p]);
  }
};

// KernelTable::gemm of a NEON family member.
template <template <Scheme, int, int> class Acc>
inline void NeonGemmAll(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                        int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
                        int32_t* c, int64_t ldc) {
  DispatchScheme(s, [&](auto scheme) {
    GemmPanels(NeonGemm<decltype(scheme)::value, Acc>(), w, row_bytes, n_rows, a, lda, sumq, n_act,
               nblocks, ntail, c, ldc);
  });
}

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_GEMM_NEON_TILE_H_
