// Depthwise convolution on int16 levels, AVX-512 (AVX512BW; compiled with the
// AVX-512 flags, used by the AVX-512 VNNI table): the levels are decoded once
// per invoke by the caller (layers/depthwise_conv2d.cc), 32 channels per zmm register.
#include <immintrin.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

// Depthwise on int16 levels, 32 channels per zmm (AVX512BW); partial sums stay
// in int16 for at most 4 taps (|level*q| <= 64*127), then widen to int32.
void DepthwiseLevelsAvx512(const int16_t* levels, int64_t stride, const int8_t* const* taps,
                           int ntaps, int out_c, int32_t* acc) {
  const int groups = (out_c + 31) / 32;
  for (int g = 0; g < groups; ++g) {
    __m512i lo = _mm512_setzero_si512(), hi = lo;
    int t = 0;
    while (t < ntaps) {
      const int t1 = t + 4 < ntaps ? t + 4 : ntaps;
      __m512i s = _mm512_setzero_si512();
      for (; t < t1; ++t) {
        if (taps[t] == nullptr) continue;
        const __m512i lv = _mm512_loadu_si512(levels + t * stride + g * 32);
        // Reads 32 channels; the caller leaves slack after the image.
        const __m512i q = _mm512_cvtepi8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(taps[t] + g * 32)));
        s = _mm512_add_epi16(s, _mm512_mullo_epi16(lv, q));
      }
      lo = _mm512_add_epi32(lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s)));
      hi = _mm512_add_epi32(hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s, 1)));
    }
    const int n = out_c - g * 32 < 32 ? out_c - g * 32 : 32;
    if (n >= 16) {
      _mm512_storeu_si512(acc + g * 32, lo);
      if (n == 32) {
        _mm512_storeu_si512(acc + g * 32 + 16, hi);
      } else if (n > 16) {
        _mm512_mask_storeu_epi32(acc + g * 32 + 16, static_cast<__mmask16>((1u << (n - 16)) - 1), hi);
      }
    } else {
      _mm512_mask_storeu_epi32(acc + g * 32, static_cast<__mmask16>((1u << n) - 1), lo);
    }
  }
}

// A whole output row on int16 levels: the same arithmetic as
// DepthwiseLevelsAvx512 (at most 4 products per int16 partial sum), without
// a call, a tap-pointer array and an epilogue call per pixel.
void DepthwiseLevelsRowAvx512(const int16_t* levels, int64_t stride, const int8_t* img,
                              const ConvGeometry& g, int oy, int32_t* acc) {
  const int out_c = g.out_c;
  const int64_t C = g.in_c;
  const int groups = (out_c + 31) / 32;
  const int last = out_c - (groups - 1) * 32;  // channels of the last group, 1..32
  const __mmask16 lo_last = last >= 16 ? static_cast<__mmask16>(0xFFFF)
                                       : static_cast<__mmask16>((1u << last) - 1);
  const __mmask16 hi_last =
      last <= 16 ? 0 : (last == 32 ? static_cast<__mmask16>(0xFFFF)
                                   : static_cast<__mmask16>((1u << (last - 16)) - 1));
  int kh0 = 0, kh1 = 0;  // kernel rows inside the image: [kh0, kh1)
  {
    bool seen = false;
    for (int kh = 0; kh < g.kernel_h; ++kh) {
      const int iy = oy * g.stride_h - g.pad_top + kh * g.dilation_h;
      if (iy >= 0 && iy < g.in_h) {
        if (!seen) kh0 = kh;
        seen = true;
        kh1 = kh + 1;
      }
    }
  }
  // 3x3 with all three kernel rows inside: the 9 level vectors of a group
  // stay in registers and interior pixels take an unrolled path.
  const bool rows3 = g.kernel_h == 3 && g.kernel_w == 3 && kh0 == 0 && kh1 == 3;
  int ox_lo = g.out_w, ox_hi = g.out_w;  // interior pixels: all 3 columns inside
  if (rows3) {
    for (int ox = 0; ox < g.out_w; ++ox) {
      const int ix0 = ox * g.stride_w - g.pad_left;
      if (ix0 >= 0 && ix0 + 2 * g.dilation_w < g.in_w) {
        if (ox_lo == g.out_w) ox_lo = ox;
        ox_hi = ox + 1;
      }
    }
    if (ox_lo == g.out_w) ox_hi = ox_lo;
    for (int gi = 0; gi < groups; ++gi) {
      __m512i lv[9];
      for (int t = 0; t < 9; ++t) lv[t] = _mm512_loadu_si512(levels + t * stride + gi * 32);
      const int8_t* r0 = img + static_cast<int64_t>(oy * g.stride_h - g.pad_top) * g.in_w * C + gi * 32;
      const int64_t dy = static_cast<int64_t>(g.dilation_h) * g.in_w * C;
      const int64_t dx = static_cast<int64_t>(g.dilation_w) * C;
      const __mmask16 mlo = gi + 1 < groups ? static_cast<__mmask16>(0xFFFF) : lo_last;
      const __mmask16 mhi = gi + 1 < groups ? static_cast<__mmask16>(0xFFFF) : hi_last;
      for (int ox = ox_lo; ox < ox_hi; ++ox) {
        const int8_t* p = r0 + static_cast<int64_t>(ox * g.stride_w - g.pad_left) * C;
        auto tap = [&](int t) {
          const int8_t* src = p + (t / 3) * dy + (t % 3) * dx;
          return _mm512_mullo_epi16(
              lv[t], _mm512_cvtepi8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))));
        };
        // At most 4 products per int16 partial sum (|level*q| <= 64*127).
        const __m512i s0 = _mm512_add_epi16(_mm512_add_epi16(tap(0), tap(1)),
                                            _mm512_add_epi16(tap(2), tap(3)));
        const __m512i s1 = _mm512_add_epi16(_mm512_add_epi16(tap(4), tap(5)),
                                            _mm512_add_epi16(tap(6), tap(7)));
        const __m512i s2 = tap(8);
        const __m512i lo = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_cvtepi16_epi32(_mm512_castsi512_si256(s0)),
                             _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s1))),
            _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s2)));
        const __m512i hi = _mm512_add_epi32(
            _mm512_add_epi32(_mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s0, 1)),
                             _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s1, 1))),
            _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s2, 1)));
        int32_t* out = acc + static_cast<int64_t>(ox) * out_c + gi * 32;
        _mm512_mask_storeu_epi32(out, mlo, lo);
        if (mhi) _mm512_mask_storeu_epi32(out + 16, mhi, hi);
      }
    }
  }
  for (int ox = 0; ox < g.out_w; ++ox) {
    if (ox >= ox_lo && ox < ox_hi) continue;  // done above
    const int ix0 = ox * g.stride_w - g.pad_left;
    int kw0 = 0, kw1 = 0;
    {
      bool seen = false;
      for (int kw = 0; kw < g.kernel_w; ++kw) {
        const int ix = ix0 + kw * g.dilation_w;
        if (ix >= 0 && ix < g.in_w) {
          if (!seen) kw0 = kw;
          seen = true;
          kw1 = kw + 1;
        }
      }
    }
    int32_t* out = acc + static_cast<int64_t>(ox) * out_c;
    for (int gi = 0; gi < groups; ++gi) {
      __m512i lo = _mm512_setzero_si512(), hi = lo, s = lo;
      int cnt = 0;
      for (int kh = kh0; kh < kh1; ++kh) {
        const int iy = oy * g.stride_h - g.pad_top + kh * g.dilation_h;
        const int8_t* row = img + static_cast<int64_t>(iy) * g.in_w * C + gi * 32;
        const int16_t* lrow = levels + static_cast<int64_t>(kh) * g.kernel_w * stride + gi * 32;
        for (int kw = kw0; kw < kw1; ++kw) {
          const int ix = ix0 + kw * g.dilation_w;  // inside the image by construction
          const __m512i lv = _mm512_loadu_si512(lrow + kw * stride);
          const __m512i q = _mm512_cvtepi8_epi16(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + ix * C)));
          s = _mm512_add_epi16(s, _mm512_mullo_epi16(lv, q));
          if (++cnt == 4) {
            lo = _mm512_add_epi32(lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s)));
            hi = _mm512_add_epi32(hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s, 1)));
            s = _mm512_setzero_si512();
            cnt = 0;
          }
        }
      }
      lo = _mm512_add_epi32(lo, _mm512_cvtepi16_epi32(_mm512_castsi512_si256(s)));
      hi = _mm512_add_epi32(hi, _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64(s, 1)));
      if (gi + 1 < groups) {
        _mm512_storeu_si512(out + gi * 32, lo);
        _mm512_storeu_si512(out + gi * 32 + 16, hi);
      } else {
        _mm512_mask_storeu_epi32(out + gi * 32, lo_last, lo);
        if (hi_last) _mm512_mask_storeu_epi32(out + gi * 32 + 16, hi_last, hi);
      }
    }
  }
}

}  // namespace internal
}  // namespace tfq
