// aarch64 GEMM with the dot-product extension (ARMv8.2 `sdot`). This file
// alone is compiled with -march=armv8.2-a+dotprod and is called only when
// getauxval(AT_HWCAP) reports HWCAP_ASIMDDP (see lowbit_neon.cc).
//
// The codes of one field of a block (32 positions) are decoded to int8 levels
// with a table lookup and multiplied with the 32 matching int8 activations by
// two `vdotq_s32` (16 products each, four per int32 lane). Levels times
// activations are signed times signed, so no offset correction is needed, and
// int32 lanes cannot overflow: each lane holds a partial sum of the products,
// whose absolute total the format bounds below 2^31 (AccumulatorFits).
#include <arm_neon.h>

#include "lowbit_neon.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "lowbit_dotprod_neon.cc must be compiled with the dot-product extension (-march=armv8.2-a+dotprod)"
#endif

namespace tfq {
namespace internal {
namespace {

template <int kBits>
struct Geometry {
  static constexpr int kFields = 8 / kBits;
  static constexpr int kWpb = 32 * kFields;
};

// MR weight rows x NR activation rows; c[p * ldc + r] = accumulator.
template <int kBits, int MR, int NR>
void Tile(int8x16_t table, const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda,
          int64_t nblocks, int32_t* c, int64_t ldc) {
  using G = Geometry<kBits>;
  int32x4_t acc[MR][NR];
  for (int r = 0; r < MR; ++r)
    for (int p = 0; p < NR; ++p) acc[r][p] = vdupq_n_s32(0);
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8x16_t raw_lo[MR], raw_hi[MR];
    for (int r = 0; r < MR; ++r) {
      const uint8_t* blk = w + r * row_bytes + b * 32;
      raw_lo[r] = vld1q_u8(blk);
      raw_hi[r] = vld1q_u8(blk + 16);
    }
    const int8_t* ab = a + b * G::kWpb;
    for (int t = 0; t < G::kFields; ++t) {
      neon::Levels32 l[MR];
      for (int r = 0; r < MR; ++r) l[r] = neon::DecodeField(raw_lo[r], raw_hi[r], kBits, t, table);
      for (int p = 0; p < NR; ++p) {
        const int8x16_t q_lo = vld1q_s8(ab + p * lda + t * 32);
        const int8x16_t q_hi = vld1q_s8(ab + p * lda + t * 32 + 16);
        for (int r = 0; r < MR; ++r) {
          acc[r][p] = vdotq_s32(acc[r][p], l[r].lo, q_lo);
          acc[r][p] = vdotq_s32(acc[r][p], l[r].hi, q_hi);
        }
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int p = 0; p < NR; ++p) c[p * ldc + r] = vaddvq_s32(acc[r][p]);
}

template <int kBits, int MR, int NR>
void RowPanel(int8x16_t table, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
              const int8_t* a, int64_t lda, int64_t nblocks, int32_t* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + MR <= n_rows; i += MR)
    Tile<kBits, MR, NR>(table, w + i * row_bytes, row_bytes, a, lda, nblocks, c + i, ldc);
  for (; i < n_rows; ++i)
    Tile<kBits, 1, NR>(table, w + i * row_bytes, row_bytes, a, lda, nblocks, c + i, ldc);
}

template <int kBits>
void GemmBits(int8x16_t table, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
              const int8_t* a, int64_t lda, int64_t n_act, int64_t nblocks, int32_t* c,
              int64_t ldc) {
  if (n_act == 1) {
    RowPanel<kBits, 4, 1>(table, w, row_bytes, n_rows, a, lda, nblocks, c, ldc);
    return;
  }
  constexpr int NR = 4;
  int64_t j = 0;
  for (; j + NR <= n_act; j += NR)
    RowPanel<kBits, 2, NR>(table, w, row_bytes, n_rows, a + j * lda, lda, nblocks, c + j * ldc, ldc);
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<kBits, 2, 3>(table, w, row_bytes, n_rows, aj, lda, nblocks, cj, ldc);
  if (rest == 2) RowPanel<kBits, 2, 2>(table, w, row_bytes, n_rows, aj, lda, nblocks, cj, ldc);
  if (rest == 1) RowPanel<kBits, 4, 1>(table, w, row_bytes, n_rows, aj, lda, nblocks, cj, ldc);
}

}  // namespace

void GemmNeonDotprod(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* /*sumq*/, int64_t n_act,
                     int64_t nblocks, int32_t* c, int64_t ldc) {
  const int8x16_t table = neon::LevelTable(s);
  switch (SchemeBits(s)) {
    case 1: return GemmBits<1>(table, w, row_bytes, n_rows, a, lda, n_act, nblocks, c, ldc);
    case 2: return GemmBits<2>(table, w, row_bytes, n_rows, a, lda, n_act, nblocks, c, ldc);
    default: return GemmBits<4>(table, w, row_bytes, n_rows, a, lda, n_act, nblocks, c, ldc);
  }
}

}  // namespace internal
}  // namespace tfq
