// The tfq external delegate: claims every valid tfq custom node (one
// partition per node, TFLITE_NOTES.md pitfall 4), leaves the rest to LiteRT,
// and runs the claimed nodes with the kernels in kernels/.
//
// Entry points (the classic external-delegate interface, loaded with
// `load_delegate(path, options)`): tflite_plugin_create_delegate and
// tflite_plugin_destroy_delegate. Options: num_threads (default: the
// interpreter's), force_reference (0/1), verbosity (0: silent, 1: claimed and
// refused nodes, 2: also shapes at prepare).
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/thread_pool.h"
#include "node_spec.h"
#include "tflite_abi.h"

#define TFQ_EXPORT extern "C" __attribute__((visibility("default")))

namespace tfq {
namespace {

constexpr int32_t kBuiltinCustom = 32;  // BuiltinOperator_CUSTOM

struct DelegateOptions {
  int num_threads = 0;  // 0: the interpreter's recommended count
  bool force_reference = false;
  int verbosity = 0;
};

struct DelegateState {
  DelegateOptions options;
  std::mutex mutex;  // guards pool creation and the shared scratch
  std::unique_ptr<ThreadPool> pool;
  // Scratch shared by all nodes of the graph: nodes run one after another.
  void* scratch = nullptr;
  size_t scratch_bytes = 0;
  int claimed = 0;
  // verbosity 3: per-node timing report printed when the delegate is destroyed.
  std::vector<std::string> profile;
  // Statistics (absmax, non-finite flag) of the output tensors our
  // convolution nodes wrote during the current invoke, keyed by context and
  // tensor index, with the buffer they describe. A convolution whose input is
  // such a tensor skips its own absmax pass. Sound because a tensor has one
  // writer, which runs before its readers in every invoke, and a live tensor's
  // buffer is not reused before its last reader ran.
  struct OutputStats {
    const void* data;
    size_t bytes;
    TensorStats stats;
  };
  std::map<std::pair<const TfLiteContext*, int>, OutputStats> output_stats;

  ~DelegateState() {
    for (const std::string& line : profile) std::fprintf(stderr, "%s\n", line.c_str());
    std::free(scratch);
  }

  bool EnsureScratch(size_t bytes) {
    if (bytes <= scratch_bytes) return true;
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) return false;
    std::free(scratch);
    scratch = p;
    scratch_bytes = bytes;
    return true;
  }
  int Threads(const TfLiteContext* context) {
    if (!pool) {
      int n = options.num_threads > 0 ? options.num_threads : context->recommended_num_threads;
      if (n < 1) n = 1;
      pool.reset(new ThreadPool(n));
    }
    return pool->num_threads();
  }
};

struct Kernel {
  DelegateState* state = nullptr;
  double seconds = 0;  // cumulative invoke time (verbosity 3)
  int64_t invokes = 0;
  NodeSpec spec;
  std::vector<uint8_t> exec;  // optional execution layout of the weights
  int exec_group = 0;
  ConvGeometry geometry;
  int64_t fc_rows = 0;
  int64_t in_elems = 0;
};

DelegateState* StateOf(TfLiteDelegate* d) { return static_cast<DelegateState*>(d->data_); }

void Log(const DelegateState* s, int level, const char* fmt, ...) {
  if (s == nullptr || s->options.verbosity < level) return;
  va_list args;
  va_start(args, fmt);
  std::fputs("tfq delegate: ", stderr);
  std::vfprintf(stderr, fmt, args);
  std::fputc('\n', stderr);
  va_end(args);
}

void* KernelInit(TfLiteContext* context, const char* buffer, size_t) {
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size != 1)
    return nullptr;
  TfLiteNode* node = nullptr;
  TfLiteRegistration* reg = nullptr;
  if (context->GetNodeAndRegistration(context, params->nodes_to_replace->data[0], &node, &reg) !=
      kTfLiteOk)
    return nullptr;
  OpKind kind;
  if (!IsTfqOp(reg->custom_name, &kind)) return nullptr;
  auto* kernel = new Kernel;
  kernel->state = StateOf(params->delegate);
  std::string error;
  if (!ParseNode(context, node, kind, &kernel->spec, &error)) {
    context->ReportError(context, "tfq delegate: %s: %s\n", OpName(kind), error.c_str());
    delete kernel;
    return nullptr;
  }
  return kernel;
}

void KernelFree(TfLiteContext*, void* buffer) {
  auto* kernel = static_cast<Kernel*>(buffer);
  if (kernel != nullptr && kernel->invokes > 0 && kernel->state->options.verbosity >= 3) {
    char line[256];
    std::snprintf(line, sizeof(line),
                  "tfq delegate: profile %s rows %lld k %lld in %lld elements: %.1f us/invoke",
                  OpName(kernel->spec.kind), static_cast<long long>(kernel->spec.rows),
                  static_cast<long long>(kernel->spec.k), static_cast<long long>(kernel->in_elems),
                  kernel->seconds * 1e6 / kernel->invokes);
    kernel->state->profile.push_back(line);
  }
  delete kernel;
}

TfLiteStatus KernelPrepare(TfLiteContext* context, TfLiteNode* node) {
  auto* kernel = static_cast<Kernel*>(node->user_data);
  if (kernel == nullptr) {
    context->ReportError(context, "tfq delegate: node was not initialized");
    return kTfLiteError;
  }
  const NodeSpec& spec = kernel->spec;
  std::vector<int> out_dims;
  std::string error;
  if (!ComputeShapes(context, spec, &kernel->geometry, &kernel->fc_rows, &out_dims, &error)) {
    context->ReportError(context, "tfq delegate: %s: %s\n", OpName(spec.kind), error.c_str());
    return kTfLiteError;
  }
  TfLiteTensor* out = &context->tensors[spec.output];
  bool same = out->dims != nullptr && out->dims->size == static_cast<int>(out_dims.size());
  for (size_t i = 0; same && i < out_dims.size(); ++i) same = out->dims->data[i] == out_dims[i];
  if (!same) {
    auto* dims = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (out_dims.size() + 1)));
    if (dims == nullptr) return kTfLiteError;
    dims->size = static_cast<int>(out_dims.size());
    for (size_t i = 0; i < out_dims.size(); ++i) dims->data[i] = out_dims[i];
    if (context->ResizeTensor(context, out, dims) != kTfLiteOk) return kTfLiteError;
  }
  DelegateState* state = kernel->state;
  std::lock_guard<std::mutex> lock(state->mutex);
  const int threads = state->Threads(context);
  PackedWeights w;
  w.scheme = spec.scheme;
  w.rows = spec.rows;
  w.k = spec.k;
  w.row_bytes = RowBytes(spec.scheme, spec.k);
  if (spec.kind != OpKind::kDepthwiseConv2D && kernel->exec.empty()) {
    w.codes = context->tensors[spec.weights].data.uint8;
    int group = 0;
    const size_t exec_bytes = ExecWeightsBytes(w, state->options.force_reference, &group);
    if (exec_bytes > 0) {
      kernel->exec.resize(exec_bytes);
      PrepareExecWeights(w, group, kernel->exec.data());
      kernel->exec_group = group;
    }
  }
  size_t bytes = 0;
  switch (spec.kind) {
    case OpKind::kFullyConnected: bytes = FullyConnectedScratchBytes(w, kernel->fc_rows); break;
    case OpKind::kConv2D: bytes = Conv2DScratchBytes(w, kernel->geometry, threads); break;
    case OpKind::kDepthwiseConv2D: bytes = DepthwiseScratchBytes(w, kernel->geometry, threads); break;
  }
  if (!state->EnsureScratch(bytes)) {
    context->ReportError(context, "tfq delegate: cannot allocate %zu bytes of scratch", bytes);
    return kTfLiteError;
  }
  Log(state, 2, "prepared %s (%s, rows %lld, k %lld, %d threads, %s)", OpName(spec.kind),
      SchemeName(spec.scheme), static_cast<long long>(spec.rows), static_cast<long long>(spec.k),
      threads, IsaName(SelectedIsa(state->options.force_reference)));
  return kTfLiteOk;
}

TfLiteStatus KernelInvoke(TfLiteContext* context, TfLiteNode* node) {
  auto* kernel = static_cast<Kernel*>(node->user_data);
  if (kernel == nullptr) return kTfLiteError;
  const NodeSpec& spec = kernel->spec;
  const TfLiteTensor* in = &context->tensors[spec.input];
  TfLiteTensor* out = &context->tensors[spec.output];
  if (in->data.raw == nullptr || out->data.raw == nullptr) {
    context->ReportError(context, "tfq delegate: %s: tensor has no data", OpName(spec.kind));
    return kTfLiteError;
  }
  PackedWeights w;
  w.scheme = spec.scheme;
  w.codes = context->tensors[spec.weights].data.uint8;
  w.rows = spec.rows;
  w.k = spec.k;
  w.row_bytes = RowBytes(spec.scheme, spec.k);
  if (!kernel->exec.empty()) {
    w.exec = kernel->exec.data();
    w.exec_group = kernel->exec_group;
  }
  Epilogue e;
  e.scale = context->tensors[spec.scale].data.f;
  e.per_channel_scale = spec.per_channel_scale;
  e.bias = spec.bias >= 0 ? context->tensors[spec.bias].data.f : nullptr;
  e.activation = spec.activation;
  DelegateState* state = kernel->state;
  std::lock_guard<std::mutex> lock(state->mutex);
  const bool timing = state->options.verbosity >= 3;
  const auto start = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  KernelOptions opt;
  opt.force_reference = state->options.force_reference;
  opt.pool = state->pool.get();
  TensorStats out_stats;
  if (spec.kind != OpKind::kFullyConnected) {
    opt.output_stats = &out_stats;
    if (kernel->geometry.batch == 1) {
      const auto it = state->output_stats.find({context, spec.input});
      if (it != state->output_stats.end() && it->second.data == in->data.raw &&
          it->second.bytes == in->bytes)
        opt.input_stats = &it->second.stats;
    }
  }
  switch (spec.kind) {
    case OpKind::kFullyConnected:
      FullyConnected(in->data.f, kernel->fc_rows, w, e, out->data.f, state->scratch, opt);
      break;
    case OpKind::kConv2D:
      Conv2D(in->data.f, kernel->geometry, w, e, out->data.f, state->scratch, opt);
      break;
    case OpKind::kDepthwiseConv2D:
      DepthwiseConv2D(in->data.f, kernel->geometry, w, e, out->data.f, state->scratch, opt);
      break;
  }
  if (opt.output_stats != nullptr)
    state->output_stats[{context, spec.output}] = {out->data.raw, out->bytes, out_stats};
  if (timing) {
    kernel->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    kernel->invokes += 1;
    kernel->in_elems = static_cast<int64_t>(in->bytes / sizeof(float));
  }
  return kTfLiteOk;
}

TfLiteStatus DelegatePrepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  DelegateState* state = StateOf(delegate);
  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || plan == nullptr) return kTfLiteError;
  std::vector<int> claim;
  for (int i = 0; i < plan->size; ++i) {
    const int index = plan->data[i];
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, index, &node, &reg) != kTfLiteOk) continue;
    OpKind kind;
    if (reg == nullptr || reg->builtin_code != kBuiltinCustom || !IsTfqOp(reg->custom_name, &kind))
      continue;
    NodeSpec spec;
    std::string error;
    if (!ParseNode(context, node, kind, &spec, &error)) {
      // Refused: the interpreter then reports the custom op as unresolved.
      context->ReportError(context, "tfq delegate: refusing node %d (%s): %s\n", index,
                           OpName(kind), error.c_str());
      continue;
    }
    Log(state, 1, "claimed node %d (%s, %s, rows %lld, k %lld)", index, OpName(kind),
        SchemeName(spec.scheme), static_cast<long long>(spec.rows), static_cast<long long>(spec.k));
    claim.push_back(index);
  }
  // Room for fields a newer runtime may have appended (pitfall 1): the struct
  // is passed by value, so we pass our full, zero-filled declaration.
  TfLiteRegistration reg;
  std::memset(&reg, 0, sizeof(reg));
  reg.init = KernelInit;
  reg.free = KernelFree;
  reg.prepare = KernelPrepare;
  reg.invoke = KernelInvoke;
  reg.builtin_code = kBuiltinCustom;
  reg.custom_name = "TFQ_DELEGATE";
  reg.version = 1;
  struct {
    int size;
    int data[1];
  } one;
  for (int index : claim) {
    one.size = 1;
    one.data[0] = index;
    if (context->ReplaceNodeSubsetsWithDelegateKernels(
            context, reg, reinterpret_cast<const TfLiteIntArray*>(&one), delegate) != kTfLiteOk)
      return kTfLiteError;
    ++state->claimed;
  }
  Log(state, 1, "%zu node(s) claimed, kernels: %s", claim.size(),
      IsaName(SelectedIsa(state->options.force_reference)));
  return kTfLiteOk;
}

bool ParseBool(const char* v, bool* out) {
  if (!std::strcmp(v, "1") || !std::strcmp(v, "true") || !std::strcmp(v, "True")) *out = true;
  else if (!std::strcmp(v, "0") || !std::strcmp(v, "false") || !std::strcmp(v, "False")) *out = false;
  else return false;
  return true;
}

bool ParseInt(const char* v, int lo, int hi, int* out) {
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || x < lo || x > hi) return false;
  *out = static_cast<int>(x);
  return true;
}

}  // namespace
}  // namespace tfq

TFQ_EXPORT TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                                         void (*report_error)(const char*)) {
  tfq::DelegateOptions options;
  for (size_t i = 0; i < n; ++i) {
    const char* k = keys[i];
    const char* v = values[i];
    bool ok = true;
    if (!std::strcmp(k, "num_threads")) ok = tfq::ParseInt(v, 0, 64, &options.num_threads);
    else if (!std::strcmp(k, "force_reference")) ok = tfq::ParseBool(v, &options.force_reference);
    else if (!std::strcmp(k, "verbosity")) ok = tfq::ParseInt(v, 0, 3, &options.verbosity);
    else {
      if (report_error) {
        std::string msg = std::string("tfq delegate: unknown option '") + k +
                          "' (known: num_threads, force_reference, verbosity)";
        report_error(msg.c_str());
      }
      return nullptr;
    }
    if (!ok) {
      if (report_error) {
        std::string msg = std::string("tfq delegate: invalid value '") + v + "' for option '" + k + "'";
        report_error(msg.c_str());
      }
      return nullptr;
    }
  }
  // Zero-filled with room for fields newer runtimes append (pitfall 2).
  void* mem = std::calloc(1, sizeof(TfLiteDelegate) + 256);
  if (mem == nullptr) return nullptr;
  auto* delegate = static_cast<TfLiteDelegate*>(mem);
  auto* state = new tfq::DelegateState;
  state->options = options;
  delegate->data_ = state;
  delegate->Prepare = tfq::DelegatePrepare;
  delegate->flags = kTfLiteDelegateFlagsAllowDynamicTensors;  // pitfall 3
  return delegate;
}

TFQ_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete tfq::StateOf(delegate);
  std::free(delegate);
}
