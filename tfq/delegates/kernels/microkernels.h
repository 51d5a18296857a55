// Every micro-kernel entry point of the kernel tier, named op + ISA, each
// defined in the file kernels/<op>/<isa>.cc (XNNPACK's layout): the
// functions dispatch.cc puts into the KernelTable of each instruction set.
// Contracts: the KernelTable fields of kernels_internal.h.
//
//   op                 ref  avx2  avx512vnni  neon  neon_dotprod
//   quantize/          x    x     x           x     (neon's)
//   gemm/              x    x     x           x     x
//   gemm_interleaved/             x
//   dwconv/            x    x     x           x     (neon's)
//   epilogue/               x     x           x     (neon's)
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
float AbsMaxRef(const float* x, int64_t n, bool* nonfinite);
int64_t QuantizeRef(const float* x, int64_t n, float s, int8_t* q);
int64_t SumI8Ref(const int8_t* q, int64_t n);
void GemmRef(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
             int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c,
             int64_t ldc);
void DepthwisePixelRef(Scheme s, const uint8_t* codes, int64_t row_bytes, const int8_t* const* taps,
                       int ntaps, int depth_multiplier, int out_c, int32_t* acc);

// AVX2 (-mavx2 -mfma).
float AbsMaxAvx2(const float* x, int64_t n, bool* nonfinite);
int64_t QuantizeAvx2(const float* x, int64_t n, float s, int8_t* q);
int64_t SumI8Avx2(const int8_t* q, int64_t n);
void GemmAvx2(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
              int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c,
              int64_t ldc);
void DepthwisePixelAvx2(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc);
void DepthwiseLevelsAvx2(const int16_t* levels, int64_t stride, const int8_t* const* taps,
                         int ntaps, int out_c, int32_t* acc);
void EpilogueRowsQAvx2(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq);

// AVX-512 VNNI (AVX512F/BW/VL + VNNI).
float AbsMaxAvx512(const float* x, int64_t n, bool* nonfinite);
int64_t QuantizeAvx512(const float* x, int64_t n, float s, int8_t* q);
int64_t SumI8Avx512(const int8_t* q, int64_t n);
void SumRowsI8Avx512(const int8_t* q, int64_t rows, int64_t c, int32_t* out);
void GemmAvx512Vnni(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
                    int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c,
                    int64_t ldc);
void GemmExecAvx512Vnni(Scheme s, const uint8_t* wx, int64_t out_c, int64_t nblocks,
                        int64_t k_valid, const int8_t* a, int64_t lda, const int32_t* sumq,
                        int64_t n_act, int32_t* c, int64_t ldc);
void DepthwiseLevelsAvx512(const int16_t* levels, int64_t stride, const int8_t* const* taps,
                           int ntaps, int out_c, int32_t* acc);
void DepthwiseLevelsRowAvx512(const int16_t* levels, int64_t stride, const int8_t* img,
                              const ConvGeometry& g, int oy, int32_t* acc);
void EpilogueRowsAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                        int64_t rows, float* y, int64_t ldy, Activation a);
void EpilogueRowsQAvx512(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                         int64_t rows, int8_t* q, int64_t ldq);

// NEON (aarch64, any ARMv8-A).
float AbsMaxNeon(const float* x, int64_t n, bool* nonfinite);
int64_t QuantizeNeon(const float* x, int64_t n, float s, int8_t* q);
int64_t SumI8Neon(const int8_t* q, int64_t n);
void GemmNeon(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows, const int8_t* a,
              int64_t lda, const int32_t* sumq, int64_t n_act, int64_t nblocks, int32_t* c,
              int64_t ldc);
void DepthwisePixelNeon(Scheme s, const uint8_t* codes, int64_t row_bytes,
                        const int8_t* const* taps, int ntaps, int depth_multiplier, int out_c,
                        int32_t* acc);
void EpilogueRowsQNeon(const int32_t* acc, int64_t lda, const float* f, const float* b, int64_t n,
                       int64_t rows, int8_t* q, int64_t ldq);

// NEON dot product (-march=armv8.2-a+dotprod).
void GemmNeonDotprod(Scheme s, const uint8_t* w, int64_t row_bytes, int64_t n_rows,
                     const int8_t* a, int64_t lda, const int32_t* sumq, int64_t n_act,
                     int64_t nblocks, int32_t* c, int64_t ldc);

}  // namespace internal
}  // namespace tfq

#endif  // TFQ_DELEGATES_KERNELS_MICROKERNELS_H_
