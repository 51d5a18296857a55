// Depthwise convolution, AVX2 (compiled with -mavx2 -mfma, used by the AVX2
// table and, for the per-pixel path, by the AVX-512 VNNI table): per pixel on
// packed codes (decoded with codes/avx2.h), and per pixel on int16 levels
// decoded once per invoke by the caller (layers/depthwise_conv2d.cc).
#include <immintrin.h>

#include <cstring>

#include "kernels/codes/avx2.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

// Signed levels of 32 channels [g*32, g*32+32) of one tap row, as two int16
// vectors (channels 0-15 and 16-31 of the group).
template <Scheme S>
inline void TapLevels(const uint8_t* row, int g, __m256i* lo, __m256i* hi) {
  using K = Avx2Codes<S>;
  const int b = g / K::kFields, t = g % K::kFields;
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 32));
  const __m256i u = K::Decode(raw, t);
  const __m256i off = _mm256_set1_epi16(K::kBiasedOff);
  const __m256i mul = _mm256_set1_epi16(K::kMul);
  *lo = _mm256_sub_epi16(_mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(u)), mul), off);
  *hi = _mm256_sub_epi16(
      _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1)), mul), off);
}

template <Scheme S>
struct Avx2Pixel {
  static void Run(const uint8_t* codes, int64_t row_bytes, const int8_t* const* taps, int ntaps,
                  int out_c, int32_t* acc) {
    const int groups = (out_c + 31) / 32;
    for (int g = 0; g < groups; ++g) {
      __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
      int t = 0;
      while (t < ntaps) {
        const int t1 = t + SchemeCodes<S>::kTapsPerWiden < ntaps ? t + SchemeCodes<S>::kTapsPerWiden : ntaps;
        __m256i s_lo = _mm256_setzero_si256(), s_hi = s_lo;
        for (; t < t1; ++t) {
          if (taps[t] == nullptr) continue;
          __m256i l_lo, l_hi;
          TapLevels<S>(codes + t * row_bytes, g, &l_lo, &l_hi);
          // Reads 32 channels; the caller leaves slack after the image so that
          // a partial last group stays inside the buffer.
          const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[t] + g * 32));
          s_lo = _mm256_add_epi16(s_lo,
                                  _mm256_mullo_epi16(l_lo, _mm256_cvtepi8_epi16(_mm256_castsi256_si128(q))));
          s_hi = _mm256_add_epi16(
              s_hi, _mm256_mullo_epi16(l_hi, _mm256_cvtepi8_epi16(_mm256_extracti128_si256(q, 1))));
        }
        a0 = _mm256_add_epi32(a0, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s_lo)));
        a1 = _mm256_add_epi32(a1, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s_lo, 1)));
        a2 = _mm256_add_epi32(a2, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s_hi)));
        a3 = _mm256_add_epi32(a3, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s_hi, 1)));
      }
      const int n = out_c - g * 32 < 32 ? out_c - g * 32 : 32;
      if (n == 32) {
        int32_t* dst = acc + g * 32;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), a0);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 8), a1);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16), a2);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 24), a3);
      } else {
        alignas(32) int32_t tmp[32];
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), a0);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 8), a1);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 16), a2);
        _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 24), a3);
        std::memcpy(acc + g * 32, tmp, n * sizeof(int32_t));
      }
    }
  }
};

}  // namespace

void DepthwisePixelAvx2(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc) {
  DepthwisePixelDm1<Avx2Pixel>(s, codes, row_bytes, taps, ntaps, depth_multiplier, out_c, acc);
}

// Levels pre-decoded (per output row, by the caller) to int16: per 16
// channels and tap, one load, one sign extension, one multiply, one add.
// Partial sums stay in int16 for at most 4 taps (|level*q| <= 64*127).
void DepthwiseLevelsAvx2(const int16_t* levels, int64_t stride, const int8_t* const* taps,
                         int ntaps, int out_c, int32_t* acc) {
  const int groups = (out_c + 15) / 16;
  for (int g = 0; g < groups; ++g) {
    __m256i lo = _mm256_setzero_si256(), hi = lo;
    int t = 0;
    while (t < ntaps) {
      const int t1 = t + 4 < ntaps ? t + 4 : ntaps;
      __m256i s = _mm256_setzero_si256();
      for (; t < t1; ++t) {
        if (taps[t] == nullptr) continue;
        const __m256i lv =
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(levels + t * stride + g * 16));
        // Reads 16 channels; the caller leaves slack after the image.
        const __m256i q = _mm256_cvtepi8_epi16(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(taps[t] + g * 16)));
        s = _mm256_add_epi16(s, _mm256_mullo_epi16(lv, q));
      }
      lo = _mm256_add_epi32(lo, _mm256_cvtepi16_epi32(_mm256_castsi256_si128(s)));
      hi = _mm256_add_epi32(hi, _mm256_cvtepi16_epi32(_mm256_extracti128_si256(s, 1)));
    }
    const int n = out_c - g * 16 < 16 ? out_c - g * 16 : 16;
    if (n == 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + g * 16), lo);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + g * 16 + 8), hi);
    } else {
      alignas(32) int32_t tmp[16];
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp), lo);
      _mm256_store_si256(reinterpret_cast<__m256i*>(tmp + 8), hi);
      std::memcpy(acc + g * 16, tmp, n * sizeof(int32_t));
    }
  }
}

}  // namespace internal
}  // namespace tfq
