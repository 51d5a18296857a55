// Depthwise convolution, scalar reference: portable C++, always built, the ground truth
// the SIMD kernels are tested against (and what runs on CPUs without a fast
// path).

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

void DepthwisePixelRef(Scheme s, const uint8_t* codes, int64_t row_bytes,
                       const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                       int32_t* acc) {
  const int bits = SchemeBits(s);
  const int wpb = WeightsPerBlock(s);
  for (int o = 0; o < out_c; ++o) {
    int64_t sum = 0;
    const int b = o / wpb, r = o % wpb, t = r / 32, jj = r % 32;
    for (int tap = 0; tap < ntaps; ++tap) {
      if (taps[tap] == nullptr) continue;
      const uint8_t* block = codes + tap * row_bytes + b * 32;
      sum += static_cast<int64_t>(CodeLevel(s, FieldCode(block, bits, t, jj))) *
             taps[tap][o / depth_multiplier];
    }
    acc[o] = static_cast<int32_t>(sum);
  }
}

}  // namespace internal
}  // namespace tfq
