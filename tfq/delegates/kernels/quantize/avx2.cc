// Activation statistics, quantization and int8 sums, AVX2 (compiled with
// -mavx2 -mfma, used by the AVX2 table).
#include <immintrin.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

float AbsMaxAvx2(const float* x, int64_t n, bool* nonfinite) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  const __m256 big = _mm256_set1_ps(3.402823466e38f);
  __m256 m = _mm256_setzero_ps();
  __m256 bad = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_andnot_ps(sign, _mm256_loadu_ps(x + i));
    bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, big, _CMP_NLE_UQ));  // NaN or inf
    m = _mm256_max_ps(m, v);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, m);
  float mx = 0.0f;
  for (float v : lanes) mx = v > mx ? v : mx;
  bool any_bad = _mm256_movemask_ps(bad) != 0;
  for (; i < n; ++i) {
    const float v = x[i] < 0 ? -x[i] : x[i];
    if (!(v <= 3.402823466e38f)) any_bad = true;
    else if (v > mx) mx = v;
  }
  *nonfinite = any_bad;
  return mx;
}

int64_t QuantizeAvx2(const float* x, int64_t n, float s, int8_t* q, uint8_t out_flip) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i lo = _mm256_set1_epi8(-127);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i oflip = _mm256_set1_epi8(static_cast<char>(out_flip));
  __m256i sad = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // vcvtps2dq rounds to nearest even in the default MXCSR mode, like rint.
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i), vs));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 8), vs));
    const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 16), vs));
    const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(x + i + 24), vs));
    __m256i r = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    r = _mm256_max_epi8(_mm256_permutevar8x32_epi32(r, perm), lo);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_xor_si256(r, oflip));
    sad = _mm256_add_epi64(sad, _mm256_sad_epu8(_mm256_xor_si256(r, flip), _mm256_setzero_si256()));
  }
  int64_t parts[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(parts), sad);
  int64_t sum = parts[0] + parts[1] + parts[2] + parts[3] - 128 * i;
  if (i < n) sum += RefTable().quantize(x + i, n - i, s, q + i, out_flip);
  return sum;
}

int64_t SumI8Avx2(const int8_t* q, int64_t n) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  __m256i sad = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i));
    sad = _mm256_add_epi64(sad, _mm256_sad_epu8(_mm256_xor_si256(v, flip), _mm256_setzero_si256()));
  }
  int64_t parts[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(parts), sad);
  int64_t sum = parts[0] + parts[1] + parts[2] + parts[3] - 128 * i;
  for (; i < n; ++i) sum += q[i];
  return sum;
}

}  // namespace internal
}  // namespace tfq
