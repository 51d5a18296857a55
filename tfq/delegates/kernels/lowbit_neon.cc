// aarch64 NEON kernels (plain ARMv8-A: every aarch64 core has these) and the
// run-time choice of the dot-product GEMM (lowbit_dotprod_neon.cc) when
// getauxval(AT_HWCAP) reports HWCAP_ASIMDDP (Linux, Android; macOS: sysctl
// hw.optional.arm.FEAT_DotProd).
//
// GEMM without the dot product: `vmlal_s8` multiplies 8 int8 weights with 8
// int8 activations into int16 lanes, which are widened into int32 with
// `vpadalq_s16` before they can overflow. Binary and ternary multiply the raw
// codes u (shift/mask only; acc = mul*sum(u*q) - off*sum(q), as in
// lowbit_dotprod_neon.cc), the power-of-two schemes the signed levels from a
// table lookup (lowbit_neon.h). One field of a block adds four products to
// each int16 lane, each at most 127 * max|u or level|: 127 for binary (u <= 1),
// 254 for ternary (u <= 2), 508 for pow2_3bit, 8128 for pow2_4bit, so the
// code widens after 64, 32, 16 and 1 fields (at most 32512 per lane).
//
// Depthwise: 32 channels of one tap at a time, products in int16 lanes (one
// per tap), widened after 256 / 64 / 4 taps by the same rule. The dot product
// does not help there (nothing is summed along a contiguous vector), so both
// tables share this file's depthwise, absmax, quantize and sum kernels.
#include <arm_neon.h>

#include <cstring>

#include "lowbit_neon.h"

#if defined(__linux__) || defined(__ANDROID__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace tfq {
namespace internal {
namespace {

template <Scheme S>
struct Plain;
template <>
struct Plain<Scheme::kBinary> {
  static constexpr int kBits = 1, kMul = 2, kOff = 1, kFieldsPerWiden = 64, kTapsPerWiden = 256;
  static constexpr bool kOffsetCodes = true;
};
template <>
struct Plain<Scheme::kTernary> {
  static constexpr int kBits = 2, kMul = 1, kOff = 1, kFieldsPerWiden = 32, kTapsPerWiden = 256;
  static constexpr bool kOffsetCodes = true;
};
template <>
struct Plain<Scheme::kPow2_3bit> {
  static constexpr int kBits = 4, kMul = 1, kOff = 0, kFieldsPerWiden = 16, kTapsPerWiden = 64;
  static constexpr bool kOffsetCodes = false;
};
template <>
struct Plain<Scheme::kPow2_4bit> {
  static constexpr int kBits = 4, kMul = 1, kOff = 0, kFieldsPerWiden = 1, kTapsPerWiden = 4;
  static constexpr bool kOffsetCodes = false;
};

// MR weight rows x NR activation rows; c[p * ldc + r] = accumulator.
template <Scheme S, int MR, int NR>
void Tile(int8x16_t table, const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda,
          const int32_t* sumq, int64_t nblocks, int32_t* c, int64_t ldc) {
  using K = Plain<S>;
  constexpr int kFields = 8 / K::kBits;
  constexpr int kWpb = 32 * kFields;
  int32x4_t acc32[MR][NR];
  int16x8_t acc16[MR][NR];
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NR; ++p) {
      acc32[r][p] = vdupq_n_s32(0);
      acc16[r][p] = vdupq_n_s16(0);
    }
  }
  int pending = 0;  // fields accumulated in acc16 since the last widening
  for (int64_t b = 0; b < nblocks; ++b) {
    uint8x16_t raw_lo[MR], raw_hi[MR];
    for (int r = 0; r < MR; ++r) {
      const uint8_t* blk = w + r * row_bytes + b * 32;
      raw_lo[r] = vld1q_u8(blk);
      raw_hi[r] = vld1q_u8(blk + 16);
    }
    const int8_t* ab = a + b * kWpb;
    neon::ForFields(std::make_integer_sequence<int, kFields>(), [&](auto tc) {
      constexpr int t = decltype(tc)::value;
      neon::Levels32 l[MR];
      for (int r = 0; r < MR; ++r)
        l[r] = neon::Operand<K::kBits, K::kOffsetCodes, t>(raw_lo[r], raw_hi[r], table);
      for (int p = 0; p < NR; ++p) {
        const int8x16_t q_lo = vld1q_s8(ab + p * lda + t * 32);
        const int8x16_t q_hi = vld1q_s8(ab + p * lda + t * 32 + 16);
        for (int r = 0; r < MR; ++r) {
          int16x8_t s = acc16[r][p];
          s = vmlal_s8(s, vget_low_s8(l[r].lo), vget_low_s8(q_lo));
          s = vmlal_high_s8(s, l[r].lo, q_lo);
          s = vmlal_s8(s, vget_low_s8(l[r].hi), vget_low_s8(q_hi));
          s = vmlal_high_s8(s, l[r].hi, q_hi);
          acc16[r][p] = s;
        }
      }
      if (++pending == K::kFieldsPerWiden) {
        pending = 0;
        for (int r = 0; r < MR; ++r) {
          for (int p = 0; p < NR; ++p) {
            acc32[r][p] = vpadalq_s16(acc32[r][p], acc16[r][p]);
            acc16[r][p] = vdupq_n_s16(0);
          }
        }
      }
    });
  }
  for (int r = 0; r < MR; ++r) {
    for (int p = 0; p < NR; ++p) {
      // Wrap-around arithmetic: the true accumulator fits in int32 even when
      // the sum of u*q alone does not.
      const uint32_t sum =
          vaddvq_u32(vreinterpretq_u32_s32(vpadalq_s16(acc32[r][p], acc16[r][p])));
      const uint32_t v = static_cast<uint32_t>(K::kMul) * sum -
                         static_cast<uint32_t>(K::kOff) * static_cast<uint32_t>(sumq[p]);
      c[p * ldc + r] = static_cast<int32_t>(v);
    }
  }
}

template <Scheme S, int MR, int NR>
void RowPanel(int8x16_t table, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
              const int8_t* a, int64_t lda, const int32_t* sumq, int64_t nblocks, int32_t* c,
              int64_t ldc) {
  int64_t i = 0;
  for (; i + MR <= n_rows; i += MR)
    Tile<S, MR, NR>(table, w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
  for (; i < n_rows; ++i)
    Tile<S, 1, NR>(table, w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, c + i, ldc);
}

template <Scheme S>
void GemmScheme(const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a, int64_t lda,
                const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c, int64_t ldc) {
  const int8x16_t table = neon::LevelTable(S);
  if (n_act == 1) {
    RowPanel<S, 4, 1>(table, w, row_bytes, n_rows, a, lda, sumq, nblocks, c, ldc);
    return;
  }
  constexpr int NR = 4;
  int64_t j = 0;
  for (; j + NR <= n_act; j += NR)
    RowPanel<S, 2, NR>(table, w, row_bytes, n_rows, a + j * lda, lda, sumq + j, nblocks,
                       c + j * ldc, ldc);
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<S, 2, 3>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 2) RowPanel<S, 2, 2>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
  if (rest == 1) RowPanel<S, 4, 1>(table, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, cj, ldc);
}

void GemmNeon(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
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

int64_t QuantizeNeon(const float* x, int64_t n, float s, int8_t* q) {
  const float32x4_t vs = vdupq_n_f32(s);
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
    vst1q_s8(q + i, r);
    sum = vpadalq_s16(sum, vpaddlq_s8(r));
  }
  int64_t total = vaddlvq_s32(sum);
  if (i < n) total += RefTable().quantize(x + i, n - i, s, q + i);
  return total;
}

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

void EpilogueRowsQNeon(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq) {
  if (b) EpilogueRowsQT<true>(acc, lda, f, b, n, rows, q, ldq);
  else EpilogueRowsQT<false>(acc, lda, f, b, n, rows, q, ldq);
}

int64_t SumI8Neon(const int8_t* q, int64_t n) {
  int32x4_t sum = vdupq_n_s32(0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) sum = vpadalq_s16(sum, vpaddlq_s8(vld1q_s8(q + i)));
  int64_t total = vaddlvq_s32(sum);
  for (; i < n; ++i) total += q[i];
  return total;
}

template <Scheme S>
void DepthwisePixelScheme(const uint8_t* codes, int64_t row_bytes, const int8_t* const* taps,
                          int ntaps, int out_c, int32_t* acc) {
  using K = Plain<S>;
  constexpr int kFields = 8 / K::kBits;
  const int8x16_t table = neon::LevelTable(S);
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
        const neon::Levels32 l =
            neon::DecodeField(vld1q_u8(blk), vld1q_u8(blk + 16), K::kBits, t, table);
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

void DepthwisePixelNeon(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc) {
  if (depth_multiplier != 1) {
    RefTable().depthwise_pixel(s, codes, row_bytes, taps, ntaps, depth_multiplier, out_c, acc);
    return;
  }
  switch (s) {
    case Scheme::kBinary:
      return DepthwisePixelScheme<Scheme::kBinary>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kTernary:
      return DepthwisePixelScheme<Scheme::kTernary>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kPow2_3bit:
      return DepthwisePixelScheme<Scheme::kPow2_3bit>(codes, row_bytes, taps, ntaps, out_c, acc);
    case Scheme::kPow2_4bit:
      return DepthwisePixelScheme<Scheme::kPow2_4bit>(codes, row_bytes, taps, ntaps, out_c, acc);
  }
}

}  // namespace

const KernelTable* NeonTableImpl() {
  static const KernelTable table = {Isa::kNeon, AbsMaxNeon, QuantizeNeon,
                                    SumI8Neon,  GemmNeon,   DepthwisePixelNeon,
                                    nullptr,    0,          nullptr,
                                    nullptr,    nullptr,    EpilogueRowsQNeon, nullptr};
  return &table;
}

bool CpuHasDotprod() {
#if defined(__linux__) || defined(__ANDROID__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, nullptr, 0) == 0 && value != 0;
#else
  return false;  // unknown OS: the plain NEON path is always correct
#endif
}

const KernelTable* NeonDotprodTableImpl() {
#if defined(TFQ_HAVE_NEON_DOTPROD)
  static const KernelTable table = {Isa::kNeonDotprod, AbsMaxNeon,      QuantizeNeon,
                                    SumI8Neon,         GemmNeonDotprod, DepthwisePixelNeon,
                                    nullptr,           0,               nullptr,
                                    nullptr,           nullptr,         EpilogueRowsQNeon, nullptr};
  return &table;
#else
  return nullptr;
#endif
}

}  // namespace internal
}  // namespace tfq
