// The int8 hand-over epilogue, NEON (aarch64, default flags; used by both
// NEON tables).
#include <arm_neon.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {
namespace {

// The int8 hand-over epilogue (HandoverCode, 8 outputs at a time):
// vmaxnmq(v, 0) maps NaN to 0 like the portable `v > 0 ? v : 0` (and -0 to
// +0), vminq(v, 6), then vcvtnq (ties to even, like nearbyint); the codes in
// [0, 127] pass the saturating narrows unchanged.
template <bool kBias>
void EpilogueRowsQT(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                    int64_t rows, int8_t* q, int64_t ldq) {
  const float32x4_t zero = vdupq_n_f32(0.0f), six = vdupq_n_f32(6.0f);
  const float32x4_t scale = vdupq_n_f32(kHandoverScale);
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* ar = acc + r * lda;
    int8_t* qr = q + r * ldq;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
      float32x4_t v0 = vmulq_f32(vcvtq_f32_s32(vld1q_s32(ar + i)), vld1q_f32(f + i));
      float32x4_t v1 = vmulq_f32(vcvtq_f32_s32(vld1q_s32(ar + i + 4)), vld1q_f32(f + i + 4));
      if (kBias) {
        v0 = vaddq_f32(v0, vld1q_f32(b + i));
        v1 = vaddq_f32(v1, vld1q_f32(b + i + 4));
      }
      v0 = vminq_f32(vmaxnmq_f32(v0, zero), six);
      v1 = vminq_f32(vmaxnmq_f32(v1, zero), six);
      const int16x8_t w = vcombine_s16(vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(v0, scale))),
                                       vqmovn_s32(vcvtnq_s32_f32(vmulq_f32(v1, scale))));
      vst1_s8(qr + i, vqmovn_s16(w));
    }
    HandoverCodes<kBias>(ar, f, b, i, n, qr);
  }
}

}  // namespace

void EpilogueRowsQNeon(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq) {
  DispatchBias(b, [&](auto bias) {
    EpilogueRowsQT<decltype(bias)::value>(acc, lda, f, b, n, rows, q, ldq);
  });
}

}  // namespace internal
}  // namespace tfq
