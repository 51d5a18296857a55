// Orchestration of the low-bit layers: on-the-fly int8 quantization of the
// activations, im2col of int8 pixels, threading, and the float epilogue shared
// by every instruction set (so reference and SIMD outputs are bit-identical).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "kernels_internal.h"
#include "thread_pool.h"

namespace tfq {
namespace {

using internal::HandoverCode;
using internal::KernelTable;

constexpr size_t kAlign = 64;
constexpr int kConvTilePixels = 16;

size_t AlignUp(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }

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

enum class RowState : int { kOk = 0, kZero = 1, kNonFinite = 2 };

struct RowQuant {
  float s = 0.0f;
  RowState state = RowState::kZero;
};

// The state and scale of a row or image with these statistics.
RowQuant QuantState(float amax, bool nonfinite) {
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

// Quantizes n floats into q[0, n) and zero-fills q[n, n_padded).
RowQuant QuantizeActivations(const KernelTable& kt, const float* x, int64_t n, int64_t n_padded,
                             int8_t* q, int32_t* sumq, const TensorStats* known = nullptr) {
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
    sum = kt.quantize(x, n, r.s, q);
    std::memset(q + n, 0, n_padded - n);
  } else {
    std::memset(q, 0, n_padded);
  }
  if (sumq) *sumq = static_cast<int32_t>(sum);  // |sum| <= 127 * k < 2^31 (AccumulatorFits)
  return r;
}

int NumThreads(const KernelOptions& opt) { return opt.pool ? opt.pool->num_threads() : 1; }

// Channel sums of pixels [p0, p1) of an image with C channels per pixel.
void PixelSums(const KernelTable& kt, const int8_t* q, int64_t p0, int64_t p1, int64_t C,
               int32_t* pixsum) {
  if (kt.sum_rows_i8 != nullptr) {
    kt.sum_rows_i8(q + p0 * C, p1 - p0, C, pixsum + p0);
    return;
  }
  for (int64_t i = p0; i < p1; ++i) pixsum[i] = static_cast<int32_t>(kt.sum_i8(q + i * C, C));
}

// Quantizes a batch-1 image of in_pix pixels x C channels with one scale, like
// QuantizeActivations (n_padded == n), and writes each pixel's channel sum to
// pixsum when given. With a pool and a large image the passes are split over
// pixel chunks: run on the calling thread alone they were a serial part of
// every convolution, and MobileNetV2 did not get faster with 2 threads.
RowQuant QuantizeImage(const KernelTable& kt, const KernelOptions& opt, const float* x, int64_t in_pix,
                       int64_t C, int8_t* q, int32_t* pixsum, const TensorStats* known) {
  const int64_t n = in_pix * C;
  const int threads = NumThreads(opt);
  constexpr int64_t kMinParallel = int64_t{1} << 15;
  if (threads == 1 || n < kMinParallel || C <= 0) {
    const RowQuant rq = QuantizeActivations(kt, x, n, n, q, nullptr, known);
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
    std::memset(q, 0, n);
    return r;
  }
  opt.pool->ParallelFor(nchunks, [&](int64_t c, int) {
    const int64_t p0 = c * chunk_pix, p1 = std::min(in_pix, p0 + chunk_pix);
    kt.quantize(x + p0 * C, (p1 - p0) * C, r.s, q + p0 * C);
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

// f[o] = scale[o] / s for o in [o0, o1).
void ComputeFactors(const Epilogue& e, float s, int64_t o0, int64_t o1, float* f) {
  if (e.per_channel_scale) {
    for (int64_t o = o0; o < o1; ++o) f[o - o0] = e.scale[o] / s;
  } else {
    const float v = e.scale[0] / s;
    for (int64_t o = o0; o < o1; ++o) f[o - o0] = v;
  }
}

// The epilogue runs over every output: on x86-64 GCC also emits AVX-512 and
// AVX2 clones chosen at load time (same IEEE operations, no FMA: bit-identical
// results).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TFQ_EPILOGUE_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TFQ_EPILOGUE_CLONES
#endif

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

// For `rows` rows r: y[r * ldy + i] = act(float(acc[r * lda + i]) * f[i] + bias[o0 + i])
// for i < o1 - o0 (f starts at o0, bias is indexed by o), or the bias / NaN
// when the input row was zero / non-finite (acc and f unused then).
TFQ_EPILOGUE_CLONES void WriteOutputRows(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
                                         int64_t lda, const float* f, int64_t o0, int64_t o1,
                                         int64_t rows, float* y, int64_t ldy) {
  const int64_t n = o1 - o0;
  if (state == RowState::kNonFinite) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i) y[r * ldy + i] = std::numeric_limits<float>::quiet_NaN();
    return;
  }
  if (state == RowState::kZero) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < n; ++i)
        y[r * ldy + i] = ApplyActivation(e.bias ? e.bias[o0 + i] : 0.0f, e.activation);
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

// WriteOutputRows for the int8 hand-over; a non-finite row is written as
// zeros (the caller reports it through TensorStats::nonfinite).
void WriteOutputRowsQ(const KernelTable& kt, const Epilogue& e, RowState state, const int32_t* acc,
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

void MergeStats(const TensorStats* parts, int n, TensorStats* out) {
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
  WriteOutputRows(kt, e, state, acc, lda, f, o0, o1, rows, y, out_c);
  if (!sink.stats) return;
  if (o1 - o0 == out_c) {
    AccumulateStats(kt, y, rows * out_c, st);
  } else {
    for (int64_t r = 0; r < rows; ++r) AccumulateStats(kt, y + r * out_c, o1 - o0, st);
  }
}

// The quantized image a convolution reads: its own quantization of the float
// input x (into qimg, with pixel sums when pixsum is given), or the int8
// hand-over of the previous layer (whose pixel sums are taken here).
RowQuant ConvInput(const KernelTable& kt, const KernelOptions& opt, const float* x, int64_t in_pix,
                   int64_t C, int8_t* qimg, int32_t* pixsum, const TensorStats* known,
                   const int8_t** q) {
  if (opt.input_q == nullptr) {
    *q = qimg;
    return QuantizeImage(kt, opt, x, in_pix, C, qimg, pixsum, known);
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
bool HandoverNonFinite(RowState state, const float* f, int64_t n) {
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

ImageSetup BeginImage(const KernelTable& kt, const KernelOptions& opt, const Epilogue& e,
                      const float* x, int64_t in_pix, int64_t C, int8_t* qimg, int32_t* pixsum,
                      const TensorStats* known, float* y, int64_t out_c, float* f, TensorStats* st) {
  ImageSetup im;
  im.sink.y = opt.output_q != nullptr ? nullptr : y;
  im.sink.q = opt.output_q;
  im.sink.stats = opt.output_stats != nullptr;
  im.rq = ConvInput(kt, opt, x, in_pix, C, qimg, pixsum, known, &im.q);
  if (im.rq.state == RowState::kOk) ComputeFactors(e, im.rq.s, 0, out_c, f);
  if (opt.output_q != nullptr) st->nonfinite = HandoverNonFinite(im.rq.state, f, out_c);
  return im;
}

template <class F>
void ParallelFor(const KernelOptions& opt, int64_t n, F&& fn, int64_t macs = INT64_MAX) {
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

}  // namespace

Isa SelectedIsa(bool force_reference, int isa_cap) {
  return internal::SelectTable(force_reference, isa_cap).isa;
}

bool IsaAvailable(Isa isa) { return internal::IsaAvailable(isa); }

size_t FullyConnectedScratchBytes(const PackedWeights& w, int64_t m) {
  const int64_t kp = PaddedK(w.scheme, w.k);
  if (kp < 0 || m <= 0) return 0;
  return AlignUp(m * kp) + AlignUp(m * sizeof(int32_t)) + AlignUp(m * sizeof(RowQuant)) +
         AlignUp(m * w.rows * sizeof(int32_t)) + AlignUp(m * w.rows * sizeof(float)) + kAlign;
}

void FullyConnected(const float* x, int64_t m, const PackedWeights& w, const Epilogue& e, float* y,
                    void* scratch, const KernelOptions& opt) {
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  const int64_t kp = PaddedK(w.scheme, w.k);
  const int64_t nblocks = kp / WeightsPerBlock(w.scheme);
  const int64_t rows = w.rows;
  Arena arena(scratch);
  int8_t* q = arena.Take<int8_t>(m * kp);
  int32_t* sumq = arena.Take<int32_t>(m);
  RowQuant* rq = arena.Take<RowQuant>(m);
  int32_t* acc = arena.Take<int32_t>(m * rows);
  float* f = arena.Take<float>(m * rows);
  for (int64_t j = 0; j < m; ++j) {
    rq[j] = QuantizeActivations(kt, x + j * w.k, w.k, kp, q + j * kp, sumq + j);
  }
  // The epilogue of output channels [o0, o1) of every row, after their GEMM.
  const auto write_outputs = [&](int64_t o0, int64_t o1) {
    for (int64_t j = 0; j < m; ++j) {
      float* fj = f + j * rows + o0;
      if (rq[j].state == RowState::kOk) ComputeFactors(e, rq[j].s, o0, o1, fj);
      WriteOutputs(kt, e, rq[j].state, acc + j * rows + o0, fj, o0, o1, y + j * rows + o0);
    }
  };
  const int threads = NumThreads(opt);
  const bool use_exec = m >= 4 && w.exec != nullptr && kt.gemm_exec != nullptr &&
                        kt.exec_group == w.exec_group;
  if (use_exec) {
    // Batched rows: channel-interleaved layout, threads over channel groups.
    const int64_t group = w.exec_group;
    const int64_t groups = (rows + group - 1) / group;
    const int64_t group_bytes = nblocks * 32 * group;
    int64_t per = 1;
    if (threads > 1) per = std::max<int64_t>(1, groups / (threads * 2));
    const int64_t tasks = (groups + per - 1) / per;
    const int64_t macs = m * rows * kp;
    ParallelFor(opt, tasks, [&](int64_t task, int) {
      const int64_t g0 = task * per, g1 = std::min(groups, g0 + per);
      const int64_t o0 = g0 * group, o1 = std::min(rows, g1 * group);
      kt.gemm_exec(w.scheme, w.exec + g0 * group_bytes, o1 - o0, nblocks, w.k, q, kp, sumq, m,
                   acc + o0, rows);
      write_outputs(o0, o1);
    }, macs);
    return;
  }
  // Split the output rows in chunks of 8 (multiples of the SIMD row tiles).
  int64_t chunk = 8;
  const int64_t wanted_tasks = threads > 1 ? threads * 4 : 1;
  if (rows / wanted_tasks > chunk) chunk = (rows / wanted_tasks + 7) / 8 * 8;
  const int64_t tasks = (rows + chunk - 1) / chunk;
  const int64_t macs = m * rows * kp;
  ParallelFor(opt, tasks, [&](int64_t task, int) {
    const int64_t o0 = task * chunk, o1 = std::min(rows, o0 + chunk);
    kt.gemm(w.scheme, w.codes + o0 * w.row_bytes, w.row_bytes, o1 - o0, q, kp, sumq, m, nblocks,
            acc + o0, rows);
    write_outputs(o0, o1);
  }, macs);
}

static ConvLayout MakeConvLayout(const PackedWeights& w, const ConvGeometry& g, int threads) {
  ConvLayout l;
  l.kp = PaddedK(w.scheme, w.k);
  l.image = static_cast<int64_t>(g.in_h) * g.in_w * g.in_c;
  l.tile = kConvTilePixels;
  l.threads = threads < 1 ? 1 : threads;
  l.out_c = g.out_c;
  return l;
}

size_t Conv2DScratchBytes(const PackedWeights& w, const ConvGeometry& g, int num_threads) {
  const ConvLayout l = MakeConvLayout(w, g, num_threads);
  if (l.kp < 0) return 0;
  const size_t per_thread = AlignUp(l.tile * l.kp) + AlignUp(l.tile * sizeof(int32_t)) +
                            AlignUp(l.tile * l.out_c * sizeof(int32_t));
  return AlignUp(l.image) + AlignUp(l.out_c * sizeof(float)) +
         AlignUp(static_cast<int64_t>(g.in_h) * g.in_w * sizeof(int32_t)) +
         l.threads * per_thread + kAlign;
}

void Conv2D(const float* x, const ConvGeometry& g, const PackedWeights& w, const Epilogue& e,
            float* y, void* scratch, const KernelOptions& opt) {
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  const int threads = NumThreads(opt);
  const ConvLayout l = MakeConvLayout(w, g, threads);
  const int64_t nblocks = l.kp / WeightsPerBlock(w.scheme);
  Arena arena(scratch);
  int8_t* qimg = arena.Take<int8_t>(l.image);
  float* f = arena.Take<float>(g.out_c);
  int32_t* pixsum = arena.Take<int32_t>(static_cast<int64_t>(g.in_h) * g.in_w);
  struct ThreadScratch {
    int8_t* cols;
    int32_t* sumq;
    int32_t* acc;
  };
  ThreadScratch ts[64];
  for (int t = 0; t < threads && t < 64; ++t) {
    ts[t].cols = arena.Take<int8_t>(l.tile * l.kp);
    ts[t].sumq = arena.Take<int32_t>(l.tile);
    ts[t].acc = arena.Take<int32_t>(l.tile * l.out_c);
  }
  const int64_t npix = static_cast<int64_t>(g.out_h) * g.out_w;
  const int64_t ntiles = (npix + l.tile - 1) / l.tile;
  const bool use_exec = w.exec != nullptr && kt.gemm_exec != nullptr && kt.exec_group == w.exec_group;
  const int64_t C = g.in_c;
  // 1x1, stride 1, no padding, and rows that need no zero tail: the quantized
  // image is already the im2col matrix.
  // With the execution-layout GEMM (which reads no position >= k when k is a
  // multiple of 4), rows need no zero tail either.
  const bool direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
                      g.pad_top == 0 && g.pad_left == 0 && g.out_h == g.in_h &&
                      g.out_w == g.in_w && (l.kp == C || (use_exec && C % 4 == 0));
  TensorStats tstats[64];  // per thread: statistics of the outputs it wrote
  const TensorStats* known = g.batch == 1 ? opt.input_stats : nullptr;
  for (int n = 0; n < g.batch; ++n) {
    // pixsum: the sum of each input pixel's channels; the im2col row sums add them up.
    const ImageSetup im = BeginImage(kt, opt, e, x + n * l.image, static_cast<int64_t>(g.in_h) * g.in_w,
                                     C, qimg, pixsum, known, y + n * npix * g.out_c, g.out_c, f,
                                     &tstats[0]);
    const OutputSink& sink = im.sink;
    const RowQuant rq = im.rq;
    const int8_t* qsrc = im.q;
    const int64_t macs = npix * g.out_c * w.k;
    // Output channels [o0, o1) of one tile.
    const auto run_tile = [&](int64_t tile, int64_t o0, int64_t o1, int tid) {
      const ThreadScratch& s = ts[tid];
      const int64_t p0 = tile * l.tile, p1 = std::min(npix, p0 + l.tile);
      const int64_t np = p1 - p0;
      if (rq.state != RowState::kOk) {
        EmitPixels(kt, e, rq.state, nullptr, 0, nullptr, g.out_c, o0, o1, p0, np, sink, &tstats[tid]);
        return;
      }
      const int8_t* a;
      int64_t lda;
      if (direct) {
        a = qsrc + p0 * C;
        lda = C;
        for (int64_t p = 0; p < np; ++p) s.sumq[p] = pixsum[p0 + p];
      } else {
        for (int64_t p = 0; p < np; ++p) {
          const int64_t pix = p0 + p;
          const int oy = static_cast<int>(pix / g.out_w), ox = static_cast<int>(pix % g.out_w);
          int8_t* row = s.cols + p * l.kp;
          int8_t* dst = row;
          int64_t sum = 0;
          const int ix0 = ox * g.stride_w - g.pad_left;
          const bool run = g.dilation_w == 1 && ix0 >= 0 && ix0 + g.kernel_w <= g.in_w;
          for (int kh = 0; kh < g.kernel_h; ++kh) {
            const int iy = oy * g.stride_h - g.pad_top + kh * g.dilation_h;
            const bool row_in = iy >= 0 && iy < g.in_h;
            if (row_in && run) {
              // The kw taps of this kernel row are adjacent pixels: one copy.
              const int64_t base = static_cast<int64_t>(iy) * g.in_w + ix0;
              std::memcpy(dst, qsrc + base * C, g.kernel_w * C);
              for (int kw = 0; kw < g.kernel_w; ++kw) sum += pixsum[base + kw];
              dst += g.kernel_w * C;
              continue;
            }
            for (int kw = 0; kw < g.kernel_w; ++kw) {
              const int ix = ix0 + kw * g.dilation_w;
              if (row_in && ix >= 0 && ix < g.in_w) {
                const int64_t pi = static_cast<int64_t>(iy) * g.in_w + ix;
                std::memcpy(dst, qsrc + pi * C, C);
                sum += pixsum[pi];
              } else {
                std::memset(dst, 0, C);
              }
              dst += C;
            }
          }
          std::memset(dst, 0, l.kp - (dst - row));
          s.sumq[p] = static_cast<int32_t>(sum);
        }
        a = s.cols;
        lda = l.kp;
      }
      if (use_exec) {
        const int64_t group_bytes = nblocks * 32 * w.exec_group;
        kt.gemm_exec(w.scheme, w.exec + o0 / w.exec_group * group_bytes, o1 - o0, nblocks, w.k, a,
                     lda, s.sumq, np, s.acc + o0, g.out_c);
      } else {
        kt.gemm(w.scheme, w.codes + o0 * w.row_bytes, w.row_bytes, o1 - o0, a, lda, s.sumq, np,
                nblocks, s.acc + o0, g.out_c);
      }
      EmitPixels(kt, e, RowState::kOk, s.acc + o0, g.out_c, f + o0, g.out_c, o0, o1, p0, np, sink,
                 &tstats[tid]);
    };
    // Tasks: runs of tiles, about 8 tasks per thread (a task claim is a
    // contended atomic, and a 16-pixel tile of a thin layer costs less than
    // that); with fewer tiles than 4 per thread (7x7 and 14x14 layers), each
    // tile split into chunks of output channels (its im2col then repeats).
    int64_t cchunk = g.out_c;
    if (threads > 1 && ntiles < 4 * threads) {
      const int64_t unit = use_exec ? w.exec_group : 8;
      const int64_t pieces = (4 * threads + ntiles - 1) / ntiles;
      cchunk = std::max<int64_t>(unit, ((g.out_c + pieces - 1) / pieces + unit - 1) / unit * unit);
    }
    const int64_t nch = (g.out_c + cchunk - 1) / cchunk;
    const int64_t per = nch > 1 ? 1 : std::max<int64_t>(1, ntiles / (8 * static_cast<int64_t>(threads)));
    ParallelFor(opt, (ntiles * nch + per - 1) / per, [&](int64_t task, int tid) {
      for (int64_t t = task * per, end = std::min(ntiles * nch, t + per); t < end; ++t) {
        const int64_t o0 = t % nch * cchunk;
        run_tile(t / nch, o0, std::min<int64_t>(g.out_c, o0 + cchunk), tid);
      }
    }, macs);
  }
  if (opt.output_stats) MergeStats(tstats, threads, opt.output_stats);
}

// table[v][t]: level of field t of byte value v (codes are validated before
// use; an invalid code maps to an arbitrary value here).
using ByteLevels = int8_t[256][8];

const ByteLevels& ByteLevelTable(Scheme s) {
  struct Tables {
    ByteLevels t[4];
    Tables() {
      for (int si = 0; si < 4; ++si) {
        const Scheme sc = static_cast<Scheme>(si);
        const int bits = SchemeBits(sc);
        for (int v = 0; v < 256; ++v)
          for (int f = 0; f < 8; ++f)
            t[si][v][f] = f < 8 / bits ? static_cast<int8_t>(CodeLevel(sc, (v >> (f * bits)) & ((1 << bits) - 1)))
                                       : 0;
      }
    }
  };
  static const Tables tables;
  return tables.t[static_cast<int>(s)];
}

size_t DepthwiseScratchBytes(const PackedWeights& w, const ConvGeometry& g, int num_threads) {
  const ConvLayout l = MakeConvLayout(w, g, num_threads);
  const int64_t taps = static_cast<int64_t>(g.kernel_h) * g.kernel_w;
  const int64_t stride = (static_cast<int64_t>(g.out_c) + 31) / 32 * 32;
  // acc: one output row (out_w pixels) for the row kernels, one pixel otherwise.
  const size_t per_thread = AlignUp(taps * sizeof(int8_t*)) +
                            AlignUp(static_cast<int64_t>(g.out_w) * g.out_c * sizeof(int32_t));
  return AlignUp(taps * stride * sizeof(int16_t)) + AlignUp(l.image + kHandoverSlack) + AlignUp(g.out_c * sizeof(float)) + l.threads * per_thread + kAlign;
}

void DepthwiseConv2D(const float* x, const ConvGeometry& g, const PackedWeights& w,
                     const Epilogue& e, float* y, void* scratch, const KernelOptions& opt) {
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  const int threads = NumThreads(opt);
  const ConvLayout l = MakeConvLayout(w, g, threads);
  const int ntaps = g.kernel_h * g.kernel_w;
  Arena arena(scratch);
  // SIMD depthwise kernels read whole groups of 32 channels: keep slack.
  int8_t* qimg = arena.Take<int8_t>(l.image + kHandoverSlack);
  std::memset(qimg + l.image, 0, kHandoverSlack);
  float* f = arena.Take<float>(g.out_c);
  const int64_t stride = (static_cast<int64_t>(g.out_c) + 31) / 32 * 32;
  struct ThreadScratch {
    const int8_t** taps;
    int32_t* acc;
  };
  ThreadScratch ts[64];
  for (int t = 0; t < threads && t < 64; ++t) {
    ts[t].taps = arena.Take<const int8_t*>(ntaps);
    ts[t].acc = arena.Take<int32_t>(static_cast<int64_t>(g.out_w) * g.out_c);
  }
  // Levels decoded once per invoke into scratch (transient, taps x channels
  // int16, a few KB): the weights stay packed at rest.
  int16_t* levels = arena.Take<int16_t>(ntaps * stride);
  const bool use_levels = kt.depthwise_levels != nullptr && g.depth_multiplier == 1;
  const bool use_rows = use_levels && kt.depthwise_levels_row != nullptr;
  const int wpb = WeightsPerBlock(w.scheme);
  const int64_t C = g.in_c;
  TensorStats tstats[64];  // per thread: statistics of the outputs it wrote
  const TensorStats* known = g.batch == 1 ? opt.input_stats : nullptr;
  for (int n = 0; n < g.batch; ++n) {
    const ImageSetup im = BeginImage(kt, opt, e, x + n * l.image, static_cast<int64_t>(g.in_h) * g.in_w,
                                     C, qimg, nullptr, known,
                                     y + static_cast<int64_t>(n) * g.out_h * g.out_w * g.out_c,
                                     g.out_c, f, &tstats[0]);
    const OutputSink& sink = im.sink;
    const RowQuant rq = im.rq;
    const int8_t* qsrc = im.q;
    if (use_levels && rq.state == RowState::kOk && n == 0) {
      // Level of every code of every byte value (built once per scheme), then
      // one lookup per weight.
      const ByteLevels& table = ByteLevelTable(w.scheme);
      const int fields = wpb / 32;
      for (int t = 0; t < ntaps; ++t) {
        int16_t* lv = levels + t * stride;
        const uint8_t* row = w.codes + t * w.row_bytes;
        // Channel blk*wpb + f*32 + j is field f of byte blk*32 + j.
        for (int blk = 0; blk * wpb < g.out_c; ++blk) {
          for (int j = 0; j < 32; ++j) {
            const int8_t* byte_levels = table[row[blk * 32 + j]];
            for (int f = 0; f < fields; ++f) {
              const int o = blk * wpb + f * 32 + j;
              if (o < g.out_c) lv[o] = byte_levels[f];
            }
          }
        }
        for (int64_t o = g.out_c; o < stride; ++o) lv[o] = 0;
      }
    }
    // A depthwise multiply-add (int16, no reuse) costs about 8 times one of the
    // GEMM (vpdpbusd), for which min_parallel_macs is set: weigh them so that
    // 10-30 us depthwise layers (MobileNetV2 at 28x28 and below) are split too.
    const int64_t dw_macs = static_cast<int64_t>(g.out_h) * g.out_w * g.out_c * ntaps * 8;
    ParallelFor(opt, g.out_h, [&](int64_t oy, int tid) {
      const ThreadScratch& s = ts[tid];
      if (use_rows || rq.state != RowState::kOk) {
        if (rq.state == RowState::kOk)
          kt.depthwise_levels_row(levels, stride, qsrc, g, static_cast<int>(oy), s.acc);
        EmitPixels(kt, e, rq.state, s.acc, g.out_c, f, g.out_c, 0, g.out_c, oy * g.out_w, g.out_w, sink,
                   &tstats[tid]);
        return;
      }
      for (int ox = 0; ox < g.out_w; ++ox) {
        int t = 0;
        for (int kh = 0; kh < g.kernel_h; ++kh) {
          const int iy = static_cast<int>(oy) * g.stride_h - g.pad_top + kh * g.dilation_h;
          for (int kw = 0; kw < g.kernel_w; ++kw, ++t) {
            const int ix = ox * g.stride_w - g.pad_left + kw * g.dilation_w;
            s.taps[t] = (iy >= 0 && iy < g.in_h && ix >= 0 && ix < g.in_w)
                            ? qsrc + (static_cast<int64_t>(iy) * g.in_w + ix) * C
                            : nullptr;
          }
        }
        if (use_levels) {
          kt.depthwise_levels(levels, stride, s.taps, ntaps, g.out_c, s.acc);
        } else {
          kt.depthwise_pixel(w.scheme, w.codes, w.row_bytes, s.taps, ntaps, g.depth_multiplier,
                             g.out_c, s.acc);
        }
        EmitPixels(kt, e, RowState::kOk, s.acc, 0, f, g.out_c, 0, g.out_c, oy * g.out_w + ox, 1, sink,
                   &tstats[tid]);
      }
    }, dw_macs);
  }
  if (opt.output_stats) MergeStats(tstats, threads, opt.output_stats);
}

}  // namespace tfq
