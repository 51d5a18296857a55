// Block-sparse GEMM with the dot-product extension (ARMv8.2 `sdot`). This
// file alone among the sparse kernels is compiled with
// -march=armv8.2-a+dotprod and is called only when the CPU reports it
// (dispatch.cc). Layout and driver: sparse/neon_tile.h.
//
// `sdot v.4s, w.16b, a.4b[i]` adds, for each of 4 output channels, the dot
// product of its 4 levels (one quad of a block) with activation dword i:
// one instruction per 4 rows x 4 positions x 1 pixel. The activations of a
// block are read as one 16-byte register per pixel for 4 quads (C a
// multiple of 16), 8 bytes for C = 8 and a broadcast dword for C = 4, each
// unbiased (u ^ 0x80) once per load.
// Wrap-around int32 lanes: exact whenever the true sum fits (the format's
// overflow rule).
#include <arm_neon.h>

#include "kernels/microkernels.h"
#include "kernels/sparse/neon_tile.h"

#if !defined(__ARM_FEATURE_DOTPROD)
#error "sparse/neon_dotprod.cc must be compiled with the dot-product extension (-march=armv8.2-a+dotprod)"
#endif

namespace tfq {
namespace internal {
namespace {

template <int kBits, int kIndexBytes, int G, int NP, int kQ>
struct DotTile {
  static constexpr int U = G == 1 ? 4 : 8;       // rows per unit of the repacked codes
  static constexpr int kUb = 4 * U * kBits / 8;  // bytes per unit
  static constexpr int kUnits = 4 * G / U;

  // The G weight registers of quad j of a block.
  static inline void Weights(const uint8_t* wb, int j, int8x16_t lut, int8x16_t (&w)[G]) {
    for (int u = 0; u < kUnits; ++u) SpNeonDecode<kBits, U>(wb + (j * kUnits + u) * kUb, lut, w + u * (U / 4));
  }

  // Quad L of a 4-quad activation register (the lane must be a constant).
  template <int L>
  static inline void Quad4(const uint8_t* wb, int j0, int8x16_t lut, const int8x16_t (&av)[NP],
                           int32x4_t (&ac)[G][NP]) {
    int8x16_t w[G];
    Weights(wb, j0 + L, lut, w);
    for (int p = 0; p < NP; ++p)
      for (int g = 0; g < G; ++g) ac[g][p] = vdotq_laneq_s32(ac[g][p], w[g], av[p], L);
  }

  static inline void Block(const SpNeonBlockRow& br, int64_t e, const uint8_t* const* a, int8x16_t lut,
                           int32x4_t (&ac)[G][NP]) {
    const int64_t off = br.coloff[SparseIndexAt<kIndexBytes>(br.idx, e)];
    const uint8_t* wb = br.codes + e * br.block_bytes;
    if constexpr (kQ == 1) {
      int8x16_t w[G];
      Weights(wb, 0, lut, w);
      for (int p = 0; p < NP; ++p) {
        const int8x16_t av = vreinterpretq_s8_s32(vdupq_n_s32(SpNeonLoadQ32(a[p] + off)));
        for (int g = 0; g < G; ++g) ac[g][p] = vdotq_s32(ac[g][p], w[g], av);
      }
    } else if constexpr (kQ == 2) {
      int8x8_t av[NP];
      for (int p = 0; p < NP; ++p) av[p] = vreinterpret_s8_u8(veor_u8(vld1_u8(a[p] + off), vdup_n_u8(0x80)));
      int8x16_t w[G];
      Weights(wb, 0, lut, w);
      for (int p = 0; p < NP; ++p)
        for (int g = 0; g < G; ++g) ac[g][p] = vdotq_lane_s32(ac[g][p], w[g], av[p], 0);
      Weights(wb, 1, lut, w);
      for (int p = 0; p < NP; ++p)
        for (int g = 0; g < G; ++g) ac[g][p] = vdotq_lane_s32(ac[g][p], w[g], av[p], 1);
    } else {
      for (int j0 = 0; j0 < br.nq; j0 += 4) {
        int8x16_t av[NP];
        for (int p = 0; p < NP; ++p)
          av[p] = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(a[p] + off + 4 * j0), vdupq_n_u8(0x80)));
        Quad4<0>(wb, j0, lut, av, ac);
        Quad4<1>(wb, j0, lut, av, ac);
        Quad4<2>(wb, j0, lut, av, ac);
        Quad4<3>(wb, j0, lut, av, ac);
      }
    }
  }

  static void Run(const SpNeonBlockRow& br, const uint8_t* const* a, int8x16_t lut, int32_t* out,
                  int64_t ldo) {
    // A single activation row gets two accumulator sets (blocks alternate
    // between them) so that consecutive sdots do not wait on each other.
    constexpr int kSets = NP == 1 ? 2 : 1;
    int32x4_t acc[kSets][G][NP];
    for (int s = 0; s < kSets; ++s)
      for (int g = 0; g < G; ++g)
        for (int p = 0; p < NP; ++p) acc[s][g][p] = vdupq_n_s32(0);
    int64_t e = 0;
    if constexpr (kSets == 2) {
      for (; e + 2 <= br.n; e += 2) {
        Block(br, e, a, lut, acc[0]);
        Block(br, e + 1, a, lut, acc[kSets - 1]);
      }
    }
    for (; e < br.n; ++e) Block(br, e, a, lut, acc[0]);
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < NP; ++p) {
        int32x4_t v = acc[0][g][p];
        if constexpr (kSets == 2) v = vaddq_s32(v, acc[kSets - 1][g][p]);
        vst1q_s32(out + p * ldo + 4 * g, v);
      }
  }
};

}  // namespace

// 32 vector registers: 16 accumulators, up to 8 weight and 8 activation
// registers.
void SparseGemmNeonDotprod(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                           const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  SpNeonDispatch<DotTile, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
}

}  // namespace internal
}  // namespace tfq
