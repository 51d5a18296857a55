// Scalar reference kernels: portable C++, always built, the ground truth the
// SIMD kernels are tested against (and what runs on CPUs without a fast path).
#include <cmath>
#include <cstring>

#include "kernels_internal.h"

namespace tfq {
namespace internal {
namespace {

float AbsMaxRef(const float* x, int64_t n, bool* nonfinite) {
  float m = 0.0f;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(x[i]);
    if (!(a <= 3.402823466e38f)) bad = true;  // NaN or inf
    else if (a > m) m = a;
  }
  *nonfinite = bad;
  return m;
}

int64_t QuantizeRef(const float* x, int64_t n, float s, int8_t* q) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * s);  // round half to even (default mode)
    if (!(v >= -127.0f)) v = -127.0f;    // also maps NaN to -127: never UB
    if (v > 127.0f) v = 127.0f;
    const int qi = static_cast<int>(v);
    q[i] = static_cast<int8_t>(qi);
    sum += qi;
  }
  return sum;
}

int64_t SumI8Ref(const int8_t* q, int64_t n) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += q[i];
  return sum;
}

void GemmRef(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
             int64_t lda, const int32_t* /*sumq*/, int64_t n_act, int64_t nblocks, int32_t* c,
             int64_t ldc) {
  const int bits = SchemeBits(s);
  const int wpb = WeightsPerBlock(s);
  const int fields = 8 / bits;
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
      c[j * ldc + i] = static_cast<int32_t>(acc);
    }
  }
}

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

}  // namespace

const KernelTable& RefTable() {
  static const KernelTable table = {Isa::kReference, AbsMaxRef, QuantizeRef, SumI8Ref,
                                    GemmRef, DepthwisePixelRef, nullptr, 0, nullptr, nullptr,
                                    nullptr, nullptr, nullptr};
  return table;
}

}  // namespace internal
}  // namespace tfq
