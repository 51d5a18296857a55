// Max pooling over a zero-padded image without the padded copy: a float
// PAD followed by a MAX_POOL_2D (ResNet's stem) as one pass (the delegate's
// PAD + MAX_POOL_2D partition, docs/delegate.md, "Zero padding").
#include <algorithm>
#include <limits>

#include "kernels/kernels_internal.h"

namespace tfq {
namespace {

// y[c] = max(y[c], x[c]) for c < n: inlined into each clone of the pool
// below, where it vectorizes.
inline __attribute__((always_inline)) void MaxInto(const float* x, int64_t n, float* y) {
  for (int64_t c = 0; c < n; ++c) y[c] = x[c] > y[c] ? x[c] : y[c];
}

inline __attribute__((always_inline)) void Clamp(float* y, int64_t n, float lo, float hi) {
  for (int64_t c = 0; c < n; ++c) y[c] = std::min(std::max(y[c], lo), hi);
}

TFQ_X86_CLONES void MaxPoolImpl(const float* x, const ConvGeometry& image, int frame_top, int frame_left,
                                const ConvGeometry& pool, Activation act, float* y) {
  const int64_t C = image.in_c;
  const float lowest = std::numeric_limits<float>::lowest();
  for (int n = 0; n < image.batch; ++n) {
    const float* xn = x + static_cast<int64_t>(n) * image.in_h * image.in_w * C;
    for (int oy = 0; oy < pool.out_h; ++oy) {
      // The window's rows inside the frame (the pool's own SAME padding is
      // ignored), then those inside the image; frame rows outside the image
      // are the PAD's zeros.
      const int fy0 = std::max(0, oy * pool.stride_h - pool.pad_top);
      const int fy1 = std::min(pool.in_h, oy * pool.stride_h - pool.pad_top + pool.kernel_h);
      const int iy0 = std::max(fy0 - frame_top, 0), iy1 = std::min(fy1 - frame_top, image.in_h);
      for (int ox = 0; ox < pool.out_w; ++ox) {
        const int fx0 = std::max(0, ox * pool.stride_w - pool.pad_left);
        const int fx1 = std::min(pool.in_w, ox * pool.stride_w - pool.pad_left + pool.kernel_w);
        const int ix0 = std::max(fx0 - frame_left, 0), ix1 = std::min(fx1 - frame_left, image.in_w);
        float* out = y + ((static_cast<int64_t>(n) * pool.out_h + oy) * pool.out_w + ox) * C;
        // Positions of the window in the frame but not in the image (the
        // extents inside the image are negative when the window lies wholly
        // in the padding).
        const int64_t in_image = std::max(0, iy1 - iy0) * static_cast<int64_t>(std::max(0, ix1 - ix0));
        const bool zeros = fy1 > fy0 && fx1 > fx0 && in_image < (fy1 - fy0) * static_cast<int64_t>(fx1 - fx0);
        std::fill(out, out + C, zeros ? 0.0f : lowest);
        for (int iy = iy0; iy < iy1; ++iy)
          for (int ix = ix0; ix < ix1; ++ix) MaxInto(xn + (static_cast<int64_t>(iy) * image.in_w + ix) * C, C, out);
      }
    }
  }
  const int64_t total = static_cast<int64_t>(image.batch) * pool.out_h * pool.out_w * C;
  if (act == Activation::kRelu) Clamp(y, total, 0.0f, std::numeric_limits<float>::max());
  if (act == Activation::kRelu6) Clamp(y, total, 0.0f, 6.0f);
}

}  // namespace

void MaxPoolPadded(const float* x, const ConvGeometry& image, int frame_top, int frame_left,
                   const ConvGeometry& pool, Activation act, float* y) {
  MaxPoolImpl(x, image, frame_top, frame_left, pool, act, y);
}

}  // namespace tfq
