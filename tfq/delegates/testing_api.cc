// The C entry points of libtfq_testing.so, the test library (loaded with
// ctypes by tests/helpers/native.py): runs the kernel tier directly, without
// an interpreter, and exposes the option parser. Built from the same kernel
// library as libtfq_delegate.so, which does not contain these functions.
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "flexbuffer_reader.h"
#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"
#include "kernels/sparse/sparse.h"
#include "kernels/thread_pool.h"

#define TFQ_EXPORT extern "C" __attribute__((visibility("default")))

namespace {

// The weights of a call, prepared as the delegate prepares a node's
// (PreparedWeights: description, then the execution layout of GEMM layers).
bool PrepareWeights(int scheme, const uint8_t* codes, int64_t rows, int64_t k, bool gemm,
                    bool force_reference, tfq::PreparedWeights* w) {
  if (scheme < 0 || scheme > 3) return false;
  if (!w->Init(static_cast<tfq::Scheme>(scheme), codes, rows, k)) return false;
  if (gemm) w->BuildExecLayout(force_reference);
  return true;
}

// One pool per thread count, kept for the life of the process, as the
// delegate keeps one per delegate instance: timing a call through this API
// then measures the kernels, not thread creation.
tfq::ThreadPool* SharedPool(int threads) {
  if (threads <= 1) return nullptr;
  if (threads > 64) threads = 64;
  static std::mutex mu;
  static std::unique_ptr<tfq::ThreadPool> pools[65];
  std::lock_guard<std::mutex> lock(mu);
  if (!pools[threads]) pools[threads].reset(new tfq::ThreadPool(threads));
  return pools[threads].get();
}

tfq::Epilogue MakeEpilogue(const float* scale, int per_channel, const float* bias, int activation) {
  tfq::Epilogue e;
  e.scale = scale;
  e.per_channel_scale = per_channel != 0;
  e.bias = bias;
  e.activation = static_cast<tfq::Activation>(activation);
  return e;
}

tfq::KernelOptions MakeOptions(int force_reference, int threads) {
  tfq::KernelOptions opt;
  opt.force_reference = force_reference != 0;
  opt.pool = SharedPool(threads);
  opt.min_parallel_macs = 0;  // the tests use small shapes: split them anyway
  return opt;
}

void* AlignedScratch(size_t bytes, std::vector<uint64_t>* storage) {
  storage->assign(bytes / 8 + 16, 0);
  auto p = reinterpret_cast<uintptr_t>(storage->data());
  return reinterpret_cast<void*>((p + 63) / 64 * 64);
}

// The geometry array of the conv entry points (batch, in_h, in_w, in_c, kernel_h, kernel_w,
// stride_h, stride_w, dilation_h, dilation_w, same, out_c, depth_multiplier), checked, with the
// output size: 0, or -1 (bad geometry / activation), -2 (no valid output size), -3 (y too small).
int ReadGeometry(const int* geo, bool depthwise, int activation, int64_t y_size, int* out_hw,
                 tfq::ConvGeometry* out) {
  tfq::ConvGeometry& g = *out;
  g.batch = geo[0];
  g.in_h = geo[1];
  g.in_w = geo[2];
  g.in_c = geo[3];
  g.kernel_h = geo[4];
  g.kernel_w = geo[5];
  g.stride_h = geo[6];
  g.stride_w = geo[7];
  g.dilation_h = geo[8];
  g.dilation_w = geo[9];
  const bool same = geo[10] != 0;
  g.out_c = geo[11];
  g.depth_multiplier = depthwise ? geo[12] : 1;
  if (g.batch < 1 || g.in_c < 1 || g.out_c < 1 || g.depth_multiplier < 1 || activation < 0 ||
      activation > 2)
    return -1;
  if (!tfq::ComputeOutputSize(same, g.in_h, g.kernel_h, g.stride_h, g.dilation_h, &g.out_h,
                              &g.pad_top) ||
      !tfq::ComputeOutputSize(same, g.in_w, g.kernel_w, g.stride_w, g.dilation_w, &g.out_w,
                              &g.pad_left))
    return -2;
  out_hw[0] = g.out_h;
  out_hw[1] = g.out_w;
  if (static_cast<int64_t>(g.batch) * g.out_h * g.out_w * g.out_c > y_size) return -3;
  return 0;
}

}  // namespace

// Caps the dispatcher's choice (-1: best available; else an Isa value) so
// that every compiled instruction set can be tested on one machine. Returns
// the instruction set now selected.
TFQ_EXPORT int tfq_testing_set_isa(int isa) {
  tfq::internal::SetIsaOverride(isa);
  return static_cast<int>(tfq::SelectedIsa(false));
}

// Instruction set the dispatcher selects (an Isa value: 0 reference, 1 avx2,
// 2 neon, 3 neon_dotprod, 4 avx512vnni).
TFQ_EXPORT int tfq_testing_isa(int force_reference) {
  return static_cast<int>(tfq::SelectedIsa(force_reference != 0));
}

TFQ_EXPORT int tfq_testing_validate_codes(int scheme, const uint8_t* codes, int64_t rows, int64_t k,
                                          char* message, int message_size) {
  if (scheme < 0 || scheme > 3) return -1;
  std::string error;
  const bool ok = tfq::ValidateCodes(static_cast<tfq::Scheme>(scheme), codes, rows, k, &error);
  if (!ok && message && message_size > 0) std::snprintf(message, message_size, "%s", error.c_str());
  return ok ? 0 : 1;
}

TFQ_EXPORT int tfq_testing_fully_connected(const float* x, int64_t m, int scheme,
                                           const uint8_t* codes, int64_t rows, int64_t k,
                                           const float* scale, int per_channel, const float* bias,
                                           int activation, float* y, int force_reference,
                                           int threads) {
  tfq::PreparedWeights prepared;
  if (!PrepareWeights(scheme, codes, rows, k, true, force_reference != 0, &prepared) || m < 1 ||
      activation < 0 || activation > 2)
    return -1;
  const tfq::PackedWeights w = prepared.At(codes);
  const tfq::Epilogue e = MakeEpilogue(scale, per_channel, bias, activation);
  const tfq::KernelOptions opt = MakeOptions(force_reference, threads);
  std::vector<uint64_t> storage;
  void* scratch = AlignedScratch(tfq::FullyConnectedScratchBytes(w, m), &storage);
  tfq::FullyConnected(x, m, w, e, y, scratch, opt);
  return 0;
}

// geo: batch, in_h, in_w, in_c, kernel_h, kernel_w, stride_h, stride_w,
// dilation_h, dilation_w, same_padding, out_c, depth_multiplier.
// out_hw receives out_h, out_w. depthwise: 0 conv, 1 depthwise. y_size is
// the number of floats y can hold.
TFQ_EXPORT int tfq_testing_conv(int depthwise, const float* x, const int* geo, int scheme,
                                const uint8_t* codes, const float* scale, int per_channel,
                                const float* bias, int activation, float* y, int64_t y_size,
                                int force_reference, int threads, int* out_hw) {
  tfq::ConvGeometry g;
  if (const int rc = ReadGeometry(geo, depthwise != 0, activation, y_size, out_hw, &g)) return rc;
  tfq::PreparedWeights prepared;
  if (depthwise) {
    if (g.in_c * g.depth_multiplier != g.out_c) return -1;
    if (!PrepareWeights(scheme, codes, g.kernel_h * g.kernel_w, g.out_c, false, false, &prepared))
      return -1;
  } else {
    if (!PrepareWeights(scheme, codes, g.out_c, static_cast<int64_t>(g.kernel_h) * g.kernel_w * g.in_c,
                        true, force_reference != 0, &prepared))
      return -1;
  }
  const tfq::PackedWeights w = prepared.At(codes);
  const tfq::Epilogue e = MakeEpilogue(scale, per_channel, bias, activation);
  const tfq::KernelOptions opt = MakeOptions(force_reference, threads);
  const int nthreads = opt.pool ? opt.pool->num_threads() : 1;
  std::vector<uint64_t> storage;
  const size_t bytes = depthwise ? tfq::DepthwiseScratchBytes(w, g, nthreads)
                                 : tfq::Conv2DScratchBytes(w, g, nthreads);
  void* scratch = AlignedScratch(bytes, &storage);
  if (depthwise) tfq::DepthwiseConv2D(x, g, w, e, y, scratch, opt);
  else tfq::Conv2D(x, g, w, e, y, scratch, opt);
  return 0;
}

namespace {

// A block-sparse tensor (format version 2) prepared as the delegate prepares
// a node: sizes, validation, SparsePrepared. sparse_opts: block_rows,
// block_cols, nnz_blocks, index_bits, flags (bit 0: drop the level sums, as
// when they do not fit the memory budget).
struct TestSparse {
  tfq::SparseOptions o;
  tfq::SparseSizes sizes;
  tfq::SparsePrepared prepared;
  tfq::SparseWeights view;
  bool Init(int scheme, const uint8_t* data, int64_t bytes, int64_t rows, int64_t k,
            const int64_t* sparse_opts) {
    if (scheme < 0 || scheme > 3) return false;
    const auto s = static_cast<tfq::Scheme>(scheme);
    o.block_rows = static_cast<int>(sparse_opts[0]);
    o.block_cols = static_cast<int>(sparse_opts[1]);
    o.nnz_blocks = sparse_opts[2];
    o.index_bits = static_cast<int>(sparse_opts[3]);
    std::string error;
    if (!tfq::ComputeSparseSizes(s, rows, k, o, &sizes, &error) || sizes.packed_bytes != bytes ||
        !tfq::ValidateSparse(s, rows, k, o, sizes, data, &error) ||
        !prepared.Build(s, rows, k, o, sizes, data))
      return false;
    if (sparse_opts[4] & 1) prepared.level_sums.clear();
    view = prepared.View(o, sizes, data);
    return true;
  }
};

}  // namespace

// Block-sparse fully connected: as tfq_testing_fully_connected, weights a
// version-2 tensor 1 of `bytes` bytes with its options (TestSparse).
TFQ_EXPORT int tfq_testing_sparse_fully_connected(const float* x, int64_t m, int scheme,
                                                  const uint8_t* data, int64_t bytes, int64_t rows,
                                                  int64_t k, const int64_t* sparse_opts,
                                                  const float* scale, int per_channel,
                                                  const float* bias, int activation, float* y,
                                                  int force_reference, int threads) {
  tfq::PreparedWeights prepared;
  TestSparse sp;
  if (m < 1 || activation < 0 || activation > 2 || !sp.Init(scheme, data, bytes, rows, k, sparse_opts) ||
      !prepared.Init(static_cast<tfq::Scheme>(scheme), data, rows, k))
    return -1;
  tfq::PackedWeights w = prepared.At(data);
  w.sparse = &sp.view;
  const tfq::Epilogue e = MakeEpilogue(scale, per_channel, bias, activation);
  const tfq::KernelOptions opt = MakeOptions(force_reference, threads);
  std::vector<uint64_t> storage;
  void* scratch = AlignedScratch(tfq::FullyConnectedScratchBytes(w, m), &storage);
  tfq::FullyConnected(x, m, w, e, y, scratch, opt);
  return 0;
}

// Block-sparse Conv2D: geo, out_hw as tfq_testing_conv; weights as
// tfq_testing_sparse_fully_connected (rows out_c, k kernel_h kernel_w in_c).
TFQ_EXPORT int tfq_testing_sparse_conv(const float* x, const int* geo, int scheme, const uint8_t* data,
                                       int64_t bytes, const int64_t* sparse_opts, const float* scale,
                                       int per_channel, const float* bias, int activation, float* y,
                                       int64_t y_size, int force_reference, int threads, int* out_hw) {
  tfq::ConvGeometry g;
  if (const int rc = ReadGeometry(geo, false, activation, y_size, out_hw, &g)) return rc;
  const int64_t k = static_cast<int64_t>(g.kernel_h) * g.kernel_w * g.in_c;
  tfq::PreparedWeights prepared;
  TestSparse sp;
  if (!sp.Init(scheme, data, bytes, g.out_c, k, sparse_opts) ||
      !prepared.Init(static_cast<tfq::Scheme>(scheme), data, g.out_c, k))
    return -1;
  tfq::PackedWeights w = prepared.At(data);
  w.sparse = &sp.view;
  const tfq::Epilogue e = MakeEpilogue(scale, per_channel, bias, activation);
  const tfq::KernelOptions opt = MakeOptions(force_reference, threads);
  const int nthreads = opt.pool ? opt.pool->num_threads() : 1;
  std::vector<uint64_t> storage;
  void* scratch = AlignedScratch(tfq::Conv2DScratchBytes(w, g, nthreads), &storage);
  tfq::Conv2D(x, g, w, e, y, scratch, opt);
  return 0;
}

// The block-sparse path of the kernels the dispatcher selects ("scalar",
// "avx2-256", "vnni-512", "vnni-256").
TFQ_EXPORT const char* tfq_testing_sparse_path(int force_reference) {
  return tfq::internal::SelectTable(force_reference != 0).sparse_path;
}

// Parses a FlexBuffer options map; writes "key=value;..." for ints, strings
// and int vectors (values joined by ','). Returns 0, or 1 with the error.
TFQ_EXPORT int tfq_testing_parse_options(const uint8_t* data, size_t size, char* out,
                                         int out_size) {
  tfq::FlexMapReader reader;
  std::string error, text;
  if (!reader.Parse(data, size, &error)) {
    if (out && out_size > 0) std::snprintf(out, out_size, "%s", error.c_str());
    return 1;
  }
  for (const std::string& key : reader.keys()) {
    int64_t i;
    std::string s;
    std::vector<int64_t> v;
    text += key + "=";
    if (reader.GetInt(key.c_str(), &i) == tfq::FlexMapReader::Result::kOk) {
      text += std::to_string(i);
    } else if (reader.GetString(key.c_str(), &s) == tfq::FlexMapReader::Result::kOk) {
      text += s;
    } else if (reader.GetIntVector(key.c_str(), &v) == tfq::FlexMapReader::Result::kOk) {
      for (size_t j = 0; j < v.size(); ++j) text += (j ? "," : "") + std::to_string(v[j]);
    } else {
      text += "?";
    }
    text += ";";
  }
  if (out && out_size > 0) std::snprintf(out, out_size, "%s", text.c_str());
  return 0;
}
