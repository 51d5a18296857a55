// GEMM, AVX2 (x86-64; compiled with -mavx2 -mfma, called only after run-time
// CPU detection): 32 codes x 32 activations per `vpmaddubsw` on the unsigned
// codes of codes/avx2.h, partial sums in int16 lanes widened to int32 before
// they can overflow (Avx2Codes::kBlocksPerWiden). Tiling: gemm/panels.h.
#include <immintrin.h>

#include "kernels/codes/avx2.h"
#include "kernels/gemm/panels.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Avx2Gemm {
  using K = Avx2Codes<S>;
  static constexpr int kPanelRows = 2, kGemvRows = 4;
  static constexpr bool kOwnGemv = false;

  template <int MR, int NR>
  void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda, const int32_t* sumq,
            int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) const {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i acc32[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p) acc32[r][p] = _mm256_setzero_si256();
    for (int64_t b0 = 0; b0 < nblocks; b0 += K::kBlocksPerWiden) {
      const int64_t b1 = b0 + K::kBlocksPerWiden < nblocks ? b0 + K::kBlocksPerWiden : nblocks;
      __m256i acc16[MR][NR];
      for (int r = 0; r < MR; ++r)
        for (int p = 0; p < NR; ++p) acc16[r][p] = _mm256_setzero_si256();
      for (int64_t b = b0; b < b1; ++b) {
        if (NR == 1) {
          // GEMV streams the weights once: prefetch the next tile's rows (the
          // MR rows after these, contiguous) at the rate this tile reads its own.
          for (int l = 0; l < MR * 32; l += 64)
            _mm_prefetch(reinterpret_cast<const char*>(w + MR * row_bytes + b * MR * 32 + l),
                         _MM_HINT_T0);
        }
        __m256i raw[MR];
        for (int r = 0; r < MR; ++r)
          raw[r] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * row_bytes + b * 32));
        const int8_t* ab = a + b * K::kWpb;
        for (int t = 0; t < K::kFields; ++t) {
          __m256i u[MR];
          for (int r = 0; r < MR; ++r) u[r] = K::Decode(raw[r], t);
          for (int p = 0; p < NR; ++p) {
            const __m256i av =
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab + p * lda + t * 32));
            for (int r = 0; r < MR; ++r) {
              const __m256i prod = _mm256_maddubs_epi16(u[r], av);
              if (K::kWidenEachChunk) {
                acc32[r][p] = _mm256_add_epi32(acc32[r][p], _mm256_madd_epi16(prod, ones));
              } else {
                acc16[r][p] = _mm256_add_epi16(acc16[r][p], prod);
              }
            }
          }
        }
      }
      if (!K::kWidenEachChunk) {
        for (int r = 0; r < MR; ++r)
          for (int p = 0; p < NR; ++p)
            acc32[r][p] = _mm256_add_epi32(acc32[r][p], _mm256_madd_epi16(acc16[r][p], ones));
      }
    }
    // Mini-blocks (version-2 dense rows): 32 consecutive codes each, one
    // vpmaddubsw per activation row, widened at once (at most 7 per row).
    for (int64_t m = 0; m < ntail; ++m) {
      __m256i u[MR];
      for (int r = 0; r < MR; ++r)
        u[r] = K::DecodeMini(w + r * row_bytes + nblocks * 32 + m * MiniBlockBytes(S));
      const int8_t* am = a + nblocks * K::kWpb + m * kMiniWeights;
      for (int p = 0; p < NR; ++p) {
        const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(am + p * lda));
        for (int r = 0; r < MR; ++r)
          acc32[r][p] = _mm256_add_epi32(acc32[r][p],
                                         _mm256_madd_epi16(_mm256_maddubs_epi16(u[r], av), ones));
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p)
        c[p * ldc + r] = RemoveOffset(static_cast<uint32_t>(HorizontalSum(acc32[r][p])), K::kMul,
                                      K::kBiasedOff, sumq[p]);
  }
};

}  // namespace

void GemmAvx2(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
              int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
              int32_t* c, int64_t ldc) {
  DispatchScheme(s, [&](auto scheme) {
    GemmPanels(Avx2Gemm<decltype(scheme)::value>(), w, row_bytes, n_rows, a, lda, sumq, n_act,
               nblocks, ntail, c, ldc);
  });
}

}  // namespace internal
}  // namespace tfq
