// Every micro-kernel entry point of the kernel tier, named op + ISA, each
// defined in the file kernels/<op>/<isa>.cc (XNNPACK's layout): the
// functions dispatch.cc puts into the KernelTable of each instruction set.
// Contracts: the micro-kernel types (GemmFn, ...) of kernels_internal.h.
//
//   op                 ref  avx2  avx512vnni  neon  neon_dotprod
//   quantize/          x    x     x           x     (neon's)
//   gemm/              x    x     x           x     x
//   gemm_interleaved/             x
//   dwconv/            x    x     x           x     (neon's)
//   epilogue/               x     x           x     (neon's)
//   sparse/            x    x     x (512, 256)  x     x
//
// The SIMD files are compiled with their ISA's flags (CMakeLists.txt, BUILD)
// and are called only after run-time CPU detection (dispatch.cc).
#ifndef TFQ_DELEGATES_KERNELS_MICROKERNELS_H_
#define TFQ_DELEGATES_KERNELS_MICROKERNELS_H_

#include <cstdint>

#include "kernels/kernels_internal.h"

namespace tfq {
namespace internal {

// Scalar reference (always built).
AbsMaxFn AbsMaxRef;
QuantizeFn QuantizeRef;
SumI8Fn SumI8Ref;
GemmFn GemmRef;
DepthwisePixelFn DepthwisePixelRef;
SparseGemmFn SparseGemmRef;  // = tfq::SparseGemm (sparse/ref.cc)

// AVX2 (-mavx2 -mfma).
AbsMaxFn AbsMaxAvx2;
QuantizeFn QuantizeAvx2;
SumI8Fn SumI8Avx2;
GemmFn GemmAvx2;
DepthwisePixelFn DepthwisePixelAvx2;
DepthwiseLevelsFn DepthwiseLevelsAvx2;
EpilogueRowsQFn EpilogueRowsQAvx2;
EpilogueRowsStatsFn EpilogueRowsStatsAvx2;
SparseGemmFn SparseGemmAvx2;

// AVX-512 VNNI (AVX512F/BW/VL + VNNI).
AbsMaxFn AbsMaxAvx512;
QuantizeFn QuantizeAvx512;
SumI8Fn SumI8Avx512;
SumRowsI8Fn SumRowsI8Avx512;
GemmFn GemmAvx512Vnni;
GemmFn GemmAvx512Vnni256;  // the same, its ternary GEMV (one activation row) in 256-bit vectors
GemmExecFn GemmExecAvx512Vnni;
DepthwiseLevelsFn DepthwiseLevelsAvx512;
DepthwiseLevelsRowFn DepthwiseLevelsRowAvx512;
EpilogueRowsFn EpilogueRowsAvx512;
EpilogueRowsStatsFn EpilogueRowsStatsAvx512;
EpilogueRowsQFn EpilogueRowsQAvx512;
SparseGemmFn SparseGemmAvx512Vnni;     // 512-bit vectors
SparseGemmFn SparseGemmAvx512Vnni256;  // the same with 256-bit vectors (AVX512VL)

// NEON (aarch64, any ARMv8-A).
AbsMaxFn AbsMaxNeon;
QuantizeFn QuantizeNeon;
SumI8Fn SumI8Neon;
GemmFn GemmNeon;
DepthwisePixelFn DepthwisePixelNeon;
EpilogueRowsQFn EpilogueRowsQNeon;
SparseGemmFn SparseGemmNeon;

// NEON dot product (-march=armv8.2-a+dotprod).
GemmFn GemmNeonDotprod;
SparseGemmFn SparseGemmNeonDotprod;

}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_MICROKERNELS_H_
