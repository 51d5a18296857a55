// GEMM with the dot-product extension (ARMv8.2 `sdot`). This file alone is
// compiled with -march=armv8.2-a+dotprod and is called only when the CPU
// reports it (dispatch.cc: getauxval(AT_HWCAP) & HWCAP_ASIMDDP).
//
// One field of a block holds the codes of 32 consecutive positions, lined up
// with 32 int8 activations (two registers); two `vdotq_s32` make the 32
// products, four per int32 lane. Overflow: the int32 lanes and the final
// offset step use wrap-around arithmetic; the true accumulator fits in int32
// (AccumulatorFits), so the wrapped result is exact even when sum(u*q) alone
// would not fit. The tile itself: gemm/neon_tile.h.
#include <arm_neon.h>

#include "kernels/gemm/neon_tile.h"
#include "kernels/microkernels.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "gemm/neon_dotprod.cc must be compiled with the dot-product extension (-march=armv8.2-a+dotprod)"
#endif

namespace tfq {
namespace internal {
namespace {

template <Scheme S, int MR, int NR>
struct DotAcc {
  int32x4_t acc[MR][NR];

  DotAcc() {
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p) acc[r][p] = vdupq_n_s32(0);
  }
  void Add(int r, int p, const Levels32& l, int8x16_t q_lo, int8x16_t q_hi) {
    acc[r][p] = vdotq_s32(acc[r][p], l.lo, q_lo);
    acc[r][p] = vdotq_s32(acc[r][p], l.hi, q_hi);
  }
  void EndField() {}
  uint32_t Sum(int r, int p) const { return vaddvq_u32(vreinterpretq_u32_s32(acc[r][p])); }
};

}  // namespace

void GemmNeonDotprod(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act,
                     int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) {
  NeonGemmAll<DotAcc>(s, w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, ntail, c, ldc);
}

}  // namespace internal
}  // namespace tfq
