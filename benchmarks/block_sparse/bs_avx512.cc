// AVX-512 VNNI instantiations: 512-bit (zmm) and 256/128-bit (ymm/xmm, the
// AVX512VL forms of vpdpbusd, for CPUs that split 512-bit operations).
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512vbmi.
#include "bs_kernels.h"

namespace {

inline int64_t Load64(const void* p) {
  int64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

struct Z512 {
  using T = __m512i;
  static constexpr int kBytes = 64, kLanes = 16;
  static T zero() { return _mm512_setzero_si512(); }
  static T load(const void* p) { return _mm512_loadu_si512(p); }
  static T bcast32(const void* p) { return _mm512_set1_epi32(Load32(p)); }
  static T set1(int32_t x) { return _mm512_set1_epi32(x); }
  static T dp(T acc, T u, T s) { return _mm512_dpbusd_epi32(acc, u, s); }
  static T add(T a, T b) { return _mm512_add_epi32(a, b); }
  static T sub(T a, T b) { return _mm512_sub_epi32(a, b); }
  static T mul128(T a) { return _mm512_slli_epi32(a, 7); }
  static void store(int32_t* p, T v) { _mm512_storeu_si512(p, v); }
  static int32_t hsum(T v) { return _mm512_reduce_add_epi32(v); }
  // 16 bytes of 2-bit codes -> 64 signed levels (see Sparse::codes).
  static T decode2(const int8_t* p) {
    const T raw = _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    const T u = _mm512_and_si512(_mm512_srlv_epi64(raw, _mm512_setr_epi64(0, 0, 2, 2, 4, 4, 6, 6)),
                                 _mm512_set1_epi8(3));
    return _mm512_sub_epi8(u, _mm512_set1_epi8(1));
  }
  // 16 pixels of 4 k-rows (16 bytes each) -> 16 dwords of 4 bytes (vpermb).
  static T quad4(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2, const uint8_t* r3) {
    static const T perm = [] {
      alignas(64) uint8_t ix[64];
      for (int p = 0; p < 16; ++p)
        for (int j = 0; j < 4; ++j) ix[4 * p + j] = static_cast<uint8_t>(16 * j + p);
      return _mm512_load_si512(ix);
    }();
    T z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(r0)));
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r1)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r2)), 2);
    z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(r3)), 3);
    return _mm512_permutexvar_epi8(perm, z);
  }
  template <int C, typename I>
  static T gather(const uint8_t* a, const I* idx) {
    if (C == 16) {
      T z = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[0] * 16)));
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[1] * 16)), 1);
      z = _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[2] * 16)), 2);
      return _mm512_inserti32x4(z, _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[3] * 16)), 3);
    }
    const __m512i vi = sizeof(I) == 1
                           ? _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(idx)))
                           : _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(idx)));
    return _mm512_i32gather_epi32(vi, a, 4);  // C == 4: column block idx = dword idx
  }
};

struct Y256V {
  using T = __m256i;
  static constexpr int kBytes = 32, kLanes = 8;
  static T zero() { return _mm256_setzero_si256(); }
  static T load(const void* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static T bcast32(const void* p) { return _mm256_set1_epi32(Load32(p)); }
  static T set1(int32_t x) { return _mm256_set1_epi32(x); }
  static T dp(T acc, T u, T s) { return _mm256_dpbusd_epi32(acc, u, s); }
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
  static T quad4(const uint8_t* r0, const uint8_t* r1, const uint8_t* r2, const uint8_t* r3) {
    static const T perm = [] {
      alignas(32) uint8_t ix[32];
      for (int p = 0; p < 8; ++p)
        for (int j = 0; j < 4; ++j) ix[4 * p + j] = static_cast<uint8_t>(8 * j + p);
      return _mm256_load_si256(reinterpret_cast<const __m256i*>(ix));
    }();
    return _mm256_permutexvar_epi8(perm, _mm256_set_epi64x(Load64(r3), Load64(r2), Load64(r1), Load64(r0)));
  }
  template <int C, typename I>
  static T gather(const uint8_t* a, const I* idx) {
    if (C == 16)
      return _mm256_set_m128i(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[1] * 16)),
                              _mm_loadu_si128(reinterpret_cast<const __m128i*>(a + idx[0] * 16)));
    const __m256i vi = sizeof(I) == 1
                           ? _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(idx)))
                           : _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(idx)));
    return _mm256_i32gather_epi32(reinterpret_cast<const int*>(a), vi, 4);
  }
};

struct X128V {
  using T = __m128i;
  static constexpr int kBytes = 16, kLanes = 4;
  static T zero() { return _mm_setzero_si128(); }
  static T load(const void* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static T bcast32(const void* p) { return _mm_set1_epi32(Load32(p)); }
  static T set1(int32_t x) { return _mm_set1_epi32(x); }
  static T dp(T acc, T u, T s) { return _mm_dpbusd_epi32(acc, u, s); }
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

void RegisterAvx512(std::vector<Variant>* v) {
  RegisterWide<Z512>(v, "avx512-zmm");
  RegisterNarrow<Y256V, X128V>(v, "avx512-ymm", /*many_regs=*/true);
}
