// Block-sparse GEMM, plain NEON (every ARMv8-A core; default flags). Layout
// and driver: sparse/neon_tile.h.
//
// Without sdot, `smull` / `smlal` multiply 8 levels (2 rows x 4 positions of
// one quad) with the quad's 4 activations repeated twice into int16 lanes,
// and `sadalp` widens pairs of lanes into int32 accumulators: per 4 rows and
// pixel one accumulator for rows 0-1 and one for rows 2-3, each lane the sum
// of 2 positions; a final pairwise add gives the 4 row sums. The quads of a
// block row are taken 4 at a time (from one block, or from consecutive
// blocks when C < 16) and summed in int16 before each widening: each lane
// then holds 4 products, at most 4 x 127 x 64 = 32512 (pow2_4bit's largest
// level), which fits.
#include <arm_neon.h>

#include "kernels/microkernels.h"
#include "kernels/sparse/neon_tile.h"

namespace tfq {
namespace internal {
namespace {

constexpr int kQuadsPerWiden = 4;
static_assert(kQuadsPerWiden * 127 * MaxAbsLevel(Scheme::kPow2_4bit) <= 32767 &&
                  MaxAbsLevel(Scheme::kPow2_4bit) >= MaxAbsLevel(Scheme::kPow2_3bit) &&
                  MaxAbsLevel(Scheme::kPow2_4bit) >= MaxAbsLevel(Scheme::kTernary),
              "int16 lanes must hold kQuadsPerWiden products of every scheme");

template <int kBits, int kIndexBytes, int G, int NP, int kQ>
struct WideningTile {
  static constexpr int U = G == 1 ? 4 : 8;       // rows per unit of the repacked codes
  static constexpr int kUb = 4 * U * kBits / 8;  // bytes per unit
  static constexpr int kUnits = 4 * G / U;
  static constexpr int H = U / 4;  // registers per unit

  // W quads (unit codes cp[i], activations at a[p] + ao[i]) into the
  // accumulators: lo[g][p] lanes = rows 4g, 4g+1, hi[g][p] = rows 4g+2, 4g+3.
  template <int W>
  static inline void Step(const uint8_t* const* cp, const int64_t* ao, const uint8_t* const* a,
                          int8x16_t lut, int32x4_t (&lo)[G][NP], int32x4_t (&hi)[G][NP]) {
    for (int u = 0; u < kUnits; ++u) {
      int8x16_t w[W][H];
      for (int i = 0; i < W; ++i) SpNeonDecode<kBits, U>(cp[i] + u * kUb, lut, w[i]);
      for (int p = 0; p < NP; ++p) {
        int8x8_t av[W];
        for (int i = 0; i < W; ++i) av[i] = vreinterpret_s8_s32(vdup_n_s32(SpNeonLoadQ32(a[p] + ao[i])));
        for (int h = 0; h < H; ++h) {
          int16x8_t s_lo = vmull_s8(vget_low_s8(w[0][h]), av[0]);
          int16x8_t s_hi = vmull_s8(vget_high_s8(w[0][h]), av[0]);
          for (int i = 1; i < W; ++i) {
            s_lo = vmlal_s8(s_lo, vget_low_s8(w[i][h]), av[i]);
            s_hi = vmlal_s8(s_hi, vget_high_s8(w[i][h]), av[i]);
          }
          const int g = u * H + h;
          lo[g][p] = vpadalq_s16(lo[g][p], s_lo);
          hi[g][p] = vpadalq_s16(hi[g][p], s_hi);
        }
      }
    }
  }

  static void Run(const SpNeonBlockRow& br, const uint8_t* const* a, int8x16_t lut, int32_t* out,
                  int64_t ldo) {
    int32x4_t lo[G][NP], hi[G][NP];
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < NP; ++p) lo[g][p] = hi[g][p] = vdupq_n_s32(0);
    const int nq = kQ > 0 ? kQ : br.nq;
    // The stream of quads of the block row, kQuadsPerWiden at a time.
    const uint8_t* cp[kQuadsPerWiden];
    int64_t ao[kQuadsPerWiden];
    int pending = 0;
    for (int64_t e = 0; e < br.n; ++e) {
      const int64_t off = br.coloff[SparseIndexAt<kIndexBytes>(br.idx, e)];
      const uint8_t* wb = br.codes + e * br.block_bytes;
      for (int j = 0; j < nq; ++j) {
        cp[pending] = wb + j * kUnits * kUb;
        ao[pending] = off + 4 * j;
        if (++pending == kQuadsPerWiden) {
          Step<kQuadsPerWiden>(cp, ao, a, lut, lo, hi);
          pending = 0;
        }
      }
    }
    for (int i = 0; i < pending; ++i) Step<1>(cp + i, ao + i, a, lut, lo, hi);
    // lo = [r0 c01, r0 c23, r1 c01, r1 c23], hi the same for rows 2, 3.
    for (int g = 0; g < G; ++g)
      for (int p = 0; p < NP; ++p) vst1q_s32(out + p * ldo + 4 * g, vpaddq_s32(lo[g][p], hi[g][p]));
  }
};

}  // namespace

// 32 vector registers: 16 accumulators (2 per 4 rows and pixel), up to 8
// weight registers, the activations and 2 int16 sums.
void SparseGemmNeon(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                    const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  SpNeonDispatch<WideningTile, 8>(w, o0, o1, a, col_offset, n_act, c, ldc);
}

}  // namespace internal
}  // namespace tfq
