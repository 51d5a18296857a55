// DepthwiseConv2D: the image quantized once, the levels decoded once per
// invoke to int16, per-pixel or per-row micro-kernels threaded over output
// rows, the epilogue or the int8 hand-over.
#include "kernels/layers/common.h"

namespace tfq {

// table[v][t]: level of field t of byte value v (codes are validated before
// use; an invalid code maps to an arbitrary value here).
using ByteLevels = int8_t[256][8];

namespace {

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

}  // namespace

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
