// The GEMM panel driver shared by every SIMD GEMM (gemm/avx2.cc,
// gemm/avx512vnni.cc, gemm/neon.cc, gemm/neon_dotprod.cc): how the output
// c[j * ldc + i] (weight row i, activation row j) is cut into register tiles.
// Each file supplies only its micro-kernel, a class with
//
//   template <int MR, int NR>
//   void Tile(const uint8_t* w, int64_t row_bytes, const int8_t* a, int64_t lda,
//             const int32_t* sumq, int64_t nblocks, int64_t ntail, int32_t* c,
//             int64_t ldc) const;
//       MR weight rows x NR activation rows, c[p * ldc + r]; nblocks whole
//       blocks, then ntail 32-weight mini-blocks (GemmFn);
//   static constexpr int kPanelRows;  MR of the 4-activation-row panels;
//   static constexpr int kGemvRows;   MR of a single activation row;
//   static constexpr bool kOwnGemv;   true: Gemv(w, row_bytes, n_rows, a,
//       lda, sumq, nblocks, ntail, c, ldc) const handles a single activation row.
//
// Internal linkage (unnamed namespace): each ISA file gets its own copy,
// compiled with its own flags (see the rule in kernels_internal.h).
#ifndef TFQ_DELEGATES_KERNELS_GEMM_PANELS_H_
#define TFQ_DELEGATES_KERNELS_GEMM_PANELS_H_

#include <cstdint>

namespace tfq {
namespace internal {
namespace {

// Weight rows in tiles of MR, the rest one at a time, against NR activation rows.
template <int MR, int NR, class Kernel>
inline void RowPanel(const Kernel& k, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* sumq, int64_t nblocks, int64_t ntail,
                     int32_t* c, int64_t ldc) {
  int64_t i = 0;
  for (; i + MR <= n_rows; i += MR)
    k.template Tile<MR, NR>(w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, ntail, c + i, ldc);
  for (; i < n_rows; ++i)
    k.template Tile<1, NR>(w + i * row_bytes, row_bytes, a, lda, sumq, nblocks, ntail, c + i, ldc);
}

// The KernelTable::gemm contract: activation rows in panels of 4, then a
// panel of 3 or 2, or a single row (GEMV: streams the weights once).
template <class Kernel>
inline void GemmPanels(const Kernel& k, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                       const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act,
                       int64_t nblocks, int64_t ntail, int32_t* c, int64_t ldc) {
  constexpr int NR = 4;
  constexpr int MR = Kernel::kPanelRows;
  int64_t j = 0;
  for (; j + NR <= n_act; j += NR)
    RowPanel<MR, NR>(k, w, row_bytes, n_rows, a + j * lda, lda, sumq + j, nblocks, ntail, c + j * ldc,
                     ldc);
  const int64_t rest = n_act - j;
  const int8_t* aj = a + j * lda;
  int32_t* cj = c + j * ldc;
  if (rest == 3) RowPanel<MR, 3>(k, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, ntail, cj, ldc);
  if (rest == 2) RowPanel<MR, 2>(k, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, ntail, cj, ldc);
  if (rest == 1) {
    if constexpr (Kernel::kOwnGemv) {
      k.Gemv(w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, ntail, cj, ldc);
    } else {
      RowPanel<Kernel::kGemvRows, 1>(k, w, row_bytes, n_rows, aj, lda, sumq + j, nblocks, ntail, cj,
                                     ldc);
    }
  }
}

// The micro-kernel's final step: the true accumulator from the sum of
// u * q over a row, acc = mul * sum(u*q) - off * sum(q), in wrap-around
// arithmetic (the true accumulator fits in int32 by the format's rule even
// when sum(u*q) alone does not).
inline int32_t RemoveOffset(uint32_t sum_uq, int mul, int off, int32_t sumq) {
  return static_cast<int32_t>(static_cast<uint32_t>(mul) * sum_uq -
                              static_cast<uint32_t>(off) * static_cast<uint32_t>(sumq));
}

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_GEMM_PANELS_H_
