// The kernel tables and the run-time choice among them: the best instruction
// set compiled in and supported by the CPU (and OS), else the scalar
// reference. Each table is assembled here from the micro-kernels of
// microkernels.h; optional entries a table leaves null fall back to the
// portable code in layers/. A call can cap the choice (KernelOptions::isa_cap,
// the delegate's `isa` option); tests can cap it process-wide with
// SetIsaOverride.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "microkernels.h"

#if defined(TFQ_HAVE_NEON) && (defined(__linux__) || defined(__ANDROID__))
#include <asm/hwcap.h>
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#elif defined(TFQ_HAVE_NEON) && defined(__APPLE__)
#include <sys/sysctl.h>
#endif

namespace tfq {
namespace internal {

namespace {

std::atomic<int> g_isa_override{-1};

KernelTable MakeRefTable() {
  KernelTable t{};
  t.isa = Isa::kReference;
  t.absmax = AbsMaxRef;
  t.quantize = QuantizeRef;
  t.sum_i8 = SumI8Ref;
  t.gemm = GemmRef;
  t.depthwise_pixel = DepthwisePixelRef;
  t.sparse_gemm = SparseGemmRef;
  t.sparse_path = "scalar";
  return t;
}

#if defined(TFQ_HAVE_AVX2)
KernelTable MakeAvx2Table() {
  KernelTable t{};
  t.isa = Isa::kAvx2;
  t.absmax = AbsMaxAvx2;
  t.quantize = QuantizeAvx2;
  t.sum_i8 = SumI8Avx2;
  t.gemm = GemmAvx2;
  t.depthwise_pixel = DepthwisePixelAvx2;
  t.depthwise_levels = DepthwiseLevelsAvx2;
  t.epilogue_rows_q = EpilogueRowsQAvx2;
  t.epilogue_rows_stats = EpilogueRowsStatsAvx2;
  t.sparse_gemm = SparseGemmAvx2;
  t.sparse_path = "avx2-256";
  return t;
}
#endif

#if defined(TFQ_HAVE_AVX2) && defined(TFQ_HAVE_AVX512VNNI)
// Whether the block-sparse kernels and the dense ternary GEMV use 256-bit
// vectors: on CPUs that execute a 512-bit operation as two 256-bit halves
// (AMD family 0x19: Zen 4) the 256-bit kernels are faster (measured:
// docs/benchmarks.md for the block-sparse ones, docs/delegate.md for the
// GEMV); elsewhere 512-bit. TFQ_SPARSE_WIDTH=256 or 512
// overrides the choice (benchmarks, tests).
bool SparseUse256() {
  const char* env = std::getenv("TFQ_SPARSE_WIDTH");
  if (env != nullptr && std::strcmp(env, "256") == 0) return true;
  if (env != nullptr && std::strcmp(env, "512") == 0) return false;
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(0), "c"(0));
  const bool amd = ebx == 0x68747541;  // "Auth"enticAMD
  __asm__("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
  const unsigned family = ((eax >> 8) & 0xF) + (((eax >> 8) & 0xF) == 0xF ? (eax >> 20) & 0xFF : 0);
  return amd && family == 0x19;
}

KernelTable MakeAvx512VnniTable(bool narrow) {
  KernelTable t{};
  t.isa = Isa::kAvx512Vnni;
  t.absmax = AbsMaxAvx512;
  t.quantize = QuantizeAvx512;
  t.sum_i8 = SumI8Avx512;
  t.depthwise_pixel = DepthwisePixelAvx2;  // depth multipliers > 1 and unaligned paths
  t.depthwise_levels = DepthwiseLevelsAvx512;
  t.exec_group = 16;
  t.gemm_exec = GemmExecAvx512Vnni;
  t.depthwise_levels_row = DepthwiseLevelsRowAvx512;
  t.epilogue_rows = EpilogueRowsAvx512;
  t.epilogue_rows_stats = EpilogueRowsStatsAvx512;
  t.epilogue_rows_q = EpilogueRowsQAvx512;
  t.sum_rows_i8 = SumRowsI8Avx512;
  t.gemm = narrow ? GemmAvx512Vnni256 : GemmAvx512Vnni;
  t.sparse_gemm = narrow ? SparseGemmAvx512Vnni256 : SparseGemmAvx512Vnni;
  t.sparse_path = narrow ? "vnni-256" : "vnni-512";
  return t;
}
#endif

#if defined(TFQ_HAVE_NEON)
// Both NEON tables share everything but the GEMMs (dense and block-sparse).
KernelTable MakeNeonTable(Isa isa, GemmFn* gemm, SparseGemmFn* sparse_gemm, const char* sparse_path) {
  KernelTable t{};
  t.isa = isa;
  t.absmax = AbsMaxNeon;
  t.quantize = QuantizeNeon;
  t.sum_i8 = SumI8Neon;
  t.gemm = gemm;
  t.depthwise_pixel = DepthwisePixelNeon;
  t.epilogue_rows_q = EpilogueRowsQNeon;
  t.sparse_gemm = sparse_gemm;
  t.sparse_path = sparse_path;
  return t;
}

// The dot-product extension: getauxval(AT_HWCAP) & HWCAP_ASIMDDP (Linux,
// Android); macOS: sysctl hw.optional.arm.FEAT_DotProd.
bool CpuHasDotprod() {
#if defined(__linux__) || defined(__ANDROID__)
  return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#elif defined(__APPLE__)
  int value = 0;
  size_t size = sizeof(value);
  return sysctlbyname("hw.optional.arm.FEAT_DotProd", &value, &size, nullptr, 0) == 0 && value != 0;
#else
  return false;  // unknown OS: the plain NEON path is always correct
#endif
}
#endif

}  // namespace

void SetIsaOverride(int isa) { g_isa_override.store(isa); }

const KernelTable& RefTable() {
  static const KernelTable table = MakeRefTable();
  return table;
}

const KernelTable* Avx2Table() {
#if defined(TFQ_HAVE_AVX2)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  static const KernelTable table = MakeAvx2Table();
  return supported ? &table : nullptr;
#else
  return nullptr;
#endif
}

const KernelTable* Avx512VnniTable() {
#if defined(TFQ_HAVE_AVX2) && defined(TFQ_HAVE_AVX512VNNI)
  static const bool supported =
      Avx2Table() != nullptr && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512vnni");
  static const KernelTable table = MakeAvx512VnniTable(SparseUse256());
  return supported ? &table : nullptr;
#else
  return nullptr;
#endif
}

const KernelTable* Avx512VnniOtherWidthTable() {
#if defined(TFQ_HAVE_AVX2) && defined(TFQ_HAVE_AVX512VNNI)
  static const KernelTable table = MakeAvx512VnniTable(!SparseUse256());
  return Avx512VnniTable() != nullptr ? &table : nullptr;
#else
  return nullptr;
#endif
}

const KernelTable* NeonTable() {
#if defined(TFQ_HAVE_NEON)
  static const KernelTable table = MakeNeonTable(Isa::kNeon, GemmNeon, SparseGemmNeon, "neon-128");
  return &table;
#else
  return nullptr;
#endif
}

const KernelTable* NeonDotprodTable() {
#if defined(TFQ_HAVE_NEON) && defined(TFQ_HAVE_NEON_DOTPROD)
  static const bool supported = CpuHasDotprod();
  static const KernelTable table = MakeNeonTable(Isa::kNeonDotprod, GemmNeonDotprod, SparseGemmNeonDotprod, "sdot-128");
  return supported ? &table : nullptr;
#else
  return nullptr;
#endif
}

bool IsaAvailable(Isa isa) {
  switch (isa) {
    case Isa::kReference: return true;
    case Isa::kAvx2: return Avx2Table() != nullptr;
    case Isa::kAvx512Vnni: return Avx512VnniTable() != nullptr;
    case Isa::kNeon: return NeonTable() != nullptr;
    case Isa::kNeonDotprod: return NeonDotprodTable() != nullptr;
  }
  return false;
}

const KernelTable& SelectTable(bool force_reference, int isa_cap) {
  const int cap = isa_cap >= 0 ? isa_cap : g_isa_override.load(std::memory_order_relaxed);
  if (force_reference || cap == static_cast<int>(Isa::kReference)) return RefTable();
  if (cap < 0 || cap == static_cast<int>(Isa::kAvx512Vnni)) {
    if (const KernelTable* t = Avx512VnniTable()) return *t;
  }
  if (const KernelTable* t = Avx2Table()) return *t;
  if (cap < 0 || cap == static_cast<int>(Isa::kNeonDotprod)) {
    if (const KernelTable* t = NeonDotprodTable()) return *t;
  }
  if (const KernelTable* t = NeonTable()) return *t;
  return RefTable();
}

}  // namespace internal
}  // namespace tfq

namespace tfq {

Isa SelectedIsa(bool force_reference, int isa_cap) {
  return internal::SelectTable(force_reference, isa_cap).isa;
}

bool IsaAvailable(Isa isa) { return internal::IsaAvailable(isa); }

}  // namespace tfq
