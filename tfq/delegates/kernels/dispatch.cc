// Run-time choice of the kernel table: the best instruction set compiled in
// and supported by the CPU (and OS), else the scalar reference. NEON tables
// plug in here. A call can cap the choice (KernelOptions::isa_cap, the delegate's
// `isa` option); tests can cap it process-wide with SetIsaOverride.
#include <atomic>

#include "kernels_internal.h"

namespace tfq {
namespace internal {

#if defined(TFQ_HAVE_AVX2)
const KernelTable* Avx2TableImpl();
#endif
#if defined(TFQ_HAVE_AVX512VNNI)
const KernelTable* Avx512VnniTableImpl(const KernelTable& avx2);
#endif

namespace {
std::atomic<int> g_isa_override{-1};
}

void SetIsaOverride(int isa) { g_isa_override.store(isa); }

const KernelTable* Avx2Table() {
#if defined(TFQ_HAVE_AVX2)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported ? Avx2TableImpl() : nullptr;
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
  return supported ? Avx512VnniTableImpl(*Avx2Table()) : nullptr;
#else
  return nullptr;
#endif
}

#if defined(TFQ_HAVE_NEON)
const KernelTable* NeonTableImpl();
const KernelTable* NeonDotprodTableImpl();
bool CpuHasDotprod();
#endif

const KernelTable* NeonTable() {
#if defined(TFQ_HAVE_NEON)
  return NeonTableImpl();
#else
  return nullptr;
#endif
}

const KernelTable* NeonDotprodTable() {
#if defined(TFQ_HAVE_NEON)
  static const bool supported = CpuHasDotprod();
  return supported ? NeonDotprodTableImpl() : nullptr;
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
