// Block-sparse weights: sizes, validation and the scalar GEMM (sparse/sparse.h).
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>

#include "kernels/microkernels.h"
#include "kernels/sparse/fields.h"
#include "kernels/sparse/sparse.h"

namespace tfq {
namespace {

std::string Str(int64_t v) { return std::to_string(v); }

bool Fail(std::string* error, const std::string& message) {
  if (error) *error = message;
  return false;
}

// Levels of the fields of every byte value, per scheme: decoding a block is
// one lookup per byte (codes inside the matrix are validated first; an
// invalid code maps to 0 here and is never read).
struct ByteLevelTables {
  int8_t level[kNumSchemes][256][8];
  ByteLevelTables() {
    for (int s = 0; s < kNumSchemes; ++s) {
      const Scheme scheme = static_cast<Scheme>(s);
      const int bits = SchemeBits(scheme);
      for (int v = 0; v < 256; ++v)
        for (int t = 0; t < 8; ++t) {
          const int code = t < 8 / bits ? (v >> (t * bits)) & ((1 << bits) - 1) : 0;
          const int l = CodeLevel(scheme, code);
          level[s][v][t] = static_cast<int8_t>(!CodeValid(scheme, code) || t >= 8 / bits ? 0 : l);
        }
    }
  }
};

const int8_t (*ByteLevels(Scheme s))[8] {
  static const ByteLevelTables tables;
  return tables.level[static_cast<int>(s)];
}

// c[j * ldc + r] += sum over cc < cols of lv[r * C + cc] * a[j][col + cc] for
// r in [r0, r1), j < n_act. kC > 0: whole blocks of kC columns (a loop the
// compiler unrolls); kC == 0: a partial edge block of `cols` columns.
template <int kC>
void BlockDot(const int8_t* lv, int stride, int cols, int r0, int r1, const uint8_t* const* a,
              int64_t col, int64_t n_act, int32_t* c, int64_t ldc) {
  const int n = kC > 0 ? kC : cols;
  const int st = kC > 0 ? kC : stride;
  for (int64_t j = 0; j < n_act; ++j) {
    const uint8_t* aj = a[j] + col;
    int32_t* cj = c + j * ldc;
    for (int r = r0; r < r1; ++r) {
      const int8_t* l = lv + r * st;
      int32_t sum = 0;
      for (int cc = 0; cc < n; ++cc) sum += l[cc] * (aj[cc] - 128);
      cj[r] += sum;
    }
  }
}

using BlockDotFn = void (*)(const int8_t*, int, int, int, int, const uint8_t* const*, int64_t,
                            int64_t, int32_t*, int64_t);

BlockDotFn WholeBlockDot(int C) {
  switch (C) {
    case 1: return BlockDot<1>;
    case 2: return BlockDot<2>;
    case 4: return BlockDot<4>;
    case 8: return BlockDot<8>;
    case 16: return BlockDot<16>;
    case 32: return BlockDot<32>;
  }
  return BlockDot<0>;
}

}  // namespace

namespace internal {
void SparseGemmRef(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                   const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  SparseGemm(w, o0, o1, a, col_offset, n_act, c, ldc);
}
}  // namespace internal

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
  // Column indices and per-row counts are at most 16 bits wide.
  if (nbc > kMaxBlockColumns)
    return Fail(error, Str(nbc) + " block columns: a block-sparse op holds at most " + Str(kMaxBlockColumns));
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
    const int64_t n = SparseCount(data, br);
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
  // A block whose bytes hold only codes of the matrix (whole block, no
  // padding field) is checked one table lookup per byte; the others, and a
  // block with an invalid code (to name it), code by code.
  bool valid_byte[256];
  for (int v = 0; v < 256; ++v) {
    valid_byte[v] = true;
    for (int t = 0; t < 8 / bits; ++t)
      if (!CodeValid(s, (v >> (t * bits)) & ((1 << bits) - 1))) valid_byte[v] = false;
  }
  const bool whole_bytes = (R * C * bits) % 8 == 0;
  int64_t b = 0;
  for (int64_t br = 0; br < nbr; ++br) {
    const int64_t n = SparseCount(data, br);
    int64_t prev = -1;
    const int r1 = static_cast<int>(std::min<int64_t>(R, rows - br * R));
    for (int64_t i = 0; i < n; ++i, ++b) {
      const int64_t bc = SparseIndex(indices, ib, b);
      if (bc >= nbc)
        return Fail(error, "block row " + Str(br) + ": block column index " + Str(bc) +
                               " out of range 0.." + Str(nbc - 1));
      if (bc <= prev)
        return Fail(error, "block row " + Str(br) + ": block column indices are not strictly "
                               "increasing (" + Str(prev) + " then " + Str(bc) + ")");
      prev = bc;
      const uint8_t* block = codes + b * sizes.block_bytes;
      const int c1 = static_cast<int>(std::min<int64_t>(C, k - bc * C));
      if (whole_bytes && r1 == R && c1 == C) {
        bool ok = true;
        for (int64_t j = 0; j < sizes.block_bytes; ++j) ok = ok && valid_byte[block[j]];
        if (ok) continue;
      }
      for (int r = 0; r < r1; ++r)
        for (int c = 0; c < c1; ++c) {
          const int code = SparseBlockCode(block, bits, static_cast<int64_t>(r) * C + c);
          if (!CodeValid(s, code))
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
    start += static_cast<uint32_t>(SparseCount(data, br));
  }
  return true;
}

void SparseGemm(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc) {
  const SparseWeights& sw = *w.sparse;
  for (int64_t j = 0; j < n_act; ++j) std::fill(c + j * ldc, c + j * ldc + (o1 - o0), 0);
  const int R = sw.block_rows, C = sw.block_cols;
  const int per_byte = 8 / SchemeBits(w.scheme);
  const int8_t (*table)[8] = ByteLevels(w.scheme);
  // The levels of one block, code i = r * C + c at lv[i] (whole bytes are
  // decoded: up to 8 fields past the rows used).
  int8_t lv[32 * 32 + 8];
  const BlockDotFn whole = WholeBlockDot(C);
  for (int64_t br = o0 / R; br * R < o1 && br < sw.block_row_count; ++br) {
    const int64_t row0 = br * R;
    const int r0 = static_cast<int>(std::max(o0, row0) - row0);
    const int r1 = static_cast<int>(std::min({o1, w.rows, row0 + R}) - row0);
    const int byte0 = r0 * C / per_byte, byte1 = (r1 * C + per_byte - 1) / per_byte;
    const int64_t begin = sw.row_start[br], end = begin + SparseCount(sw.counts, br);
    for (int64_t b = begin; b < end; ++b) {
      const int64_t bc = SparseIndex(sw.indices, sw.index_bytes, b);
      const int cn = static_cast<int>(std::min<int64_t>(C, w.k - bc * C));
      const uint8_t* block = sw.codes + b * sw.block_bytes;
      for (int j = byte0; j < byte1; ++j)
        for (int t = 0; t < per_byte; ++t) lv[j * per_byte + t] = table[block[j]][t];
      (cn == C ? whole : BlockDot<0>)(lv, C, cn, r0, r1, a, col_offset[bc], n_act,
                                      c + (row0 - o0), ldc);
    }
  }
}

// It runs over whole images (the padded copies of the implicit im2col,
// an int8 hand-over read in place), hence the AVX-512 / AVX2 clones
// (TFQ_X86_CLONES; 2.6-3% of MobileNetV2 90%'s time with the baseline SSE2
// loop). dst may equal src, but not overlap it otherwise.
TFQ_X86_CLONES void BiasActivations(const int8_t* src, int64_t n, uint8_t* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<uint8_t>(src[i]) ^ 0x80u;
}

void BlockRowLevelSums(Scheme s, int64_t rows, int64_t k, const SparseWeights& sw, int64_t br,
                       int32_t* out) {
  const int R = sw.block_rows, C = sw.block_cols, bits = SchemeBits(s);
  const int r1 = static_cast<int>(std::min<int64_t>(R, rows - br * R));
  const int8_t (*table)[8] = ByteLevels(s);
  std::fill(out, out + R, 0);
  const int64_t begin = sw.row_start[br], end = begin + SparseCount(sw.counts, br);
  for (int64_t b = begin; b < end; ++b) {
    const uint8_t* block = sw.codes + b * sw.block_bytes;
    const int64_t bc = SparseIndex(sw.indices, sw.index_bytes, b);
    const int cn = static_cast<int>(std::min<int64_t>(C, k - bc * C));
    for (int r = 0; r < r1; ++r)
      for (int cc = 0; cc < cn; ++cc) {
        const int i = r * C + cc;
        out[r] += table[block[i * bits / 8]][i % (8 / bits)];
      }
  }
}

}  // namespace tfq
