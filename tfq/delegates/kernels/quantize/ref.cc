// Activation statistics, quantization and int8 sums, scalar reference: portable C++, always built, the ground truth
// the SIMD kernels are tested against (and what runs on CPUs without a fast
// path).
#include <cmath>

#include "kernels/microkernels.h"

namespace tfq {
namespace internal {

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

int64_t QuantizeRef(const float* x, int64_t n, float s, int8_t* q, uint8_t flip) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    float v = std::nearbyint(x[i] * s);  // round half to even (default mode)
    if (!(v >= -127.0f)) v = -127.0f;    // also maps NaN to -127: never UB
    if (v > 127.0f) v = 127.0f;
    const int qi = static_cast<int>(v);
    q[i] = static_cast<int8_t>(qi ^ flip);
    sum += qi;
  }
  return sum;
}

int64_t SumI8Ref(const int8_t* q, int64_t n) {
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += q[i];
  return sum;
}

}  // namespace internal
}  // namespace tfq
