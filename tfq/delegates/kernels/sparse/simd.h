// The block-sparse SIMD kernels (KernelTable::sparse_gemm), generic over the
// vector type: sparse/avx2.cc instantiates them with 128/256-bit vectors and
// vpmaddubsw, sparse/avx512vnni.cc with 128/256/512-bit vectors and
// vpdpbusd. Internal linkage (see the rule in kernels_internal.h).
//
// Lanes are output channels: a vector holds the levels of L rows x 4
// positions (one quad of a block, decoded from the repacked codes,
// SparsePrepared), and the 4 activations of that quad are broadcast to every
// lane; a tile of NP activation rows (pixels) shares each decoded weight
// vector. Activations arrive biased, u = q + 128 (SparseGemmFn), the
// unsigned operand of vpdpbusd / vpmaddubsw: the accumulator holds
// sum(level * q) + 128 * sum(level), and the row's level sum
// (SparseWeights::level_sums) removes the second term. Wrap-around int32
// arithmetic: exact whenever the true sum fits (the format's overflow rule).
#ifndef TFQ_DELEGATES_KERNELS_SPARSE_SIMD_H_
#define TFQ_DELEGATES_KERNELS_SPARSE_SIMD_H_

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/codes/avx2.h"
#include "kernels/kernels_internal.h"
#include "kernels/sparse/fields.h"
#include "kernels/sparse/sparse.h"

namespace tfq {
namespace internal {
namespace {

inline int32_t SpLoad32(const void* p) {
  int32_t x;
  std::memcpy(&x, p, 4);
  return x;
}

inline int64_t SpLoad64(const void* p) {
  int64_t x;
  std::memcpy(&x, p, 8);
  return x;
}

// The level tables of the 2- and 4-bit schemes (int8 codes are their levels:
// no table, kBits == 8 below).
constexpr CodeTable16 kSparseLevels[kNumSchemes] = {
    SignedLevels(Scheme::kBinary), SignedLevels(Scheme::kTernary), SignedLevels(Scheme::kPow2_3bit),
    SignedLevels(Scheme::kPow2_4bit), CodeTable16{}};

// Whether this file's dot product is exact for int8 levels: vpdpbusd is;
// vpmaddubsw (AVX2) saturates its int16 pair sums beyond |level| 64.
#if defined(__AVX512VNNI__)
constexpr bool kSpExactInt8 = true;
#else
constexpr bool kSpExactInt8 = false;
#endif

// 128-bit vectors: 4 rows (blocks of 4 rows).
struct SpVec128 {
  using T = __m128i;
  static constexpr int kLanes = 4;
  static T zero() { return _mm_setzero_si128(); }
  static T lut(const int8_t* t) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(t)); }
  static T act(const uint8_t* p) { return _mm_set1_epi32(SpLoad32(p)); }
  static T dp(T acc, T u, T w) {
#if defined(__AVX512VNNI__)
    return _mm_dpbusd_epi32(acc, u, w);
#else
    return _mm_add_epi32(acc, _mm_madd_epi16(_mm_maddubs_epi16(u, w), _mm_set1_epi16(1)));
#endif
  }
  template <int kBits>
  static T decode(const uint8_t* p, T lut) {
    if constexpr (kBits == 8) {
      return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
    } else if constexpr (kBits == 2) {
      const T x = _mm_srlv_epi32(_mm_set1_epi32(SpLoad32(p)), _mm_setr_epi32(0, 2, 4, 6));
      return _mm_shuffle_epi8(lut, _mm_and_si128(x, _mm_set1_epi8(3)));
    } else {
      const T x = _mm_srlv_epi64(_mm_set1_epi64x(SpLoad64(p)), _mm_set_epi64x(4, 0));
      return _mm_shuffle_epi8(lut, _mm_and_si128(x, _mm_set1_epi8(15)));
    }
  }
  // The raw 2-bit codes of a unit (decode without the level lookup).
  static T codes2(const uint8_t* p) {
    const T x = _mm_srlv_epi32(_mm_set1_epi32(SpLoad32(p)), _mm_setr_epi32(0, 2, 4, 6));
    return _mm_and_si128(x, _mm_set1_epi8(3));
  }
  static T ones() { return _mm_set1_epi8(1); }
  static T sub(T a, T b) { return _mm_sub_epi32(a, b); }
  static T finish(T acc, const int32_t* sums) {
    return _mm_sub_epi32(acc, _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sums)), 7));
  }
  static T add(T a, T b) { return _mm_add_epi32(a, b); }
  static void store(int32_t* p, T v) { _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v); }
};

// 256-bit vectors: 8 rows (one unit of the repacked codes).
struct SpVec256 {
  using T = __m256i;
  static constexpr int kLanes = 8;
  static T zero() { return _mm256_setzero_si256(); }
  static T lut(const int8_t* t) {
    return _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
  }
  static T act(const uint8_t* p) { return _mm256_set1_epi32(SpLoad32(p)); }
  static T dp(T acc, T u, T w) {
#if defined(__AVX512VNNI__)
    return _mm256_dpbusd_epi32(acc, u, w);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, w), _mm256_set1_epi16(1)));
#endif
  }
  template <int kBits>
  static T decode(const uint8_t* p, T lut) {
    if constexpr (kBits == 8) {
      return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    } else if constexpr (kBits == 2) {
      const T x = _mm256_srlv_epi64(_mm256_set1_epi64x(SpLoad64(p)), _mm256_setr_epi64x(0, 2, 4, 6));
      return _mm256_shuffle_epi8(lut, _mm256_and_si256(x, _mm256_set1_epi8(3)));
    } else {
      const T x = _mm256_srlv_epi64(
          _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))),
          _mm256_setr_epi64x(0, 0, 4, 4));
      return _mm256_shuffle_epi8(lut, _mm256_and_si256(x, _mm256_set1_epi8(15)));
    }
  }
  static T codes2(const uint8_t* p) {
    const T x = _mm256_srlv_epi64(_mm256_set1_epi64x(SpLoad64(p)), _mm256_setr_epi64x(0, 2, 4, 6));
    return _mm256_and_si256(x, _mm256_set1_epi8(3));
  }
  static T ones() { return _mm256_set1_epi8(1); }
  static T sub(T a, T b) { return _mm256_sub_epi32(a, b); }
  static T finish(T acc, const int32_t* sums) {
    return _mm256_sub_epi32(
        acc, _mm256_slli_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sums)), 7));
  }
  static T add(T a, T b) { return _mm256_add_epi32(a, b); }
  static void store(int32_t* p, T v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
// 512-bit vectors: 16 rows (two consecutive units).
struct SpVec512 {
  using T = __m512i;
  static constexpr int kLanes = 16;
  static T zero() { return _mm512_setzero_si512(); }
  static T lut(const int8_t* t) {
    return _mm512_broadcast_i32x4(_mm_loadu_si128(reinterpret_cast<const __m128i*>(t)));
  }
  static T act(const uint8_t* p) { return _mm512_set1_epi32(SpLoad32(p)); }
  static T dp(T acc, T u, T w) { return _mm512_dpbusd_epi32(acc, u, w); }
  template <int kBits>
  static T decode(const uint8_t* p, T lut) {
    if constexpr (kBits == 8) {
      return _mm512_loadu_si512(p);
    } else if constexpr (kBits == 2) {
      const T x = _mm512_permutexvar_epi64(
          _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1),
          _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
      const T y = _mm512_srlv_epi64(x, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6));
      return _mm512_shuffle_epi8(lut, _mm512_and_si512(y, _mm512_set1_epi8(3)));
    } else {
      const T x = _mm512_permutexvar_epi64(
          _mm512_setr_epi64(0, 1, 0, 1, 2, 3, 2, 3),
          _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
      const T y = _mm512_srlv_epi64(x, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4));
      return _mm512_shuffle_epi8(lut, _mm512_and_si512(y, _mm512_set1_epi8(15)));
    }
  }
  static T codes2(const uint8_t* p) {
    const T x = _mm512_permutexvar_epi64(
        _mm512_setr_epi64(0, 0, 0, 0, 1, 1, 1, 1),
        _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
    return _mm512_and_si512(_mm512_srlv_epi64(x, _mm512_setr_epi64(0, 2, 4, 6, 0, 2, 4, 6)),
                            _mm512_set1_epi8(3));
  }
  static T ones() { return _mm512_set1_epi8(1); }
  static T sub(T a, T b) { return _mm512_sub_epi32(a, b); }
  static T finish(T acc, const int32_t* sums) {
    return _mm512_sub_epi32(acc, _mm512_slli_epi32(_mm512_loadu_si512(sums), 7));
  }
  static T add(T a, T b) { return _mm512_add_epi32(a, b); }
  static void store(int32_t* p, T v) { _mm512_storeu_si512(p, v); }
};
#endif

// Blocks of 4 rows in 256-bit vectors: two stored blocks of a block row
// side by side (lanes 0-3 the first, 4-7 the second, each half with its own
// activations), the halves added at the end. Twice the work per
// instruction of 128-bit vectors, for the 4x4 blocks of fully connected
// layers (block="auto").
struct SpPair256 {
  using T = __m256i;
  static constexpr int kLanes = 4;  // rows of a block row
  static T lut(const int8_t* t) { return SpVec256::lut(t); }
  template <int kBits>
  static T decode(const uint8_t* p0, const uint8_t* p1, T lut) {
    if constexpr (kBits == 2) {
      const T x = _mm256_set_m128i(_mm_set1_epi32(SpLoad32(p1)), _mm_set1_epi32(SpLoad32(p0)));
      const T y = _mm256_srlv_epi32(x, _mm256_setr_epi32(0, 2, 4, 6, 0, 2, 4, 6));
      return _mm256_shuffle_epi8(lut, _mm256_and_si256(y, _mm256_set1_epi8(3)));
    } else {
      const T x = _mm256_set_m128i(_mm_set1_epi64x(SpLoad64(p1)), _mm_set1_epi64x(SpLoad64(p0)));
      const T y = _mm256_srlv_epi64(x, _mm256_setr_epi64x(0, 4, 0, 4));
      return _mm256_shuffle_epi8(lut, _mm256_and_si256(y, _mm256_set1_epi8(15)));
    }
  }
  static T act(const uint8_t* p0, const uint8_t* p1) {
    return _mm256_set_m128i(_mm_set1_epi32(SpLoad32(p1)), _mm_set1_epi32(SpLoad32(p0)));
  }
};

// SpBlockRowTile for SpPair256 (R = 4): blocks in pairs, an odd last one
// with zero weights in the upper half.
template <int kBits, int kIndexBytes, int NP, int kQ>
inline void SpPairTile(const uint8_t* codes, const uint8_t* idx, int64_t n, int nq_rt,
                       int64_t block_bytes, const uint8_t* const* a, const int64_t* coloff,
                       const int32_t* sums, __m256i lut, int32_t* out, int64_t ldo) {
  constexpr int kUb = 16 * kBits / 8;  // code bytes of one 4 x 4 unit
  const int nq = kQ > 0 ? kQ : nq_rt;
  // A single activation row: four accumulators (pairs rotate over them),
  // else the vpdpbusd latency chain bounds the loop.
  constexpr int kSets = NP == 1 ? 4 : 1;
  __m256i acc[kSets][NP];
  for (int t = 0; t < kSets; ++t)
    for (int p = 0; p < NP; ++p) acc[t][p] = _mm256_setzero_si256();
  const auto pair = [&](int64_t e, __m256i (&ac)[NP]) {
    const int64_t off0 = coloff[SparseIndexAt<kIndexBytes>(idx, e)];
    const int64_t off1 = coloff[SparseIndexAt<kIndexBytes>(idx, e + 1)];
    const uint8_t* w0 = codes + e * block_bytes;
    const uint8_t* w1 = w0 + block_bytes;
    for (int j = 0; j < nq; ++j) {
      const __m256i w = SpPair256::decode<kBits>(w0 + j * kUb, w1 + j * kUb, lut);
      for (int p = 0; p < NP; ++p)
        ac[p] = SpVec256::dp(ac[p], SpPair256::act(a[p] + off0 + 4 * j, a[p] + off1 + 4 * j), w);
    }
  };
  int64_t e = 0;
  for (; e + 2 * kSets <= n; e += 2 * kSets)
    for (int t = 0; t < kSets; ++t) pair(e + 2 * t, acc[t]);
  for (; e + 2 <= n; e += 2) pair(e, acc[0]);
  for (int t = 1; t < kSets; ++t)
    for (int p = 0; p < NP; ++p) acc[0][p] = _mm256_add_epi32(acc[0][p], acc[t][p]);
  if (e < n) {
    const int64_t off0 = coloff[SparseIndexAt<kIndexBytes>(idx, e)];
    const uint8_t* w0 = codes + e * block_bytes;
    const __m256i lo = _mm256_setr_epi64x(-1, -1, 0, 0);
    for (int j = 0; j < nq; ++j) {
      const __m256i w = _mm256_and_si256(SpPair256::decode<kBits>(w0 + j * kUb, w0 + j * kUb, lut), lo);
      for (int p = 0; p < NP; ++p)
        acc[0][p] = SpVec256::dp(acc[0][p], SpPair256::act(a[p] + off0 + 4 * j, a[p] + off0 + 4 * j), w);
    }
  }
  const __m128i corr = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sums)), 7);
  for (int p = 0; p < NP; ++p) {
    const __m128i v =
        _mm_add_epi32(_mm256_castsi256_si128(acc[0][p]), _mm256_extracti128_si256(acc[0][p], 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + p * ldo), _mm_sub_epi32(v, corr));
  }
}

// Blocks of 4 x 4 against one activation row whose block columns are
// adjacent (col_offset[bc] == 4 bc, fully connected layers): eight stored
// blocks per step, lanes are blocks. The repacked unit of a 4 x 4 block
// holds rows 0-3 of column c in the fields of its byte c (2-bit codes; with
// 4-bit codes, bytes 0-3 rows 0 and 2, bytes 4-7 rows 1 and 3), so one load
// of eight blocks' codes gives the four row vectors with a shift, a mask and
// a lookup each, and one gather fetches the eight blocks' activations. The
// lanes are summed once per block row. Against SpPairTile this saves the two
// broadcasts, the insert and the per-block decode that cost more than the
// one vpdpbusd of a pair.
template <int kBits, int kIndexBytes>
inline void SpGemv4x4(const uint8_t* codes, const uint8_t* idx, int64_t n, const uint8_t* a,
                      const int32_t* sums, __m256i lut, int32_t* out) {
  constexpr int kBb = 16 * kBits / 8;  // code bytes of one block
  // Lane l holds block order[l] of the step (4-bit: the dword shuffle below).
  const __m256i order = kBits == 2 ? _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
                                   : _mm256_setr_epi32(0, 1, 4, 5, 2, 3, 6, 7);
  const __m256i mask = _mm256_set1_epi8(kBits == 2 ? 3 : 15);
  __m256i acc[2][4];
  for (int s = 0; s < 2; ++s)
    for (int r = 0; r < 4; ++r) acc[s][r] = _mm256_setzero_si256();
  // One step of eight blocks; `tail` (1-7): only the first `tail` blocks
  // exist, the codes and indices past them are not read (masked loads; the
  // last index dword may reach 3 bytes past the indices, into the codes
  // that follow them in the tensor) and their lanes gather zero activations.
  const auto step = [&](const uint8_t* wc, const uint8_t* ix, int tail, __m256i (&ac)[4]) {
    __m256i keep = _mm256_set1_epi32(-1), vi;
    if (tail == 0) {
      if constexpr (kIndexBytes == 1) {
        vi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(ix)));
      } else {
        vi = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(ix)));
      }
    } else {
      const __m128i dw = _mm_cmpgt_epi32(_mm_set1_epi32((tail * kIndexBytes + 3) / 4),
                                         _mm_setr_epi32(0, 1, 2, 3));
      const __m128i raw = _mm_maskload_epi32(reinterpret_cast<const int*>(ix), dw);
      if constexpr (kIndexBytes == 1) vi = _mm256_cvtepu8_epi32(raw);
      else vi = _mm256_cvtepu16_epi32(raw);
      keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), order);
    }
    // A gather: measured faster on a Zen 4 than eight loads and inserts.
    if constexpr (kBits != 2) vi = _mm256_permutevar8x32_epi32(vi, order);
    const int* base = reinterpret_cast<const int*>(a);
    const __m256i u = tail == 0 ? _mm256_i32gather_epi32(base, vi, 4)
                                : _mm256_mask_i32gather_epi32(_mm256_setzero_si256(), base, vi, keep, 4);
    __m256i w[4];
    const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    if constexpr (kBits == 2) {
      const __m256i x = tail == 0 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc))
                                  : _mm256_maskload_epi32(reinterpret_cast<const int*>(wc),
                                                          _mm256_cmpgt_epi32(_mm256_set1_epi32(tail), lanes));
      for (int r = 0; r < 4; ++r)
        w[r] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(x, 2 * r), mask));
    } else {
      __m256i y0, y1;
      if (tail == 0) {
        y0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc));
        y1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wc + 32));
      } else {
        // Dword d of the step's 16 belongs to block d / 2.
        const __m256i t2 = _mm256_set1_epi32(2 * tail);
        y0 = _mm256_maskload_epi32(reinterpret_cast<const int*>(wc), _mm256_cmpgt_epi32(t2, lanes));
        y1 = _mm256_maskload_epi32(
            reinterpret_cast<const int*>(wc + 32),
            _mm256_cmpgt_epi32(t2, _mm256_add_epi32(lanes, _mm256_set1_epi32(8))));
      }
      const __m256 x0 = _mm256_castsi256_ps(y0), x1 = _mm256_castsi256_ps(y1);
      const __m256i lo = _mm256_castps_si256(_mm256_shuffle_ps(x0, x1, 0x88));  // rows 0, 2
      const __m256i hi = _mm256_castps_si256(_mm256_shuffle_ps(x0, x1, 0xDD));  // rows 1, 3
      w[0] = _mm256_shuffle_epi8(lut, _mm256_and_si256(lo, mask));
      w[2] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(lo, 4), mask));
      w[1] = _mm256_shuffle_epi8(lut, _mm256_and_si256(hi, mask));
      w[3] = _mm256_shuffle_epi8(lut, _mm256_and_si256(_mm256_srli_epi16(hi, 4), mask));
    }
    for (int r = 0; r < 4; ++r) ac[r] = SpVec256::dp(ac[r], u, w[r]);
  };
  int64_t e = 0;
  // Two accumulator sets: the vpdpbusd latency chain would bound a step.
  for (; e + 16 <= n; e += 16) {
    step(codes + e * kBb, idx + e * kIndexBytes, 0, acc[0]);
    step(codes + (e + 8) * kBb, idx + (e + 8) * kIndexBytes, 0, acc[1]);
  }
  for (; e + 8 <= n; e += 8) step(codes + e * kBb, idx + e * kIndexBytes, 0, acc[0]);
  if (e < n) step(codes + e * kBb, idx + e * kIndexBytes, static_cast<int>(n - e), acc[1]);
  for (int r = 0; r < 4; ++r) acc[0][r] = _mm256_add_epi32(acc[0][r], acc[1][r]);
  const __m128i v = HorizontalSums4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
  const __m128i corr = _mm_slli_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sums)), 7);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm_sub_epi32(v, corr));
}

// Whether col_offset[bc] == 4 bc for every block column of a k-position
// matrix (SpGemv4x4's condition).
inline bool SpAdjacentColumns(const int64_t* coloff, int64_t k) {
  const int64_t nbc = (k + 3) / 4;
  int64_t bad = 0;
  for (int64_t bc = 0; bc < nbc; ++bc) bad |= coloff[bc] ^ (4 * bc);
  return bad == 0;
}

// One block row (R = G * V::kLanes rows) against NP activation rows a[0, NP):
// out[p * ldo + r] for r < R. kQ: quads per block (C / 4), 0 = nq at run time.
// kIndexBytes == 0: the block row decoded beforehand (SpDecodeBlockRow):
// `codes` holds the weight vectors of each block in order ([block][quad][g]),
// `idx` the int64 offsets coloff[index] of its blocks.
template <class V, int kBits, int kIndexBytes, int G, int NP, int kQ>
inline void SpBlockRowTile(const uint8_t* codes, const uint8_t* idx, int64_t n, int nq_rt,
                           int64_t block_bytes, const uint8_t* const* a, const int64_t* coloff,
                           const int32_t* sums, typename V::T lut, int32_t* out, int64_t ldo) {
  if constexpr (std::is_same_v<V, SpPair256>) {
    SpPairTile<kBits, kIndexBytes, NP, kQ>(codes, idx, n, nq_rt, block_bytes, a, coloff, sums, lut,
                                           out, ldo);
  } else {
  using T = typename V::T;
  constexpr int kUb = V::kLanes * 4 * kBits / 8;  // code bytes of one weight vector
  const int nq = kQ > 0 ? kQ : nq_rt;
  // A single activation row gets two accumulator sets (blocks alternate
  // between them): the vpdpbusd latency chain, not the throughput, would
  // bound it otherwise.
  constexpr int kSets = NP == 1 ? 2 : 1;
  // Ternary with one or two rows: the raw codes u' = level + 1 are the
  // signed operand (no level lookup: the decode, not the dot products,
  // bounds these), and one more dot product per quad against ones sums the
  // activations u: sum(level q) = sum(u u') - 128 sum(level) - sum(u).
  // With more rows the extra dot products cost more than the lookups save.
  constexpr bool kAffine = kBits == 2 && NP <= 2 && kIndexBytes > 0;
  T acc[kSets][G][NP];
  T cor[kSets][NP];
  for (int s = 0; s < kSets; ++s)
    for (int p = 0; p < NP; ++p) {
      cor[s][p] = V::zero();
      for (int g = 0; g < G; ++g) acc[s][g][p] = V::zero();
    }
  const auto block = [&](int64_t e, T (&ac)[G][NP], T (&co)[NP]) {
    int64_t off;
    if constexpr (kIndexBytes == 0) off = reinterpret_cast<const int64_t*>(idx)[e];
    else off = coloff[SparseIndexAt<kIndexBytes>(idx, e)];
    const uint8_t* wb = codes + e * block_bytes;
    for (int j = 0; j < nq; ++j) {
      T w[G];
      for (int g = 0; g < G; ++g) {
        if constexpr (kIndexBytes == 0) w[g] = reinterpret_cast<const T*>(wb)[j * G + g];
        else if constexpr (kAffine) w[g] = V::codes2(wb + (j * G + g) * kUb);
        else w[g] = V::template decode<kBits>(wb + (j * G + g) * kUb, lut);
      }
      for (int p = 0; p < NP; ++p) {
        const T av = V::act(a[p] + off + 4 * j);
        for (int g = 0; g < G; ++g) ac[g][p] = V::dp(ac[g][p], av, w[g]);
        if constexpr (kAffine) co[p] = V::dp(co[p], av, V::ones());
      }
    }
  };
  int64_t e = 0;
  if constexpr (kSets == 2) {
    for (; e + 2 <= n; e += 2) {
      block(e, acc[0], cor[0]);
      block(e + 1, acc[1], cor[1]);
    }
  }
  for (; e < n; ++e) block(e, acc[0], cor[0]);
  for (int p = 0; p < NP; ++p) {
    T c = cor[0][p];
    if constexpr (kSets == 2) c = V::add(c, cor[1][p]);
    for (int g = 0; g < G; ++g) {
      T v = acc[0][g][p];
      if constexpr (kSets == 2) v = V::add(v, acc[1][g][p]);
      v = V::finish(v, sums + g * V::kLanes);
      if constexpr (kAffine) v = V::sub(v, c);
      V::store(out + p * ldo + g * V::kLanes, v);
    }
  }
}
  }

// Activation rows [p, n_act) of one block row in tiles of NP, the rest in
// tiles of NP / 2, ..., 1.
template <class V, int kBits, int kIndexBytes, int G, int NP, int kQ>
inline void SpBlockRowRows(int64_t p, const uint8_t* codes, const uint8_t* idx, int64_t n, int nq,
                           int64_t block_bytes, const uint8_t* const* a, const int64_t* coloff,
                           int64_t n_act, const int32_t* sums, typename V::T lut, int32_t* c,
                           int64_t ldc, int64_t row_off, int r0, int r1) {
  constexpr int R = G * V::kLanes;
  const bool whole = r0 == 0 && r1 == R;
  alignas(64) int32_t tmp[NP * R];
  for (; p + NP <= n_act; p += NP) {
    int32_t* dst = whole ? c + p * ldc + row_off : tmp;
    SpBlockRowTile<V, kBits, kIndexBytes, G, NP, kQ>(codes, idx, n, nq, block_bytes, a + p, coloff,
                                                    sums, lut, dst, whole ? ldc : R);
    if (!whole)
      for (int q = 0; q < NP; ++q)
        for (int r = r0; r < r1; ++r) c[(p + q) * ldc + row_off + r] = tmp[q * R + r];
  }
  if constexpr (NP > 1) {
    if (p < n_act)
      SpBlockRowRows<V, kBits, kIndexBytes, G, NP / 2, kQ>(p, codes, idx, n, nq, block_bytes, a,
                                                          coloff, n_act, sums, lut, c, ldc,
                                                          row_off, r0, r1);
  }
}

// The stack buffer of a decoded block row (SpGemm): 16 KB, a quarter of L1.
constexpr int64_t kSpDecodeBytes = 16384;

template <class V, int kBits, int kIndexBytes, int G, int NP, int kQ>
void SpGemm(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
            const int64_t* coloff, int64_t n_act, int32_t* c, int64_t ldc) {
  const SparseWeights& sw = *w.sparse;
  constexpr int R = G * V::kLanes;
  const int nq = sw.block_cols / 4;
  const typename V::T lut = V::lut(kSparseLevels[static_cast<int>(w.scheme)].v);
  alignas(64) int32_t sums_tmp[R];
  alignas(64) uint8_t dec_buf[kSpDecodeBytes];
  int64_t dec_off[kSpDecodeBytes / 16];  // one per block of at least 16 decoded bytes
  // One activation row of a fully connected layer with 4 x 4 blocks: the
  // blocks-as-lanes GEMV.
  bool gemv = false;
  if constexpr (std::is_same_v<V, SpPair256> && kQ == 1)
    gemv = n_act == 1 && SpAdjacentColumns(coloff, w.k);
  for (int64_t br = o0 / R; br * R < o1 && br < sw.block_row_count; ++br) {
    const int64_t row0 = br * R;
    const int r0 = static_cast<int>(std::max(o0, row0) - row0);
    const int r1 = static_cast<int>(std::min({o1, w.rows, row0 + R}) - row0);
    const int32_t* sums = sw.level_sums != nullptr ? sw.level_sums + row0 : sums_tmp;
    if (sw.level_sums == nullptr) BlockRowLevelSums(w.scheme, w.rows, w.k, sw, br, sums_tmp);
    const int64_t begin = sw.row_start[br];
    const int64_t n = SparseCount(sw.counts, br);
    if constexpr (!std::is_same_v<V, SpPair256>) {
      // Several tiles of activation rows (the pixels of a convolution tile):
      // the block row decoded once into L1 for all of them, when it fits.
      using T = typename V::T;
      constexpr int kUb = V::kLanes * 4 * kBits / 8;
      if (n_act > NP && n * nq * G * static_cast<int64_t>(sizeof(T)) <= kSpDecodeBytes) {
        T* dec = reinterpret_cast<T*>(dec_buf);
        const uint8_t* wc = sw.simd_codes + begin * sw.block_bytes;
        const uint8_t* ix = sw.indices + begin * kIndexBytes;
        for (int64_t e = 0; e < n; ++e) {
          dec_off[e] = coloff[SparseIndexAt<kIndexBytes>(ix, e)];
          for (int v = 0; v < nq * G; ++v)
            dec[e * nq * G + v] = V::template decode<kBits>(wc + e * sw.block_bytes + v * kUb, lut);
        }
        SpBlockRowRows<V, kBits, 0, G, NP, kQ>(
            0, dec_buf, reinterpret_cast<const uint8_t*>(dec_off), n, nq,
            nq * G * static_cast<int64_t>(sizeof(T)), a, coloff, n_act, sums, lut, c, ldc, row0 - o0,
            r0, r1);
        continue;
      }
    }
    if constexpr (std::is_same_v<V, SpPair256> && kQ == 1) {
      if (gemv) {
        alignas(16) int32_t o4[4];
        SpGemv4x4<kBits, kIndexBytes>(sw.simd_codes + begin * sw.block_bytes,
                                      sw.indices + begin * kIndexBytes, n, a[0], sums, lut, o4);
        for (int r = r0; r < r1; ++r) c[row0 - o0 + r] = o4[r];
        continue;
      }
    }
    SpBlockRowRows<V, kBits, kIndexBytes, G, NP, kQ>(
        0, sw.simd_codes + begin * sw.block_bytes, sw.indices + begin * kIndexBytes,
        n, nq, sw.block_bytes, a, coloff, n_act, sums, lut, c, ldc, row0 - o0, r0, r1);
  }
}

// The instantiation for one shape: V and G from R, NP from the registers
// (kAccRegs accumulators at most), bits, index width, C == 4 or not.
template <class V, int G, int kAccRegs>
void SpGemmShape(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                 const int64_t* coloff, int64_t n_act, int32_t* c, int64_t ldc) {
  constexpr int NP = kAccRegs / G >= 8 ? 8 : (kAccRegs / G >= 4 ? 4 : 2);
  const SparseWeights& sw = *w.sparse;
  const bool four = SchemeBits(w.scheme) == 4;
  const bool wide = sw.index_bytes == 2;
  const bool q1 = sw.block_cols == 4;
#define TFQ_SP_CALL(B, I, Q) SpGemm<V, B, I, G, NP, Q>(w, o0, o1, a, coloff, n_act, c, ldc)
  if constexpr (kSpExactInt8 && !std::is_same_v<V, SpPair256>) {
    if (SchemeBits(w.scheme) == 8) {  // SpFast: vpdpbusd only
      if (!wide && q1) TFQ_SP_CALL(8, 1, 1);
      else if (!wide) TFQ_SP_CALL(8, 1, 0);
      else if (q1) TFQ_SP_CALL(8, 2, 1);
      else TFQ_SP_CALL(8, 2, 0);
      return;
    }
  }
  if (!four && !wide && q1) TFQ_SP_CALL(2, 1, 1);
  else if (!four && !wide) TFQ_SP_CALL(2, 1, 0);
  else if (!four && q1) TFQ_SP_CALL(2, 2, 1);
  else if (!four) TFQ_SP_CALL(2, 2, 0);
  else if (!wide && q1) TFQ_SP_CALL(4, 1, 1);
  else if (!wide) TFQ_SP_CALL(4, 1, 0);
  else if (q1) TFQ_SP_CALL(4, 2, 1);
  else TFQ_SP_CALL(4, 2, 0);
#undef TFQ_SP_CALL
}

// Whether a call can take a fast path (else the scalar SparseGemm runs).
// Int8 levels: blocks of 8 rows or more (no SpPair256 path), and only
// where the dot product is exact (kSpExactInt8).
inline bool SpFast(const PackedWeights& w) {
  const SparseWeights& sw = *w.sparse;
  if (w.scheme == Scheme::kInt8 && (!kSpExactInt8 || sw.block_rows < 8)) return false;
  return sw.simd_codes != nullptr && SimdSparseShape(sw.block_rows, sw.block_cols) &&
         w.scheme != Scheme::kBinary;
}

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_SPARSE_SIMD_H_
