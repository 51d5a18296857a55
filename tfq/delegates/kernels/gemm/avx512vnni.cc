// GEMM, AVX-512 VNNI (x86-64 with AVX512F/BW/VL and AVX512-VNNI; compiled with
// those flags and called only after CPU detection).
//
// Same unsigned-code trick as gemm/avx2.cc (codes/avx512.h), but `vpdpbusd`
// multiplies 64 unsigned codes by 64 int8 activations and accumulates
// straight into int32 lanes: no int16 stage, hence no overflow hazard (int32
// lanes wrap, and the true accumulator fits in int32 by the format's rule,
// so the wrapped result is exact after the offset correction). One register
// holds the codes of two fields (Avx512Codes::DecodePair): no activation
// shuffles are needed. The mini-blocks at the end of a version-2 dense row
// go two per vpdpbusd (Avx512Codes::DecodeMiniPair). Tiling: gemm/panels.h.
#include <immintrin.h>

#include "kernels/codes/avx512.h"
#include "kernels/gemm/panels.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

// Ternary GEMV (one activation row) without shifts: field t of a byte is
// masked in place, so the code arrives multiplied by 4^t. Each pair of fields
// (2p in the low 256 bits, 2p + 1 in the high ones, as in DecodePair) gets
// its own accumulator, whose lanes are then exact multiples of 16^p (low) or
// 4 * 16^p (high) and are shifted back once at the end (vpsravd). A
// vpdpbusd lane gains at most 4 * 128 * 127 per block, so this holds for
// nblocks <= kMaskedMaxBlocks (the caller checks).
constexpr int64_t kMaskedMaxBlocks = 32768;

template <int MR>
void TernaryGemvTile(const uint8_t* w, int64_t row_bytes, const int8_t* a, const int32_t* sumq,
                     int64_t nblocks, int64_t ntail, int32_t* c) {
  __m512i acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  const __m512i mask0 = _mm512_inserti64x4(_mm512_set1_epi8(0x03), _mm256_set1_epi8(0x0C), 1);
  const __m512i mask1 = _mm512_inserti64x4(_mm512_set1_epi8(0x30), _mm256_set1_epi8(static_cast<char>(0xC0)), 1);
  const uint8_t* next = w + MR * row_bytes;
  for (int64_t b = 0; b < nblocks; ++b) {
    for (int l = 0; l < MR * 32; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(next + b * MR * 32 + l), _MM_HINT_T0);
    const __m512i a0 = _mm512_loadu_si512(a + b * 128);
    const __m512i a1 = _mm512_loadu_si512(a + b * 128 + 64);
    for (int r = 0; r < MR; ++r) {
      const __m512i raw = _mm512_broadcast_i64x4(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * row_bytes + b * 32)));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], _mm512_and_si512(raw, mask0), a0);
      acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], _mm512_and_si512(raw, mask1), a1);
    }
  }
  // Mini-blocks (version-2 dense rows): 32 raw codes each, their products
  // added to the low half of the field-0 accumulator, whose lanes are not
  // shifted at the end (no extra accumulator, no extra reduction).
  for (int64_t m = 0; m < ntail; ++m) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + nblocks * 128 + m * 32));
    const uint8_t* mini = w + nblocks * 32 + m * MiniBlockBytes(Scheme::kTernary);
    for (int r = 0; r < MR; ++r) {
      const __m256i u = Avx2Codes<Scheme::kTernary>::DecodeMini(mini + r * row_bytes);
      acc[r][0] = _mm512_add_epi32(
          acc[r][0], _mm512_zextsi256_si512(_mm256_dpbusd_epi32(_mm256_setzero_si256(), u, av)));
    }
  }
  const __m512i shift0 = _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(2), 1);
  const __m512i shift1 = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
  for (int r = 0; r < MR; ++r) {
    const __m512i v = _mm512_add_epi32(_mm512_srav_epi32(acc[r][0], shift0),
                                       _mm512_srav_epi32(acc[r][1], shift1));
    // sum(level * q) = sum(code * q) - sum(q), wrapping like uint32 (exact when it fits).
    c[r] = RemoveOffset(static_cast<uint32_t>(_mm512_reduce_add_epi32(v)), 1, 1, sumq[0]);
  }
}

// The same masked GEMV in 256-bit vectors, for CPUs that execute a 512-bit
// operation as two 256-bit halves (Zen 4): the 32 code bytes of a block are
// loaded once (no broadcast), each field t gets its own accumulator, exact
// multiples of 4^t shifted back once at the end, and 4 rows share the 4
// activation vectors. Measured on a Zen 4 with the codes of a 4096x4096
// layer (one thread, loop only): 87 us against 108 for TernaryGemvTile<8>
// (docs/delegate.md, "Dense ternary GEMV in 256-bit vectors").
template <int MR>
void TernaryGemvTile256(const uint8_t* w, int64_t row_bytes, const int8_t* a, const int32_t* sumq,
                        int64_t nblocks, int64_t ntail, int32_t* c) {
  __m256i acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int t = 0; t < 4; ++t) acc[r][t] = _mm256_setzero_si256();
  const __m256i mask[4] = {_mm256_set1_epi8(0x03), _mm256_set1_epi8(0x0C), _mm256_set1_epi8(0x30),
                           _mm256_set1_epi8(static_cast<char>(0xC0))};
  const uint8_t* next = w + MR * row_bytes;
  for (int64_t b = 0; b < nblocks; ++b) {
    for (int l = 0; l < MR * 32; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(next + b * MR * 32 + l), _MM_HINT_T0);
    __m256i av[4];
    for (int t = 0; t < 4; ++t) av[t] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + b * 128 + t * 32));
    for (int r = 0; r < MR; ++r) {
      const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * row_bytes + b * 32));
      for (int t = 0; t < 4; ++t) acc[r][t] = _mm256_dpbusd_epi32(acc[r][t], _mm256_and_si256(raw, mask[t]), av[t]);
    }
  }
  // Mini-blocks (version-2 dense rows): raw codes into the field-0 accumulator (not shifted).
  for (int64_t m = 0; m < ntail; ++m) {
    const __m256i av = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(a + nblocks * 128 + m * 32));
    const uint8_t* mini = w + nblocks * 32 + m * MiniBlockBytes(Scheme::kTernary);
    for (int r = 0; r < MR; ++r)
      acc[r][0] = _mm256_dpbusd_epi32(acc[r][0], Avx2Codes<Scheme::kTernary>::DecodeMini(mini + r * row_bytes), av);
  }
  __m256i v[MR];
  for (int r = 0; r < MR; ++r)
    v[r] = _mm256_add_epi32(_mm256_add_epi32(acc[r][0], _mm256_srai_epi32(acc[r][1], 2)),
                            _mm256_add_epi32(_mm256_srai_epi32(acc[r][2], 4), _mm256_srai_epi32(acc[r][3], 6)));
  // sum(level * q) = sum(code * q) - sum(q), wrapping like uint32 (exact when it fits).
  if constexpr (MR == 4) {
    // The four rows' sums at once, then one subtraction for all four.
    const __m128i sum = HorizontalSums4(v[0], v[1], v[2], v[3]);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(c), _mm_sub_epi32(sum, _mm_set1_epi32(sumq[0])));
  } else {
    for (int r = 0; r < MR; ++r) c[r] = RemoveOffset(static_cast<uint32_t>(HorizontalSum(v[r])), 1, 1, sumq[0]);
  }
}

// kNarrowGemv: the single-activation-row ternary GEMV in 256-bit vectors
// (TernaryGemvTile256), for CPUs that split 512-bit operations.
template <Scheme S, bool kNarrowGemv = false>
struct Avx512Gemm {
  using K = Avx512Codes<S>;
  static constexpr int kPanelRows = 4, kGemvRows = 8;
  static constexpr bool kOwnGemv = S == Scheme::kTernary;

  template <int MR, int NR>
  void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda, const int32_t* sumq,
            int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) const {
    constexpr int kPairs = K::kFields / 2;
    __m512i acc[MR][NR];
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p) acc[r][p] = _mm512_setzero_si512();
    // GEMV streams the weights once: prefetch the next tile's rows (the MR rows
    // after these, contiguous) at the rate this tile consumes its own, so that
    // several KB are in flight when they come from DRAM.
    const uint8_t* next = w + MR * row_bytes;
    for (int64_t b = 0; b < nblocks; ++b) {
      if (NR == 1) {
        for (int l = 0; l < MR * 32; l += 64)
          _mm_prefetch(reinterpret_cast<const char*>(next + b * MR * 32 + l), _MM_HINT_T0);
      }
      __m512i raw[MR];
      for (int r = 0; r < MR; ++r)
        raw[r] = _mm512_broadcast_i64x4(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * row_bytes + b * 32)));
      const int8_t* ab = a + b * K::kWpb;
      for (int pair = 0; pair < kPairs; ++pair) {
        __m512i u[MR];
        for (int r = 0; r < MR; ++r) u[r] = K::DecodePair(raw[r], pair);
        for (int p = 0; p < NR; ++p) {
          const __m512i av = _mm512_loadu_si512(ab + p * lda + pair * 64);
          for (int r = 0; r < MR; ++r) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], u[r], av);
        }
      }
    }
    // Mini-blocks (version-2 dense rows): two per vpdpbusd, 64 consecutive positions.
    for (int64_t m = 0; m < ntail; m += 2) {
      const bool pair = m + 1 < ntail;
      __m512i u[MR];
      for (int r = 0; r < MR; ++r)
        u[r] = K::DecodeMiniPair(w + r * row_bytes + nblocks * 32 + m * MiniBlockBytes(S), pair);
      const int8_t* am = a + nblocks * K::kWpb + m * kMiniWeights;
      for (int p = 0; p < NR; ++p) {
        const __m512i av = K::MiniActivations(am + p * lda, pair);
        for (int r = 0; r < MR; ++r) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], u[r], av);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int p = 0; p < NR; ++p)
        c[p * ldc + r] = RemoveOffset(static_cast<uint32_t>(_mm512_reduce_add_epi32(acc[r][p])),
                                      K::kMul, K::kBiasedOff, sumq[p]);
  }

  // Ternary only (kOwnGemv): the masked GEMV when its lanes cannot overflow.
  void Gemv(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a, int64_t lda,
            const int32_t* sumq, int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) const {
    if (nblocks > kMaskedMaxBlocks) {
      RowPanel<kGemvRows, 1>(*this, w, row_bytes, n_rows, a, lda, sumq, nblocks, ntail, c, ldc);
      return;
    }
    int64_t i = 0;
    if constexpr (kNarrowGemv) {
      for (; i + 4 <= n_rows; i += 4)
        TernaryGemvTile256<4>(w + i * row_bytes, row_bytes, a, sumq, nblocks, ntail, c + i);
      for (; i < n_rows; ++i) TernaryGemvTile256<1>(w + i * row_bytes, row_bytes, a, sumq, nblocks, ntail, c + i);
    } else {
      for (; i + 8 <= n_rows; i += 8)
        TernaryGemvTile<8>(w + i * row_bytes, row_bytes, a, sumq, nblocks, ntail, c + i);
      for (; i < n_rows; ++i) TernaryGemvTile<1>(w + i * row_bytes, row_bytes, a, sumq, nblocks, ntail, c + i);
    }
  }
};

}  // namespace

void GemmAvx512Vnni(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                    int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
                    int32_t* c, int64_t ldc) {
  DispatchScheme(s, [&](auto scheme) {
    GemmPanels(Avx512Gemm<decltype(scheme)::value>(), w, row_bytes, n_rows, a, lda, sumq, n_act,
               nblocks, ntail, c, ldc);
  });
}

void GemmAvx512Vnni256(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                       int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
                       int32_t* c, int64_t ldc) {
  DispatchScheme(s, [&](auto scheme) {
    GemmPanels(Avx512Gemm<decltype(scheme)::value, true>(), w, row_bytes, n_rows, a, lda, sumq, n_act,
               nblocks, ntail, c, ldc);
  });
}

}  // namespace internal
}  // namespace tfq
