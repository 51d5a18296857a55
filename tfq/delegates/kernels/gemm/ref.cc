// GEMM, scalar reference: portable C++, always built, the ground truth
// the SIMD kernels are tested against (and what runs on CPUs without a fast
// path).

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

void GemmRef(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
             int64_t lda, const int32_t* /*sumq*/, int64_t n_act, int64_t nblocks, int64_t ntail,
             int32_t* c, int64_t ldc) {
  const int bits = SchemeBits(s);
  const int wpb = WeightsPerBlock(s);
  const int fields = 8 / bits;
  const int mini_bytes = MiniBlockBytes(s);
  for (int64_t j = 0; j < n_act; ++j) {
    const int8_t* arow = a + j * lda;
    for (int64_t i = 0; i < n_rows; ++i) {
      const uint8_t* wrow = w + i * row_bytes;
      int64_t acc = 0;
      for (int64_t b = 0; b < nblocks; ++b) {
        const uint8_t* block = wrow + b * 32;
        for (int t = 0; t < fields; ++t) {
          for (int jj = 0; jj < 32; ++jj) {
            const int level = CodeLevel(s, FieldCode(block, bits, t, jj));
            acc += static_cast<int64_t>(level) * arow[b * wpb + t * 32 + jj];
          }
        }
      }
      // Mini-blocks: byte jj, field t holds position base + t * mini_bytes + jj.
      for (int64_t m = 0; m < ntail; ++m) {
        const uint8_t* mini = wrow + nblocks * 32 + m * mini_bytes;
        const int8_t* am = arow + nblocks * wpb + m * kMiniWeights;
        for (int t = 0; t < fields; ++t) {
          for (int jj = 0; jj < mini_bytes; ++jj) {
            const int level = CodeLevel(s, FieldCode(mini, bits, t, jj));
            acc += static_cast<int64_t>(level) * am[t * mini_bytes + jj];
          }
        }
      }
      c[j * ldc + i] = static_cast<int32_t>(acc);
    }
  }
}

}  // namespace internal
}  // namespace tfq
