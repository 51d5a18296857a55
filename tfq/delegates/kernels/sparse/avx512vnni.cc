// Block-sparse GEMM, AVX-512 VNNI (vpdpbusd; sparse/simd.h): a 512-bit
// version (16 rows per vector) and a 256-bit one (AVX512VL forms, 8 rows per
// vector) for CPUs that execute 512-bit operations as two halves
// (dispatch.cc chooses); 128-bit vectors for blocks of 4 rows in both.
#include "kernels/microkernels.h"
#include "kernels/sparse/simd.h"

namespace tfq {
namespace internal {

// 32 vector registers: up to 16 accumulators.
void SparseGemmAvx512Vnni(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                          const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  if (!SpFast(w)) return SparseGemm(w, o0, o1, a, col_offset, n_act, c, ldc);
  switch (w.sparse->block_rows) {
    case 4: return SpGemmShape<SpPair256, 1, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 8: return SpGemmShape<SpVec256, 1, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 16: return SpGemmShape<SpVec512, 1, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    default: return SpGemmShape<SpVec512, 2, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
  }
}

void SparseGemmAvx512Vnni256(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                             const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  if (!SpFast(w)) return SparseGemm(w, o0, o1, a, col_offset, n_act, c, ldc);
  switch (w.sparse->block_rows) {
    case 4: return SpGemmShape<SpPair256, 1, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 8: return SpGemmShape<SpVec256, 1, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    case 16: return SpGemmShape<SpVec256, 2, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
    default: return SpGemmShape<SpVec256, 4, 16>(w, o0, o1, a, col_offset, n_act, c, ldc);
  }
}

}  // namespace internal
}  // namespace tfq
