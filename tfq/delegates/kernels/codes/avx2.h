// AVX2 decoding of packed codes into unsigned bytes u with level = kMul * u -
// kBiasedOff (binary: u = code, mul 2, off 1; ternary: u = code, mul 1, off 1;
// pow2: u = level + MaxAbsLevel through a vpshufb table, BiasedLevels), so
// that `vpmaddubsw(u, q)` multiplies 32 unsigned codes by 32 signed int8
// activations, and the offset is removed once per row with the activation
// sum. (bitnet.cpp's I2_S and llama.cpp's TQ2_0 kernels use the same idea.)
// Used by gemm/avx2.cc, dwconv/avx2.cc and sparse/simd.h (the lane sums); include only from files compiled
// with -mavx2. Internal linkage (kernels_internal.h, linkage rule).
#ifndef TFQ_DELEGATES_KERNELS_CODES_AVX2_H_
#define TFQ_DELEGATES_KERNELS_CODES_AVX2_H_

#include <immintrin.h>

#include "kernels/kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

// The sum of the eight int32 lanes of v (wrapping).
inline int32_t HorizontalSum(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  return _mm_cvtsi128_si32(s);
}

// The lane sums of four vectors at once (wrapping): lane r of the result is
// the sum of v_r's eight int32 lanes. Two rounds of pairwise adds leave
// half of v_r's sum in lane r of each 128-bit half.
inline __m128i HorizontalSums4(__m256i v0, __m256i v1, __m256i v2, __m256i v3) {
  const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v0, v1), _mm256_hadd_epi32(v2, v3));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

template <Scheme S>
struct Avx2Codes : SchemeCodes<S> {
  using C = SchemeCodes<S>;
  // int16 overflow in the GEMM: each vpmaddubsw lane is the sum of two
  // products u*q with |q| <= 127, so |lane| <= 254*max(u). Lanes are widened
  // to int32 (vpmaddwd with ones) before 32767 can be exceeded: after 128
  // chunks (16 blocks) for binary, 64 (16 blocks) for ternary, 16 (8 blocks)
  // for pow2_3bit and after every chunk for pow2_4bit (u <= 128).
  static constexpr int kBlocksPerWiden = S == Scheme::kPow2_4bit ? 1 : (S == Scheme::kPow2_3bit ? 8 : 16);
  static constexpr bool kWidenEachChunk = S == Scheme::kPow2_4bit;

  // u of the 32 codes of field t of a 32-byte block.
  static __m256i Decode(__m256i raw, int t) {
    if constexpr (C::kAffine) {
      const char mask = static_cast<char>((1 << C::kBits) - 1);
      return _mm256_and_si256(_mm256_srli_epi16(raw, C::kBits * t), _mm256_set1_epi8(mask));
    } else {
      static constexpr CodeTable16 kTable = BiasedLevels(S);
      const __m256i table =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kTable.v)));
      const __m256i f = _mm256_and_si256(_mm256_srli_epi16(raw, 4 * t), _mm256_set1_epi8(0x0F));
      return _mm256_shuffle_epi8(table, f);
    }
  }

  // u of the 32 codes of a mini-block (MiniBlockBytes(S) = 4 * bits bytes at
  // p; the end of a version-2 dense row), in position order: byte j, field t
  // holds position t * 4 * bits + j. The bytes are broadcast to every group
  // of 4 * bits lanes, group t shifted right by t * bits (one variable
  // shift), then masked. Reads exactly MiniBlockBytes(S) bytes.
  static __m256i DecodeMini(const uint8_t* p) {
    __m256i f;
    if constexpr (C::kBits == 1) {
      int32_t v;
      __builtin_memcpy(&v, p, 4);
      f = _mm256_srlv_epi32(_mm256_set1_epi32(v), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    } else if constexpr (C::kBits == 2) {
      long long v;
      __builtin_memcpy(&v, p, 8);
      f = _mm256_srlv_epi64(_mm256_set1_epi64x(v), _mm256_setr_epi64x(0, 2, 4, 6));
    } else {
      f = _mm256_srlv_epi64(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_setr_epi64x(0, 0, 4, 4));
    }
    const char mask = static_cast<char>((1 << C::kBits) - 1);
    f = _mm256_and_si256(f, _mm256_set1_epi8(mask));
    if constexpr (C::kAffine) {
      return f;
    } else {
      static constexpr CodeTable16 kTable = BiasedLevels(S);
      const __m256i table =
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kTable.v)));
      return _mm256_shuffle_epi8(table, f);
    }
  }
};

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_CODES_AVX2_H_
