// Float and int8 hand-over epilogues, AVX-512 (compiled with the AVX-512
// flags, used by the AVX-512 VNNI table). Bit-identical to the portable
// epilogue in layers/output.cc (same IEEE operations, no FMA).
#include <immintrin.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

// Float epilogue: cvtdq2ps, mulps, addps (no FMA: the portable epilogue is
// compiled with -ffp-contract=off), then vmaxps(0, v) / vminps(6, v), which
// return their second operand on NaN and on equal zeros, exactly like
// `v < 0 ? 0 : v` and `v > 6 ? 6 : v`.
template <Activation A>
inline __m512 Activate16(__m512 v) {
  if (A != Activation::kNone) v = _mm512_max_ps(_mm512_setzero_ps(), v);
  if (A == Activation::kRelu6) v = _mm512_min_ps(_mm512_set1_ps(6.0f), v);
  return v;
}

// Outputs [i, i + 16) of one row under mask k, before they are stored (b is
// null without bias: no offset on it).
template <Activation A, bool kBias>
inline __m512 Epilogue16(const int32_t* ar, const float* f, const float* b, int64_t i, __mmask16 k) {
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, ar + i)),
                           _mm512_maskz_loadu_ps(k, f + i));
  if (kBias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
  return Activate16<A>(v);
}

template <Activation A, bool kBias>
void EpilogueRowsT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                   int64_t rows, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    float* yr = y + r * ldy;
    const auto out16 = [&](int64_t i, __mmask16 k) {
      _mm512_mask_storeu_ps(yr + i, k, Epilogue16<A, kBias>(ar, f, b, i, k));
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) out16(i, static_cast<__mmask16>(0xFFFF));
    if (i < n) out16(i, static_cast<__mmask16>((1u << (n - i)) - 1));
  }
}

// EpilogueRowsT, then the fused residual ADD (the same vaddps and clamps as
// AddResidualRows) and the statistics of the result (AbsMaxAvx512's
// operations) while the 16 outputs are in a register.
template <Activation A, bool kBias, bool kRes, Activation RA>
void EpilogueRowsStatsT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                        int64_t rows, float* y, int64_t ldy, const float* res, int64_t ldr,
                        float* absmax, bool* nonfinite) {
  const __m512 big = _mm512_set1_ps(3.402823466e38f);
  __m512 m = _mm512_setzero_ps();
  __mmask16 bad = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    float* yr = y + r * ldy;
    const float* rr = kRes ? res + r * ldr : nullptr;
    const auto out16 = [&](int64_t i, __mmask16 k) {
      __m512 v = Epilogue16<A, kBias>(ar, f, b, i, k);
      if (kRes) v = Activate16<RA>(_mm512_add_ps(v, _mm512_maskz_loadu_ps(k, rr + i)));
      _mm512_mask_storeu_ps(yr + i, k, v);
      const __m512 a = _mm512_abs_ps(v);  // masked-off lanes: 0
      bad |= _mm512_mask_cmp_ps_mask(k, a, big, _CMP_NLE_UQ);
      m = _mm512_mask_max_ps(m, k, m, a);
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) out16(i, static_cast<__mmask16>(0xFFFF));
    if (i < n) out16(i, static_cast<__mmask16>((1u << (n - i)) - 1));
  }
  if (bad) *nonfinite = true;
  const float mx = _mm512_reduce_max_ps(m);
  if (mx > *absmax) *absmax = mx;
}

}  // namespace

void EpilogueRowsStatsAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                             int64_t rows, float* y, int64_t ldy, Activation a, const float* res,
                             int64_t ldr, Activation ra, float* absmax, bool* nonfinite) {
  DispatchEpilogueStats(a, b, res, ra, [&](auto act, auto bias, auto with_res, auto res_act) {
    EpilogueRowsStatsT<decltype(act)::value, decltype(bias)::value, decltype(with_res)::value,
                       decltype(res_act)::value>(acc, lda, f, b, n, rows, y, ldy, res, ldr, absmax,
                                                 nonfinite);
  });
}

void EpilogueRowsAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                        int64_t rows, float* y, int64_t ldy, Activation a) {
  DispatchBias(b, [&](auto bias) {
    DispatchActivation(a, [&](auto act) {
      EpilogueRowsT<decltype(act)::value, decltype(bias)::value>(acc, lda, f, b, n, rows, y, ldy);
    });
  });
}

namespace {

// The int8 hand-over epilogue: as above with the ReLU6 clamps written
// vmaxps(v, 0) / vminps(v, 6), which map NaN to 0 like the portable
// `v > 0 ? v : 0`, then vcvtps2dq (half to even, like nearbyint) and a
// truncating vpmovdb (the codes lie in [0, 127]).
template <bool kBias>
inline __m512i HandoverCodes16(const int32_t* acc, const float* f, const float* b, __mmask16 k) {
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, acc)),
                           _mm512_maskz_loadu_ps(k, f));
  if (kBias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b));
  v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
  return _mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(kHandoverScale)));
}

template <bool kBias>
void EpilogueRowsQT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                    int64_t rows, int8_t* q, int64_t ldq) {
  constexpr __mmask16 kAll = 0xFFFF;
  // vpermd order that undoes the 128-bit-lane interleave of the two packs.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    int8_t* qr = q + r * ldq;
    // Codes of outputs [j, j + 16) (b is null without bias: no offset on it).
    const auto codes = [&](int64_t j, __mmask16 k) {
      return HandoverCodes16<kBias>(ar + j, f + j, kBias ? b + j : nullptr, k);
    };
    int64_t i = 0;
    // 64 outputs per step: saturating packs (the codes lie in [0, 127]) and
    // one 64-byte store, instead of a vpmovdb per 16.
    for (; i + 64 <= n; i += 64) {
      // The stores miss (the codes of a 112x112 layer exceed L2): ask for
      // the lines 4 rows ahead in exclusive state (a hint, never a fault).
      _mm_prefetch(reinterpret_cast<const char*>(qr + 4 * ldq + i), _MM_HINT_ET0);
      const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(codes(i, kAll), codes(i + 16, kAll)),
                                               _mm512_packs_epi32(codes(i + 32, kAll), codes(i + 48, kAll)));
      _mm512_storeu_si512(qr + i, _mm512_permutexvar_epi32(order, bytes));
    }
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + i), _mm512_cvtepi32_epi8(codes(i, kAll)));
    if (i < n) {
      const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
      _mm_mask_storeu_epi8(qr + i, k, _mm512_cvtepi32_epi8(codes(i, k)));
    }
  }
}

}  // namespace

void EpilogueRowsQAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                         int64_t rows, int8_t* q, int64_t ldq) {
  DispatchBias(b, [&](auto bias) {
    EpilogueRowsQT<decltype(bias)::value>(acc, lda, f, b, n, rows, q, ldq);
  });
}

}  // namespace internal
}  // namespace tfq
