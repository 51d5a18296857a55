// Activation statistics, quantization and int8 sums, NEON (aarch64, default
// flags; used by both NEON tables).
#include <arm_neon.h>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

float AbsMaxNeon(const float* x, int64_t n, bool* nonfinite) {
  const float32x4_t big = vdupq_n_f32(3.402823466e38f);
  float32x4_t m0 = vdupq_n_f32(0.0f), m1 = m0;
  uint32x4_t ok = vdupq_n_u32(0xFFFFFFFFu);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float32x4_t a = vabsq_f32(vld1q_f32(x + i));
    const float32x4_t b = vabsq_f32(vld1q_f32(x + i + 4));
    // a <= FLT_MAX is false for NaN and infinity.
    ok = vandq_u32(ok, vandq_u32(vcleq_f32(a, big), vcleq_f32(b, big)));
    m0 = vmaxq_f32(m0, a);
    m1 = vmaxq_f32(m1, b);
  }
  bool bad = vminvq_u32(ok) == 0;
  float mx = bad ? 0.0f : vmaxvq_f32(vmaxq_f32(m0, m1));
  for (; i < n; ++i) {
    const float v = x[i] < 0 ? -x[i] : x[i];
    if (!(v <= 3.402823466e38f)) bad = true;
    else if (v > mx) mx = v;
  }
  *nonfinite = bad;
  return mx;
}

int64_t QuantizeNeon(const float* x, int64_t n, float s, int8_t* q, uint8_t out_flip) {
  const float32x4_t vs = vdupq_n_f32(s);
  const int8x16_t oflip = vreinterpretq_s8_u8(vdupq_n_u8(out_flip));
  const int8x16_t lo = vdupq_n_s8(-127);
  int32x4_t sum = vdupq_n_s32(0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    // vcvtnq rounds to nearest, ties to even, like rint in the default mode.
    const int32x4_t a = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i), vs));
    const int32x4_t b = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 4), vs));
    const int32x4_t c = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 8), vs));
    const int32x4_t d = vcvtnq_s32_f32(vmulq_f32(vld1q_f32(x + i + 12), vs));
    const int16x8_t ab = vcombine_s16(vqmovn_s32(a), vqmovn_s32(b));
    const int16x8_t cd = vcombine_s16(vqmovn_s32(c), vqmovn_s32(d));
    const int8x16_t r = vmaxq_s8(vcombine_s8(vqmovn_s16(ab), vqmovn_s16(cd)), lo);
    vst1q_s8(q + i, veorq_s8(r, oflip));
    sum = vpadalq_s16(sum, vpaddlq_s8(r));
  }
  int64_t total = vaddlvq_s32(sum);
  if (i < n) total += RefTable().quantize(x + i, n - i, s, q + i, out_flip);
  return total;
}

int64_t SumI8Neon(const int8_t* q, int64_t n) {
  int32x4_t sum = vdupq_n_s32(0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) sum = vpadalq_s16(sum, vpaddlq_s8(vld1q_s8(q + i)));
  int64_t total = vaddlvq_s32(sum);
  for (; i < n; ++i) total += q[i];
  return total;
}

}  // namespace internal
}  // namespace tfq
