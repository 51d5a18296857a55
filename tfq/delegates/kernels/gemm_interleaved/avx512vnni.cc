// GEMM on the channel-interleaved execution layout, AVX-512 VNNI (compiled
// with the AVX-512 flags; called only after CPU detection).
//
// The row-dot GEMM (gemm/avx512vnni.cc) needs one horizontal reduction per output, which
// dominates when rows are short (a 3x3x64 convolution has k = 576). Here the
// 16 int32 lanes of a zmm accumulator are 16 output channels: for each group
// of 4 consecutive positions k..k+3, one vpdpbusd multiplies the 16 channels'
// 4 codes by the same 4 activations (broadcast), like XNNPACK's int8 GEMM,
// with no reduction at all. The execution layout is a permutation of the
// stored bytes (same size, prepared once per node): for each group of 16
// channels, block b and byte quad q, the 16 rows' bytes [b*32 + 4q, +4)
// side by side (64 bytes). Byte i of channel c's quad then holds, in field t,
// the code of k = b*wpb + t*32 + 4q + i. Version-2 dense rows continue
// with their mini-blocks the same way, quad by quad (4 * bits bytes, bits
// quads each): byte i of quad q of mini-block m holds, in field t, the code
// of k = nblocks*wpb + m*32 + t*4*bits + 4q + i. The layout is built once
// per weight tensor (PrepareExecWeights, weights.cc).
#include <immintrin.h>

#include <algorithm>

#include "kernels/codes/avx512.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S, int MG, int NR>
void ExecTile(const uint8_t* wx, int64_t group_bytes, int64_t nblocks, int64_t ntail,
              int64_t k_valid, const int8_t* a, int64_t lda, const int32_t* sumq, int32_t* c,
              int64_t ldc, int valid_last) {
  using K = Avx512Codes<S>;
  constexpr int kWpb = K::kWpb;
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
        for (int g = 0; g < MG; ++g) u[g] = K::DecodeField(raw[g], t);
        for (int p = 0; p < NR; ++p) {
          int32_t quad;
          __builtin_memcpy(&quad, a + p * lda + off, 4);
          const __m512i av = _mm512_set1_epi32(quad);
          for (int g = 0; g < MG; ++g) acc[g][p] = _mm512_dpbusd_epi32(acc[g][p], u[g], av);
        }
      }
    }
  }
  // Mini-blocks: bits quads each, field t of quad q at k = base + t*4*bits + 4q.
  constexpr int kMiniBytes = MiniBlockBytes(S);
  for (int64_t m = 0; m < ntail; ++m) {
    const int64_t base = nblocks * kWpb + m * kMiniWeights;
    for (int q = 0; q < K::kBits; ++q) {
      if (base + 4 * q >= k_valid) break;  // the rest of the mini-block is padding
      __m512i raw[MG];
      for (int g = 0; g < MG; ++g)
        raw[g] = _mm512_loadu_si512(wx + g * group_bytes + (nblocks * 8 + m * K::kBits + q) * 64);
      for (int t = 0; t < K::kFields; ++t) {
        const int64_t off = base + t * kMiniBytes + 4 * q;
        if (off >= k_valid) break;
        __m512i u[MG];
        for (int g = 0; g < MG; ++g) u[g] = K::DecodeField(raw[g], t);
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
        static_cast<uint32_t>(K::kBiasedOff) * static_cast<uint32_t>(sumq[p])));
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
void ExecPanel(const uint8_t* wx, int64_t group_bytes, int64_t nblocks, int64_t ntail, int64_t k_valid,
               const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act, int32_t* c,
               int64_t ldc, int valid_last) {
  int64_t j = 0;
  for (; j + 8 <= n_act; j += 8)
    ExecTile<S, MG, 8>(wx, group_bytes, nblocks, ntail, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
  if (j + 4 <= n_act) {
    ExecTile<S, MG, 4>(wx, group_bytes, nblocks, ntail, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
    j += 4;
  }
  if (j + 2 <= n_act) {
    ExecTile<S, MG, 2>(wx, group_bytes, nblocks, ntail, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
    j += 2;
  }
  if (j < n_act)
    ExecTile<S, MG, 1>(wx, group_bytes, nblocks, ntail, k_valid, a + j * lda, lda, sumq + j, c + j * ldc, ldc,
                       valid_last);
}

template <Scheme S>
void GemmExecScheme(const uint8_t* wx, int64_t out_c, int64_t nblocks, int64_t ntail, int64_t k_valid,
                    const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act, int32_t* c,
                    int64_t ldc) {
  const int64_t groups = (out_c + 15) / 16;
  const int64_t group_bytes = (nblocks * 32 + ntail * MiniBlockBytes(S)) * 16;
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const int valid = static_cast<int>(std::min<int64_t>(16, out_c - (g + 1) * 16));
    ExecPanel<S, 2>(wx + g * group_bytes, group_bytes, nblocks, ntail, k_valid, a, lda, sumq, n_act, c + g * 16,
                    ldc, valid);
  }
  if (g < groups) {
    const int valid = static_cast<int>(std::min<int64_t>(16, out_c - g * 16));
    ExecPanel<S, 1>(wx + g * group_bytes, group_bytes, nblocks, ntail, k_valid, a, lda, sumq, n_act, c + g * 16,
                    ldc, valid);
  }
}

}  // namespace

void GemmExecAvx512Vnni(Scheme s, const uint8_t* wx, int64_t out_c, int64_t nblocks, int64_t ntail,
                        int64_t k_valid, const int8_t* a, int64_t lda, const int32_t* sumq,
                        int64_t n_act, int32_t* c, int64_t ldc) {
  DispatchScheme(s, [&](auto scheme) {
    GemmExecScheme<decltype(scheme)::value>(wx, out_c, nblocks, ntail, k_valid, a, lda, sumq, n_act,
                                            c, ldc);
  });
}

}  // namespace internal
}  // namespace tfq
