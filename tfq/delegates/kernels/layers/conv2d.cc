// Conv2D: the image quantized once, im2col of int8 pixels in tiles (or the
// image itself for 1x1 stride-1 layers), the GEMM per tile, threads over
// tiles and channel chunks, the epilogue or the int8 hand-over.
// Block-sparse weights whose blocks never straddle two taps (in_c a
// multiple of block_cols) need no im2col at all: the sparse GEMM reads each
// stored block's activations straight from the image (implicit im2col),
// biased (u = q + 128, SparseGemmFn) in place, or into a zero-padded copy
// when the geometry has padding or the image is the previous layer's int8
// hand-over.
#include "kernels/layers/common.h"
#include "kernels/sparse/sparse.h"

namespace tfq {
namespace {

// The zero-padded image of the implicit im2col: pixel (y, x) of the input at
// (y + pad_top, x + pad_left); ph x pw pixels cover every tap of every output.
struct PaddedGeometry {
  int64_t ph = 0, pw = 0;
  bool copy = false;  // false: no padding needed
};

PaddedGeometry PaddedImage(const ConvGeometry& g) {
  PaddedGeometry p;
  const int64_t need_h = static_cast<int64_t>(g.out_h - 1) * g.stride_h + (g.kernel_h - 1) * g.dilation_h + 1;
  const int64_t need_w = static_cast<int64_t>(g.out_w - 1) * g.stride_w + (g.kernel_w - 1) * g.dilation_w + 1;
  p.ph = std::max<int64_t>(need_h, g.pad_top + g.in_h);
  p.pw = std::max<int64_t>(need_w, g.pad_left + g.in_w);
  p.copy = g.pad_top != 0 || g.pad_left != 0 || p.ph != g.in_h || p.pw != g.in_w;
  return p;
}

bool ImplicitSparse(const PackedWeights& w, const ConvGeometry& g) {
  return w.sparse != nullptr && (w.conv_run > 0 || g.in_c % w.sparse->block_cols == 0);
}

// Bytes readable past the (padded) image of the implicit im2col: the
// zero-weight tail of a kernel row's run (PackedWeights::conv_run) reads up
// to block_cols - 1 bytes past a window's last pixel.
constexpr int64_t kRunSlack = 64;

// The conv layout, with larger pixel tiles for the implicit block-sparse
// GEMM, which decodes a block row once per tile (sparse/simd.h): up to 64
// pixels, while a thread's int32 tile stays within 64 KB.
ConvLayout SparseAwareLayout(const PackedWeights& w, const ConvGeometry& g, int threads) {
  ConvLayout l = MakeConvLayout(w, g, threads);
  if (ImplicitSparse(w, g))
    l.tile = std::clamp<int64_t>(16384 / std::max(1, g.out_c), kConvTilePixels, 64);
  return l;
}

}  // namespace

size_t Conv2DScratchBytes(const PackedWeights& w, const ConvGeometry& g, int num_threads) {
  const ConvLayout l = SparseAwareLayout(w, g, num_threads);
  if (l.kp < 0) return 0;
  const size_t per_thread = AlignUp(l.tile * l.kp) + AlignUp(l.tile * sizeof(int32_t)) +
                            AlignUp(l.tile * l.out_c * sizeof(int32_t));
  size_t sparse = 0;
  if (w.sparse != nullptr) {
    // Block-column offsets (at most one per position), per-thread pixel
    // pointers, and the padded image of the implicit im2col.
    const PaddedGeometry pg = PaddedImage(g);
    // When the prepared weights carry no level sums (over their memory
    // budget), the sums of every block row, computed once per invoke.
    const int64_t sums = w.sparse->level_sums == nullptr
                             ? w.sparse->block_row_count * w.sparse->block_rows : 0;
    sparse = AlignUp(w.k * sizeof(int64_t)) + l.threads * AlignUp(l.tile * sizeof(const int8_t*)) +
             (ImplicitSparse(w, g) ? AlignUp(pg.ph * pg.pw * g.in_c + kRunSlack) : 0) +
             AlignUp(sums * sizeof(int32_t));
  }
  return AlignUp(l.image + kRunSlack) + AlignUp(l.out_c * sizeof(float)) +
         AlignUp(static_cast<int64_t>(g.in_h) * g.in_w * sizeof(int32_t)) +
         l.threads * per_thread + sparse + kAlign;
}

void Conv2D(const float* x, const ConvGeometry& g, const PackedWeights& w_in, const Epilogue& e,
            float* y, void* scratch, const KernelOptions& opt) {
  PackedWeights w = w_in;
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  const int threads = NumThreads(opt);
  const ConvLayout l = SparseAwareLayout(w, g, threads);
  const RowGeometry geo = DenseRowGeometry(w.scheme, w.k, w.compact);
  const int64_t nblocks = geo.blocks, ntail = geo.tail;
  Arena arena(scratch);
  int8_t* qimg = arena.Take<int8_t>(l.image + kRunSlack);
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
  // Block-sparse: block-column offsets into the (padded) image, or into an
  // im2col row when blocks may straddle taps.
  const bool implicit = ImplicitSparse(w, g);
  const PaddedGeometry pg = PaddedImage(g);
  int64_t* coloff = nullptr;
  const uint8_t** tptrs[64] = {};
  uint8_t* padded = nullptr;
  SparseWeights with_sums;
  if (w.sparse != nullptr) {
    const int64_t C = w.sparse->block_cols, nbc = (w.k + C - 1) / C;
    coloff = arena.Take<int64_t>(nbc);
    for (int t = 0; t < threads && t < 64; ++t) tptrs[t] = arena.Take<const uint8_t*>(l.tile);
    if (implicit) padded = arena.Take<uint8_t>(pg.ph * pg.pw * g.in_c + kRunSlack);
    if (w.sparse->level_sums == nullptr) {
      // Without them the SIMD kernels would sum each block row's levels
      // again for every pixel tile.
      const SparseWeights& sw = *w.sparse;
      int32_t* sums = arena.Take<int32_t>(sw.block_row_count * sw.block_rows);
      for (int64_t br = 0; br < sw.block_row_count; ++br)
        BlockRowLevelSums(w.scheme, w.rows, w.k, sw, br, sums + br * sw.block_rows);
      with_sums = sw;
      with_sums.level_sums = sums;
      w.sparse = &with_sums;
    }
    for (int64_t bc = 0; bc < nbc; ++bc) {
      const int64_t pos = bc * C;
      if (!implicit) {
        coloff[bc] = pos;
        continue;
      }
      if (w.conv_run > 0) {
        const int64_t kh = pos / w.conv_run, off = pos % w.conv_run;
        coloff[bc] = kh * g.dilation_h * pg.pw * g.in_c + off;
        continue;
      }
      const int64_t tap = pos / g.in_c, ci = pos % g.in_c;
      const int64_t kh = tap / g.kernel_w, kw = tap % g.kernel_w;
      coloff[bc] = (kh * g.dilation_h * pg.pw + kw * g.dilation_w) * g.in_c + ci;
    }
  }
  const int64_t npix = static_cast<int64_t>(g.out_h) * g.out_w;
  const int64_t ntiles = (npix + l.tile - 1) / l.tile;
  const bool use_exec = w.exec != nullptr && kt.gemm_exec != nullptr && kt.exec_group == w.exec_group;
  const int64_t C = g.in_c;
  // 1x1, stride 1, no padding, and rows that need no zero tail: the quantized
  // image is already the im2col matrix.
  // With the execution-layout GEMM (which reads no position >= k when k is a
  // multiple of 4), rows need no zero tail either; nor with the block-sparse
  // GEMM, which reads no position >= k.
  const bool direct = g.kernel_h == 1 && g.kernel_w == 1 && g.stride_h == 1 && g.stride_w == 1 &&
                      g.pad_top == 0 && g.pad_left == 0 && g.out_h == g.in_h &&
                      g.out_w == g.in_w && (l.kp == C || (use_exec && C % 4 == 0));
  TensorStats tstats[64];  // per thread: statistics of the outputs it wrote
  const TensorStats* known = g.batch == 1 ? opt.input_stats : nullptr;
  for (int n = 0; n < g.batch; ++n) {
    // pixsum: the sum of each input pixel's channels; the im2col row sums add them up.
    // (The block-sparse GEMM needs no pixel sums.)
    // The implicit block-sparse GEMM reading the quantized image in place
    // gets it biased (u = q + 128) by the quantization itself.
    const bool biased = implicit && !pg.copy && opt.input_q == nullptr;
    const ImageSetup im = BeginImage(kt, opt, e, x + n * l.image, static_cast<int64_t>(g.in_h) * g.in_w,
                                     C, qimg, w.sparse != nullptr ? nullptr : pixsum, known,
                                     y + n * npix * g.out_c, g.out_c, f, &tstats[0], biased ? 0x80 : 0);
    OutputSink sink = im.sink;
    if (opt.residual != nullptr && sink.y != nullptr) {
      sink.residual = opt.residual + n * npix * g.out_c;
      sink.residual_activation = opt.residual_activation;
    }
    const RowQuant rq = im.rq;
    const int8_t* qsrc = im.q;
    // The implicit im2col's biased image: the quantized one biased in
    // place, or a padded biased copy (padding: q = 0, u = 128).
    const uint8_t* pimg = padded;
    if (implicit && rq.state == RowState::kOk) {
      if (!pg.copy && qsrc == qimg) {
        if (!biased) BiasActivations(qimg, l.image, reinterpret_cast<uint8_t*>(qimg));
        pimg = reinterpret_cast<const uint8_t*>(qimg);
      } else {
        const int64_t row = pg.pw * C;
        std::memset(padded, 0x80, g.pad_top * row);
        for (int64_t yy = 0; yy < g.in_h; ++yy) {
          uint8_t* dst = padded + (yy + g.pad_top) * row;
          std::memset(dst, 0x80, g.pad_left * C);
          BiasActivations(qsrc + yy * g.in_w * C, g.in_w * C, dst + g.pad_left * C);
          std::memset(dst + (g.pad_left + g.in_w) * C, 0x80, (pg.pw - g.pad_left - g.in_w) * C);
        }
        std::memset(padded + (g.pad_top + g.in_h) * row, 0x80, (pg.ph - g.pad_top - g.in_h) * row);
      }
    }
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
      if (implicit) {
        const uint8_t** ptrs = tptrs[tid];
        // One division per tile, then the output column steps along.
        int64_t oy = p0 / g.out_w, ox = p0 % g.out_w;
        const uint8_t* row = pimg + oy * g.stride_h * pg.pw * C;
        const int64_t step = g.stride_w * C, row_step = g.stride_h * pg.pw * C;
        for (int64_t p = 0; p < np; ++p) {
          ptrs[p] = row + ox * step;
          if (++ox == g.out_w) {
            ox = 0;
            row += row_step;
          }
        }
        kt.sparse_gemm(w, o0, o1, ptrs, coloff, np, s.acc + o0, g.out_c);
        EmitPixels(kt, e, RowState::kOk, s.acc + o0, g.out_c, f + o0, g.out_c, o0, o1, p0, np, sink,
                   &tstats[tid]);
        return;
      }
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
      if (w.sparse != nullptr) {
        // im2col rows biased in place (they are this thread's copy).
        const uint8_t** ptrs = tptrs[tid];
        for (int64_t p = 0; p < np; ++p) {
          BiasActivations(s.cols + p * l.kp, l.kp, reinterpret_cast<uint8_t*>(s.cols + p * l.kp));
          ptrs[p] = reinterpret_cast<const uint8_t*>(s.cols + p * l.kp);
        }
        kt.sparse_gemm(w, o0, o1, ptrs, coloff, np, s.acc + o0, g.out_c);
      } else if (use_exec) {
        const int64_t group_bytes = w.row_bytes * w.exec_group;
        kt.gemm_exec(w.scheme, w.exec + o0 / w.exec_group * group_bytes, o1 - o0, nblocks, ntail, w.k,
                     a, lda, s.sumq, np, s.acc + o0, g.out_c);
      } else {
        kt.gemm(w.scheme, w.codes + o0 * w.row_bytes, w.row_bytes, o1 - o0, a, lda, s.sumq, np,
                nblocks, ntail, s.acc + o0, g.out_c);
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
      const int64_t unit = use_exec ? w.exec_group
                           : w.sparse != nullptr ? std::max(8, w.sparse->block_rows)
                                                 : 8;
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

}  // namespace tfq
