// AVX2 kernels (x86-64; this file alone is compiled with -mavx2 -mfma and only
// called after run-time CPU detection).
//
// The weight codes are mapped to unsigned bytes u with level = mul*u - off
// (binary: u = code, mul 2, off 1; ternary: u = code, mul 1, off 1; pow2: u =
// level + off through a vpshufb table), so `vpmaddubsw(u, q)` multiplies 32
// unsigned codes by 32 signed int8 activations, and the offset is removed once
// per row with the activation sum: acc = mul * sum(u*q) - off * sum(q).
// (bitnet.cpp's I2_S and llama.cpp's TQ2_0 kernels use the same idea.)
//
// int16 overflow: each vpmaddubsw lane is the sum of two products u*q with
// |q| <= 127, so |lane| <= 254*max(u). Lanes are widened to int32 (vpmaddwd
// with ones) before 32767 can be exceeded: after 128 chunks for binary, 64 for
// ternary, 16 for pow2_3bit and after every chunk for pow2_4bit (u <= 128).
#include <immintrin.h>

#include <cstring>

#include "kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Codes;

template <>
struct Codes<Scheme::kBinary> {
  static constexpr int kBits = 1, kFields = 8, kMul = 2, kOff = 1, kBlocksPerWiden = 16;
  static constexpr bool kWidenEachChunk = false;
  static __m256i Decode(__m256i raw, int t) {
    return _mm256_and_si256(_mm256_srli_epi16(raw, t), _mm256_set1_epi8(0x01));
  }
};

template <>
struct Codes<Scheme::kTernary> {
  static constexpr int kBits = 2, kFields = 4, kMul = 1, kOff = 1, kBlocksPerWiden = 16;
  static constexpr bool kWidenEachChunk = false;
  static __m256i Decode(__m256i raw, int t) {
    return _mm256_and_si256(_mm256_srli_epi16(raw, 2 * t), _mm256_set1_epi8(0x03));
  }
};

// Offset tables: u = level + off for every valid code (invalid codes are
// refused when a node is prepared; they map to `off`, i.e. level 0).
template <>
struct Codes<Scheme::kPow2_3bit> {
  static constexpr int kBits = 4, kFields = 2, kMul = 1, kOff = 4, kBlocksPerWiden = 8;
  static constexpr bool kWidenEachChunk = false;
  static __m256i Decode(__m256i raw, int t) {
    const __m256i table = _mm256_setr_epi8(4, 5, 6, 8, 4, 4, 4, 4, 4, 3, 2, 0, 4, 4, 4, 4,  //
                                           4, 5, 6, 8, 4, 4, 4, 4, 4, 3, 2, 0, 4, 4, 4, 4);
    const __m256i f = _mm256_and_si256(_mm256_srli_epi16(raw, 4 * t), _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(table, f);
  }
};

template <>
struct Codes<Scheme::kPow2_4bit> {
  static constexpr int kBits = 4, kFields = 2, kMul = 1, kOff = 64, kBlocksPerWiden = 1;
  static constexpr bool kWidenEachChunk = true;
  static __m256i Decode(__m256i raw, int t) {
    const __m256i table = _mm256_setr_epi8(
        64, 65, 66, 68, 72, 80, 96, (char)128, 64, 63, 62, 60, 56, 48, 32, 0,  //
        64, 65, 66, 68, 72, 80, 96, (char)128, 64, 63, 62, 60, 56, 48, 32, 0);
    const __m256i f = _mm256_and_si256(_mm256_srli_epi16(raw, 4 * t), _mm256_set1_epi8(0x0F));
    return _mm256_shuffle_epi8(table, f);
  }
};

inline int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// MR weight rows x NR activation rows; c[p * ldc + r] = true accumulator.
template <Scheme S, int MR, int NR>
void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda, const int32_t* sumq,
          int64_t nblocks, int32_t* c, int64_t ldc) {
  using K = Codes<S>;
  constexpr int kWpb = 32 * K::kFields;
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
      const int8_t* ab = a + b * kWpb;
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
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NR; ++p) {
      // Wrap-around arithmetic: the true accumulator fits in int32 even when
      // the intermediate sum of u*q does not.
      const uint32_t sum_uq = static_cast<uint32_t>(HorizontalSum(acc32[r][p]));
      const uint32_t v = static_cast<uint32_t>(K::kMul) * sum_uq -
                         static_cast<uint32_t>(K::kOff) * static_cast<uint32_t>(sumq[p]);
      c[p * ldc + r] = static_cast<int32_t>(v);
    }
  }
}

template <Scheme S, int MR, int NR>
void RowPanel(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a, int64_t lda,
              const int32_t* sumq, int64_t nblocks, int32_t* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + MR <= n_rows; i += MR)
    Tile<S, MR, NR>(w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
  for (; i < n_rows; ++i)
    Tile<S, 1, NR>(w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
}

template <Scheme S>
void GemmScheme(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a, int64_t lda,
                const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c, int64_t ldc) {
  if (n_act == 1) {
    RowPanel<S, 4, 1>(w, row_bytes, n_rows, a, lda, sumq, nblocks, c, ldc);
    return;
  }
  constexpr int NR = 4;
  int64_t j = 0;
  for (; j + NR <= n_act; j += NR)
    RowPanel<S, 2, NR>(w, row_bytes, n_rows, a + j * lda, lda, sumq + j, nblocks, c + j * ldc, ldc);
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<S, 2, 3>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 2) RowPanel<S, 2, 2>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 1) RowPanel<S, 4, 1>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
}

void GemmAvx2(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
              int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c,
              int64_t ldc) {
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

void EpilogueRowsQAvx2(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq) {
  if (b) EpilogueRowsQT<true>(acc, lda, f, b, n, rows, q, ldq);
  else EpilogueRowsQT<false>(acc, lda, f, b, n, rows, q, ldq);
}

int64_t QuantizeAvx2(const float* x, int64_t n, float s, int8_t* q) {
  const __m256 vs = _mm256_set1_ps(s);
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i lo = _mm256_set1_epi8(-127);
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
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
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), r);
    sad = _mm256_add_epi64(sad, _mm256_sad_epu8(_mm256_xor_si256(r, flip), _mm256_setzero_si256()));
  }
  int64_t parts[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(parts), sad);
  int64_t sum = parts[0] + parts[1] + parts[2] + parts[3] - 128 * i;
  if (i < n) sum += RefTable().quantize(x + i, n - i, s, q + i);
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

// Signed levels of 32 channels [g*32, g*32+32) of one tap row, as two int16
// vectors (channels 0-15 and 16-31 of the group).
template <Scheme S>
inline void TapLevels(const uint8_t* row, int g, __m256i* lo, __m256i* hi) {
  using K = Codes<S>;
  const int b = g / K::kFields, t = g % K::kFields;
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + b * 32));
  const __m256i u = K::Decode(raw, t);
  const __m256i off = _mm256_set1_epi16(K::kOff);
  const __m256i mul = _mm256_set1_epi16(K::kMul);
  *lo = _mm256_sub_epi16(_mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_castsi256_si128(u)), mul), off);
  *hi = _mm256_sub_epi16(
      _mm256_mullo_epi16(_mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1)), mul), off);
}

// Taps accumulated in int16 before widening: |level * q| <= 127 * MaxAbsLevel.
template <Scheme S>
constexpr int TapsPerWiden() {
  return S == Scheme::kPow2_4bit ? 4 : (S == Scheme::kPow2_3bit ? 64 : 256);
}

template <Scheme S>
void DepthwisePixelScheme(const uint8_t* codes, int64_t row_bytes, const int8_t* const* taps,
                          int ntaps, int out_c, int32_t* acc) {
  const int groups = (out_c + 31) / 32;
  for (int g = 0; g < groups; ++g) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    int t = 0;
    while (t < ntaps) {
      const int t1 = t + TapsPerWiden<S>() < ntaps ? t + TapsPerWiden<S>() : ntaps;
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

void DepthwisePixelAvx2(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc) {
  if (depth_multiplier != 1) {
    RefTable().depthwise_pixel(s, codes, row_bytes, taps, ntaps, depth_multiplier, out_c, acc);
    return;
  }
  switch (s) {
    case Scheme::kBinary:
      return DepthwisePixelScheme<Scheme::kBinary>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kTernary:
      return DepthwisePixelScheme<Scheme::kTernary>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kPow2_3bit:
      return DepthwisePixelScheme<Scheme::kPow2_3bit>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kPow2_4bit:
      return DepthwisePixelScheme<Scheme::kPow2_4bit>(codes, row_bytes, taps, ntaps, out_c, acc);
  }
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

}  // namespace

const KernelTable* Avx2TableImpl() {
  static const KernelTable table = {Isa::kAvx2, AbsMaxAvx2, QuantizeAvx2,      SumI8Avx2,
                                    GemmAvx2,    DepthwisePixelAvx2, DepthwiseLevelsAvx2, 0, nullptr,
                                    nullptr, nullptr, EpilogueRowsQAvx2, nullptr};
  return &table;
}

}  // namespace internal
}  // namespace tfq
