// Block-sparse weights (docs/format.md, "Version 2: block-sparse weights"):
// sizes with overflow checks, the validation a reader does before any use,
// and the scalar block-sparse GEMM the fully connected and convolution
// layers call in place of the dense one (ref.cc).
//
// The layers keep their own activation quantization, threading and
// epilogue: only the integer dot products change, and they are exact, so a
// block-sparse op gives bit-identical outputs to the same weights written
// densely (format version 1). The SIMD kernels (KernelTable::sparse_gemm,
// sparse/avx2.cc, sparse/avx512vnni.cc) read a copy of the codes repacked
// at prepare (SparsePrepared below); the scalar reference reads the file's
// codes.
#ifndef TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_
#define TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

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
  // Built at prepare for the SIMD kernels (SparsePrepared), null when not:
  // the codes repacked in vector order (kSimdUnit..., same size as `codes`),
  // and the sum of each row's levels over its stored blocks (rows entries;
  // null when it does not fit the memory budget: the kernels then sum a
  // block row's levels when they reach it).
  const uint8_t* simd_codes = nullptr;
  const int32_t* level_sums = nullptr;
};

// True when the SIMD kernels have a fast path for blocks of R x C (R in
// 4..32, C a multiple of 4); other shapes run the scalar reference.
inline bool SimdSparseShape(int R, int C) { return R >= 4 && C >= 4; }

// The repacked code order of the SIMD kernels (docs/architecture.md,
// "Block-sparse kernels"). A stored block is cut into quads of 4 columns
// (C / 4 of them) and each quad into units of U rows (U = 8, or 4 when
// R == 4); the units follow each other quad by quad ([quad][unit]). A unit of
// U x 4 levels, level byte b = row (b / 4), column (b % 4), takes
// nb = 4 U bits / 8 bytes; field t (bits [t bits, (t+1) bits)) of its byte s
// holds the code of level byte b = t nb + s. A vector kernel then decodes a
// unit with one broadcast, one variable shift per 64-bit (or 32-bit) lane, a
// mask and a 16-entry table lookup (vpshufb). Positions outside the matrix
// hold the code of level 0.
inline int SimdUnitRows(int R) { return R == 4 ? 4 : 8; }

// What a node prepares for the SIMD kernels: the row starts, the repacked
// codes and, within the budget, the level sums. At most 2x the packed size:
// row starts 4 nbr bytes, repacked codes nnz x block_bytes, level sums
// 4 rows bytes only when the three fit in 2 x packed_bytes.
struct SparsePrepared {
  std::vector<uint32_t> row_start;
  std::vector<uint8_t> simd_codes;  // empty: no SIMD fast path for this shape
  std::vector<int32_t> level_sums;  // empty: over the budget
  // The stored codes are already in vector order (8-bit codes, C == 4):
  // simd_codes stays empty and the view points the kernels at the codes.
  bool simd_is_codes = false;
  // Builds everything from a validated tensor; false when nnz_blocks does
  // not fit in uint32.
  bool Build(Scheme s, int64_t rows, int64_t k, const SparseOptions& o, const SparseSizes& sizes,
             const uint8_t* data);
  size_t bytes() const {
    return row_start.size() * 4 + simd_codes.size() + level_sums.size() * 4;
  }
  // The level sums of every block row (within the budget; Build).
  void AddLevelSums(Scheme s, int64_t rows, int64_t k, const SparseOptions& o, const SparseSizes& sizes,
                    const uint8_t* data);
  // The view of `data` with these structures attached.
  SparseWeights View(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data) const;
};

// The sums of the levels of rows [row0, row0 + R) of block row br (out[r],
// zero for rows past the matrix), from the file's codes: what the SIMD
// kernels use when SparseWeights::level_sums is null.
void BlockRowLevelSums(Scheme s, int64_t rows, int64_t k, const SparseWeights& sw, int64_t br,
                       int32_t* out);

// Views of `data` (validated with ValidateSparse); row_start is left null.
SparseWeights SparseView(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data);

// The execution structure built once per node: nbr uint32 offsets, 4 nbr
// bytes, at most 2x the packed size (which holds 2 nbr bytes of counts).
// False when nnz_blocks does not fit in uint32.
bool BuildSparseRowStarts(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data,
                          uint32_t* out);

// The KernelTable::sparse_gemm contract (SparseGemmFn) and its scalar
// reference: c[j * ldc + (o - o0)] = sum over stored positions p of
// level(W[o, p]) * (a[j][col_offset[p / C] + p % C] - 128) for o in [o0, o1) and
// j < n_act, W the block-sparse matrix of w.sparse (w.rows rows); positions
// outside stored blocks are zero weights and are not visited. col_offset
// has one entry per block column: the activations of a block's C positions
// are adjacent, which lets a convolution point into its (padded) image
// instead of an im2col copy. The activations are biased, u = q + 128 (the
// int8 code q xor 0x80, BiasActivations): the unsigned operand of vpdpbusd
// and vpmaddubsw, broadcast with no further work in the inner loop. Every
// a[j] + col_offset[bc] + C - 1 of a
// stored block must be readable (positions >= k have zero weights, their
// activations are read but never change the result). Exact int32 (the
// format's overflow rule).
// dst[i] = src[i] ^ 0x80 (u = q + 128) for i < n; dst may be src.
void BiasActivations(const int8_t* src, int64_t n, uint8_t* dst);

void SparseGemm(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc);

}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_SPARSE_SPARSE_H_
