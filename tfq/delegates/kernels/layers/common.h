// What the layer files (fully_connected.cc, conv2d.cc, depthwise_conv2d.cc)
// share: scratch arenas, the on-the-fly int8 quantization of activations,
// threading, the epilogue and output statistics. Every ISA reaches its
// micro-kernels through the KernelTable chosen at run time; these helpers
// are compiled once, with default flags. Internal linkage (the functions
// below live in an unnamed namespace; see kernels_internal.h), except
// WriteOutputRows (output.cc).
#ifndef TFQ_DELEGATES_KERNELS_LAYERS_COMMON_H_
#define TFQ_DELEGATES_KERNELS_LAYERS_COMMON_H_

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

#include "kernels/kernels_internal.h"
#include "kernels/thread_pool.h"

namespace tfq {
namespace internal {

// The quantization state of an activation row or image.
enum class RowState : int { kOk = 0, kZero = 1, kNonFinite = 2 };

// For `rows` rows r: y[r * ldy + i] = act(float(acc[r * lda + i]) * f[i] + bias[o0 + i])
// for i < o1 - o0 (f starts at o0, bias is indexed by o), or the bias / NaN
// when the input row was zero / non-finite (acc and f unused then).
void WriteOutputRows(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
                     int64_t lda, const float* f, int64_t o0, int64_t o1, int64_t rows, float* y,
                     int64_t ldy);

// For `rows` rows r: y[r * ld + i] = act(y[r * ld + i] + res[r * ld + i]) for
// i < n: the fused residual addition (KernelOptions::residual), run on
// outputs just written (still in L1).
void AddResidualRows(const float* res, int64_t n, int64_t rows, int64_t ld, Activation act, float* y);

}  // namespace internal

namespace {

using internal::WriteOutputRows;
using internal::AddResidualRows;
using internal::HandoverCode;
using internal::KernelTable;
using internal::RowState;

constexpr size_t kAlign = 64;
constexpr int kConvTilePixels = 16;

[[maybe_unused]] size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

// Bump allocator over a caller-provided scratch buffer.
class Arena {
 public:
  explicit Arena(void* base) : base_(static_cast<char*>(base)) {}
  template <class T>
  T* Take(size_t count) {
    T* p = reinterpret_cast<T*>(base_ + used_);
    used_ += AlignUp(count * sizeof(T));
    return p;
  }
  size_t used() const { return used_; }

 private:
  char* base_;
  size_t used_ = 0;
};

struct RowQuant {
  float s = 0.0f;
  RowState state = RowState::kZero;
};

// The state and scale of a row or image with these statistics.
[[maybe_unused]] RowQuant QuantState(float amax, bool nonfinite) {
  RowQuant r;
  if (nonfinite) {
    r.state = RowState::kNonFinite;
    return r;
  }
  const float s = 127.0f / amax;
  // amax == 0 gives s = inf; a denormal amax too: both count as a zero row.
  if (amax == 0.0f || !(s <= std::numeric_limits<float>::max())) {
    r.state = RowState::kZero;
    return r;
  }
  r.state = RowState::kOk;
  r.s = s;
  return r;
}

// Quantizes n floats into q[0, n) and zero-fills q[n, n_padded); every byte
// stored xor flip (0x80: the biased codes of the block-sparse GEMM, written
// in the same pass instead of a BiasActivations pass over the result).
[[maybe_unused]] RowQuant QuantizeActivations(const KernelTable& kt, const float* x, int64_t n, int64_t n_padded,
                             int8_t* q, int32_t* sumq, const TensorStats* known = nullptr,
                             uint8_t flip = 0) {
  bool nonfinite = false;
  float amax = 0.0f;
  if (known != nullptr) {
    nonfinite = known->nonfinite;
    amax = known->absmax;
  } else {
  // The absmax pass walks the image backwards in chunks: the end, written
  // last by the producing layer, is still in L2, and the start, read last
  // here, is then in L2 for the forward quantization pass (images of several
  // MB otherwise stream twice from L3). Max and flags are order-independent.
  constexpr int64_t kChunk = 16384;
  for (int64_t end = n; end > 0;) {
    const int64_t begin = end > kChunk ? end - kChunk : 0;
    bool bad = false;
    const float m = kt.absmax(x + begin, end - begin, &bad);
    nonfinite = nonfinite || bad;
    if (m > amax) amax = m;
    end = begin;
  }
  }
  const RowQuant r = QuantState(amax, nonfinite);
  int64_t sum = 0;
  if (r.state == RowState::kOk) {
    sum = kt.quantize(x, n, r.s, q, flip);
    std::memset(q + n, flip, n_padded - n);
  } else {
    std::memset(q, flip, n_padded);
  }
  if (sumq) *sumq = static_cast<int32_t>(sum);  // |sum| <= 127 * k < 2^31 (AccumulatorFits)
  return r;
}

[[maybe_unused]] int NumThreads(const KernelOptions& opt) { return opt.pool ? opt.pool->num_threads() : 1; }

// Channel sums of pixels [p0, p1) of an image with C channels per pixel.
[[maybe_unused]] void PixelSums(const KernelTable& kt, const int8_t* q, int64_t p0, int64_t p1, int64_t C,
               int32_t* pixsum) {
  if (kt.sum_rows_i8 != nullptr) {
    kt.sum_rows_i8(q + p0 * C, p1 - p0, C, pixsum + p0);
    return;
  }
  for (int64_t i = p0; i < p1; ++i) pixsum[i] = static_cast<int32_t>(kt.sum_i8(q + i * C, C));
}

// Quantizes a batch-1 image of in_pix pixels x C channels with one scale, like
// QuantizeActivations (n_padded == n, codes xor flip), and writes each
// pixel's channel sum to pixsum when given and flip is 0 (sums of biased
// codes would be wrong: pixsum is ignored then). With a pool and a large
// image the passes are split over
// pixel chunks: run on the calling thread alone they were a serial part of
// every convolution, and MobileNetV2 did not get faster with 2 threads.
[[maybe_unused]] RowQuant QuantizeImage(const KernelTable& kt, const KernelOptions& opt, const float* x, int64_t in_pix,
                       int64_t C, int8_t* q, int32_t* pixsum, const TensorStats* known,
                       uint8_t flip = 0) {
  if (flip != 0) pixsum = nullptr;
  const int64_t n = in_pix * C;
  const int threads = NumThreads(opt);
  constexpr int64_t kMinParallel = int64_t{1} << 15;
  if (threads == 1 || n < kMinParallel || C <= 0) {
    const RowQuant rq = QuantizeActivations(kt, x, n, n, q, nullptr, known, flip);
    if (pixsum != nullptr && rq.state == RowState::kOk)
      PixelSums(kt, q, 0, in_pix, C, pixsum);
    return rq;
  }
  const int64_t chunk_pix = std::max<int64_t>(1, 16384 / C);
  const int64_t nchunks = (in_pix + chunk_pix - 1) / chunk_pix;
  float amax = 0.0f;
  bool nonfinite = false;
  if (known != nullptr) {
    amax = known->absmax;
    nonfinite = known->nonfinite;
  } else {
    float tmax[64] = {};
    bool tbad[64] = {};
    opt.pool->ParallelFor(nchunks, [&](int64_t c, int tid) {
      const int64_t p0 = c * chunk_pix, p1 = std::min(in_pix, p0 + chunk_pix);
      bool bad = false;
      const float m = kt.absmax(x + p0 * C, (p1 - p0) * C, &bad);
      if (m > tmax[tid]) tmax[tid] = m;
      tbad[tid] = tbad[tid] || bad;
    });
    for (int t = 0; t < threads && t < 64; ++t) {
      amax = std::max(amax, tmax[t]);
      nonfinite = nonfinite || tbad[t];
    }
  }
  const RowQuant r = QuantState(amax, nonfinite);
  if (r.state != RowState::kOk) {
    std::memset(q, flip, n);
    return r;
  }
  opt.pool->ParallelFor(nchunks, [&](int64_t c, int) {
    const int64_t p0 = c * chunk_pix, p1 = std::min(in_pix, p0 + chunk_pix);
    kt.quantize(x + p0 * C, (p1 - p0) * C, r.s, q + p0 * C, flip);
    if (pixsum != nullptr)
      PixelSums(kt, q, p0, p1, C, pixsum);
  });
  return r;
}

inline float ApplyActivation(float v, Activation a) {
  switch (a) {
    case Activation::kNone: return v;
    case Activation::kRelu: return v < 0.0f ? 0.0f : v;
    case Activation::kRelu6: return v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v);
  }
  return v;
}

// Calls f(std::integral_constant<Activation, a>()) (DispatchActivation): a
// loop written inside f calls ApplyActivation with a compile-time activation
// and vectorizes, where a run-time one inside the loop keeps it scalar
// (measured on CombinePasses: as costly as the layer's GEMM, a fifth of it
// hoisted).
template <class F>
inline void WithActivation(Activation a, F&& f) {
  internal::DispatchActivation(a, std::forward<F>(f));
}

// f[o] = scale[o] / s for o in [o0, o1).
[[maybe_unused]] void ComputeFactors(const Epilogue& e, float s, int64_t o0, int64_t o1, float* f) {
  if (e.per_channel_scale) {
    for (int64_t o = o0; o < o1; ++o) f[o - o0] = e.scale[o] / s;
  } else {
    const float v = e.scale[0] / s;
    for (int64_t o = o0; o < o1; ++o) f[o - o0] = v;
  }
}

// WriteOutputRows for the int8 hand-over; a non-finite row is written as
// zeros (the caller reports it through TensorStats::nonfinite).
[[maybe_unused]] void WriteOutputRowsQ(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
                      int64_t lda, const float* f, int64_t o0, int64_t o1, int64_t rows, int8_t* q,
                      int64_t ldq) {
  const int64_t n = o1 - o0;
  if (state == RowState::kOk && kt.epilogue_rows_q != nullptr) {
    kt.epilogue_rows_q(acc, lda, f, e.bias ? e.bias + o0 : nullptr, n, rows, q, ldq);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    int8_t* qr = q + r * ldq;
    if (state == RowState::kNonFinite) {
      std::memset(qr, 0, n);
    } else if (state == RowState::kZero) {
      // Every row of a zero input holds the same codes: computed once.
      if (r > 0) {
        std::memcpy(qr, q, n);
        continue;
      }
      for (int64_t i = 0; i < n; ++i) qr[i] = HandoverCode(e.bias ? e.bias[o0 + i] : 0.0f);
    } else if (e.bias) {
      internal::HandoverCodes<true>(acc + r * lda, f, e.bias + o0, 0, n, qr);
    } else {
      internal::HandoverCodes<false>(acc + r * lda, f, nullptr, 0, n, qr);
    }
  }
}

// Statistics of n outputs just written (still in L1), with the absmax
// kernel (its rule: NaN/inf set the flag, finite values the maximum).
inline void AccumulateStats(const KernelTable& kt, const float* y, int64_t n, TensorStats* st) {
  bool bad = false;
  const float m = kt.absmax(y, n, &bad);
  st->nonfinite = st->nonfinite || bad;
  if (m > st->absmax) st->absmax = m;
}

[[maybe_unused]] void MergeStats(const TensorStats* parts, int n, TensorStats* out) {
  TensorStats st;
  for (int t = 0; t < n && t < 64; ++t) {
    st.nonfinite = st.nonfinite || parts[t].nonfinite;
    if (parts[t].absmax > st.absmax) st.absmax = parts[t].absmax;
  }
  *out = st;
}

// One row of outputs o in [o0, o1) (arrays start at o0 except bias).
inline void WriteOutputs(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc, const float* f,
                         int64_t o0, int64_t o1, float* y) {
  WriteOutputRows(kt, e, state, acc, 0, f, o0, o1, 1, y, 0);
}

// Where a convolution writes its outputs: floats (and their statistics when
// asked), or the int8 hand-over.
struct OutputSink {
  float* y = nullptr;
  int8_t* q = nullptr;
  bool stats = false;
  const float* residual = nullptr;  // KernelOptions::residual, at this image
  Activation residual_activation = Activation::kNone;
};

// Writes channels [o0, o1) of `rows` output pixels (out_c channels each)
// starting at pixel p; acc and f start at channel o0.
inline void EmitPixels(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
                       int64_t lda, const float* f, int64_t out_c, int64_t o0, int64_t o1, int64_t p,
                       int64_t rows, const OutputSink& sink, TensorStats* st) {
  if (sink.q != nullptr) {
    WriteOutputRowsQ(kt, e, state, acc, lda, f, o0, o1, rows, sink.q + p * out_c + o0, out_c);
    return;
  }
  float* y = sink.y + p * out_c + o0;
  if (sink.residual == nullptr && !sink.stats) {
    WriteOutputRows(kt, e, state, acc, lda, f, o0, o1, rows, y, out_c);
    return;
  }
  const int64_t n = o1 - o0;
  if (kt.epilogue_rows_stats != nullptr && state == RowState::kOk && sink.stats) {
    // One pass: epilogue, residual and statistics while in registers.
    kt.epilogue_rows_stats(acc, lda, f, e.bias ? e.bias + o0 : nullptr, n, rows, y, out_c, e.activation,
                           sink.residual == nullptr ? nullptr : sink.residual + p * out_c + o0, out_c,
                           sink.residual_activation, &st->absmax, &st->nonfinite);
    return;
  }
  // Second passes (residual, statistics) over chunks of about 4 KB of
  // outputs, so that they read what the epilogue just wrote from L1.
  const int64_t chunk = std::max<int64_t>(1, 1024 / std::max<int64_t>(n, 1));
  for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
    const int64_t nr = std::min(chunk, rows - r0);
    float* yr = y + r0 * out_c;
    WriteOutputRows(kt, e, state, acc == nullptr ? nullptr : acc + r0 * lda, lda, f, o0, o1, nr, yr,
                    out_c);
    if (sink.residual != nullptr)
      AddResidualRows(sink.residual + (p + r0) * out_c + o0, n, nr, out_c, sink.residual_activation, yr);
    if (!sink.stats) continue;
    if (n == out_c) {
      AccumulateStats(kt, yr, nr * out_c, st);
    } else {
      for (int64_t r = 0; r < nr; ++r) AccumulateStats(kt, yr + r * out_c, n, st);
    }
  }
}

// The quantized image a convolution reads: its own quantization of the float
// input x (into qimg, with pixel sums when pixsum is given), or the int8
// hand-over of the previous layer (whose pixel sums are taken here).
[[maybe_unused]] RowQuant ConvInput(const KernelTable& kt, const KernelOptions& opt, const float* x, int64_t in_pix,
                   int64_t C, int8_t* qimg, int32_t* pixsum, const TensorStats* known,
                   const int8_t** q, uint8_t flip = 0) {
  if (opt.input_q == nullptr) {
    *q = qimg;
    return QuantizeImage(kt, opt, x, in_pix, C, qimg, pixsum, known, flip);
  }
  *q = opt.input_q;
  RowQuant r;
  r.state = opt.input_nonfinite ? RowState::kNonFinite : RowState::kOk;
  r.s = kHandoverScale;
  if (pixsum == nullptr || r.state != RowState::kOk) return r;
  const int8_t* src = *q;
  const auto sums = [&](int64_t p0, int64_t p1) { PixelSums(kt, src, p0, p1, C, pixsum); };
  constexpr int64_t kMinParallel = int64_t{1} << 15;
  if (NumThreads(opt) == 1 || in_pix * C < kMinParallel) {
    sums(0, in_pix);
  } else {
    const int64_t chunk = std::max<int64_t>(1, 16384 / std::max<int64_t>(C, 1));
    opt.pool->ParallelFor((in_pix + chunk - 1) / chunk, [&](int64_t c, int) {
      sums(c * chunk, std::min(in_pix, (c + 1) * chunk));
    });
  }
  return r;
}

// Whether the int8 hand-over output of a layer must be reported non-finite:
// its input was, or an output factor is not finite.
[[maybe_unused]] bool HandoverNonFinite(RowState state, const float* f, int64_t n) {
  if (state == RowState::kNonFinite) return true;
  if (state != RowState::kOk) return false;
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(f[i])) return true;
  return false;
}

// What a convolution sets up per image: where the outputs go, the quantized
// input (ConvInput) and, when that input is usable, the output factors f;
// with the int8 hand-over, st->nonfinite reports whether the codes stand for
// non-finite outputs.
struct ImageSetup {
  OutputSink sink;
  const int8_t* q = nullptr;
  RowQuant rq;
};

[[maybe_unused]] ImageSetup BeginImage(const KernelTable& kt, const KernelOptions& opt, const Epilogue& e,
                      const float* x, int64_t in_pix, int64_t C, int8_t* qimg, int32_t* pixsum,
                      const TensorStats* known, float* y, int64_t out_c, float* f, TensorStats* st,
                      uint8_t flip = 0) {
  ImageSetup im;
  im.sink.y = opt.output_q != nullptr ? nullptr : y;
  im.sink.q = opt.output_q;
  im.sink.stats = opt.output_stats != nullptr;
  im.rq = ConvInput(kt, opt, x, in_pix, C, qimg, pixsum, known, &im.q, flip);
  if (im.rq.state == RowState::kOk) ComputeFactors(e, im.rq.s, 0, out_c, f);
  if (opt.output_q != nullptr) st->nonfinite = HandoverNonFinite(im.rq.state, f, out_c);
  return im;
}

template <class F>
[[maybe_unused]] void ParallelFor(const KernelOptions& opt, int64_t n, F&& fn, int64_t macs = INT64_MAX) {
  if (opt.pool && n > 1 && macs >= opt.min_parallel_macs) {
    opt.pool->ParallelFor(n, fn);
  } else {
    for (int64_t i = 0; i < n; ++i) fn(i, 0);
  }
}

struct FcLayout {
  int64_t kp, rows, m;
};

struct ConvLayout {
  int64_t kp, image, tile, threads, out_c;
};

[[maybe_unused]] ConvLayout MakeConvLayout(const PackedWeights& w, const ConvGeometry& g, int threads) {
  ConvLayout l;
  l.kp = DenseRowGeometry(w.scheme, w.k, w.compact).kp;
  l.image = static_cast<int64_t>(g.in_h) * g.in_w * g.in_c;
  l.tile = kConvTilePixels;
  l.threads = threads < 1 ? 1 : threads;
  l.out_c = g.out_c;
  return l;
}

}  // namespace
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_LAYERS_COMMON_H_
