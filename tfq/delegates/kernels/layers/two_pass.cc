// Two-pass activations (docs/delegate.md, "Activation precision"): the
// rounding residual of the int8 activations, and the sum of the two passes.
#include "kernels/layers/common.h"

namespace tfq {

size_t TwoPassScratchBytes(int64_t seg_elems, int64_t in_elems, int64_t out_elems) {
  constexpr int64_t kMaxElems = INT64_MAX / 16;  // 2 * elems * sizeof(float) fits
  if (seg_elems <= 0 || in_elems < 0 || out_elems < 0 || in_elems > kMaxElems || out_elems > kMaxElems ||
      seg_elems > kMaxElems)
    return 0;
  return AlignUp(2 * in_elems * sizeof(float)) + AlignUp(2 * out_elems * sizeof(float)) +
         AlignUp(seg_elems) + kAlign;
}

void QuantizationResidual(const float* x, int64_t segments, int64_t seg_elems, float* r, int8_t* q,
                          const KernelOptions& opt) {
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  for (int64_t s = 0; s < segments; ++s) {
    const float* xs = x + s * seg_elems;
    float* rs = r + s * seg_elems;
    // The same statistics and codes as the layers' own quantization of the
    // segment (QuantizeActivations): r is exactly what that pass rounded off.
    bool nonfinite = false;
    const float amax = kt.absmax(xs, seg_elems, &nonfinite);
    const RowQuant rq = QuantState(amax, nonfinite);
    if (rq.state != RowState::kOk) {
      // A zero segment has nothing to round off; a non-finite one makes the
      // first pass NaN already.
      std::memset(rs, 0, seg_elems * sizeof(float));
      continue;
    }
    kt.quantize(xs, seg_elems, rq.s, q, 0);
    const float step = 1.0f / rq.s;
    for (int64_t i = 0; i < seg_elems; ++i) rs[i] = xs[i] - static_cast<float>(q[i]) * step;
  }
}

void CombinePasses(const Epilogue& e, const float* a, const float* b, int64_t n, int64_t out_c, float* y) {
  if (out_c <= 0) return;
  // Whole rows of out_c channels only: n is a multiple of out_c (the caller
  // checks it when the node is prepared); a partial row would be left alone.
  const float* bias = e.bias;
  WithActivation(e.activation, [&](auto A) {
    for (int64_t i = 0; i + out_c <= n; i += out_c) {
      if (bias != nullptr) {
        for (int64_t c = 0; c < out_c; ++c) y[i + c] = ApplyActivation(a[i + c] + b[i + c] + bias[c], A);
      } else {
        for (int64_t c = 0; c < out_c; ++c) y[i + c] = ApplyActivation(a[i + c] + b[i + c] + 0.0f, A);
      }
    }
  });
}

}  // namespace tfq
