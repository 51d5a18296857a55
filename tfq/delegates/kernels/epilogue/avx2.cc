// The int8 hand-over epilogue and the fused float epilogue (residual and
// statistics), AVX2 (compiled with -mavx2 -mfma and -ffp-contract=off, used
// by the AVX2 table; its plain float epilogue is the portable one in
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

// The fused float epilogue (EpilogueRowsStatsFn), 8 outputs at a time with
// masked loads and stores for a row's tail: the portable epilogue's
// operations (mulps, addps, then vmaxps(0, v) / vminps(6, v), which return
// v on NaN like `v < 0 ? 0 : v`), the residual's addps and clamps, and the
// absmax kernel's |v| and NaN/inf test (vcmpps NLE_UQ against FLT_MAX).
template <Activation A>
inline __m256 Activate8(__m256 v) {
  if (A != Activation::kNone) v = _mm256_max_ps(_mm256_setzero_ps(), v);
  if (A == Activation::kRelu6) v = _mm256_min_ps(_mm256_set1_ps(6.0f), v);
  return v;
}

template <Activation A, bool kBias, bool kRes, Activation RA>
void EpilogueRowsStatsT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                        int64_t rows, float* y, int64_t ldy, const float* res, int64_t ldr,
                        float* absmax, bool* nonfinite) {
  const __m256 big = _mm256_set1_ps(3.402823466e38f);
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
  alignas(32) static const int32_t kLanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    float* yr = y + r * ldy;
    const float* rr = kRes ? res + r * ldr : nullptr;
    // Outputs [i, i + 8) under mask k (all ones, or the tail's first lanes).
    const auto out8 = [&](int64_t i, __m256i k) {
      const __m256 kf = _mm256_castsi256_ps(k);
      __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_maskload_epi32(ar + i, k)),
                               _mm256_maskload_ps(f + i, k));
      if (kBias) v = _mm256_add_ps(v, _mm256_maskload_ps(b + i, k));
      v = Activate8<A>(v);
      if (kRes) v = Activate8<RA>(_mm256_add_ps(v, _mm256_maskload_ps(rr + i, k)));
      _mm256_maskstore_ps(yr + i, k, v);
      const __m256 a = _mm256_and_ps(_mm256_andnot_ps(sign, v), kf);  // masked-off lanes: 0
      bad = _mm256_or_ps(bad, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));
      m = _mm256_max_ps(m, a);
    };
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) out8(i, all);
    if (i < n)
      out8(i, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLanes + 8 - (n - i))));
  }
  if (_mm256_movemask_ps(bad) != 0) *nonfinite = true;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m);
  float mx = 0.0f;
  for (float v : lanes) mx = v > mx ? v : mx;
  if (mx > *absmax) *absmax = mx;
}

}  // namespace

void EpilogueRowsStatsAvx2(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                           int64_t rows, float* y, int64_t ldy, Activation a, const float* res,
                           int64_t ldr, Activation ra, float* absmax, bool* nonfinite) {
  DispatchEpilogueStats(a, b, res, ra, [&](auto act, auto bias, auto with_res, auto res_act) {
    EpilogueRowsStatsT<decltype(act)::value, decltype(bias)::value, decltype(with_res)::value,
                       decltype(res_act)::value>(acc, lda, f, b, n, rows, y, ldy, res, ldr, absmax,
                                                 nonfinite);
  });
}

void EpilogueRowsQAvx2(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq) {
  DispatchBias(b, [&](auto bias) {
    EpilogueRowsQT<decltype(bias)::value>(acc, lda, f, b, n, rows, q, ldq);
  });
}

}  // namespace internal
}  // namespace tfq
