// Internal dispatch table of the kernel tier: one table per instruction set
// (reference, AVX2, AVX-512 VNNI, NEON, NEON dot product), assembled in
// dispatch.cc from the micro-kernels of microkernels.h. The layer files
// (layers/) do the orchestration (quantization, im2col, threading,
// epilogue) and call the inner loops through the table chosen at run time.
//
// Linkage rule for every kernel header (this one, codes/*.h, gemm/*.h): the
// files including them are compiled with different ISA flags (-mavx2,
// -mavx512*, -march=armv8.2-a+dotprod, or none). An inline function or
// template with external linkage instantiated in two of them would be one
// COMDAT symbol, and the linker keeps an arbitrary copy: the default-flag
// caller could end up running the AVX-512 copy. So every inline function and
// template defined in a kernel header lives in an unnamed namespace (internal
// linkage: one private copy per file, compiled with that file's flags);
// only the micro-kernel entry points (microkernels.h), each defined in one
// file, have external linkage. (The constexpr functions of kernels.h are
// the exception: the ISA files use them only in constant expressions, via
// SchemeCodes and the lookup tables below, so they emit no copy of them.)
#ifndef TFQ_DELEGATES_KERNELS_KERNELS_INTERNAL_H_
#define TFQ_DELEGATES_KERNELS_KERNELS_INTERNAL_H_

#include <cstdint>
#include <type_traits>

#include "kernels.h"

// On x86-64 GCC, a portable loop that runs over whole tensors is also
// compiled as AVX-512 and AVX2 clones, chosen at load time (same IEEE
// operations: bit-identical results). Not under ASan (its checks stay in the
// portable code) or with clang.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define TFQ_X86_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TFQ_X86_CLONES
#endif

namespace tfq {
namespace internal {

// The micro-kernel types: the contract of each op, one per KernelTable field
// (microkernels.h declares every implementation with them).

// max |x[i]|; sets *nonfinite when an element is NaN or infinite.
using AbsMaxFn = float(const float* x, int64_t n, bool* nonfinite);
// q[i] = clamp(rint(x[i] * s), -127, 127) for finite x*s, stored xor flip
// (0, or 0x80 for the biased codes u = q + 128 of the block-sparse kernels,
// BiasActivations); returns the sum of the (unbiased) q.
using QuantizeFn = int64_t(const float* x, int64_t n, float s, int8_t* q, uint8_t flip);
// Sum of n int8 values.
using SumI8Fn = int64_t(const int8_t* q, int64_t n);
// c[j * ldc + i] = sum_k level(w row i, k) * a[j * lda + k] over
// nblocks * WeightsPerBlock + ntail * 32 positions, for i < n_rows and
// j < n_act. A weight row holds nblocks whole 32-byte blocks, then ntail
// mini-blocks of 32 weights (MiniBlockBytes each; version-2 dense rows;
// ntail = 0 for version 1), see RowGeometry. sumq[j] is the sum of
// activation row j (used by offset-code kernels). Activation rows are zero
// beyond the logical k.
using GemmFn = void(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                    int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int64_t ntail,
                    int32_t* c, int64_t ldc);
// acc[o] = sum_t level(tap row t, o) * taps[t][o / depth_multiplier] for
// o < out_c; taps[t] == nullptr means zero padding.
using DepthwisePixelFn = void(Scheme s, const uint8_t* codes, int64_t row_bytes,
                              const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                              int32_t* acc);
// Depth multiplier 1: like DepthwisePixelFn with the levels already decoded
// to int16, levels[t * stride + o] (stride a multiple of 32, zero beyond out_c).
using DepthwiseLevelsFn = void(const int16_t* levels, int64_t stride, const int8_t* const* taps,
                               int ntaps, int out_c, int32_t* acc);
// GEMM on the channel-interleaved execution layout (see PrepareExecWeights):
// c[j * ldc + o] for o < out_c, same meaning as GemmFn (nblocks whole
// blocks, then ntail mini-blocks); positions >= k_valid (zero activations)
// may be skipped.
using GemmExecFn = void(Scheme s, const uint8_t* wx, int64_t out_c, int64_t nblocks, int64_t ntail,
                        int64_t k_valid, const int8_t* a, int64_t lda, const int32_t* sumq,
                        int64_t n_act, int32_t* c, int64_t ldc);
// Depth multiplier 1: a whole output row oy of a depthwise convolution on
// int16 levels (as DepthwiseLevelsFn), acc[ox * out_c + o] for ox < out_w;
// img is the quantized NHWC image, readable 64 bytes past its end. One call
// per row instead of one per pixel.
using DepthwiseLevelsRowFn = void(const int16_t* levels, int64_t stride, const int8_t* img,
                                  const ConvGeometry& g, int oy, int32_t* acc);
// The float epilogue of `rows` rows of n outputs,
// y[r * ldy + i] = act(float(acc[r * lda + i]) * f[i] (+ b[i])), with the
// same IEEE operations (no FMA) and clamps as the portable one.
using EpilogueRowsFn = void(const int32_t* acc, int64_t lda, const float* f, const float* b,
                            int64_t n, int64_t rows, float* y, int64_t ldy, Activation a);
// EpilogueRowsFn fused with what a convolution does next to the floats it
// wrote, in one pass instead of three: when res is not null,
// y = ra(y + res[r * ldr + i]) (a fused residual ADD, as AddResidualRows);
// then the statistics of the final y (as the absmax kernel: *nonfinite set
// by a NaN or infinite output, *absmax raised to the largest |y| otherwise;
// both only ever raised, the caller initializes them).
using EpilogueRowsStatsFn = void(const int32_t* acc, int64_t lda, const float* f, const float* b,
                                 int64_t n, int64_t rows, float* y, int64_t ldy, Activation a,
                                 const float* res, int64_t ldr, Activation ra, float* absmax,
                                 bool* nonfinite);
// The int8 hand-over epilogue (KernelOptions::output_q),
// q[r * ldq + i] = rint(min(max(float(acc) * f[i] (+ b[i]), 0), 6) * kHandoverScale)
// with NaN mapped to 0, the same IEEE operations as the portable one.
using EpilogueRowsQFn = void(const int32_t* acc, int64_t lda, const float* f, const float* b,
                             int64_t n, int64_t rows, int8_t* q, int64_t ldq);
// out[r] = sum of q[r * c, r * c + c) for r < rows (contiguous rows: the
// channel sums of the pixels of an image).
using SumRowsI8Fn = void(const int8_t* q, int64_t rows, int64_t c, int32_t* out);

// Block-sparse GEMM (format version 2): the contract of SparseGemm
// (sparse/sparse.h). w.sparse is set; a kernel falls back to the scalar
// SparseGemm itself for what it has no fast path for.
using SparseGemmFn = void(const PackedWeights& w, int64_t o0, int64_t o1, const uint8_t* const* a,
                          const int64_t* col_offset, int64_t n_act, int32_t* c, int64_t ldc);

// The kernels of one instruction set. Optional entries may be null: the
// layer files then use the portable code (or, for sum_rows_i8, sum_i8 per
// row).
struct KernelTable {
  Isa isa;
  AbsMaxFn* absmax;
  QuantizeFn* quantize;
  SumI8Fn* sum_i8;
  GemmFn* gemm;
  DepthwisePixelFn* depthwise_pixel;
  DepthwiseLevelsFn* depthwise_levels;       // optional
  int exec_group;                            // channel group of gemm_exec (0: none)
  GemmExecFn* gemm_exec;                     // optional
  DepthwiseLevelsRowFn* depthwise_levels_row;  // optional
  EpilogueRowsFn* epilogue_rows;             // optional
  EpilogueRowsQFn* epilogue_rows_q;          // optional
  EpilogueRowsStatsFn* epilogue_rows_stats;  // optional
  SumRowsI8Fn* sum_rows_i8;                  // optional
  SparseGemmFn* sparse_gemm;                 // block-sparse GEMM (every table)
  // The block-sparse path this table runs, for reports ("scalar",
  // "avx2-256", "vnni-512", "vnni-256", "neon-128", "sdot-128": the vector
  // width of the fast paths).
  const char* sparse_path;
};

const KernelTable& RefTable();
// Null when the library was built without AVX2 code or the CPU lacks AVX2/FMA.
const KernelTable* Avx2Table();
// Null when not built or not supported by the CPU.
const KernelTable* Avx512VnniTable();
// The same table with the other vector width (256 <-> 512 bits) of its
// ternary GEMV and block-sparse kernels, which the CPU decides once per
// process: the tests run both. Null with Avx512VnniTable().
const KernelTable* Avx512VnniOtherWidthTable();
// aarch64: null when the library was built without NEON code; the
// dot-product table is also null when the CPU lacks HWCAP_ASIMDDP.
const KernelTable* NeonTable();
const KernelTable* NeonDotprodTable();
// isa_cap: -1 picks the best ISA (or SetIsaOverride's); an Isa value caps
// the choice at it (a cap the CPU lacks falls through to the next table).
const KernelTable& SelectTable(bool force_reference, int isa_cap = -1);
bool IsaAvailable(Isa isa);
// Test hook: -1 picks the best ISA; an Isa value caps the choice at it.
void SetIsaOverride(int isa);

// Internal linkage: see the linkage rule at the top of this file.
namespace {

// The int8 hand-over code of one output before its activation: ReLU6 (NaN
// maps to 0, never UB), then q = nearbyint(v * kHandoverScale) in [0, 127],
// the quantization the next layer would apply with that scale. The same
// float operations as the float epilogue; SIMD versions must match it.
inline int8_t HandoverCode(float v) {
  v = v > 0.0f ? v : 0.0f;
  v = v < 6.0f ? v : 6.0f;
  // Adding and subtracting 1.5 * 2^23 rounds [0, 127] half to even like
  // nearbyint in the default rounding mode, without a libm call.
  constexpr float kMagic = 12582912.0f;
  const float r = (v * kHandoverScale + kMagic) - kMagic;
  return static_cast<int8_t>(static_cast<int>(r));
}

// q[i] = HandoverCode(float(acc[i]) * f[i] (+ b[i])) for i in [begin, end):
// the portable hand-over epilogue, and the scalar tail of the SIMD ones.
template <bool kBias>
inline void HandoverCodes(const int32_t* acc, const float* f, const float* b, int64_t begin,
                          int64_t end, int8_t* q) {
  for (int64_t i = begin; i < end; ++i) {
    float v = static_cast<float>(acc[i]) * f[i];
    if (kBias) v = v + b[i];
    q[i] = HandoverCode(v);
  }
}

// Unsigned field t (0 .. 8/bits - 1) of byte j in a block: the code of
// position block*wpb + t*32 + j (in a mini-block: base + t*4*bits + j).
inline int FieldCode(const uint8_t* block, int bits, int t, int j) {
  return (block[j] >> (t * bits)) & ((1 << bits) - 1);
}

// Per-scheme constants of the SIMD kernels, all derived from the code table
// (kernels.h) at compile time.
template <Scheme S>
struct SchemeCodes {
  static constexpr int kBits = SchemeBits(S);
  static constexpr int kFields = 8 / kBits;  // codes per byte
  static constexpr int kWpb = WeightsPerBlock(S);
  static constexpr int kMaxLevel = MaxAbsLevel(S);
  // Binary and ternary codes are affine in the level, level = kMul * code -
  // kOff (binary 2u - 1, ternary u - 1): kernels multiply the raw codes and
  // remove the offset once per row with the activation sum. Power-of-two
  // codes are not; kernels look their levels up (SignedLevels, BiasedLevels).
  static constexpr bool kAffine = S == Scheme::kBinary || S == Scheme::kTernary;
  static constexpr int kMul = kAffine ? CodeLevel(S, 1) - CodeLevel(S, 0) : 1;
  static constexpr int kOff = kAffine ? -CodeLevel(S, 0) : 0;
  // The x86 kernels' unsigned operand u (vpmaddubsw / vpdpbusd take u8):
  // level = kMul * u - kBiasedOff, u the raw code (binary, ternary) or
  // level + kMaxLevel (power-of-two schemes, BiasedLevels).
  static constexpr int kBiasedOff = kAffine ? kOff : kMaxLevel;
  // Products level * q (|q| <= 127) one int16 lane may sum before it is
  // widened: the largest power of two <= 32767 / (127 * kMaxLevel), at most
  // 256 (256, 256, 64, 4).
  static constexpr int kTapsPerWiden = [] {
    int n = 1;
    while (n < 256 && 2 * n * 127 * kMaxLevel <= 32767) n *= 2;
    return n;
  }();
};

// A 16-entry code -> byte lookup table (one entry per 4-bit code).
struct CodeTable16 {
  int8_t v[16];
};

// Signed level of every code (invalid codes, refused when a node is
// prepared, map to 0).
constexpr CodeTable16 SignedLevels(Scheme s) {
  CodeTable16 t{};
  for (int c = 0; c < 16; ++c) {
    const int l = CodeLevel(s, c);
    t.v[c] = static_cast<int8_t>(CodeValid(s, c) ? l : 0);
  }
  return t;
}

// level + MaxAbsLevel of every code as an unsigned byte (invalid codes map to
// level 0): the x86 kernels multiply these with vpmaddubsw / vpdpbusd and
// remove MaxAbsLevel * sum(q) once per row.
constexpr CodeTable16 BiasedLevels(Scheme s) {
  CodeTable16 t{};
  for (int c = 0; c < 16; ++c) {
    const int l = CodeLevel(s, c);
    t.v[c] = static_cast<int8_t>(static_cast<uint8_t>((CodeValid(s, c) ? l : 0) + MaxAbsLevel(s)));
  }
  return t;
}

template <Scheme S>
using SchemeTag = std::integral_constant<Scheme, S>;

// The one switch from a run-time scheme to the code-table templates: calls
// f(SchemeTag<S>()) for S == s. Every micro-kernel that is templated on the
// scheme is reached through it.
template <class F>
inline void DispatchScheme(Scheme s, F&& f) {
  switch (s) {
    case Scheme::kBinary: return f(SchemeTag<Scheme::kBinary>());
    case Scheme::kTernary: return f(SchemeTag<Scheme::kTernary>());
    case Scheme::kPow2_3bit: return f(SchemeTag<Scheme::kPow2_3bit>());
    case Scheme::kPow2_4bit: return f(SchemeTag<Scheme::kPow2_4bit>());
    case Scheme::kInt8: return;  // block-sparse only: no dense micro-kernel takes it
  }
}

// The bias of an epilogue as a template flag: f(std::true_type()) when b is
// set, else f(std::false_type()).
template <class F>
inline void DispatchBias(const float* b, F&& f) {
  if (b) {
    f(std::true_type());
  } else {
    f(std::false_type());
  }
}

// An activation as a template argument: f(std::integral_constant<Activation, a>()).
template <class F>
inline void DispatchActivation(Activation a, F&& f) {
  switch (a) {
    case Activation::kNone: return f(std::integral_constant<Activation, Activation::kNone>());
    case Activation::kRelu: return f(std::integral_constant<Activation, Activation::kRelu>());
    case Activation::kRelu6: return f(std::integral_constant<Activation, Activation::kRelu6>());
  }
}

// The run-time choices of an EpilogueRowsStatsFn as template arguments:
// f(A, kBias, kRes, RA) as integral constants (RA is kNone without a residual).
template <class F>
inline void DispatchEpilogueStats(Activation a, const float* b, const float* res, Activation ra, F&& f) {
  DispatchBias(b, [&](auto bias) {
    DispatchActivation(a, [&](auto act) {
      if (res == nullptr) {
        f(act, bias, std::false_type(), std::integral_constant<Activation, Activation::kNone>());
      } else {
        DispatchActivation(ra, [&](auto res_act) { f(act, bias, std::true_type(), res_act); });
      }
    });
  });
}

// DepthwisePixelFn of a SIMD table from a per-scheme kernel for depth
// multiplier 1, Pixel<S>::Run(codes, row_bytes, taps, ntaps, out_c, acc);
// other multipliers run the reference.
template <template <Scheme> class Pixel>
inline void DepthwisePixelDm1(Scheme s, const uint8_t* codes, int64_t row_bytes,
                              const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                              int32_t* acc) {
  if (depth_multiplier != 1) {
    RefTable().depthwise_pixel(s, codes, row_bytes, taps, ntaps, depth_multiplier, out_c, acc);
    return;
  }
  DispatchScheme(s, [&](auto scheme) {
    Pixel<decltype(scheme)::value>::Run(codes, row_bytes, taps, ntaps, out_c, acc);
  });
}

}  // namespace
}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_KERNELS_INTERNAL_H_
