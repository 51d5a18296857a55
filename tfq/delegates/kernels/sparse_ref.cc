// Block-sparse weights: sizes, validation and the scalar GEMM (sparse.h).
#include <algorithm>
#include <cstdio>
#include <limits>

#include "sparse.h"

namespace tfq {
namespace {

inline int64_t Count(const uint8_t* counts, int64_t br) {
  return counts[2 * br] | (counts[2 * br + 1] << 8);
}

inline int64_t Index(const uint8_t* indices, int index_bytes, int64_t b) {
  return index_bytes == 1 ? indices[b] : (indices[2 * b] | (indices[2 * b + 1] << 8));
}

// Code i (= r * C + c) of a stored block: field i mod (8 / bits) of byte i div (8 / bits).
inline int BlockCode(const uint8_t* block, int bits, int64_t i) {
  const int per_byte = 8 / bits;
  return (block[i / per_byte] >> ((i % per_byte) * bits)) & ((1 << bits) - 1);
}

std::string Str(int64_t v) { return std::to_string(v); }

bool Fail(std::string* error, const std::string& message) {
  if (error) *error = message;
  return false;
}

// Level of every 4-bit code (codes inside the matrix are validated first).
struct LevelTables {
  int8_t level[4][16];
  LevelTables() {
    for (int s = 0; s < 4; ++s)
      for (int c = 0; c < 16; ++c) {
        const int v = CodeLevel(static_cast<Scheme>(s), c);
        level[s][c] = static_cast<int8_t>(v > 64 ? 0 : v);
      }
  }
};

const int8_t* Levels(Scheme s) {
  static const LevelTables tables;
  return tables.level[static_cast<int>(s)];
}

}  // namespace

bool IsBlockSide(int64_t side) {
  return side == 1 || side == 2 || side == 4 || side == 8 || side == 16 || side == 32;
}

bool ComputeSparseSizes(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                        SparseSizes* sizes, std::string* error) {
  if (!IsBlockSide(o.block_rows) || !IsBlockSide(o.block_cols))
    return Fail(error, "block shape " + Str(o.block_rows) + "x" + Str(o.block_cols) +
                           " is not supported (block_rows and block_cols: 1, 2, 4, 8, 16 or 32)");
  if (rows < 1 || k < 1 || rows > (int64_t{1} << 40) || k > (int64_t{1} << 40))
    return Fail(error, "invalid rows/k " + Str(rows) + "/" + Str(k));
  const int64_t nbr = (rows + o.block_rows - 1) / o.block_rows;
  const int64_t nbc = (k + o.block_cols - 1) / o.block_cols;
  const int want_bits = nbc <= 256 ? 8 : 16;
  if (o.index_bits != want_bits)
    return Fail(error, "index_bits = " + Str(o.index_bits) + ", expected " + Str(want_bits) +
                           " (the narrowest for " + Str(nbc) + " block columns)");
  const int64_t block_bytes = (static_cast<int64_t>(o.block_rows) * o.block_cols * SchemeBits(s) + 7) / 8;
  const int64_t per_block = o.index_bits / 8 + block_bytes;
  // packed = 2 nbr + nnz * per_block, every step checked before it is taken.
  if (o.nnz_blocks < 0 || o.nnz_blocks > (std::numeric_limits<int64_t>::max() - 2 * nbr) / per_block)
    return Fail(error, "nnz_blocks = " + Str(o.nnz_blocks) + ": the packed size overflows 64 bits");
  // nbr, nbc <= 2^40: the product fits in int64 unless both are large.
  if (nbr > std::numeric_limits<int64_t>::max() / nbc || o.nnz_blocks > nbr * nbc)
    return Fail(error, "nnz_blocks = " + Str(o.nnz_blocks) + " exceeds the " + Str(nbr) + " x " +
                           Str(nbc) + " blocks of the matrix");
  sizes->block_row_count = nbr;
  sizes->block_col_count = nbc;
  sizes->block_bytes = block_bytes;
  sizes->packed_bytes = 2 * nbr + o.nnz_blocks * per_block;
  return true;
}

bool ValidateSparse(Scheme s, int64_t rows, int64_t k, const SparseOptions& o,
                    const SparseSizes& sizes, const uint8_t* data, std::string* error) {
  const int64_t nbr = sizes.block_row_count, nbc = sizes.block_col_count;
  const int ib = o.index_bits / 8;
  // Counts first: the index walk below trusts their sum.
  int64_t sum = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t n = Count(data, br);
    if (n > nbc)
      return Fail(error, "block row " + Str(br) + " counts " + Str(n) + " blocks, there are " +
                             Str(nbc) + " block columns");
    sum += n;
  }
  if (sum != o.nnz_blocks)
    return Fail(error, "block counts sum to " + Str(sum) + ", nnz_blocks is " + Str(o.nnz_blocks));
  const uint8_t* indices = data + 2 * nbr;
  const uint8_t* codes = indices + o.nnz_blocks * ib;
  const int bits = SchemeBits(s);
  const int R = o.block_rows, C = o.block_cols;
  int64_t b = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t n = Count(data, br);
    int64_t prev = -1;
    const int r1 = static_cast<int>(std::min<int64_t>(R, rows - br * R));
    for (int64_t i = 0; i < n; ++i, ++b) {
      const int64_t bc = Index(indices, ib, b);
      if (bc >= nbc)
        return Fail(error, "block row " + Str(br) + ": block column index " + Str(bc) +
                               " out of range 0.." + Str(nbc - 1));
      if (bc <= prev)
        return Fail(error, "block row " + Str(br) + ": block column indices are not strictly "
                               "increasing (" + Str(prev) + " then " + Str(bc) + ")");
      prev = bc;
      const uint8_t* block = codes + b * sizes.block_bytes;
      const int c1 = static_cast<int>(std::min<int64_t>(C, k - bc * C));
      for (int r = 0; r < r1; ++r)
        for (int c = 0; c < c1; ++c) {
          const int code = BlockCode(block, bits, static_cast<int64_t>(r) * C + c);
          if (CodeLevel(s, code) > 64)
            return Fail(error, std::string("invalid ") + SchemeName(s) + " code " + Str(code) +
                                   " in stored block " + Str(b) + " (output channel " +
                                   Str(br * R + r) + ", position " + Str(bc * C + c) + ")");
        }
    }
  }
  return true;
}

SparseWeights SparseView(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data) {
  SparseWeights w;
  w.block_rows = o.block_rows;
  w.block_cols = o.block_cols;
  w.index_bytes = o.index_bits / 8;
  w.block_row_count = sizes.block_row_count;
  w.block_bytes = sizes.block_bytes;
  w.counts = data;
  w.indices = data + 2 * sizes.block_row_count;
  w.codes = w.indices + o.nnz_blocks * w.index_bytes;
  return w;
}

bool BuildSparseRowStarts(const SparseOptions& o, const SparseSizes& sizes, const uint8_t* data,
                          uint32_t* out) {
  if (o.nnz_blocks > static_cast<int64_t>(std::numeric_limits<uint32_t>::max())) return false;
  uint32_t start = 0;
  for (int64_t br = 0; br < sizes.block_row_count; ++br) {
    out[br] = start;
    start += static_cast<uint32_t>(Count(data, br));
  }
  return true;
}

void SparseGemm(const PackedWeights& w, int64_t o0, int64_t o1, const int8_t* a, int64_t lda,
                int64_t n_act, int32_t* c, int64_t ldc) {
  const SparseWeights& sw = *w.sparse;
  for (int64_t j = 0; j < n_act; ++j) std::fill(c + j * ldc, c + j * ldc + (o1 - o0), 0);
  const int R = sw.block_rows, C = sw.block_cols;
  const int bits = SchemeBits(w.scheme);
  const int8_t* levels = Levels(w.scheme);
  int32_t lv[32 * 32];  // the levels of the rows of one block this call computes
  for (int64_t br = o0 / R; br * R < o1 && br < sw.block_row_count; ++br) {
    const int64_t row0 = br * R;
    const int r0 = static_cast<int>(std::max(o0, row0) - row0);
    const int r1 = static_cast<int>(std::min({o1, w.rows, row0 + R}) - row0);
    const int64_t begin = sw.row_start[br], end = begin + Count(sw.counts, br);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t col0 = Index(sw.indices, sw.index_bytes, b) * C;
      const int cn = static_cast<int>(std::min<int64_t>(C, w.k - col0));
      const uint8_t* block = sw.codes + b * sw.block_bytes;
      for (int r = r0; r < r1; ++r)
        for (int cc = 0; cc < cn; ++cc)
          lv[(r - r0) * C + cc] = levels[BlockCode(block, bits, static_cast<int64_t>(r) * C + cc)];
      for (int64_t j = 0; j < n_act; ++j) {
        const int8_t* aj = a + j * lda + col0;
        int32_t* cj = c + j * ldc + (row0 - o0);
        for (int r = r0; r < r1; ++r) {
          const int32_t* l = lv + (r - r0) * C;
          int32_t sum = 0;
          for (int cc = 0; cc < cn; ++cc) sum += l[cc] * aj[cc];
          cj[r] += sum;
        }
      }
    }
  }
}

}  // namespace tfq
