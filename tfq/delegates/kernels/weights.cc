// Weights made ready for the kernels (PreparedWeights): the packed
// description and the optional channel-interleaved execution layout of the
// AVX-512 VNNI GEMM (gemm_interleaved/avx512vnni.cc describes the layout).
#include <cstring>

#include "kernels_internal.h"

namespace tfq {

size_t ExecWeightsBytes(const PackedWeights& w, bool force_reference, int* exec_group,
                        int isa_cap) {
  const internal::KernelTable& kt = internal::SelectTable(force_reference, isa_cap);
  *exec_group = 0;
  if (kt.exec_group <= 0 || kt.gemm_exec == nullptr || w.rows <= 0 || w.row_bytes <= 0) return 0;
  const int64_t padded = (w.rows + kt.exec_group - 1) / kt.exec_group * kt.exec_group;
  if (padded > 2 * w.rows) return 0;  // keep any execution copy within 2x of the packed size
  *exec_group = kt.exec_group;
  return static_cast<size_t>(padded * w.row_bytes);
}

void PrepareExecWeights(const PackedWeights& w, int group, uint8_t* out) {
  // A row is a run of 4-byte quads: 8 per whole block, then bits per
  // mini-block (version-2 dense rows); the layout puts the group's quads
  // side by side, quad by quad, in row order.
  const int64_t quads = w.row_bytes / 4;
  const int64_t groups = (w.rows + group - 1) / group;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t qi = 0; qi < quads; ++qi) {
      uint8_t* dst = out + (g * quads + qi) * 4 * group;
      for (int c = 0; c < group; ++c) {
        const int64_t row = g * group + c;
        if (row < w.rows) {
          std::memcpy(dst + 4 * c, w.codes + row * w.row_bytes + 4 * qi, 4);
        } else {
          std::memset(dst + 4 * c, 0, 4);  // padding channels: computed, never stored
        }
      }
    }
  }
}

bool PreparedWeights::Init(Scheme scheme, const uint8_t* codes, int64_t rows, int64_t k,
                           bool compact) {
  const int64_t row_bytes = DenseRowGeometry(scheme, k, compact).row_bytes;
  if (rows < 1 || k < 1 || row_bytes <= 0 || !AccumulatorFits(scheme, k)) return false;
  w_ = PackedWeights();
  w_.scheme = scheme;
  w_.codes = codes;
  w_.rows = rows;
  w_.k = k;
  w_.row_bytes = row_bytes;
  w_.compact = compact;
  exec_.clear();
  exec_built_ = false;
  return true;
}

void PreparedWeights::BuildExecLayout(bool force_reference, int isa_cap) {
  if (exec_built_) return;
  exec_built_ = true;
  int group = 0;
  const size_t bytes = ExecWeightsBytes(w_, force_reference, &group, isa_cap);
  if (bytes == 0) return;
  exec_.resize(bytes);
  PrepareExecWeights(w_, group, exec_.data());
  w_.exec_group = group;
}

}  // namespace tfq
