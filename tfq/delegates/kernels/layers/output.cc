// The float outputs of a layer (WriteOutputRows): NaN and zero rows, the
// table's SIMD epilogue when it has one, else the portable epilogue (the
// ground truth the SIMD epilogues match bit for bit).
#include "kernels/layers/common.h"

namespace tfq {
namespace internal {
namespace {

// The epilogue runs over every output: cloned for AVX-512 and AVX2
// (TFQ_X86_CLONES; no FMA: bit-identical results).

// One pass per output: y = act(float(acc) * f + b) (b may be null).
template <Activation A, bool kBias>
inline void EpilogueRow(const int32_t* acc, const float* f, const float* b, int64_t n, float* y) {
  for (int64_t i = 0; i < n; ++i) {
    float v = static_cast<float>(acc[i]) * f[i];
    if (kBias) v = v + b[i];
    if (A != Activation::kNone) v = v < 0.0f ? 0.0f : v;
    if (A == Activation::kRelu6) v = v > 6.0f ? 6.0f : v;
    y[i] = v;
  }
}

template <bool kBias>
inline void EpilogueRows(Activation a, const int32_t* acc, int64_t lda, const float* f,
                         const float* b, int64_t n, int64_t rows, float* y, int64_t ldy) {
  for (int64_t r = 0; r < rows; ++r) {
    switch (a) {
      case Activation::kNone:
        EpilogueRow<Activation::kNone, kBias>(acc + r * lda, f, b, n, y + r * ldy);
        break;
      case Activation::kRelu:
        EpilogueRow<Activation::kRelu, kBias>(acc + r * lda, f, b, n, y + r * ldy);
        break;
      case Activation::kRelu6:
        EpilogueRow<Activation::kRelu6, kBias>(acc + r * lda, f, b, n, y + r * ldy);
        break;
    }
  }
}

}  // namespace

TFQ_X86_CLONES void WriteOutputRows(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
                                         int64_t lda, const float* f, int64_t o0, int64_t o1,
                                         int64_t rows, float* y, int64_t ldy) {
  const int64_t n = o1 - o0;
  if (state == RowState::kNonFinite) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) y[r * ldy + i] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (state == RowState::kZero) {
    // Every row of a zero input holds the same outputs: computed once.
    for (int64_t i = 0; i < n && rows > 0; ++i)
      y[i] = ApplyActivation(e.bias ? e.bias[o0 + i] : 0.0f, e.activation);
    for (int64_t r = 1; r < rows; ++r) std::memcpy(y + r * ldy, y, n * sizeof(float));
    return;
  }
  if (kt.epilogue_rows != nullptr) {
    kt.epilogue_rows(acc, lda, f, e.bias ? e.bias + o0 : nullptr, n, rows, y, ldy, e.activation);
  } else if (e.bias) {
    EpilogueRows<true>(e.activation, acc, lda, f, e.bias + o0, n, rows, y, ldy);
  } else {
    EpilogueRows<false>(e.activation, acc, lda, f, nullptr, n, rows, y, ldy);
  }
}

TFQ_X86_CLONES void AddResidualRows(const float* res, int64_t n, int64_t rows, int64_t ld,
                                         Activation act, float* y) {
  WithActivation(act, [&](auto A) {
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y + r * ld;
      const float* rr = res + r * ld;
      for (int64_t i = 0; i < n; ++i) yr[i] = ApplyActivation(yr[i] + rr[i], A);
    }
  });
}

}  // namespace internal
}  // namespace tfq

namespace tfq {

TFQ_X86_CLONES void AddFloats(const float* a, const float* b, int64_t n, Activation act, float* y) {
  WithActivation(act, [&](auto A) {
    for (int64_t i = 0; i < n; ++i) y[i] = ApplyActivation(a[i] + b[i], A);
  });
}

}  // namespace tfq
