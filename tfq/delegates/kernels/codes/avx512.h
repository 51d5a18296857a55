// AVX-512 decoding of packed codes into unsigned bytes u (level = kMul * u -
// kBiasedOff, as in codes/avx2.h), 64 codes per zmm register. Used by
// gemm/avx512vnni.cc and gemm_interleaved/avx512vnni.cc; include only from
// files compiled with the AVX-512 flags. Internal linkage
// (kernels_internal.h, linkage rule).
#ifndef TFQ_DELEGATES_KERNELS_CODES_AVX512_H_
#define TFQ_DELEGATES_KERNELS_CODES_AVX512_H_

#include <immintrin.h>

#include "kernels/codes/avx2.h"
#include "kernels/kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Avx512Codes : SchemeCodes<S> {
  using C = SchemeCodes<S>;

  static __m512i LevelTable() {
    static constexpr CodeTable16 kTable = BiasedLevels(S);
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(kTable.v)));
  }

  // One 32-byte block broadcast to both halves of raw: u of field 2*pair in
  // the low 256 bits and of field 2*pair + 1 in the high ones (vpsrlvw shifts
  // the halves by different amounts), i.e. positions [pair*64, pair*64 + 64)
  // of the block, 64 consecutive activations.
  static __m512i DecodePair(__m512i raw, int pair) {
    const int lo = 2 * pair * C::kBits;
    const __m512i shift =
        _mm512_inserti64x4(_mm512_set1_epi16(lo), _mm256_set1_epi16(lo + C::kBits), 1);
    const char mask = static_cast<char>((1 << C::kBits) - 1);
    const __m512i f = _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(mask));
    if constexpr (C::kAffine) {
      return f;
    } else {
      return _mm512_shuffle_epi8(LevelTable(), f);
    }
  }

  // u of the 64 codes of mini-blocks m and m + 1 of a version-2 dense row
  // (64 consecutive positions; Avx2Codes::DecodeMini), or of mini-block m
  // alone with zeros above when it is the last one (`pair` false): lanes
  // 32-63 then multiply nothing.
  static __m512i DecodeMiniPair(const uint8_t* p, bool pair) {
    const __m512i lo = _mm512_zextsi256_si512(Avx2Codes<S>::DecodeMini(p));
    if (!pair) return lo;
    return _mm512_inserti64x4(lo, Avx2Codes<S>::DecodeMini(p + MiniBlockBytes(S)), 1);
  }

  // The 64 activations matching DecodeMiniPair: 32 zero-extended when `pair`
  // is false (reads nothing past the row).
  static __m512i MiniActivations(const int8_t* a, bool pair) {
    if (pair) return _mm512_loadu_si512(a);
    return _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(a)));
  }

  // u of field t of every byte of raw (64 bytes of any layout).
  static __m512i DecodeField(__m512i raw, int t) {
    const char mask = static_cast<char>((1 << C::kBits) - 1);
    const __m512i f = _mm512_and_si512(_mm512_srli_epi16(raw, C::kBits * t), _mm512_set1_epi8(mask));
    if constexpr (C::kAffine) {
      return f;
    } else {
      return _mm512_shuffle_epi8(LevelTable(), f);
    }
  }
};

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_CODES_AVX512_H_
