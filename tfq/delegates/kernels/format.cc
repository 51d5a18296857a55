// The packed weight format (docs/format.md): scheme constants, code levels,
// row sizes and validation.
#include <climits>
#include <cstdio>

#include "kernels_internal.h"

namespace tfq {

const char* SchemeName(Scheme s) {
  switch (s) {
    case Scheme::kBinary: return "binary";
    case Scheme::kTernary: return "ternary";
    case Scheme::kPow2_3bit: return "pow2_3bit";
    case Scheme::kPow2_4bit: return "pow2_4bit";
    case Scheme::kInt8: return "int8";
  }
  return "unknown";
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kReference: return "reference";
    case Isa::kAvx2: return "avx2";
    case Isa::kNeon: return "neon";
    case Isa::kNeonDotprod: return "neon_dotprod";
    case Isa::kAvx512Vnni: return "avx512vnni";
  }
  return "unknown";
}

int64_t PaddedK(Scheme s, int64_t k) {
  const int64_t wpb = WeightsPerBlock(s);
  if (k <= 0 || k > (int64_t{1} << 40)) return -1;
  return (k + wpb - 1) / wpb * wpb;
}

int64_t RowBytes(Scheme s, int64_t k) {
  const int64_t kp = PaddedK(s, k);
  return kp < 0 ? -1 : kp * SchemeBits(s) / 8;
}

bool AccumulatorFits(Scheme s, int64_t k) {
  const int64_t kp = PaddedK(s, k);
  return kp > 0 && kp * MaxAbsLevel(s) * 127 < (int64_t{1} << 31);
}

RowGeometry DenseRowGeometry(Scheme s, int64_t k, bool compact) {
  RowGeometry g;
  const int64_t wpb = WeightsPerBlock(s);
  if (k <= 0 || k > (int64_t{1} << 40)) return g;
  if (compact) {
    g.blocks = k / wpb;
    g.tail = (k % wpb + kMiniWeights - 1) / kMiniWeights;
  } else {
    g.blocks = (k + wpb - 1) / wpb;
    g.tail = 0;
  }
  g.row_bytes = g.blocks * 32 + g.tail * MiniBlockBytes(s);
  g.kp = g.blocks * wpb + g.tail * kMiniWeights;
  return g;
}

bool ValidateCodes(Scheme s, const uint8_t* codes, int64_t rows, int64_t k, std::string* error,
                   bool compact) {
  const int bits = SchemeBits(s);
  const int fields = 8 / bits;
  const RowGeometry geo = DenseRowGeometry(s, k, compact);
  const int64_t row_bytes = geo.row_bytes;
  if (row_bytes < 0 || rows < 0) {
    if (error) *error = "invalid packed size";
    return false;
  }
  // One table lookup per byte: a byte is valid when all its fields are.
  bool valid_byte[256];
  for (int v = 0; v < 256; ++v) {
    bool ok = true;
    for (int t = 0; t < fields; ++t) {
      if (!CodeValid(s, (v >> (t * bits)) & ((1 << bits) - 1))) ok = false;
    }
    valid_byte[v] = ok;
  }
  const int64_t total = rows * row_bytes;
  for (int64_t i = 0; i < total; ++i) {
    if (!valid_byte[codes[i]]) {
      const int64_t r = i / row_bytes, in_row = i % row_bytes;
      int bad_t = 0;
      for (int t = 0; t < fields; ++t) {
        if (!CodeValid(s, (codes[i] >> (t * bits)) & ((1 << bits) - 1))) {
          bad_t = t;
          break;
        }
      }
      // Position of field t of this byte: k = b*wpb + t*32 + j in a whole
      // block, base + t*(4*bits) + j in a mini-block.
      int64_t pos;
      if (in_row < geo.blocks * 32) {
        pos = in_row / 32 * WeightsPerBlock(s) + bad_t * 32 + in_row % 32;
      } else {
        const int64_t off = in_row - geo.blocks * 32;
        pos = geo.blocks * WeightsPerBlock(s) + off / MiniBlockBytes(s) * kMiniWeights +
              bad_t * MiniBlockBytes(s) + off % MiniBlockBytes(s);
      }
      if (error) {
        char buf[200];
        std::snprintf(buf, sizeof(buf), "invalid %s code %d in packed row %lld at position %lld%s",
                      SchemeName(s), (codes[i] >> (bad_t * bits)) & ((1 << bits) - 1),
                      static_cast<long long>(r),
                      static_cast<long long>(pos), pos >= k ? " (row padding)" : "");
        *error = buf;
      }
      return false;
    }
  }
  return true;
}

bool ComputeOutputSize(bool same_padding, int in, int kernel, int stride, int dilation, int* out,
                       int* pad_before) {
  if (in <= 0 || kernel <= 0 || stride <= 0 || dilation <= 0) return false;
  if (in > (1 << 24) || kernel > (1 << 16) || stride > (1 << 16) || dilation > (1 << 16))
    return false;
  const int64_t eff = static_cast<int64_t>(kernel - 1) * dilation + 1;
  int64_t o, pad = 0;
  if (same_padding) {
    o = (in + stride - 1) / stride;
    const int64_t total = (o - 1) * stride + eff - in;
    pad = total > 0 ? total / 2 : 0;
  } else {
    if (eff > in) return false;
    o = (in - eff) / stride + 1;
  }
  if (o <= 0 || o > INT_MAX) return false;
  *out = static_cast<int>(o);
  *pad_before = static_cast<int>(pad);
  return true;
}

}  // namespace tfq
