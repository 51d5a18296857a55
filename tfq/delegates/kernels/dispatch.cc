// Run-time choice of the kernel table: AVX2 when compiled in and the CPU (and
// OS) support AVX2 and FMA, else the scalar reference. NEON tables plug in here.
#include "kernels_internal.h"

namespace tfq {
namespace internal {

#if defined(TFQ_HAVE_AVX2)
const KernelTable* Avx2TableImpl();
#endif

const KernelTable* Avx2Table() {
#if defined(TFQ_HAVE_AVX2) && (defined(__x86_64__) || defined(__i386__))
  static const bool supported =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported ? Avx2TableImpl() : nullptr;
#else
  return nullptr;
#endif
}

const KernelTable& SelectTable(bool force_reference) {
  if (!force_reference) {
    if (const KernelTable* t = Avx2Table()) return *t;
  }
  return RefTable();
}

}  // namespace internal
}  // namespace tfq
