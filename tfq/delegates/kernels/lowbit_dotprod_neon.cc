// aarch64 GEMM with the dot-product extension (ARMv8.2 `sdot`). This file
// alone is compiled with -march=armv8.2-a+dotprod and is called only when
// getauxval(AT_HWCAP) reports HWCAP_ASIMDDP (see lowbit_neon.cc).
//
// One field of a block holds the codes of 32 consecutive positions, lined up
// with 32 int8 activations (two registers); two `vdotq_s32` make the 32
// products, four per int32 lane.
//
// Binary and ternary multiply the raw codes u (0/1, 0/1/2) and remove the
// offset once per row with the activation sum, as the x86 kernels do
// (bitnet.cpp's I2_S and llama.cpp's TQ2_0 use the same idea):
//   ternary  level = u - 1      acc = sum(u*q) - sum(q)
//   binary   level = 2u - 1     acc = 2*sum(u*q) - sum(q)
// so a field costs one shift and/or one mask, no table lookup. The power-of-
// two schemes decode to signed levels with `vqtbl1q_s8` (lowbit_neon.h).
//
// Overflow: the int32 lanes and the final offset step use wrap-around
// arithmetic; the true accumulator fits in int32 (AccumulatorFits), so the
// wrapped result is exact even when sum(u*q) alone would not fit.
#include <arm_neon.h>

#include "lowbit_neon.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "lowbit_dotprod_neon.cc must be compiled with the dot-product extension (-march=armv8.2-a+dotprod)"
#endif

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Dot;
template <>
struct Dot<Scheme::kBinary> {
  static constexpr int kBits = 1, kMul = 2, kOff = 1;
  static constexpr bool kOffsetCodes = true;
};
template <>
struct Dot<Scheme::kTernary> {
  static constexpr int kBits = 2, kMul = 1, kOff = 1;
  static constexpr bool kOffsetCodes = true;
};
template <>
struct Dot<Scheme::kPow2_3bit> {
  static constexpr int kBits = 4, kMul = 1, kOff = 0;
  static constexpr bool kOffsetCodes = false;
};
template <>
struct Dot<Scheme::kPow2_4bit> {
  static constexpr int kBits = 4, kMul = 1, kOff = 0;
  static constexpr bool kOffsetCodes = false;
};

// MR weight rows x NR activation rows; c[p * ldc + r] = accumulator.
template <Scheme S, int MR, int NR>
void Tile(int8x16_t table, const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda,
          const int32_t* sumq, int64_t nblocks, int32_t* c, int64_t ldc) {
  using K = Dot<S>;
  constexpr int kFields = 8 / K::kBits;
  constexpr int kWpb = 32 * kFields;
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
    const int8_t* ab = a + b * kWpb;
    neon::ForFields(std::make_integer_sequence<int, kFields>(), [&](auto tc) {
      constexpr int t = decltype(tc)::value;
      neon::Levels32 l[MR];
      for (int r = 0; r < MR; ++r)
        l[r] = neon::Operand<K::kBits, K::kOffsetCodes, t>(raw_lo[r], raw_hi[r], table);
      for (int p = 0; p < NR; ++p) {
        const int8x16_t q_lo = vld1q_s8(ab + p * lda + t * 32);
        const int8x16_t q_hi = vld1q_s8(ab + p * lda + t * 32 + 16);
        for (int r = 0; r < MR; ++r) {
          acc[r][p] = vdotq_s32(acc[r][p], l[r].lo, q_lo);
          acc[r][p] = vdotq_s32(acc[r][p], l[r].hi, q_hi);
        }
      }
    });
  }
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NR; ++p) {
      const uint32_t sum = vaddvq_u32(vreinterpretq_u32_s32(acc[r][p]));
      const uint32_t v = static_cast<uint32_t>(K::kMul) * sum -
                         static_cast<uint32_t>(K::kOff) * static_cast<uint32_t>(sumq[p]);
      c[p * ldc + r] = static_cast<int32_t>(v);
    }
  }
}

template <Scheme S, int MR, int NR>
void RowPanel(int8x16_t table, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
              const int8_t* a, int64_t lda, const int32_t* sumq, int64_t nblocks, int32_t* c,
              int64_t ldc) {
  int64_t i = 0;
  for (; i + MR <= n_rows; i += MR)
    Tile<S, MR, NR>(table, w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
  for (; i < n_rows; ++i)
    Tile<S, 1, NR>(table, w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
}

template <Scheme S>
void GemmScheme(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a, int64_t lda,
                const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c, int64_t ldc) {
  const int8x16_t table = neon::LevelTable(S);
  if (n_act == 1) {
    RowPanel<S, 4, 1>(table, w, row_bytes, n_rows, a, lda, sumq, nblocks, c, ldc);
    return;
  }
  constexpr int NR = 4;
  int64_t j = 0;
  for (; j + NR <= n_act; j += NR)
    RowPanel<S, 2, NR>(table, w, row_bytes, n_rows, a + j * lda, lda, sumq + j, nblocks,
                       c + j * ldc, ldc);
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<S, 2, 3>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 2) RowPanel<S, 2, 2>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 1) RowPanel<S, 4, 1>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
}

}  // namespace

void GemmNeonDotprod(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act,
                     int64_t nblocks, int32_t* c, int64_t ldc) {
  switch (s) {
    case Scheme::kBinary:
      return GemmScheme<Scheme::kBinary>(w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, c, ldc);
    case Scheme::kTernary:
      return GemmScheme<Scheme::kTernary>(w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, c, ldc);
    case Scheme::kPow2_3bit:
      return GemmScheme<Scheme::kPow2_3bit>(w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, c,
                                            ldc);
    case Scheme::kPow2_4bit:
      return GemmScheme<Scheme::kPow2_4bit>(w, row_bytes, n_rows, a, lda, sumq, n_act, nblocks, c,
                                            ldc);
  }
}

}  // namespace internal
}  // namespace tfq
