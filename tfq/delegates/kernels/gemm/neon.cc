// GEMM, plain NEON (every ARMv8-A core; default flags). `vmlal_s8` multiplies
// 8 int8 operands with 8 int8 activations into int16 lanes, which are widened
// into int32 with `vpadalq_s16` before they can overflow. One field of a
// block adds four products to each int16 lane, each at most 127 * max|u or
// level|: 127 for binary (u <= 1), 254 for ternary (u <= 2), 508 for
// pow2_3bit, 8128 for pow2_4bit, so the lanes widen after 64, 32, 16 and 1
// fields (at most 32512 per lane). The tile itself: gemm/neon_tile.h.
#include <arm_neon.h>

#include "kernels/gemm/neon_tile.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S, int MR, int NR>
struct WideningAcc {
  using C = SchemeCodes<S>;
  // Largest operand: the raw code (binary 1, ternary 2) or |level|.
  static constexpr int kMaxOperand = C::kAffine ? (C::kMaxLevel + C::kOff) / C::kMul : C::kMaxLevel;
  static constexpr int kFieldsPerWiden = 32767 / (4 * 127 * kMaxOperand);
  int32x4_t acc32[MR][NR];
  int16x8_t acc16[MR][NR];
  int pending = 0;  // fields accumulated in acc16 since the last widening

  WideningAcc() {
    for (int r = 0; r < MR; ++r) {
      for (int p = 0; p < NR; ++p) {
        acc32[r][p] = vdupq_n_s32(0);
        acc16[r][p] = vdupq_n_s16(0);
      }
    }
  }
  void Add(int r, int p, const Levels32& l, int8x16_t q_lo, int8x16_t q_hi) {
    int16x8_t s = acc16[r][p];
    s = vmlal_s8(s, vget_low_s8(l.lo), vget_low_s8(q_lo));
    s = vmlal_high_s8(s, l.lo, q_lo);
    s = vmlal_s8(s, vget_low_s8(l.hi), vget_low_s8(q_hi));
    s = vmlal_high_s8(s, l.hi, q_hi);
    acc16[r][p] = s;
  }
  void EndField() {
    if (++pending < kFieldsPerWiden) return;
    pending = 0;
    for (int r = 0; r < MR; ++r) {
      for (int p = 0; p < NR; ++p) {
        acc32[r][p] = vpadalq_s16(acc32[r][p], acc16[r][p]);
        acc16[r][p] = vdupq_n_s16(0);
      }
    }
  }
  uint32_t Sum(int r, int p) const {
    return vaddvq_u32(vreinterpretq_u32_s32(vpadalq_s16(acc32[r][p], acc16[r][p])));
  }
};

}  // namespace

void GemmNeon(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
              int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
              int32_t* c, int64_t ldc) {
  NeonGemmAll<WideningAcc>(s, w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, ntail, c, ldc);
}

}  // namespace internal
}  // namespace tfq
