// Activation statistics, quantization and int8 sums, AVX-512 (compiled with
// the AVX-512 flags, used by the AVX-512 VNNI table).
#include <immintrin.h>

#include <algorithm>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

// Activation quantization with 512-bit registers. Same operations as the
// AVX2 versions (max of |x|; vcvtps2dq rounds half to even like rint; int8
// saturation then max with -127), so the results are identical.
float AbsMaxAvx512(const float* x, int64_t n, bool* nonfinite) {
  const __m512 big = _mm512_set1_ps(3.402823466e38f);
  __m512 m0 = _mm512_setzero_ps(), m1 = m0, m2 = m0, m3 = m0;
  __mmask16 bad = 0;
  int64_t i = 0;
  // Four independent max chains: one chain is latency-bound below the L2 rate.
  for (; i + 64 <= n; i += 64) {
    const __m512 a = _mm512_abs_ps(_mm512_loadu_ps(x + i));
    const __m512 b = _mm512_abs_ps(_mm512_loadu_ps(x + i + 16));
    const __m512 c = _mm512_abs_ps(_mm512_loadu_ps(x + i + 32));
    const __m512 d = _mm512_abs_ps(_mm512_loadu_ps(x + i + 48));
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(b, big, _CMP_NLE_UQ) |
           _mm512_cmp_ps_mask(c, big, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(d, big, _CMP_NLE_UQ);
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
    m2 = _mm512_max_ps(m2, c);
    m3 = _mm512_max_ps(m3, d);
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF)
                                    : static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 a = _mm512_abs_ps(_mm512_maskz_loadu_ps(k, x + i));  // masked lanes: 0
    bad |= _mm512_cmp_ps_mask(a, big, _CMP_NLE_UQ);
    m0 = _mm512_max_ps(m0, a);
  }
  *nonfinite = bad != 0;
  // (With a NaN the maximum is meaningless; the caller ignores it.)
  return _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m0, m1), _mm512_max_ps(m2, m3)));
}

int64_t QuantizeAvx512(const float* x, int64_t n, float s, int8_t* q, uint8_t out_flip) {
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i lo = _mm512_set1_epi8(-127);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i oflip = _mm512_set1_epi8(static_cast<char>(out_flip));
  __m512i sad = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i a = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i), vs));
    const __m512i b = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 16), vs));
    const __m512i c = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 32), vs));
    const __m512i d = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + i + 48), vs));
    // packs work per 128-bit lane: dword j of lane l ends up at lane j, dword l.
    __m512i r = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
    r = _mm512_max_epi8(_mm512_permutexvar_epi32(perm, r), lo);
    _mm512_storeu_si512(q + i, _mm512_xor_si512(r, oflip));
    sad = _mm512_add_epi64(sad, _mm512_sad_epu8(_mm512_xor_si512(r, flip), _mm512_setzero_si512()));
  }
  int64_t sum = _mm512_reduce_add_epi64(sad) - 128 * i;
  if (i < n) sum += RefTable().quantize(x + i, n - i, s, q + i, out_flip);
  return sum;
}

int64_t SumI8Avx512(const int8_t* q, int64_t n) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512i sad = _mm512_setzero_si512();
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(q + i);
    sad = _mm512_add_epi64(sad, _mm512_sad_epu8(_mm512_xor_si512(v, flip), _mm512_setzero_si512()));
  }
  if (i < n) {  // masked tail (called per pixel with few channels): masked bytes read as 0
    const __m512i v = _mm512_maskz_loadu_epi8((1ull << (n - i)) - 1, q + i);
    sad = _mm512_add_epi64(sad, _mm512_sad_epu8(_mm512_xor_si512(v, flip), _mm512_setzero_si512()));
    i += 64;
  }
  return _mm512_reduce_add_epi64(sad) - 128 * i;
}

// Sums of contiguous rows of c int8 values. When c is a multiple of 8 up to
// 64, vpsadbw over the whole span gives the sums of 8-byte groups, and each
// row adds its c / 8 groups: about a vector op per 64 bytes instead of a call
// and a horizontal reduction per row (pixels of thin layers have 16-64
// channels; MobileNetV2's 112x112 1x1 convolutions: 73 -> 66 us and 162 ->
// 150 us). Longer rows (96 channels: slower this way) take one SumI8Avx512
// each.
void SumRowsI8Avx512(const int8_t* q, int64_t rows, int64_t c, int32_t* out) {
  if (c % 8 != 0 || c > 64 || rows <= 0) {
    for (int64_t r = 0; r < rows; ++r) out[r] = static_cast<int32_t>(SumI8Avx512(q + r * c, c));
    return;
  }
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  const int64_t groups_per_row = c / 8;
  const int64_t total = rows * c;
  alignas(64) uint64_t g[256];  // group sums (+128 per byte) of one chunk of up to 2048 bytes
  const int64_t chunk = 2048 / c * c;  // whole rows; a multiple of 8
  int64_t row = 0;
  for (int64_t base = 0; base < total; base += chunk) {
    const int64_t len = std::min<int64_t>(chunk, total - base);
    for (int64_t i = 0; i < len; i += 64) {
      const __mmask64 k = len - i >= 64 ? ~0ull : (1ull << (len - i)) - 1;
      const __m512i v = _mm512_maskz_loadu_epi8(k, q + base + i);
      _mm512_store_si512(g + i / 8, _mm512_sad_epu8(_mm512_xor_si512(v, flip), _mm512_setzero_si512()));
    }
    for (int64_t r = 0; r < len / c; ++r, ++row) {
      int64_t sum = 0;
      for (int64_t j = 0; j < groups_per_row; ++j) sum += static_cast<int64_t>(g[r * groups_per_row + j]);
      out[row] = static_cast<int32_t>(sum - 128 * c);
    }
  }
}

}  // namespace internal
}  // namespace tfq
