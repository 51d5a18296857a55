// FullyConnected: activation rows quantized on the fly, the GEMM (row-dot or,
// batched, channel-interleaved) threaded over output channels, the epilogue.
#include "kernels/layers/common.h"
#include "kernels/sparse/sparse.h"

namespace tfq {

size_t FullyConnectedScratchBytes(const PackedWeights& w, int64_t m) {
  const int64_t kp = DenseRowGeometry(w.scheme, w.k, w.compact).kp;
  if (kp < 0 || m <= 0) return 0;
  // Block-sparse: the row pointers and the block-column offsets (at most
  // one per position) of the sparse GEMM.
  const size_t sparse = w.sparse != nullptr
                            ? AlignUp(m * sizeof(const int8_t*)) + AlignUp(w.k * sizeof(int64_t))
                            : 0;
  return AlignUp(m * kp) + AlignUp(m * sizeof(int32_t)) + AlignUp(m * sizeof(RowQuant)) +
         AlignUp(m * w.rows * sizeof(int32_t)) + AlignUp(m * w.rows * sizeof(float)) + sparse + kAlign;
}

void FullyConnected(const float* x, int64_t m, const PackedWeights& w, const Epilogue& e, float* y,
                    void* scratch, const KernelOptions& opt) {
  const KernelTable& kt = internal::SelectTable(opt.force_reference, opt.isa_cap);
  const RowGeometry geo = DenseRowGeometry(w.scheme, w.k, w.compact);
  const int64_t kp = geo.kp;
  const int64_t nblocks = geo.blocks, ntail = geo.tail;
  const int64_t rows = w.rows;
  Arena arena(scratch);
  int8_t* q = arena.Take<int8_t>(m * kp);
  int32_t* sumq = arena.Take<int32_t>(m);
  RowQuant* rq = arena.Take<RowQuant>(m);
  int32_t* acc = arena.Take<int32_t>(m * rows);
  float* f = arena.Take<float>(m * rows);
  const uint8_t** arows = nullptr;
  int64_t* coloff = nullptr;
  if (w.sparse != nullptr) {
    arows = arena.Take<const uint8_t*>(m);
    const int64_t C = w.sparse->block_cols, nbc = (w.k + C - 1) / C;
    coloff = arena.Take<int64_t>(nbc);
    for (int64_t j = 0; j < m; ++j) arows[j] = reinterpret_cast<const uint8_t*>(q + j * kp);
    for (int64_t bc = 0; bc < nbc; ++bc) coloff[bc] = bc * C;
  }
  // The sparse GEMM reads biased activations (u = q + 128): quantized so.
  const uint8_t flip = w.sparse != nullptr ? 0x80 : 0;
  for (int64_t j = 0; j < m; ++j) {
    rq[j] = QuantizeActivations(kt, x + j * w.k, w.k, kp, q + j * kp, sumq + j, nullptr, flip);
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
    const int64_t group_bytes = w.row_bytes * group;
    int64_t per = 1;
    if (threads > 1) per = std::max<int64_t>(1, groups / (threads * 2));
    const int64_t tasks = (groups + per - 1) / per;
    const int64_t macs = m * rows * kp;
    ParallelFor(opt, tasks, [&](int64_t task, int) {
      const int64_t g0 = task * per, g1 = std::min(groups, g0 + per);
      const int64_t o0 = g0 * group, o1 = std::min(rows, g1 * group);
      kt.gemm_exec(w.scheme, w.exec + g0 * group_bytes, o1 - o0, nblocks, ntail, w.k, q, kp, sumq, m,
                   acc + o0, rows);
      write_outputs(o0, o1);
    }, macs);
    return;
  }
  // Split the output rows in chunks of 8 (multiples of the SIMD row tiles),
  // or of whole block rows.
  const int64_t unit = w.sparse != nullptr ? std::max<int64_t>(8, w.sparse->block_rows) : 8;
  int64_t chunk = unit;
  const int64_t wanted_tasks = threads > 1 ? threads * 4 : 1;
  if (rows / wanted_tasks > chunk) chunk = (rows / wanted_tasks + unit - 1) / unit * unit;
  const int64_t tasks = (rows + chunk - 1) / chunk;
  // A dense batch-1 GEMV splits from half the threshold: each task streams
  // its own rows against the one quantized input row, nothing is repeated
  // per task, and the worker is still spinning from the previous layer
  // (measured, 3x Dense 1024x1024 at 2 threads: 24 -> 15 us).
  const int64_t macs = (m == 1 && w.sparse == nullptr ? 2 : m) * rows * kp;
  ParallelFor(opt, tasks, [&](int64_t task, int) {
    const int64_t o0 = task * chunk, o1 = std::min(rows, o0 + chunk);
    if (w.sparse != nullptr) {
      kt.sparse_gemm(w, o0, o1, arows, coloff, m, acc + o0, rows);
    } else {
      kt.gemm(w.scheme, w.codes + o0 * w.row_bytes, w.row_bytes, o1 - o0, q, kp, sumq, m, nblocks,
              ntail, acc + o0, rows);
    }
    write_outputs(o0, o1);
  }, macs);
}

}  // namespace tfq
