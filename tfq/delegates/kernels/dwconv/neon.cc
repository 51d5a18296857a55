// Depthwise convolution, NEON (aarch64, default flags; used by both NEON
// tables: the dot product does not help here, nothing is summed along a
// contiguous vector). 32 channels of one tap at a time, levels decoded with
// codes/neon.h, products in int16 lanes (one per tap), widened after
// SchemeCodes::kTapsPerWiden taps (256 / 64 / 4).
#include <arm_neon.h>

#include <cstring>

#include "kernels/codes/neon.h"
#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct NeonPixel {
  static void Run(const uint8_t* codes, int64_t row_bytes, const int8_t* const* taps, int ntaps,
                  int out_c, int32_t* acc) {
    using K = SchemeCodes<S>;
    constexpr int kFields = K::kFields;
    const int8x16_t table = LevelTable(S);
    const int groups = (out_c + 31) / 32;
    for (int g = 0; g < groups; ++g) {
      const int b = g / kFields, t = g % kFields;
      int32x4_t a32[8];
      for (int i = 0; i < 8; ++i) a32[i] = vdupq_n_s32(0);
      int tap = 0;
      while (tap < ntaps) {
        const int tap1 = tap + K::kTapsPerWiden < ntaps ? tap + K::kTapsPerWiden : ntaps;
        int16x8_t s0 = vdupq_n_s16(0), s1 = s0, s2 = s0, s3 = s0;
        for (; tap < tap1; ++tap) {
          if (taps[tap] == nullptr) continue;
          const uint8_t* blk = codes + tap * row_bytes + b * 32;
          const Levels32 l =
              DecodeField(vld1q_u8(blk), vld1q_u8(blk + 16), K::kBits, t, table);
          // Reads 32 channels; the caller leaves slack after the image so that
          // a partial last group stays inside the buffer.
          const int8x16_t q_lo = vld1q_s8(taps[tap] + g * 32);
          const int8x16_t q_hi = vld1q_s8(taps[tap] + g * 32 + 16);
          s0 = vmlal_s8(s0, vget_low_s8(l.lo), vget_low_s8(q_lo));
          s1 = vmlal_high_s8(s1, l.lo, q_lo);
          s2 = vmlal_s8(s2, vget_low_s8(l.hi), vget_low_s8(q_hi));
          s3 = vmlal_high_s8(s3, l.hi, q_hi);
        }
        a32[0] = vaddw_s16(a32[0], vget_low_s16(s0));
        a32[1] = vaddw_high_s16(a32[1], s0);
        a32[2] = vaddw_s16(a32[2], vget_low_s16(s1));
        a32[3] = vaddw_high_s16(a32[3], s1);
        a32[4] = vaddw_s16(a32[4], vget_low_s16(s2));
        a32[5] = vaddw_high_s16(a32[5], s2);
        a32[6] = vaddw_s16(a32[6], vget_low_s16(s3));
        a32[7] = vaddw_high_s16(a32[7], s3);
      }
      const int n = out_c - g * 32 < 32 ? out_c - g * 32 : 32;
      if (n == 32) {
        for (int i = 0; i < 8; ++i) vst1q_s32(acc + g * 32 + 4 * i, a32[i]);
      } else {
        int32_t tmp[32];
        for (int i = 0; i < 8; ++i) vst1q_s32(tmp + 4 * i, a32[i]);
        std::memcpy(acc + g * 32, tmp, n * sizeof(int32_t));
      }
    }
  }
};

}  // namespace

void DepthwisePixelNeon(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc) {
  DepthwisePixelDm1<NeonPixel>(s, codes, row_bytes, taps, ntaps, depth_multiplier, out_c, acc);
}


}  // namespace internal
}  // namespace tfq
