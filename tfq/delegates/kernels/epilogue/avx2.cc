// The int8 hand-over epilogue, AVX2 (compiled with -mavx2 -mfma, used by the
// AVX2 table; the float epilogue of that table is the portable one in
// layers/output.cc, which GCC clones for AVX2).
#include <immintrin.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

// The int8 hand-over epilogue (HandoverCode, 8 outputs at a time):
// vmaxps(v, 0) / vminps(v, 6) map NaN to 0 like the portable clamps,
// vcvtps2dq rounds half to even like nearbyint, and the codes in [0, 127]
// pass the saturating packs unchanged.
template <bool kBias>
void EpilogueRowsQT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                    int64_t rows, int8_t* q, int64_t ldq) {
  const __m256 zero = _mm256_setzero_ps(), six = _mm256_set1_ps(6.0f);
  const __m256 scale = _mm256_set1_ps(kHandoverScale);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    int8_t* qr = q + r * ldq;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      __m256 v = _mm256_mul_ps(
          _mm256_cvtepi32_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar + i))),
          _mm256_loadu_ps(f + i));
      if (kBias) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
      v = _mm256_min_ps(_mm256_max_ps(v, zero), six);
      const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(v, scale));
      const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(c), _mm256_extracti128_si256(c, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(qr + i), _mm_packs_epi16(w, w));
    }
    HandoverCodes<kBias>(ar, f, b, i, n, qr);
  }
}

}  // namespace

void EpilogueRowsQAvx2(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq) {
  DispatchBias(b, [&](auto bias) {
    EpilogueRowsQT<decltype(bias)::value>(acc, lda, f, b, n, rows, q, ldq);
  });
}

}  // namespace internal
}  // namespace tfq
