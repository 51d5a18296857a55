// AVX2 instantiations (no VNNI): vpmaddubsw (u8 x s8 pairs -> int16, exact
// for |level| <= 64) + vpmaddwd with ones (-> int32). Compiled with -mavx2
// -mfma only, so the compiler has 16 vector registers as on an AVX2 CPU.
#include "bs_kernels.h"

namespace {

inline int64_t Load64(const void* p) {
  int64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

struct Y256A {
  using T = __m256i;
  static constexpr int kBytes = 32, kLanes = 8;
  static T zero() { return _mm256_setzero_si256(); }
  static T load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static T bcast32(const void* p) { return _mm256_set1_epi32(Load32(p)); }
  static T set1(int32_t x) { return _mm256_set1_epi32(x); }
  static T dp(T acc, T u, T s) {
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1)));
  }
  static T add(T a, T b) { return _mm256_add_epi32(a, b); }
  static T sub(T a, T b) { return _mm256_sub_epi32(a, b); }
  static T mul128(T a) { return _mm256_slli_epi32(a, 7); }
  static void store(int32_t* p, T v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static int32_t hsum(T v) {
    __m128i x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
    return _mm_cvtsi128_si32(x);
  }
  // 8 bytes of 2-bit codes -> 32 signed levels (see Sparse::codes).
  static T decode2(const int8_t* p) {
    const T raw = _mm256_set1_epi64x(Load64(p));
    const T u = _mm256_and_si256(_mm256_srlv_epi64(raw, _mm256_setr_epi64x(0, 2, 4, 6)), _mm256_set1_epi8(3));
    return _mm256_sub_epi8(u, _mm256_set1_epi8(1));
  }
  // 8 pixels of 4 k-rows (8 bytes each) -> 8 dwords: two unpack levels.
  static T quad4(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2, const uint8_t* r3) {
    const __m128i x01 = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r0)),
                                          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(r1)));
    const __m128i x23 = _mm_unpacklo_epi8(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(r2)),
                                          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(r3)));
    return _mm256_set_m128i(_mm_unpackhi_epi16(x01, x23), _mm_unpacklo_epi16(x01, x23));
  }
  template <int C, typename I>
  static T gather(const uint8_t* a, const I* idx) {
    if (C == 16)
      return _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[1] * 16)),
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[0] * 16)));
    return _mm256_setr_epi32(Load32(a + idx[0] * 4), Load32(a + idx[1] * 4), Load32(a + idx[2] * 4),
                             Load32(a + idx[3] * 4), Load32(a + idx[4] * 4), Load32(a + idx[5] * 4),
                             Load32(a + idx[6] * 4), Load32(a + idx[7] * 4));
  }
};

struct X128A {
  using T = __m128i;
  static constexpr int kBytes = 16, kLanes = 4;
  static T zero() { return _mm_setzero_si128(); }
  static T load(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static T bcast32(const void* p) { return _mm_set1_epi32(Load32(p)); }
  static T set1(int32_t x) { return _mm_set1_epi32(x); }
  static T dp(T acc, T u, T s) {
    return _mm_add_epi32(acc, _mm_madd_epi16(_mm_maddubs_epi16(u, s), _mm_set1_epi16(1)));
  }
  static T add(T a, T b) { return _mm_add_epi32(a, b); }
  static T sub(T a, T b) { return _mm_sub_epi32(a, b); }
  static T mul128(T a) { return _mm_slli_epi32(a, 7); }
  static void store(int32_t* p, T v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
  static int32_t hsum(T x) {
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0x4E));
    x = _mm_add_epi32(x, _mm_shuffle_epi32(x, 0xB1));
    return _mm_cvtsi128_si32(x);
  }
  template <int C, typename I>
  static T gather(const uint8_t* a, const I* idx) {
    if (C == 16) return load(a + idx[0] * 16);
    return _mm_setr_epi32(Load32(a + idx[0] * 4), Load32(a + idx[1] * 4), Load32(a + idx[2] * 4),
                          Load32(a + idx[3] * 4));
  }
};

}  // namespace

#include "bs_register.inc"

void RegisterAvx2(std::vector<Variant>* v) { RegisterNarrow<Y256A, X128A>(v, "avx2", /*many_regs=*/false); }
