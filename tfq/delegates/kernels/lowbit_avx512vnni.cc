// AVX-512 VNNI kernels (x86-64 with AVX512F/BW/VL and AVX512-VNNI; this file
// alone is compiled with those flags and only called after CPU detection).
//
// Same unsigned-code trick as lowbit_avx2.cc (level = mul*u - off, offset
// removed with the activation sum), but `vpdpbusd` multiplies 64 unsigned
// codes by 64 int8 activations and accumulates straight into int32 lanes: no
// int16 stage, hence no overflow hazard (int32 lanes wrap, and the true
// accumulator fits in int32 by the format's rule, so the wrapped result is
// exact after the offset correction).
//
// One 32-byte block is broadcast to both halves of a zmm register and the two
// halves are shifted by different amounts (vpsrlvw), so one register holds the
// codes of fields t and t+1: positions [t*32, t*32+64) of the block, i.e. 64
// consecutive activations. No activation shuffles are needed.
#include <immintrin.h>

#include <algorithm>

#include "kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Z;

template <>
struct Z<Scheme::kBinary> {
  static constexpr int kBits = 1, kFields = 8, kMul = 2, kOff = 1;
  static __m512i Decode(__m512i raw, int pair) {
    const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(2 * pair), _mm256_set1_epi16(2 * pair + 1), 1);
    return _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x01));
  }
};

template <>
struct Z<Scheme::kTernary> {
  static constexpr int kBits = 2, kFields = 4, kMul = 1, kOff = 1;
  static __m512i Decode(__m512i raw, int pair) {
    const __m512i shift = _mm512_inserti64x4(_mm512_set1_epi16(4 * pair), _mm256_set1_epi16(4 * pair + 2), 1);
    return _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x03));
  }
};

inline __m512i Nibbles(__m512i raw) {
  const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
  return _mm512_and_si512(_mm512_srlv_epi16(raw, shift), _mm512_set1_epi8(0x0F));
}

template <>
struct Z<Scheme::kPow2_3bit> {
  static constexpr int kBits = 4, kFields = 2, kMul = 1, kOff = 4;
  static __m512i Decode(__m512i raw, int) {
    const __m512i table = _mm512_broadcast_i32x4(
        _mm_setr_epi8(4, 5, 6, 8, 4, 4, 4, 4, 4, 3, 2, 0, 4, 4, 4, 4));
    return _mm512_shuffle_epi8(table, Nibbles(raw));
  }
};

template <>
struct Z<Scheme::kPow2_4bit> {
  static constexpr int kBits = 4, kFields = 2, kMul = 1, kOff = 64;
  static __m512i Decode(__m512i raw, int) {
    const __m512i table = _mm512_broadcast_i32x4(
        _mm_setr_epi8(64, 65, 66, 68, 72, 80, 96, (char)128, 64, 63, 62, 60, 56, 48, 32, 0));
    return _mm512_shuffle_epi8(table, Nibbles(raw));
  }
};

template <Scheme S, int MR, int NR>
void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda, const int32_t* sumq,
          int64_t nblocks, int32_t* c, int64_t ldc) {
  using K = Z<S>;
  constexpr int kWpb = 32 * K::kFields;
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
    const int8_t* ab = a + b * kWpb;
    for (int pair = 0; pair < kPairs; ++pair) {
      __m512i u[MR];
      for (int r = 0; r < MR; ++r) u[r] = K::Decode(raw[r], pair);
      for (int p = 0; p < NR; ++p) {
        const __m512i av = _mm512_loadu_si512(ab + p * lda + pair * 64);
        for (int r = 0; r < MR; ++r) acc[r][p] = _mm512_dpbusd_epi32(acc[r][p], u[r], av);
      }
    }
  }
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NR; ++p) {
      const uint32_t sum_uq = static_cast<uint32_t>(_mm512_reduce_add_epi32(acc[r][p]));
      const uint32_t v = static_cast<uint32_t>(K::kMul) * sum_uq -
                         static_cast<uint32_t>(K::kOff) * static_cast<uint32_t>(sumq[p]);
      c[p * ldc + r] = static_cast<int32_t>(v);
    }
  }
}

// Ternary GEMV (one activation row) without shifts: field t of a byte is
// masked in place, so the code arrives multiplied by 4^t. Each pair of fields
// (2p in the low 256 bits, 2p + 1 in the high ones, as in Tile) gets its own
// accumulator, whose lanes are then exact multiples of 16^p (low) or
// 4 * 16^p (high) and are shifted back once at the end (vpsravd). A
// vpdpbusd lane gains at most 4 * 128 * 127 per block, so this holds for
// nblocks <= kMaskedMaxBlocks (the caller checks).
constexpr int64_t kMaskedMaxBlocks = 32768;

template <int MR>
void TernaryGemvTile(const uint8_t* w, int64_t row_bytes, const int8_t* a, const int32_t* sumq,
                     int64_t nblocks, int32_t* c) {
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
  const __m512i shift0 = _mm512_inserti64x4(_mm512_set1_epi32(0), _mm256_set1_epi32(2), 1);
  const __m512i shift1 = _mm512_inserti64x4(_mm512_set1_epi32(4), _mm256_set1_epi32(6), 1);
  for (int r = 0; r < MR; ++r) {
    const __m512i v = _mm512_add_epi32(_mm512_srav_epi32(acc[r][0], shift0),
                                       _mm512_srav_epi32(acc[r][1], shift1));
    // sum(level * q) = sum(code * q) - sum(q), wrapping like uint32 (exact when it fits).
    const uint32_t sum_uq = static_cast<uint32_t>(_mm512_reduce_add_epi32(v));
    c[r] = static_cast<int32_t>(sum_uq - static_cast<uint32_t>(sumq[0]));
  }
}

void TernaryGemv(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                 const int32_t* sumq, int64_t nblocks, int32_t* c) {
  int64_t i = 0;
  for (; i + 8 <= n_rows; i += 8) TernaryGemvTile<8>(w + i * row_bytes, row_bytes, a, sumq, nblocks, c + i);
  for (; i < n_rows; ++i) TernaryGemvTile<1>(w + i * row_bytes, row_bytes, a, sumq, nblocks, c + i);
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
  constexpr int NR = 4;
  int64_t j = 0;
  if (n_act >= NR) {
    for (; j + NR <= n_act; j += NR)
      RowPanel<S, 4, NR>(w, row_bytes, n_rows, a + j * lda, lda, sumq + j, nblocks, c + j * ldc,
                         ldc);
  }
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<S, 4, 3>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 2) RowPanel<S, 4, 2>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 1) {
    if (S == Scheme::kTernary && nblocks <= kMaskedMaxBlocks)
      TernaryGemv(w, row_bytes, n_rows, aj, sumq + j, nblocks, cj);
    else
      RowPanel<S, 8, 1>(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  }
}

void GemmAvx512Vnni(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
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

}  // namespace

}  // namespace internal
}  // namespace tfq

// ---------------------------------------------------------------------------
// Convolution GEMM in the channel-interleaved execution layout.
//
// The row-dot kernel above needs one horizontal reduction per output, which
// dominates when rows are short (a 3x3x64 convolution has k = 576). Here the
// 16 int32 lanes of a zmm accumulator are 16 output channels: for each group
// of 4 consecutive positions k..k+3, one vpdpbusd multiplies the 16 channels'
// 4 codes by the same 4 activations (broadcast), like XNNPACK's int8 GEMM,
// with no reduction at all. The execution layout is a permutation of the
// stored bytes (same size, prepared once per node): for each group of 16
// channels, block b and byte quad q, the 16 rows' bytes [b*32 + 4q, +4)
// side by side (64 bytes). Byte i of channel c's quad then holds, in field t,
// the code of k = b*wpb + t*32 + 4q + i.

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
inline __m512i DecodeField(__m512i raw, int t) {
  using K = Z<S>;
  if (K::kBits == 4) {
    const __m512i f = _mm512_and_si512(_mm512_srli_epi16(raw, 4 * t), _mm512_set1_epi8(0x0F));
    const __m512i table =
        S == Scheme::kPow2_3bit
            ? _mm512_broadcast_i32x4(_mm_setr_epi8(4, 5, 6, 8, 4, 4, 4, 4, 4, 3, 2, 0, 4, 4, 4, 4))
            : _mm512_broadcast_i32x4(_mm_setr_epi8(64, 65, 66, 68, 72, 80, 96, (char)128, 64, 63,
                                                   62, 60, 56, 48, 32, 0));
    return _mm512_shuffle_epi8(table, f);
  }
  const char mask = static_cast<char>((1 << K::kBits) - 1);
  return _mm512_and_si512(_mm512_srli_epi16(raw, K::kBits * t), _mm512_set1_epi8(mask));
}

// MG groups of 16 channels x NR activation rows.
template <Scheme S, int MG, int NR>
void ExecTile(const uint8_t* wx, int64_t group_bytes, int64_t nblocks, int64_t k_valid,
              const int8_t* a, int64_t lda, const int32_t* sumq, int32_t* c, int64_t ldc,
              int valid_last) {
  using K = Z<S>;
  constexpr int kWpb = 32 * K::kFields;
  __m512i acc[MG][NR];
  for (int g = 0; g < MG; ++g)
    for (int p = 0; p < NR; ++p) acc[g][p] = _mm512_setzero_si512();
  for (int64_t b = 0; b < nblocks; ++b) {
    for (int q = 0; q < 8; ++q) {
      if (b * kWpb + 4 * q >= k_valid) break;  // the rest of the block is padding
      __m512i raw[MG];
      for (int g = 0; g < MG; ++g)
        raw[g] = _mm512_loadu_si512(wx + g * group_bytes + (b * 8 + q) * 64);
      for (int t = 0; t < K::kFields; ++t) {
        const int64_t off = b * kWpb + t * 32 + 4 * q;
        if (off >= k_valid) break;  // padding of the last block: activations are 0
        __m512i u[MG];
        for (int g = 0; g < MG; ++g) u[g] = DecodeField<S>(raw[g], t);
        for (int p = 0; p < NR; ++p) {
          int32_t quad;
          __builtin_memcpy(&quad, a + p * lda + off, 4);
          const __m512i av = _mm512_set1_epi32(quad);
          for (int g = 0; g < MG; ++g) acc[g][p] = _mm512_dpbusd_epi32(acc[g][p], u[g], av);
        }
      }
    }
  }
  for (int p = 0; p < NR; ++p) {
    const __m512i corr = _mm512_set1_epi32(static_cast<int32_t>(
        static_cast<uint32_t>(K::kOff) * static_cast<uint32_t>(sumq[p])));
    for (int g = 0; g < MG; ++g) {
      __m512i v = acc[g][p];
      if (K::kMul == 2) v = _mm512_add_epi32(v, v);
      v = _mm512_sub_epi32(v, corr);  // wraps like uint32: exact when the result fits
      int32_t* dst = c + p * ldc + g * 16;
      if (g == MG - 1 && valid_last < 16) {
        _mm512_mask_storeu_epi32(dst, static_cast<__mmask16>((1u << valid_last) - 1), v);
      } else {
        _mm512_storeu_si512(dst, v);
      }
    }
  }
}

template <Scheme S, int MG>
void ExecPanel(const uint8_t* wx, int64_t group_bytes, int64_t nblocks, int64_t k_valid,
               const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act, int32_t* c,
               int64_t ldc, int valid_last) {
  int64_t j = 0;
  for (; j + 8 <= n_act; j += 8)
    ExecTile<S, MG, 8>(wx, group_bytes, nblocks, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
  if (j + 4 <= n_act) {
    ExecTile<S, MG, 4>(wx, group_bytes, nblocks, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
    j += 4;
  }
  if (j + 2 <= n_act) {
    ExecTile<S, MG, 2>(wx, group_bytes, nblocks, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
    j += 2;
  }
  if (j < n_act)
    ExecTile<S, MG, 1>(wx, group_bytes, nblocks, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
}

template <Scheme S>
void GemmExecScheme(const uint8_t* wx, int64_t out_c, int64_t nblocks, int64_t k_valid,
                    const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act, int32_t* c,
                    int64_t ldc) {
  const int64_t groups = (out_c + 15) / 16;
  const int64_t group_bytes = nblocks * 32 * 16;
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const int valid = static_cast<int>(std::min<int64_t>(16, out_c - (g + 1) * 16));
    ExecPanel<S, 2>(wx + g * group_bytes, group_bytes, nblocks, k_valid, a, lda, sumq, n_act, c + g * 16,
                    ldc, valid);
  }
  if (g < groups) {
    const int valid = static_cast<int>(std::min<int64_t>(16, out_c - g * 16));
    ExecPanel<S, 1>(wx + g * group_bytes, group_bytes, nblocks, k_valid, a, lda, sumq, n_act, c + g * 16,
                    ldc, valid);
  }
}

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

// Float epilogue: cvtdq2ps, mulps, addps (no FMA: the portable epilogue is
// compiled with -ffp-contract=off), then vmaxps(0, v) / vminps(6, v), which
// return their second operand on NaN and on equal zeros, exactly like
// `v < 0 ? 0 : v` and `v > 6 ? 6 : v`.
template <Activation A, bool kBias>
void EpilogueRowsT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                   int64_t rows, float* y, int64_t ldy) {
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    float* yr = y + r * ldy;
    // Outputs [i, i + 16) under mask k (b is null without bias: no offset on it).
    const auto out16 = [&](int64_t i, __mmask16 k) {
      __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, ar + i)),
                               _mm512_maskz_loadu_ps(k, f + i));
      if (kBias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
      if (A != Activation::kNone) v = _mm512_max_ps(zero, v);
      if (A == Activation::kRelu6) v = _mm512_min_ps(six, v);
      _mm512_mask_storeu_ps(yr + i, k, v);
    };
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) out16(i, static_cast<__mmask16>(0xFFFF));
    if (i < n) out16(i, static_cast<__mmask16>((1u << (n - i)) - 1));
  }
}

void EpilogueRowsAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                        int64_t rows, float* y, int64_t ldy, Activation a) {
  switch (a) {
    case Activation::kNone:
      return b ? EpilogueRowsT<Activation::kNone, true>(acc, lda, f, b, n, rows, y, ldy)
               : EpilogueRowsT<Activation::kNone, false>(acc, lda, f, b, n, rows, y, ldy);
    case Activation::kRelu:
      return b ? EpilogueRowsT<Activation::kRelu, true>(acc, lda, f, b, n, rows, y, ldy)
               : EpilogueRowsT<Activation::kRelu, false>(acc, lda, f, b, n, rows, y, ldy);
    case Activation::kRelu6:
      return b ? EpilogueRowsT<Activation::kRelu6, true>(acc, lda, f, b, n, rows, y, ldy)
               : EpilogueRowsT<Activation::kRelu6, false>(acc, lda, f, b, n, rows, y, ldy);
  }
}

// The int8 hand-over epilogue: as above with the ReLU6 clamps written
// vmaxps(v, 0) / vminps(v, 6), which map NaN to 0 like the portable
// `v > 0 ? v : 0`, then vcvtps2dq (half to even, like nearbyint) and a
// truncating vpmovdb (the codes lie in [0, 127]).
template <bool kBias>
inline __m512i HandoverCodes16(const int32_t* acc, const float* f, const float* b, __mmask16 k) {
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(k, acc)),
                           _mm512_maskz_loadu_ps(k, f));
  if (kBias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b));
  v = _mm512_min_ps(_mm512_max_ps(v, zero), six);
  return _mm512_cvtps_epi32(_mm512_mul_ps(v, _mm512_set1_ps(kHandoverScale)));
}

template <bool kBias>
void EpilogueRowsQT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                    int64_t rows, int8_t* q, int64_t ldq) {
  constexpr __mmask16 kAll = 0xFFFF;
  // vpermd order that undoes the 128-bit-lane interleave of the two packs.
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    int8_t* qr = q + r * ldq;
    // Codes of outputs [j, j + 16) (b is null without bias: no offset on it).
    const auto codes = [&](int64_t j, __mmask16 k) {
      return HandoverCodes16<kBias>(ar + j, f + j, kBias ? b + j : nullptr, k);
    };
    int64_t i = 0;
    // 64 outputs per step: saturating packs (the codes lie in [0, 127]) and
    // one 64-byte store, instead of a vpmovdb per 16.
    for (; i + 64 <= n; i += 64) {
      // The stores miss (the codes of a 112x112 layer exceed L2): ask for
      // the lines 4 rows ahead in exclusive state (a hint, never a fault).
      _mm_prefetch(reinterpret_cast<const char*>(qr + 4 * ldq + i), _MM_HINT_ET0);
      const __m512i bytes = _mm512_packs_epi16(_mm512_packs_epi32(codes(i, kAll), codes(i + 16, kAll)),
                                               _mm512_packs_epi32(codes(i + 32, kAll), codes(i + 48, kAll)));
      _mm512_storeu_si512(qr + i, _mm512_permutexvar_epi32(order, bytes));
    }
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qr + i), _mm512_cvtepi32_epi8(codes(i, kAll)));
    if (i < n) {
      const __mmask16 k = static_cast<__mmask16>((1u << (n - i)) - 1);
      _mm_mask_storeu_epi8(qr + i, k, _mm512_cvtepi32_epi8(codes(i, k)));
    }
  }
}

void EpilogueRowsQAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                         int64_t rows, int8_t* q, int64_t ldq) {
  if (b) EpilogueRowsQT<true>(acc, lda, f, b, n, rows, q, ldq);
  else EpilogueRowsQT<false>(acc, lda, f, b, n, rows, q, ldq);
}

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

int64_t QuantizeAvx512(const float* x, int64_t n, float s, int8_t* q) {
  const __m512 vs = _mm512_set1_ps(s);
  const __m512i perm = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  const __m512i lo = _mm512_set1_epi8(-127);
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
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
    _mm512_storeu_si512(q + i, r);
    sad = _mm512_add_epi64(sad, _mm512_sad_epu8(_mm512_xor_si512(r, flip), _mm512_setzero_si512()));
  }
  int64_t sum = _mm512_reduce_add_epi64(sad) - 128 * i;
  if (i < n) sum += RefTable().quantize(x + i, n - i, s, q + i);
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

}  // namespace

void GemmExecAvx512Vnni(Scheme s, const uint8_t* wx, int64_t out_c, int64_t nblocks,
                        int64_t k_valid, const int8_t* a, int64_t lda, const int32_t* sumq,
                        int64_t n_act, int32_t* c, int64_t ldc) {
  switch (s) {
    case Scheme::kBinary:
      return GemmExecScheme<Scheme::kBinary>(wx, out_c, nblocks, k_valid, a, lda, sumq, n_act, c, ldc);
    case Scheme::kTernary:
      return GemmExecScheme<Scheme::kTernary>(wx, out_c, nblocks, k_valid, a, lda, sumq, n_act, c, ldc);
    case Scheme::kPow2_3bit:
      return GemmExecScheme<Scheme::kPow2_3bit>(wx, out_c, nblocks, k_valid, a, lda, sumq, n_act, c, ldc);
    case Scheme::kPow2_4bit:
      return GemmExecScheme<Scheme::kPow2_4bit>(wx, out_c, nblocks, k_valid, a, lda, sumq, n_act, c, ldc);
  }
}

}  // namespace internal
}  // namespace tfq

namespace tfq {
namespace internal {

const KernelTable* Avx512VnniTableImpl(const KernelTable& avx2) {
  static const KernelTable table = {Isa::kAvx512Vnni, AbsMaxAvx512,         QuantizeAvx512,
                                    SumI8Avx512,      GemmAvx512Vnni,       avx2.depthwise_pixel,
                                    DepthwiseLevelsAvx512, 16,          GemmExecAvx512Vnni,
                                    DepthwiseLevelsRowAvx512, EpilogueRowsAvx512,
                                    EpilogueRowsQAvx512, SumRowsI8Avx512};
  return &table;
}

}  // namespace internal
}  // namespace tfq
