// Block-sparse weights (docs/format.md, "Version 2: block-sparse weights"):
// sizes with overflow checks, the validation a reader does before any use,
// and the scalar block-sparse GEMM the fully connected and convolution
// layers call in place of the dense one (ref.cc).
//
// The layers keep their own activation quantization, im2col, threading and
// epilogue: only the integer dot products change, and they are exact, so a
// block-sparse op gives bit-identical outputs to the same weights written
// densely (format version 1).
#ifndef TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_
#define TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "kernels/kernels.h"

namespace tfq {

// Block columns per block row at most (uint16 counts and column indices).
constexpr int64_t kMaxBlockColumns = 65535;

// The options of a block-sparse op that its sizes derive from.
struct SparseOptions {
  int block_rows = 0;  // R
  int block_cols = 0;  // C
  int64_t nnz_blocks = 0;
  int index_bits = 0;  // 8 or 16
};

// Sizes derived from the options (all in 64-bit).
struct SparseSizes {
  int64_t block_row_count = 0;  // nbr = ceil(rows / R)
  int64_t block_col_count = 0;  // nbc = ceil(k / C)
  int64_t block_bytes = 0;      // ceil(R * C * bits / 8)
  int64_t packed_bytes = 0;     // 2 nbr + nnz (index_bits / 8 + block_bytes)
};

// True when `side` is a valid block_rows / block_cols (1, 2, 4, ..., 32).
bool IsBlockSide(int64_t side);

// Checks the options against rows and k (block sides, nnz_blocks within the
// matrix, index_bits the narrowest, no 64-bit overflow) and fills *sizes;
// on failure returns false with *error naming the problem.
bool ComputeSparseSizes(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                        SparseSizes* sizes, std::string* error);

// Checks tensor 1 (exactly sizes.packed_bytes bytes): the counts sum to
// nnz_blocks and each is <= nbc; the indices of each block row are < nbc and
// strictly increasing; every code of every stored block inside the matrix is
// valid for the scheme (the zero-code padding of partial blocks is not read).
bool ValidateSparse(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                    const SparseSizes& sizes, const uint8_t* data, std::string* error);

// A validated block-sparse tensor as the kernels read it: views into the
// model's buffer plus the first stored block of each block row.
struct SparseWeights {
  int block_rows = 1, block_cols = 1;
  int index_bytes = 1;
  int64_t block_row_count = 0, block_bytes = 0;
  const uint8_t* counts = nullptr;      // nbr x uint16 LE
  const uint8_t* indices = nullptr;     // nnz x uint8 / uint16 LE
  const uint8_t* codes = nullptr;       // nnz x block_bytes
  const uint32_t* row_start = nullptr;  // nbr entries (BuildSparseRowStarts)
};

// Views of `data` (validated with ValidateSparse); row_start is left null.
SparseWeights SparseView(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data);

// The execution structure built once per node: nbr uint32 offsets, 4 nbr
// bytes, at most 2x the packed size (which holds 2 nbr bytes of counts).
// False when nnz_blocks does not fit in uint32.
bool BuildSparseRowStarts(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data,
                          uint32_t* out);

// c[j * ldc + (o - o0)] = sum over positions p < w.k of level(W[o, p]) * a[j * lda + p]
// for o in [o0, o1) and j < n_act, W the block-sparse matrix of w.sparse
// (w.rows rows); positions outside stored blocks are zero weights and are
// not visited. Scalar code, exact int32 (the format's overflow rule).
void SparseGemm(const PackedWeights& w, int64_t o0, int64_t o1, const int8_t* a, int64_t lda,
                int64_t n_act, int32_t* c, int64_t ldc);

}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_
