// What a block-sparse node prepares once for the SIMD kernels
// (SparsePrepared, sparse/sparse.h): row starts, the codes repacked in
// vector order, the per-row level sums.
#include <algorithm>

#include "kernels/sparse/fields.h"
#include "kernels/sparse/sparse.h"

namespace tfq {
namespace {

int ZeroCode(Scheme s) {
  for (int c = 0; c < 16; ++c)
    if (CodeLevel(s, c) == 0) return c;
  return 0;
}

}  // namespace

bool SparsePrepared::Build(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                           const SparseSizes& sizes, const uint8_t* data) {
  row_start.assign(static_cast<size_t>(sizes.block_row_count), 0);
  simd_codes.clear();
  simd_is_codes = false;
  level_sums.clear();
  if (!BuildSparseRowStarts(o, sizes, data, row_start.data())) return false;
  const int R = o.block_rows, C = o.block_cols, bits = SchemeBits(s);
  if (!SimdSparseShape(R, C) || CodeLevel(s, ZeroCode(s)) != 0) return true;
  const SparseWeights sw = SparseView(o, sizes, data);
  const int U = SimdUnitRows(R);
  const int nb = 4 * U * bits / 8;  // bytes per unit
  const int fields = 8 / bits;
  const int zero = ZeroCode(s);
  // 8-bit codes in blocks of 4 columns: the vector order is the stored
  // row-major order (positions outside the matrix hold code 0, level 0,
  // in both), so the kernels read the stored codes and nothing is copied.
  simd_is_codes = bits == 8 && C == 4 && zero == 0;
  if (simd_is_codes) {
    AddLevelSums(s, rows, k, o, sizes, data);
    return true;
  }
  simd_codes.assign(static_cast<size_t>(o.nnz_blocks * sizes.block_bytes), 0);
  int64_t b = 0;
  for (int64_t br = 0; br < sizes.block_row_count; ++br) {
    const int64_t n = SparseCount(sw.counts, br);
    const int r_in = static_cast<int>(std::min<int64_t>(R, rows - br * R));
    for (int64_t i = 0; i < n; ++i, ++b) {
      const int64_t bc = SparseIndex(sw.indices, sw.index_bytes, b);
      const int c_in = static_cast<int>(std::min<int64_t>(C, k - bc * C));
      const uint8_t* src = sw.codes + b * sizes.block_bytes;
      uint8_t* dst = simd_codes.data() + b * sizes.block_bytes;
      for (int q = 0; q < C / 4; ++q)
        for (int u = 0; u < R / U; ++u, dst += nb)
          for (int byte = 0; byte < nb; ++byte) {
            int v = 0;
            for (int t = 0; t < fields; ++t) {
              const int lb = t * nb + byte;  // level byte of the unit
              const int r = u * U + lb / 4, c = 4 * q + lb % 4;
              const int code = r < r_in && c < c_in ? SparseBlockCode(src, bits, static_cast<int64_t>(r) * C + c) : zero;
              v |= code << (t * bits);
            }
            dst[byte] = static_cast<uint8_t>(v);
          }
    }
  }
  AddLevelSums(s, rows, k, o, sizes, data);
  return true;
}

void SparsePrepared::AddLevelSums(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                                  const SparseSizes& sizes, const uint8_t* data) {
  // Level sums only within the memory budget (2 x packed_bytes in all).
  const int64_t R = o.block_rows;
  const int64_t with_sums = static_cast<int64_t>(row_start.size()) * 4 +
                            static_cast<int64_t>(simd_codes.size()) + 4 * sizes.block_row_count * R;
  if (with_sums <= 2 * sizes.packed_bytes) {
    level_sums.assign(static_cast<size_t>(sizes.block_row_count * R), 0);
    SparseWeights v = View(o, sizes, data);
    for (int64_t br = 0; br < sizes.block_row_count; ++br)
      BlockRowLevelSums(s, rows, k, v, br, level_sums.data() + br * R);
  }
}

SparseWeights SparsePrepared::View(const SparseOptions& o, const SparseSizes& sizes,
                                   const uint8_t* data) const {
  SparseWeights w = SparseView(o, sizes, data);
  w.row_start = row_start.data();
  w.simd_codes = simd_is_codes ? w.codes : simd_codes.empty() ? nullptr : simd_codes.data();
  w.level_sums = level_sums.empty() ? nullptr : level_sums.data();
  return w;
}

}  // namespace tfq
