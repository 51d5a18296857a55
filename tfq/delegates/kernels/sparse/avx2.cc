// Block-sparse GEMM, AVX2 (vpmaddubsw + vpmaddwd; sparse/simd.h): 256-bit
// vectors for blocks of 8-32 rows, 128-bit for 4 rows.
#include "kernels/microkernels.h"
#include "kernels/sparse/simd.h"

namespace tfq {
namespace internal {

void SparseGemmAvx2(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                    const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  if (!SpFast(w)) return SparseGemm(w, o0, o1, a, col_offset, n_act, c, ldc);
  // 16 vector registers: about 8 accumulators.
  switch (w.sparse->block_rows) {
    case 4: return SpGemmShape<SpPair256, 1, 8>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 8: return SpGemmShape<SpVec256, 1, 8>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 16: return SpGemmShape<SpVec256, 2, 8>(w, o0, o1, a, col_offset, n_act, c, ldc);
    default: return SpGemmShape<SpVec256, 4, 8>(w, o0, o1, a, col_offset, n_act, c, ldc);
  }
}

}  // namespace internal
}  // namespace tfq
