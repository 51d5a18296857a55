// The tfq external delegate: claims every valid tfq custom node, leaves the
// rest to LiteRT, and runs the claimed nodes with the kernels in kernels/.
// Each node is its own partition, except chains of ReLU6 convolutions that
// hand their outputs to the next convolution as int8 (docs/delegate.md,
// "int8 hand-over"); the tensors inside a chain live in delegate memory
// (docs/litert_abi.md, pitfall 4).
//
// Entry points (the classic external-delegate interface, loaded with
// `load_delegate(path, options)`): tflite_plugin_create_delegate and
// tflite_plugin_destroy_delegate. Options: num_threads (default: the
// interpreter's), force_reference (0/1), verbosity (0: silent, 1: claimed and
// refused nodes, 2: also shapes at prepare, 3: also per-node times),
// int8_handover (1: default, 0: every node reads and writes float tensors),
// fuse_add (1: default, 0: residual ADDs stay with LiteRT),
// pad (1: default, 0: float zero PADs stay with LiteRT),
// isa (auto: default; reference, avx2, avx512vnni, neon, neon_dotprod: use at
// most that instruction set's kernels, refused when the CPU lacks it),
// activation_passes (1: default; 2: each node runs its int8 GEMM on the
// input and again on the input's int8 rounding residual, about 15 bits of
// activation precision for twice the multiply-adds; no int8 hand-over then;
// docs/delegate.md, "Activation precision").
//
// Memory safety (docs/delegate.md, "Memory invariants"): a node is claimed
// only when its tensors cannot alias (ParseNode: not its own input or a
// constant; DelegatePrepare: no other writer of its output, inputs or
// constants in the graph); Prepare records the exact bytes each node will
// read and write, and Invoke compares them with the tensors and buffers it
// is handed before any kernel runs.
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"
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
  bool int8_handover = true;  // docs/delegate.md, "int8 hand-over"
  int isa_cap = -1;  // -1: auto; else an Isa value (KernelOptions::isa_cap)
  int activation_passes = 1;  // docs/delegate.md, "Activation precision"
  bool fuse_add = true;  // docs/delegate.md, "Fused residual addition"
  bool pad = true;       // docs/delegate.md, "Zero padding"
  // docs/delegate.md, "8-bit convolutions": -1 auto (where the kernels have
  // a fast int8 path), 0 never, 1 always.
  int int8_conv = -1;
};

// 64-byte aligned memory that only grows.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data_); }
  bool Ensure(size_t bytes) {
    if (bytes <= bytes_) return true;
    void* p = nullptr;
    if (posix_memalign(&p, 64, bytes) != 0) return false;
    std::free(data_);
    data_ = p;
    bytes_ = bytes;
    return true;
  }
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

struct DelegateState {
  DelegateOptions options;
  std::mutex mutex;  // guards pool creation and the shared buffers
  std::unique_ptr<ThreadPool> pool;
  // Shared by all partitions of the graph, which run one after another:
  // kernel scratch, and the two buffers the tensors inside a partition
  // alternate between (node i of a chain writes handover[i % 2], node i + 1
  // reads it; the runtime allocates no memory for them: docs/litert_abi.md, pitfall 4).
  AlignedBuffer scratch;
  AlignedBuffer handover[2];
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
  // Claimed convolutions (context, node index) whose input has exactly one
  // writer, a claimed convolution earlier in the execution plan (or an ADD
  // fused into one): only they may take that writer's statistics
  // (DelegatePrepare).
  std::set<std::pair<const TfLiteContext*, int>> stats_readers;

  ~DelegateState() {
    for (const std::string& line : profile) std::fprintf(stderr, "%s\n", line.c_str());
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

// One node of a partition: a tfq node, or a builtin float ADD (is_add)
// that reads the output of the convolution before it in the partition
// (docs/delegate.md, "Fused residual addition").
struct NodeKernel {
  NodeSpec spec;
  bool is_add = false;
  AddSpec add;
  // A builtin zero PAD, its own partition: shapes (as 4-D, leading 1s)
  // recorded at prepare.
  bool is_pad = false;
  PadSpec pad;
  int64_t pad_in[4] = {1, 1, 1, 1}, pad_out[4] = {1, 1, 1, 1};
  // A PAD whose only reader is the MAX_POOL_2D after it in its partition:
  // the pool reads the PAD's input through the padding (MaxPoolPadded) and
  // the PAD itself does not run (`pad_pooled`; false when its output is
  // also needed outside the partition: both run).
  bool pad_pooled = false;
  bool is_pool = false;
  PoolSpec pool;
  ConvGeometry pool_image, pool_geometry;  // recorded at prepare
  int pool_frame_top = 0, pool_frame_left = 0;
  // An ADD: run by the previous node's epilogue (fused), or on its own
  // through AddFloats when that node's output must exist as a tensor.
  bool add_fused = false;
  // A convolution whose ADD is fused: it writes the ADD's output tensor,
  // adding the residual tensor (KernelOptions::residual); its own output
  // tensor is never written.
  int residual = -1, fused_output = -1;
  Activation residual_activation = Activation::kNone;
  int node_index = -1;  // in the interpreter's graph
  bool reuse_input_stats = false;  // DelegateState::stats_readers
  // Recorded at prepare, compared at every invoke before a kernel runs: the
  // exact bytes the node reads from its input (float tensor, or int8 codes
  // of a hand-over) and writes to its output, and the scratch it uses.
  size_t in_bytes = 0;
  size_t out_bytes = 0;
  size_t scratch_bytes = 0;
  PreparedWeights weights;  // described and laid out once, at the first prepare
  // Block-sparse weights: the block-row starts, the codes repacked for the
  // SIMD kernels and the level sums, built at prepare (at most 2x the
  // packed size, SparsePrepared).
  SparsePrepared sparse;
  bool sparse_ready = false;
  // A builtin int8 convolution (NodeSpec::int8_conv): its filter as a
  // block-sparse tensor with every block stored (BuildInt8Blocks), built at
  // the first prepare; the block-sparse codes of the node (the kernels
  // read them in place). The filter's bytes, the zero tails of kernel-row
  // runs and the block indices: 1.0-1.15x the filter.
  std::vector<uint8_t> int8_blocks;
  ConvGeometry geometry;
  int64_t fc_rows = 0;
  int64_t in_elems = 0;
  // The output is consumed by the next node of the partition only: it lives
  // in a hand-over buffer, as int8 (q_out, decided at prepare) or float.
  bool internal_out = false;
  bool q_out = false;
  int64_t out_elems = 0;  // of an internal output (prepare)
  // activation_passes 2: elements per quantization segment (an FC row, a
  // convolution image) and where the two-pass buffers start in the scratch.
  int64_t segment_elems = 0;
  size_t layer_scratch_bytes = 0;
  double seconds = 0;  // cumulative invoke time (verbosity 3)
  int64_t invokes = 0;
};

// A delegated partition: one tfq node, or a chain of them in which each
// node's output is the next one's only input (DelegatePrepare).
struct Kernel {
  DelegateState* state = nullptr;
  std::vector<NodeKernel> nodes;
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

bool Contains(const TfLiteIntArray* a, int v) {
  for (int i = 0; a != nullptr && i < a->size; ++i)
    if (a->data[i] == v) return true;
  return false;
}

void* KernelInit(TfLiteContext* context, const char* buffer, size_t) {
  const auto* params = reinterpret_cast<const TfLiteDelegateParams*>(buffer);
  if (params == nullptr || params->nodes_to_replace == nullptr ||
      params->nodes_to_replace->size < 1)
    return nullptr;
  std::unique_ptr<Kernel> kernel(new Kernel);
  kernel->state = StateOf(params->delegate);
  const int n = params->nodes_to_replace->size;
  kernel->nodes.resize(n);
  for (int i = 0; i < n; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, params->nodes_to_replace->data[i], &node, &reg) !=
        kTfLiteOk || reg == nullptr)
      return nullptr;
    std::string error;
    NodeKernel& k = kernel->nodes[i];
    if (reg->builtin_code == kBuiltinAdd) {
      if (!ParseAdd(context, node, &k.add, &error)) {
        context->ReportError(context, "tfq delegate: ADD: %s\n", error.c_str());
        return nullptr;
      }
      k.is_add = true;
      k.node_index = params->nodes_to_replace->data[i];
      continue;
    }
    if (reg->builtin_code == kBuiltinPad) {
      // Alone, or followed by the MAX_POOL_2D reading its output.
      if (i != 0 || n > 2 || !ParsePad(context, node, &k.pad, &error)) {
        context->ReportError(context, "tfq delegate: PAD: %s\n",
                             i != 0 || n > 2 ? "not first of at most two nodes" : error.c_str());
        return nullptr;
      }
      k.is_pad = true;
      k.node_index = params->nodes_to_replace->data[i];
      continue;
    }
    if (reg->builtin_code == kBuiltinMaxPool2d) {
      NodeKernel& pad = kernel->nodes[0];
      if (i != 1 || !pad.is_pad || !ParseMaxPool(context, node, &k.pool, &error) ||
          k.pool.input != pad.pad.output || pad.pad.rank != 4) {
        context->ReportError(context, "tfq delegate: MAX_POOL_2D: %s\n",
                             error.empty() ? "not fed by the 4-D PAD before it" : error.c_str());
        return nullptr;
      }
      k.is_pool = true;
      k.node_index = params->nodes_to_replace->data[i];
      pad.pad_pooled = !Contains(params->output_tensors, pad.pad.output);
      continue;
    }
    OpKind kind;
    if (reg->builtin_code == kBuiltinConv2d) {
      if (!ParseInt8Conv(context, node, &k.spec, &error)) {
        context->ReportError(context, "tfq delegate: CONV_2D: %s\n", error.c_str());
        return nullptr;
      }
    } else if (reg->builtin_code != kBuiltinCustom || !IsTfqOp(reg->custom_name, &kind)) {
      return nullptr;
    } else if (!ParseNode(context, node, kind, &k.spec, &error)) {
      context->ReportError(context, "tfq delegate: %s: %s\n", OpName(kind), error.c_str());
      return nullptr;
    }
    k.node_index = params->nodes_to_replace->data[i];
    k.reuse_input_stats = kernel->state->stats_readers.count({context, k.node_index}) > 0;
  }
  // A tensor made and used inside the partition must go from node i to node
  // i + 1 alone (the hand-over buffers alternate); DelegatePrepare only
  // builds such chains, and this checks it.
  // An ADD is fused into the convolution before it when that convolution's
  // output is one of its inputs, its other input is another tensor, and no
  // one outside the partition reads it; otherwise the ADD runs on its own.
  const auto reads = [&](const NodeKernel& k, int t) {
    return k.is_add ? (k.add.inputs[0] == t || k.add.inputs[1] == t) : k.spec.input == t;
  };
  for (int i = 0; i < n; ++i) {
    NodeKernel& k = kernel->nodes[i];
    if (!k.is_add) continue;
    // Its output leaves the partition (BuildPartitions puts an ADD last).
    if (!Contains(params->output_tensors, k.add.output)) {
      context->ReportError(context, "tfq delegate: ADD output %d stays inside the partition\n",
                           k.add.output);
      return nullptr;
    }
    if (i == 0) continue;
    NodeKernel& conv = kernel->nodes[i - 1];
    const int t = conv.spec.output;
    if (conv.is_add || conv.spec.kind != OpKind::kConv2D || Contains(params->output_tensors, t) ||
        k.add.inputs[0] == k.add.inputs[1] || !reads(k, t))
      continue;
    bool elsewhere = false;
    for (int j = 0; j < n; ++j) elsewhere = elsewhere || (j != i && reads(kernel->nodes[j], t));
    if (elsewhere) continue;
    k.add_fused = true;
    conv.residual = k.add.inputs[0] == t ? k.add.inputs[1] : k.add.inputs[0];
    conv.fused_output = k.add.output;
    conv.residual_activation = k.add.activation;
  }
  for (int i = 0; i < n; ++i) {
    if (kernel->nodes[i].is_add || kernel->nodes[i].is_pad || kernel->nodes[i].is_pool ||
        kernel->nodes[i].fused_output >= 0)
      continue;
    const int out = kernel->nodes[i].spec.output;
    if (Contains(params->output_tensors, out)) continue;
    bool chained = i + 1 < n && !kernel->nodes[i + 1].is_add && kernel->nodes[i + 1].spec.input == out;
    for (int j = i + 2; j < n; ++j) chained = chained && !reads(kernel->nodes[j], out);
    if (!chained) {
      context->ReportError(context, "tfq delegate: partition tensor %d is not a chain link\n", out);
      return nullptr;
    }
    kernel->nodes[i].internal_out = true;
  }
  return kernel.release();
}

void KernelFree(TfLiteContext*, void* buffer) {
  auto* kernel = static_cast<Kernel*>(buffer);
  if (kernel == nullptr) return;
  for (const NodeKernel& k : kernel->nodes) {
    if (k.invokes == 0 || kernel->state->options.verbosity < 3) continue;
    char line[256];
    if (k.is_add || k.is_pad || k.is_pool) {
      std::snprintf(line, sizeof(line), "tfq delegate: profile %s %lld elements: %.1f us/invoke",
                    k.is_add ? "ADD" : k.is_pad ? "PAD" : "MAX_POOL_2D (+PAD)", static_cast<long long>(k.out_elems),
                    k.seconds * 1e6 / k.invokes);
    } else {
      std::snprintf(line, sizeof(line),
                    "tfq delegate: profile %s rows %lld k %lld in %lld elements%s: %.1f us/invoke",
                    SpecName(k.spec), static_cast<long long>(k.spec.rows),
                    static_cast<long long>(k.spec.k), static_cast<long long>(k.in_elems),
                    k.q_out ? " (int8 out)" : k.fused_output >= 0 ? " (+ADD)" : "",
                    k.seconds * 1e6 / k.invokes);
    }
    kernel->state->profile.push_back(line);
  }
  delete kernel;
}

// Bytes of a float32 tensor of `elems` elements; false when they overflow.
bool FloatBytes(int64_t elems, size_t* bytes) {
  if (elems < 0 || static_cast<uint64_t>(elems) > SIZE_MAX / sizeof(float)) return false;
  *bytes = static_cast<size_t>(elems) * sizeof(float);
  return true;
}

// Reports why node `node` (an op named `what`) is refused; returns kTfLiteError.
TfLiteStatus RefuseNode(TfLiteContext* context, const char* what, int node, const char* fmt, va_list args) {
  char message[512];
  std::vsnprintf(message, sizeof(message), fmt, args);
  context->ReportError(context, "tfq delegate: %s (node %d): %s", what, node, message);
  return kTfLiteError;
}

TfLiteStatus Refuse(TfLiteContext* context, const NodeKernel& k, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  RefuseNode(context, SpecName(k.spec), k.node_index, fmt, args);
  va_end(args);
  return kTfLiteError;
}

bool HasDims(const TfLiteTensor* t, const std::vector<int>& dims) {
  bool same = t->dims != nullptr && t->dims->size == static_cast<int>(dims.size());
  for (size_t i = 0; same && i < dims.size(); ++i) same = t->dims->data[i] == dims[i];
  return same;
}

TfLiteStatus ResizeTo(TfLiteContext* context, TfLiteTensor* t, const std::vector<int>& dims) {
  if (HasDims(t, dims)) return kTfLiteOk;
  auto* d = static_cast<TfLiteIntArray*>(std::malloc(sizeof(int) * (dims.size() + 1)));
  if (d == nullptr) return kTfLiteError;
  d->size = static_cast<int>(dims.size());
  for (size_t i = 0; i < dims.size(); ++i) d->data[i] = dims[i];
  return context->ResizeTensor(context, t, d);
}

// Whether byte ranges [a, a + an) and [b, b + bn) share a byte.
bool Overlap(const void* a, size_t an, const void* b, size_t bn) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return pa < pb + bn && pb < pa + an;
}

// A builtin node the delegate runs (ADD, PAD) refused, named by its kind.
TfLiteStatus RefuseBuiltin(TfLiteContext* context, const NodeKernel& k, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  RefuseNode(context, k.is_pad ? "PAD" : k.is_pool ? "MAX_POOL_2D" : "ADD", k.node_index, fmt, args);
  va_end(args);
  return kTfLiteError;
}

// The element count of a shape, every dimension in [0, 2^30] and the count
// at most 2^40; false otherwise (*bad_dim: the dimension, or -1 when too large).
bool ShapeElems(const std::vector<int>& dims, int64_t* elems, int* bad_dim) {
  *elems = 1;
  for (int d : dims) {
    if (d < 0 || d > (1 << 30)) {
      *bad_dim = d;
      return false;
    }
    *elems *= d;
    if (*elems > (int64_t{1} << 40)) {
      *bad_dim = -1;
      return false;
    }
  }
  return true;
}

// An ADD run on its own: both inputs of one shape (no broadcast), the
// output resized to it.
TfLiteStatus PrepareAdd(TfLiteContext* context, NodeKernel* k) {
  const TfLiteTensor* a = &context->tensors[k->add.inputs[0]];
  const TfLiteTensor* b = &context->tensors[k->add.inputs[1]];
  if (a->dims == nullptr) return RefuseBuiltin(context, *k, "input has no shape");
  const std::vector<int> dims(a->dims->data, a->dims->data + a->dims->size);
  int64_t elems = 0;
  int bad = 0;
  if (!ShapeElems(dims, &elems, &bad))
    return bad >= 0 ? RefuseBuiltin(context, *k, "input dimension %d out of range", bad)
                    : RefuseBuiltin(context, *k, "input too large");
  if (!HasDims(b, dims)) return RefuseBuiltin(context, *k, "inputs of different shapes (broadcast)");
  size_t bytes = 0;
  if (!FloatBytes(elems, &bytes) || a->bytes != bytes || b->bytes != bytes)
    return RefuseBuiltin(context, *k, "input byte sizes do not match their shape");
  TfLiteTensor* out = &context->tensors[k->add.output];
  if (ResizeTo(context, out, dims) != kTfLiteOk) return kTfLiteError;
  if (out->bytes != bytes)
    return RefuseBuiltin(context, *k, "output tensor %d has %zu bytes after resizing, the ADD writes %zu",
                     k->add.output, out->bytes, bytes);
  k->out_elems = elems;
  k->in_bytes = k->out_bytes = bytes;
  return kTfLiteOk;
}

// A PAD: the output resized to the input's shape plus the paddings.
TfLiteStatus PreparePad(TfLiteContext* context, NodeKernel* k) {
  const PadSpec& p = k->pad;
  const TfLiteTensor* in = &context->tensors[p.input];
  if (in->dims == nullptr || in->dims->size != p.rank)
    return RefuseBuiltin(context, *k, "input has rank %d, the paddings are for rank %d",
                     in->dims == nullptr ? -1 : in->dims->size, p.rank);
  const int lead = 4 - p.rank;
  const std::vector<int> in_dims(in->dims->data, in->dims->data + p.rank);
  std::vector<int> dims(p.rank);
  for (int a = 0; a < 4; ++a) {
    k->pad_in[a] = k->pad_out[a] = 1;
    if (a < lead) continue;
    const int d = in_dims[a - lead];
    // Paddings are at most kMaxPad (ParsePad): no overflow in int64.
    const int64_t o = static_cast<int64_t>(d) + p.before[a - lead] + p.after[a - lead];
    if (d < 0 || o > (1 << 30)) return RefuseBuiltin(context, *k, "dimension %d padded to %lld is out of range", d,
                                                 static_cast<long long>(o));
    k->pad_in[a] = d;
    k->pad_out[a] = o;
    dims[a - lead] = static_cast<int>(o);
  }
  int64_t in_elems = 0, out_elems = 0;
  int bad = 0;
  if (!ShapeElems(in_dims, &in_elems, &bad) || !ShapeElems(dims, &out_elems, &bad))
    return RefuseBuiltin(context, *k, "tensor too large");
  size_t in_bytes = 0, out_bytes = 0;
  if (!FloatBytes(in_elems, &in_bytes) || !FloatBytes(out_elems, &out_bytes) || in->bytes != in_bytes)
    return RefuseBuiltin(context, *k, "input byte size does not match its shape");
  TfLiteTensor* out = &context->tensors[p.output];
  if (ResizeTo(context, out, dims) != kTfLiteOk) return kTfLiteError;
  if (out->bytes != out_bytes)
    return RefuseBuiltin(context, *k, "output tensor %d has %zu bytes after resizing, the PAD writes %zu", p.output,
                     out->bytes, out_bytes);
  k->in_bytes = in_bytes;
  k->out_bytes = out_bytes;
  k->in_elems = in_elems;
  k->out_elems = out_elems;
  return kTfLiteOk;
}

// Zero padding of 4-D float arrays: axis `a` and below, x and y at the same
// position of the axes above. From axis `flat` on no deeper axis is padded,
// so each slab is one contiguous copy.
void PadAxis(const float* x, float* y, int a, int flat, const int64_t* in, const int64_t* out,
             const int64_t* before, const int64_t* in_stride, const int64_t* out_stride) {
  std::memset(y, 0, static_cast<size_t>(before[a] * out_stride[a]) * sizeof(float));
  float* body = y + before[a] * out_stride[a];
  if (a == flat) {
    std::memcpy(body, x, static_cast<size_t>(in[a] * in_stride[a]) * sizeof(float));
  } else {
    for (int64_t i = 0; i < in[a]; ++i)
      PadAxis(x + i * in_stride[a], body + i * out_stride[a], a + 1, flat, in, out, before, in_stride, out_stride);
  }
  const int64_t tail = out[a] - before[a] - in[a];
  std::memset(body + in[a] * out_stride[a], 0, static_cast<size_t>(tail * out_stride[a]) * sizeof(float));
}

// The invoke-time checks of a builtin node reading `in` into `out` (PAD,
// MAX_POOL_2D): both have data, the bytes prepare recorded, no overlap.
TfLiteStatus CheckBuiltinTensors(TfLiteContext* context, const NodeKernel& k, const TfLiteTensor* in,
                                 const TfLiteTensor* out) {
  if (in->data.raw == nullptr || out->data.raw == nullptr) return RefuseBuiltin(context, k, "tensor has no data");
  if (in->bytes != k.in_bytes || out->bytes != k.out_bytes)
    return RefuseBuiltin(context, k, "tensors resized after prepare (%zu -> %zu bytes prepared)", k.in_bytes,
                         k.out_bytes);
  if (Overlap(in->data.raw, k.in_bytes, out->data.raw, k.out_bytes))
    return RefuseBuiltin(context, k, "output overlaps the input");
  return kTfLiteOk;
}

TfLiteStatus InvokePad(TfLiteContext* context, DelegateState* state, NodeKernel* k) {
  const PadSpec& p = k->pad;
  const TfLiteTensor* in = &context->tensors[p.input];
  TfLiteTensor* out = &context->tensors[p.output];
  if (CheckBuiltinTensors(context, *k, in, out) != kTfLiteOk) return kTfLiteError;
  const bool timing = state->options.verbosity >= 3;
  const auto start = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  int64_t before[4] = {0, 0, 0, 0}, in_stride[4], out_stride[4];
  const int lead = 4 - p.rank;
  int flat = 0;
  for (int a = lead; a < 4; ++a) {
    before[a] = p.before[a - lead];
    if (p.before[a - lead] != 0 || p.after[a - lead] != 0) flat = a;
  }
  in_stride[3] = out_stride[3] = 1;
  for (int a = 2; a >= 0; --a) {
    in_stride[a] = in_stride[a + 1] * k->pad_in[a + 1];
    out_stride[a] = out_stride[a + 1] * k->pad_out[a + 1];
  }
  if (k->in_elems > 0) {
    PadAxis(in->data.f, out->data.f, 0, flat, k->pad_in, k->pad_out, before, in_stride, out_stride);
  } else {
    std::memset(out->data.raw, 0, k->out_bytes);  // an empty input: all padding
  }
  state->output_stats.erase({context, p.output});
  if (timing) {
    k->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    k->invokes += 1;
  }
  return kTfLiteOk;
}

// A MAX_POOL_2D after the PAD `pad` (prepared just before): its frame is the
// padded shape; it reads the PAD's input (pad_pooled) or its output.
TfLiteStatus PreparePool(TfLiteContext* context, NodeKernel* k, const NodeKernel& pad) {
  const PoolSpec& p = k->pool;
  ConvGeometry& im = k->pool_image;
  ConvGeometry& g = k->pool_geometry;
  const int64_t* src = pad.pad_pooled ? pad.pad_in : pad.pad_out;
  im.batch = static_cast<int>(src[0]);
  im.in_h = static_cast<int>(src[1]);
  im.in_w = static_cast<int>(src[2]);
  im.in_c = static_cast<int>(src[3]);
  if (pad.pad_out[0] != pad.pad_in[0] || pad.pad_out[3] != pad.pad_in[3])
    return RefuseBuiltin(context, *k, "the PAD before it pads the batch or the channels");
  k->pool_frame_top = pad.pad_pooled ? static_cast<int>(pad.pad.before[1]) : 0;
  k->pool_frame_left = pad.pad_pooled ? static_cast<int>(pad.pad.before[2]) : 0;
  g = ConvGeometry();
  g.batch = im.batch;
  g.in_h = static_cast<int>(pad.pad_out[1]);
  g.in_w = static_cast<int>(pad.pad_out[2]);
  g.in_c = g.out_c = im.in_c;
  g.kernel_h = p.filter_h;
  g.kernel_w = p.filter_w;
  g.stride_h = p.stride_h;
  g.stride_w = p.stride_w;
  if (!ComputeOutputSize(p.same_padding, g.in_h, g.kernel_h, g.stride_h, 1, &g.out_h, &g.pad_top) ||
      !ComputeOutputSize(p.same_padding, g.in_w, g.kernel_w, g.stride_w, 1, &g.out_w, &g.pad_left))
    return RefuseBuiltin(context, *k, "pooling window does not fit the padded input");
  const std::vector<int> dims = {g.batch, g.out_h, g.out_w, g.out_c};
  int64_t out_elems = 0, in_elems = 0;
  int bad = 0;
  if (!ShapeElems(dims, &out_elems, &bad) || !ShapeElems({im.batch, im.in_h, im.in_w, im.in_c}, &in_elems, &bad))
    return RefuseBuiltin(context, *k, "tensor too large");
  size_t out_bytes = 0;
  if (!FloatBytes(out_elems, &out_bytes) || !FloatBytes(in_elems, &k->in_bytes))
    return RefuseBuiltin(context, *k, "tensor too large");
  const TfLiteTensor* in = &context->tensors[pad.pad_pooled ? pad.pad.input : pad.pad.output];
  if (in->bytes != k->in_bytes)
    return RefuseBuiltin(context, *k, "input tensor has %zu bytes, its shape needs %zu", in->bytes, k->in_bytes);
  TfLiteTensor* out = &context->tensors[p.output];
  if (ResizeTo(context, out, dims) != kTfLiteOk) return kTfLiteError;
  if (out->bytes != out_bytes)
    return RefuseBuiltin(context, *k, "output tensor %d has %zu bytes after resizing, the pool writes %zu",
                         p.output, out->bytes, out_bytes);
  k->out_bytes = out_bytes;
  k->out_elems = out_elems;
  return kTfLiteOk;
}

TfLiteStatus InvokePool(TfLiteContext* context, DelegateState* state, NodeKernel* k, const NodeKernel& pad) {
  const TfLiteTensor* in = &context->tensors[pad.pad_pooled ? pad.pad.input : pad.pad.output];
  TfLiteTensor* out = &context->tensors[k->pool.output];
  if (CheckBuiltinTensors(context, *k, in, out) != kTfLiteOk) return kTfLiteError;
  const bool timing = state->options.verbosity >= 3;
  const auto start = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  MaxPoolPadded(in->data.f, k->pool_image, k->pool_frame_top, k->pool_frame_left, k->pool_geometry,
                k->pool.activation, out->data.f);
  state->output_stats.erase({context, k->pool.output});
  if (timing) {
    k->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    k->invokes += 1;
  }
  return kTfLiteOk;
}

// Sizes the output, records the bytes the node will touch (NodeKernel) and
// its scratch and hand-over needs. `prev`: the node feeding this one inside
// the partition (its output is our input, in a hand-over buffer), or null.
// The codes the kernels read: tensor 1 of a tfq node, the int8 blocks of a
// builtin convolution.
const uint8_t* NodeCodes(const TfLiteContext* context, const NodeKernel& k) {
  return k.spec.int8_conv ? k.int8_blocks.data() : context->tensors[k.spec.weights].data.uint8;
}

TfLiteStatus PrepareNode(TfLiteContext* context, DelegateState* state, NodeKernel* k,
                         const NodeKernel* prev, const NodeKernel* next, int threads,
                         size_t* handover_bytes) {
  const NodeSpec& spec = k->spec;
  std::vector<int> out_dims;
  std::string error;
  if (!ComputeShapes(context, spec, &k->geometry, &k->fc_rows, &out_dims, &error))
    return Refuse(context, *k, "%s", error.c_str());
  if (spec.int8_conv && k->int8_blocks.empty()) {
    // The filter as int8 blocks, checked like a file's block-sparse tensor.
    BuildInt8Blocks(spec, context->tensors[spec.weights].data.int8, &k->int8_blocks);
    if (!ValidateSparse(spec.scheme, spec.rows, spec.k, spec.sparse_options, spec.sparse_sizes,
                        k->int8_blocks.data(), &error)) {
      k->int8_blocks.clear();
      return Refuse(context, *k, "%s", error.c_str());
    }
  }
  const uint8_t* codes = NodeCodes(context, *k);
  if (!k->weights.ready() && !k->weights.Init(spec.scheme, codes, spec.rows, spec.k, spec.compact))
    return Refuse(context, *k, "weights of %lld x %lld out of range", static_cast<long long>(spec.rows),
                  static_cast<long long>(spec.k));
  PackedWeights w = k->weights.At(codes);
  w.conv_run = spec.conv_run;
  const bool fc = spec.kind == OpKind::kFullyConnected;
  const int64_t in_elems = fc ? FullyConnectedInputElems(w, k->fc_rows) : ConvInputElems(k->geometry);
  const int64_t out_elems = fc ? FullyConnectedOutputElems(w, k->fc_rows) : ConvOutputElems(k->geometry);
  int64_t dims_elems = 1;
  for (int d : out_dims) dims_elems *= d;
  size_t out_float_bytes = 0;
  if (dims_elems != out_elems || !FloatBytes(out_elems, &out_float_bytes) ||
      !FloatBytes(in_elems, &k->in_bytes))
    return Refuse(context, *k, "inconsistent shapes (output %lld elements, kernel writes %lld)",
                  static_cast<long long>(dims_elems), static_cast<long long>(out_elems));

  // The input: a tensor of exactly the elements the kernel reads, or the
  // previous node's hand-over buffer holding them.
  if (prev != nullptr) {
    if (prev->out_elems != in_elems)
      return Refuse(context, *k, "hand-over of %lld elements, input needs %lld",
                    static_cast<long long>(prev->out_elems), static_cast<long long>(in_elems));
    if (prev->q_out) k->in_bytes = static_cast<size_t>(in_elems);
  } else {
    const TfLiteTensor* in = &context->tensors[spec.input];
    if (in->bytes != k->in_bytes)
      return Refuse(context, *k, "input tensor %d has %zu bytes, its shape needs %zu", spec.input,
                    in->bytes, k->in_bytes);
  }

  // The output: resized to what the kernel writes.
  TfLiteTensor* out = &context->tensors[spec.output];
  if (ResizeTo(context, out, out_dims) != kTfLiteOk) return kTfLiteError;
  *handover_bytes = 0;
  if (k->fused_output >= 0) {
    // A fused ADD: the residual has exactly the convolution's output shape
    // (no broadcast) and the ADD's output is resized to it; the
    // convolution's own output tensor is never written.
    const TfLiteTensor* res = &context->tensors[k->residual];
    if (!HasDims(res, out_dims) || res->bytes != out_float_bytes)
      return Refuse(context, *k, "residual tensor %d of the fused ADD does not have the output's "
                    "shape and %zu bytes", k->residual, out_float_bytes);
    TfLiteTensor* sum = &context->tensors[k->fused_output];
    if (ResizeTo(context, sum, out_dims) != kTfLiteOk) return kTfLiteError;
    k->out_bytes = out_float_bytes;
    k->out_elems = out_elems;
    if (sum->bytes != k->out_bytes)
      return Refuse(context, *k, "ADD output tensor %d has %zu bytes after resizing, the node writes %zu",
                    k->fused_output, sum->bytes, k->out_bytes);
  } else if (k->internal_out) {
    // int8 when a ReLU6 convolution of one image feeds a convolution; the
    // chain is only built then, but the batch is known only now.
    k->out_elems = out_elems;
    k->q_out = !fc && spec.activation == Activation::kRelu6 && k->geometry.batch == 1 &&
               next != nullptr && next->spec.kind != OpKind::kFullyConnected;
    k->out_bytes = k->q_out ? static_cast<size_t>(out_elems) : out_float_bytes;
    *handover_bytes = k->out_bytes + kHandoverSlack;
  } else {
    k->out_bytes = out_float_bytes;
    if (out->bytes != k->out_bytes)
      return Refuse(context, *k, "output tensor %d has %zu bytes after resizing, the node writes %zu",
                    spec.output, out->bytes, k->out_bytes);
  }

  if (spec.sparse && !k->sparse_ready) {
    if (!k->sparse.Build(spec.scheme, spec.rows, spec.k, spec.sparse_options, spec.sparse_sizes, codes))
      return Refuse(context, *k, "nnz_blocks = %lld is too large for this delegate (at most 2^32 - 1)",
                    static_cast<long long>(spec.sparse_options.nnz_blocks));
    k->sparse_ready = true;
  }
  // The scratch of a block-sparse node depends on its block shape.
  SparseWeights sparse_view;
  PackedWeights ws = w;
  if (spec.sparse) {
    sparse_view = k->sparse.View(spec.sparse_options, spec.sparse_sizes, codes);
    ws.sparse = &sparse_view;
  }
  // Block-sparse codes are not rows: no execution layout.
  if (spec.kind != OpKind::kDepthwiseConv2D && !spec.sparse)
    k->weights.BuildExecLayout(state->options.force_reference, state->options.isa_cap);
  // Two activation passes run the layer once on the doubled batch [input;
  // its residual] (InvokeNode).
  const int passes = state->options.activation_passes;
  if (passes == 2) {
    k->segment_elems = fc ? spec.k : ConvInputElems(k->geometry) / std::max(1, k->geometry.batch);
    if (spec.out_channels <= 0 || out_elems % spec.out_channels != 0 || k->segment_elems <= 0 ||
        in_elems % k->segment_elems != 0 || k->geometry.batch > INT32_MAX / 2 ||
        k->fc_rows > INT64_MAX / 2)
      return Refuse(context, *k, "two-pass sizes: %lld outputs are not rows of %lld channels",
                    static_cast<long long>(out_elems), static_cast<long long>(spec.out_channels));
  }
  ConvGeometry batch = k->geometry;
  batch.batch *= passes;
  switch (spec.kind) {
    case OpKind::kFullyConnected: k->scratch_bytes = FullyConnectedScratchBytes(ws, passes * k->fc_rows); break;
    case OpKind::kConv2D: k->scratch_bytes = Conv2DScratchBytes(ws, batch, threads); break;
    case OpKind::kDepthwiseConv2D: k->scratch_bytes = DepthwiseScratchBytes(w, batch, threads); break;
  }
  if (passes == 2) {
    // After the layer's scratch: the stacked inputs and outputs and one int8
    // segment (TwoPassScratchBytes).
    const size_t extra = TwoPassScratchBytes(k->segment_elems, in_elems, out_elems);
    if (extra == 0 || k->scratch_bytes > SIZE_MAX - extra - 64)
      return Refuse(context, *k, "two-pass scratch of %lld input elements out of range",
                    static_cast<long long>(in_elems));
    k->layer_scratch_bytes = (k->scratch_bytes + 63) / 64 * 64;
    k->scratch_bytes = k->layer_scratch_bytes + extra;
  }
  Log(state, 2, "prepared %s (%s, rows %lld, k %lld, %d threads, %s%s)", SpecName(spec),
      SchemeName(spec.scheme), static_cast<long long>(spec.rows), static_cast<long long>(spec.k),
      threads, IsaName(SelectedIsa(state->options.force_reference, state->options.isa_cap)),
      k->internal_out ? (k->q_out ? ", int8 out" : ", float out kept in the partition") : "");
  return kTfLiteOk;
}

TfLiteStatus KernelPrepare(TfLiteContext* context, TfLiteNode* node) {
  auto* kernel = static_cast<Kernel*>(node->user_data);
  if (kernel == nullptr) {
    context->ReportError(context, "tfq delegate: node was not initialized");
    return kTfLiteError;
  }
  DelegateState* state = kernel->state;
  std::lock_guard<std::mutex> lock(state->mutex);
  const int threads = state->Threads(context);
  const size_t n = kernel->nodes.size();
  for (size_t i = 0; i < n; ++i) {
    NodeKernel* k = &kernel->nodes[i];
    if (k->is_add) {
      if (!k->add_fused && PrepareAdd(context, k) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    if (k->is_pad) {
      if (PreparePad(context, k) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    if (k->is_pool) {
      if (PreparePool(context, k, kernel->nodes[0]) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    size_t handover = 0;
    const NodeKernel* prev = i > 0 && kernel->nodes[i - 1].internal_out ? &kernel->nodes[i - 1] : nullptr;
    const NodeKernel* next = i + 1 < n ? &kernel->nodes[i + 1] : nullptr;
    if (PrepareNode(context, state, k, prev, next, threads, &handover) != kTfLiteOk)
      return kTfLiteError;
    if (!state->scratch.Ensure(k->scratch_bytes) || !state->handover[i % 2].Ensure(handover)) {
      context->ReportError(context, "tfq delegate: cannot allocate %zu bytes of scratch",
                           k->scratch_bytes + handover);
      return kTfLiteError;
    }
  }
  return kTfLiteOk;
}

// True when a constant input still is what ParseNode validated.
bool ConstantIntact(const TfLiteContext* context, int index, size_t bytes) {
  if (index < 0) return true;
  const TfLiteTensor* t = &context->tensors[index];
  return t->data.raw != nullptr && t->bytes == bytes;
}

// Runs one node on x (a tensor, or the previous node's hand-over buffer when
// internal_in; int8 when q_in) into y. x_bytes / y_bytes: what those buffers
// hold, compared with what Prepare recorded. *nonfinite carries the
// hand-over's non-finite flag from node to node. A float hand-over also
// carries its statistics: in_stats (null when the writer measured none),
// and *out_stats / *out_stats_valid receive those of what this node wrote.
TfLiteStatus InvokeNode(TfLiteContext* context, DelegateState* state, NodeKernel* k, const void* x,
                        size_t x_bytes, bool internal_in, bool q_in, bool* nonfinite,
                        const TensorStats* in_stats, TensorStats* out_stats_ret, bool* out_stats_valid,
                        void* y, size_t y_bytes) {
  *out_stats_valid = false;
  const NodeSpec& spec = k->spec;
  if (x == nullptr || y == nullptr) return Refuse(context, *k, "tensor has no data");
  // The memory invariants: the node reads exactly in_bytes (plus the
  // hand-over slack) and writes exactly out_bytes.
  const size_t x_need = k->in_bytes + (q_in ? static_cast<size_t>(kHandoverSlack) : 0);
  if (internal_in ? x_bytes < x_need : x_bytes != k->in_bytes)
    return Refuse(context, *k, "input has %zu bytes at invoke, the node was prepared to read %zu "
                  "(was the tensor resized after prepare?)", x_bytes, x_need);
  const size_t y_need = k->out_bytes + (k->q_out ? static_cast<size_t>(kHandoverSlack) : 0);
  if (k->internal_out ? y_bytes < y_need : y_bytes != k->out_bytes)
    return Refuse(context, *k, "output has %zu bytes at invoke, the node was prepared to write %zu "
                  "(was the tensor resized after prepare?)", y_bytes, y_need);
  if (state->scratch.bytes() < k->scratch_bytes)
    return Refuse(context, *k, "scratch of %zu bytes, the node needs %zu", state->scratch.bytes(),
                  k->scratch_bytes);
  const float* residual = nullptr;
  if (k->fused_output >= 0) {
    const TfLiteTensor* res = &context->tensors[k->residual];
    residual = res->data.f;
    if (residual == nullptr || res->bytes != k->out_bytes)
      return Refuse(context, *k, "residual of the fused ADD has %zu bytes at invoke, the node was "
                    "prepared to read %zu", res->bytes, k->out_bytes);
    if (Overlap(residual, k->out_bytes, y, k->out_bytes) ||
        Overlap(residual, k->out_bytes, x, k->in_bytes) || Overlap(x, k->in_bytes, y, k->out_bytes))
      return Refuse(context, *k, "input, residual and output of the fused ADD overlap");
  }
  const size_t scale_elems = spec.per_channel_scale ? static_cast<size_t>(spec.out_channels) : 1;
  if (!ConstantIntact(context, spec.weights, static_cast<size_t>(spec.packed_bytes)) ||
      !ConstantIntact(context, spec.scale, scale_elems * sizeof(float)) ||
      !ConstantIntact(context, spec.bias, static_cast<size_t>(spec.out_channels) * sizeof(float)))
    return Refuse(context, *k, "a constant input changed since the node was validated");
  if (spec.int8_conv && k->int8_blocks.size() != static_cast<size_t>(spec.sparse_sizes.packed_bytes))
    return Refuse(context, *k, "int8 convolution was not prepared");
  PackedWeights w = k->weights.At(NodeCodes(context, *k));
  w.conv_run = spec.conv_run;
  SparseWeights sparse;
  if (spec.sparse) {
    if (!k->sparse_ready ||
        k->sparse.row_start.size() != static_cast<size_t>(spec.sparse_sizes.block_row_count))
      return Refuse(context, *k, "block-sparse node was not prepared");
    sparse = k->sparse.View(spec.sparse_options, spec.sparse_sizes, w.codes);
    w.sparse = &sparse;
  }
  Epilogue e;
  e.scale = spec.int8_conv ? spec.int8_scale.data() : context->tensors[spec.scale].data.f;
  e.per_channel_scale = spec.per_channel_scale;
  e.bias = spec.bias >= 0 ? context->tensors[spec.bias].data.f : nullptr;
  e.activation = spec.activation;
  const bool timing = state->options.verbosity >= 3;
  const auto start = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  KernelOptions opt;
  opt.force_reference = state->options.force_reference;
  opt.isa_cap = state->options.isa_cap;
  opt.pool = state->pool.get();
  TensorStats out_stats;
  if (spec.kind != OpKind::kFullyConnected) {
    opt.output_stats = &out_stats;
    if (q_in) {
      opt.input_q = static_cast<const int8_t*>(x);
      opt.input_nonfinite = *nonfinite;
    } else if (k->geometry.batch == 1 && !internal_in && k->reuse_input_stats) {
      const auto it = state->output_stats.find({context, spec.input});
      if (it != state->output_stats.end() && it->second.data == x && it->second.bytes == x_bytes)
        opt.input_stats = &it->second.stats;
    } else if (k->geometry.batch == 1 && internal_in) {
      // The float hand-over: measured by the node that just wrote it.
      opt.input_stats = in_stats;
    }
    if (k->q_out) opt.output_q = static_cast<int8_t*>(y);
    opt.residual = residual;
    opt.residual_activation = k->residual_activation;
  }
  const float* xf = static_cast<const float*>(x);
  float* yf = static_cast<float*>(y);
  // Two passes (docs/delegate.md, "Activation precision"): the layer runs
  // once on the batch [x; residual of x] with a linear epilogue, and
  // CombinePasses adds the halves, the bias and the activation.
  const int passes = state->options.activation_passes;
  const float* in = xf;
  float* out = yf;
  Epilogue ep = e;
  int64_t out_elems = 0;
  if (passes == 2) {
    // Partitions are single nodes then (no hand-over), and no statistics are shared.
    if (internal_in || k->internal_out || k->segment_elems <= 0 || k->fused_output >= 0)
      return Refuse(context, *k, "two-pass node was not prepared as a single float node");
    opt.residual = nullptr;  // never fused with two passes (DelegatePrepare)
    opt.input_stats = nullptr;
    opt.output_stats = nullptr;
    const int64_t in_elems = static_cast<int64_t>(k->in_bytes / sizeof(float));
    out_elems = static_cast<int64_t>(k->out_bytes / sizeof(float));
    char* base = static_cast<char*>(state->scratch.data()) + k->layer_scratch_bytes;
    float* in2 = reinterpret_cast<float*>(base);
    float* out2 = reinterpret_cast<float*>(base + (2 * in_elems * sizeof(float) + 63) / 64 * 64);
    int8_t* q = reinterpret_cast<int8_t*>(reinterpret_cast<char*>(out2) +
                                          (2 * out_elems * sizeof(float) + 63) / 64 * 64);
    std::memcpy(in2, xf, in_elems * sizeof(float));
    QuantizationResidual(xf, in_elems / k->segment_elems, k->segment_elems, in2 + in_elems, q, opt);
    in = in2;
    out = out2;
    ep.bias = nullptr;
    ep.activation = Activation::kNone;
  }
  ConvGeometry batch = k->geometry;
  batch.batch *= passes;
  switch (spec.kind) {
    case OpKind::kFullyConnected:
      FullyConnected(in, passes * k->fc_rows, w, ep, out, state->scratch.data(), opt);
      break;
    case OpKind::kConv2D:
      Conv2D(in, batch, w, ep, out, state->scratch.data(), opt);
      break;
    case OpKind::kDepthwiseConv2D:
      DepthwiseConv2D(in, batch, w, ep, out, state->scratch.data(), opt);
      break;
  }
  if (passes == 2) CombinePasses(e, out, out + out_elems, out_elems, spec.out_channels, yf);
  *nonfinite = out_stats.nonfinite;
  // Complete statistics of a float output (with an int8 output they only
  // carry the non-finite flag).
  *out_stats_valid = opt.output_stats != nullptr && !k->q_out && passes == 1;
  *out_stats_ret = out_stats;
  if (opt.output_stats != nullptr && !k->internal_out)
    state->output_stats[{context, k->fused_output >= 0 ? k->fused_output : spec.output}] = {
        y, y_bytes, out_stats};
  if (timing) {
    k->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    k->invokes += 1;
    k->in_elems = static_cast<int64_t>(q_in ? k->in_bytes : k->in_bytes / sizeof(float));
  }
  return kTfLiteOk;
}

// An ADD the partition could not fuse: the same floats as the fused one.
TfLiteStatus InvokeAdd(TfLiteContext* context, DelegateState* state, NodeKernel* k) {
  const TfLiteTensor* a = &context->tensors[k->add.inputs[0]];
  const TfLiteTensor* b = &context->tensors[k->add.inputs[1]];
  TfLiteTensor* out = &context->tensors[k->add.output];
  if (a->data.raw == nullptr || b->data.raw == nullptr || out->data.raw == nullptr)
    return RefuseBuiltin(context, *k, "tensor has no data");
  const size_t n = k->out_bytes;
  if (a->bytes != n || b->bytes != n || out->bytes != n)
    return RefuseBuiltin(context, *k, "tensors resized after prepare (%zu bytes prepared)", n);
  // Elementwise: the output may be an input's buffer, but not overlap one partly.
  for (const TfLiteTensor* t : {a, b})
    if (t->data.raw != out->data.raw && Overlap(t->data.raw, n, out->data.raw, n))
      return RefuseBuiltin(context, *k, "output overlaps an input");
  const bool timing = state->options.verbosity >= 3;
  const auto start = timing ? std::chrono::steady_clock::now() : std::chrono::steady_clock::time_point();
  state->output_stats.erase({context, k->add.output});
  AddFloats(a->data.f, b->data.f, k->out_elems, k->add.activation, out->data.f);
  if (timing) {
    k->seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    k->invokes += 1;
  }
  return kTfLiteOk;
}

TfLiteStatus KernelInvoke(TfLiteContext* context, TfLiteNode* node) {
  auto* kernel = static_cast<Kernel*>(node->user_data);
  if (kernel == nullptr) return kTfLiteError;
  DelegateState* state = kernel->state;
  std::lock_guard<std::mutex> lock(state->mutex);
  const size_t n = kernel->nodes.size();
  bool nonfinite = false;  // the hand-over's non-finite flag (KernelOptions::input_nonfinite)
  // The statistics of the previous node's output (a float hand-over's).
  TensorStats stats[2];
  bool stats_valid = false;
  for (size_t i = 0; i < n; ++i) {
    NodeKernel* k = &kernel->nodes[i];
    if (k->is_add) {
      if (!k->add_fused && InvokeAdd(context, state, k) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    if (k->is_pad) {
      if (!k->pad_pooled && InvokePad(context, state, k) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    if (k->is_pool) {
      if (InvokePool(context, state, k, kernel->nodes[0]) != kTfLiteOk) return kTfLiteError;
      continue;
    }
    const TfLiteTensor* in = &context->tensors[k->spec.input];
    TfLiteTensor* out = &context->tensors[k->fused_output >= 0 ? k->fused_output : k->spec.output];
    const void* x = in->data.raw;
    size_t x_bytes = in->bytes;
    const bool internal_in = i > 0 && kernel->nodes[i - 1].internal_out;
    const bool q_in = internal_in && kernel->nodes[i - 1].q_out;
    if (internal_in) {
      x = state->handover[(i - 1) % 2].data();
      x_bytes = state->handover[(i - 1) % 2].bytes();
    }
    void* y = out->data.raw;
    size_t y_bytes = out->bytes;
    if (k->internal_out) {
      y = state->handover[i % 2].data();
      y_bytes = state->handover[i % 2].bytes();
    }
    const TensorStats* in_stats = internal_in && !q_in && stats_valid ? &stats[(i - 1) % 2] : nullptr;
    if (InvokeNode(context, state, k, x, x_bytes, internal_in, q_in, &nonfinite, in_stats, &stats[i % 2],
                   &stats_valid, y, y_bytes) != kTfLiteOk)
      return kTfLiteError;
    // The next node may read kHandoverSlack bytes past the codes: defined zeros.
    if (k->q_out) std::memset(static_cast<int8_t*>(y) + k->out_elems, 0, kHandoverSlack);
  }
  return kTfLiteOk;
}

// Who reads and writes each tensor in the execution plan.
struct PlanTensors {
  std::map<int, int> readers;               // tensor -> node inputs reading it
  std::map<int, std::vector<int>> writers;  // tensor -> nodes writing it, in plan order
};

PlanTensors ScanPlan(TfLiteContext* context, const TfLiteIntArray* plan) {
  PlanTensors t;
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk ||
        node == nullptr)
      continue;
    for (int j = 0; node->inputs != nullptr && j < node->inputs->size; ++j)
      t.readers[node->inputs->data[j]] += 1;
    for (int j = 0; node->outputs != nullptr && j < node->outputs->size; ++j)
      t.writers[node->outputs->data[j]].push_back(plan->data[i]);
  }
  return t;
}

// Calls fn(position, node index, node) for each node of the execution plan
// whose builtin code is `code`, in plan order.
template <class F>
void ForEachBuiltin(TfLiteContext* context, const TfLiteIntArray* plan, int32_t code, F&& fn) {
  for (int i = 0; i < plan->size; ++i) {
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, plan->data[i], &node, &reg) != kTfLiteOk ||
        reg == nullptr || node == nullptr || reg->builtin_code != code)
      continue;
    fn(i, plan->data[i], node);
  }
}

// Chains of claimed nodes (in execution order) for the int8 hand-over: a
// ReLU6 convolution whose output has exactly one reader, a claimed
// convolution, is delegated together with it. Every other node is its own
// partition.
// A convolution with a fused ADD (fused_add: claim index -> ADD node) ends
// its partition, followed by the ADD.
std::vector<std::vector<int>> BuildPartitions(const PlanTensors& tensors,
                                              const std::vector<std::pair<int, NodeSpec>>& claim,
                                              bool handover, const std::map<size_t, int>& fused_add) {
  std::map<int, size_t> by_input;  // input tensor -> claimed convolution reading it
  for (size_t c = 0; c < claim.size(); ++c)
    if (claim[c].second.kind != OpKind::kFullyConnected) by_input[claim[c].second.input] = c;
  std::vector<int> next(claim.size(), -1), prev(claim.size(), -1);
  for (size_t c = 0; handover && c < claim.size(); ++c) {
    const NodeSpec& spec = claim[c].second;
    if (spec.kind == OpKind::kFullyConnected || spec.activation != Activation::kRelu6) continue;
    const auto it = by_input.find(spec.output);
    const auto readers = tensors.readers.find(spec.output);
    if (it == by_input.end() || readers == tensors.readers.end() || readers->second != 1 ||
        it->second <= c)
      continue;
    next[c] = static_cast<int>(it->second);
    prev[it->second] = static_cast<int>(c);
  }
  std::vector<std::vector<int>> parts;
  for (size_t c = 0; c < claim.size(); ++c) {
    if (prev[c] >= 0) continue;
    parts.emplace_back();
    int last = static_cast<int>(c);
    for (int i = last; i >= 0; i = next[i]) {
      parts.back().push_back(claim[i].first);
      last = i;
    }
    const auto add = fused_add.find(static_cast<size_t>(last));
    if (add != fused_add.end()) parts.back().push_back(add->second);
  }
  return parts;
}

// Graph-level conditions of a claim (docs/delegate.md, "Memory invariants"):
// the node is the only writer of its output (a second writer's Prepare would
// resize the tensor under it), its input has one writer at most, and no
// node writes its constants (validated once, at init).
bool CheckWriters(const std::map<int, std::vector<int>>& writers, int index, const NodeSpec& spec,
                  std::string* error) {
  const auto of = [&](int tensor) {
    const auto it = writers.find(tensor);
    return it == writers.end() ? std::vector<int>() : it->second;
  };
  for (int other : of(spec.output)) {
    if (other != index) {
      *error = "output tensor " + std::to_string(spec.output) + " is also written by node " +
               std::to_string(other);
      return false;
    }
  }
  if (of(spec.input).size() > 1) {
    *error = "input tensor " + std::to_string(spec.input) + " is written by " +
             std::to_string(of(spec.input).size()) + " nodes";
    return false;
  }
  for (int t : {spec.weights, spec.scale, spec.bias}) {
    if (t >= 0 && !of(t).empty()) {
      *error = "constant tensor " + std::to_string(t) + " is written by node " +
               std::to_string(of(t).front());
      return false;
    }
  }
  return true;
}

TfLiteStatus DelegatePrepare(TfLiteContext* context, TfLiteDelegate* delegate) {
  DelegateState* state = StateOf(delegate);
  TfLiteIntArray* plan = nullptr;
  if (context->GetExecutionPlan(context, &plan) != kTfLiteOk || plan == nullptr) return kTfLiteError;
  const PlanTensors tensors = ScanPlan(context, plan);
  const std::map<int, std::vector<int>>& writers = tensors.writers;
  std::vector<std::pair<int, NodeSpec>> claim;
  // Builtin int8 convolutions: where the block-sparse kernels have an exact
  // int8 path (vpdpbusd), unless the option says otherwise.
  const Isa isa = SelectedIsa(state->options.force_reference, state->options.isa_cap);
  const bool int8_conv = state->options.int8_conv == 1 ||
                         (state->options.int8_conv == -1 && isa == Isa::kAvx512Vnni);
  for (int i = 0; i < plan->size; ++i) {
    const int index = plan->data[i];
    TfLiteNode* node = nullptr;
    TfLiteRegistration* reg = nullptr;
    if (context->GetNodeAndRegistration(context, index, &node, &reg) != kTfLiteOk) continue;
    if (reg == nullptr) continue;
    NodeSpec spec;
    std::string error;
    if (reg->builtin_code == kBuiltinConv2d && int8_conv) {
      // A dynamic-range convolution (float_layers="int8"); any other
      // CONV_2D is LiteRT's, and so is this one when refused.
      if (!ParseInt8Conv(context, node, &spec, &error) || !CheckWriters(writers, index, spec, &error)) {
        Log(state, 2, "not claiming CONV_2D node %d: %s", index, error.c_str());
        continue;
      }
      Log(state, 1, "claimed node %d (CONV_2D, int8, rows %lld, k %lld)", index,
          static_cast<long long>(spec.rows), static_cast<long long>(spec.k));
      claim.emplace_back(index, spec);
      continue;
    }
    OpKind kind;
    if (reg->builtin_code != kBuiltinCustom || !IsTfqOp(reg->custom_name, &kind)) continue;
    if (!ParseNode(context, node, kind, &spec, &error) ||
        !CheckWriters(writers, index, spec, &error)) {
      // Refused: the interpreter then reports the custom op as unresolved.
      context->ReportError(context, "tfq delegate: refusing node %d (%s): %s\n", index,
                           OpName(kind), error.c_str());
      continue;
    }
    Log(state, 1, "claimed node %d (%s, %s, rows %lld, k %lld%s)", index, OpName(kind),
        SchemeName(spec.scheme), static_cast<long long>(spec.rows), static_cast<long long>(spec.k),
        spec.sparse ? ", block-sparse" : (spec.compact ? ", dense v2" : ""));
    claim.emplace_back(index, spec);
  }
  // Room for fields a newer runtime may have appended (docs/litert_abi.md, pitfall 1): the struct
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
  // Statistics pass from a claimed convolution to a claimed convolution
  // reading its output only when the writer runs first in every invoke.
  // `claim` is in plan order, so a claim index orders nodes as they run.
  std::map<int, size_t> claim_index;  // node -> its place in `claim`
  for (size_t c = 0; c < claim.size(); ++c) claim_index[claim[c].first] = c;
  // Residual ADDs fused into the convolution producing one of their inputs
  // (docs/delegate.md, "Fused residual addition"): that output has the ADD
  // as its only reader, the ADD alone writes its output, which is none of
  // the convolution's tensors, and the other input (the residual) has at
  // most one writer, which runs before the ADD. Shapes: at prepare.
  std::map<size_t, int> fused_add;  // claim index of the convolution -> ADD node
  std::map<int, size_t> add_conv;   // ADD node -> claim index of its convolution
  if (state->options.fuse_add && state->options.activation_passes == 1) {
    std::map<int, size_t> by_output;  // output tensor -> claimed Conv2D
    for (size_t c = 0; c < claim.size(); ++c)
      if (claim[c].second.kind == OpKind::kConv2D) by_output[claim[c].second.output] = c;
    std::map<int, int> position;  // node -> place in the execution plan
    for (int i = 0; i < plan->size; ++i) position[plan->data[i]] = i;
    const auto writers_of = [&](int tensor) {
      const auto it = writers.find(tensor);
      return it == writers.end() ? std::vector<int>() : it->second;
    };
    ForEachBuiltin(context, plan, kBuiltinAdd, [&](int i, int index, TfLiteNode* node) {
      AddSpec add;
      std::string error;
      if (!ParseAdd(context, node, &add, &error)) {
        Log(state, 2, "not fusing ADD node %d: %s", index, error.c_str());
        return;
      }
      for (int side = 0; side < 2; ++side) {
        const int t = add.inputs[side], other = add.inputs[1 - side];
        const auto conv = by_output.find(t);
        if (conv == by_output.end() || fused_add.count(conv->second) || other == t) continue;
        const NodeSpec& spec = claim[conv->second].second;
        const auto readers = tensors.readers.find(t);
        const std::vector<int> out_writers = writers_of(add.output), res_writers = writers_of(other);
        if (readers == tensors.readers.end() || readers->second != 1 || out_writers.size() != 1 ||
            out_writers.front() != index || res_writers.size() > 1 ||
            (res_writers.size() == 1 && position[res_writers.front()] >= i) ||
            position[claim[conv->second].first] >= i)
          continue;
        // No broadcast: the shapes the model declares already agree (PrepareNode checks
        // them again against what the convolution writes).
        const TfLiteIntArray* da = context->tensors[t].dims;
        const TfLiteIntArray* db = context->tensors[other].dims;
        bool same = da != nullptr && db != nullptr && da->size == db->size;
        for (int d = 0; same && d < da->size; ++d) same = da->data[d] == db->data[d];
        if (!same) {
          Log(state, 2, "not fusing ADD node %d: its inputs have different shapes", index);
          continue;
        }
        if (add.output == spec.input || add.output == spec.weights || add.output == spec.scale ||
            add.output == spec.bias || other == spec.weights || other == spec.scale || other == spec.bias)
          continue;
        fused_add[conv->second] = index;
        add_conv[index] = conv->second;
        Log(state, 1, "fused ADD node %d into node %d", index, claim[conv->second].first);
        break;
      }
    });
  }
  for (auto it = state->stats_readers.begin(); it != state->stats_readers.end();)
    it = it->first == context ? state->stats_readers.erase(it) : std::next(it);
  for (size_t c = 0; c < claim.size(); ++c) {
    if (claim[c].second.kind == OpKind::kFullyConnected) continue;
    const auto w = writers.find(claim[c].second.input);
    if (w == writers.end() || w->second.size() != 1) continue;
    // The writer: a claimed convolution, or an ADD fused into one.
    size_t producer = claim.size();
    const auto as_claim = claim_index.find(w->second.front());
    const auto as_add = add_conv.find(w->second.front());
    if (as_claim != claim_index.end()) producer = as_claim->second;
    else if (as_add != add_conv.end()) producer = as_add->second;
    if (producer >= c || claim[producer].second.kind == OpKind::kFullyConnected) continue;
    state->stats_readers.insert({context, claim[c].first});
  }
  // Float zero PADs (docs/delegate.md, "Zero padding"), each its own
  // partition: the only writer of its output, its input written by one
  // node at most, its paddings by none.
  std::map<int, PadSpec> pads;  // node -> its paddings, read once here
  const int32_t pad_code = state->options.pad ? kBuiltinPad : -1;
  ForEachBuiltin(context, plan, pad_code, [&](int, int index, TfLiteNode* node) {
    PadSpec pad;
    std::string error;
    if (!ParsePad(context, node, &pad, &error)) {
      Log(state, 2, "not claiming PAD node %d: %s", index, error.c_str());
      return;
    }
    const auto count = [&](int tensor) {
      const auto it = writers.find(tensor);
      return it == writers.end() ? size_t{0} : it->second.size();
    };
    if (count(pad.output) != 1 || count(pad.input) > 1 || count(pad.paddings) != 0) {
      Log(state, 2, "not claiming PAD node %d: its tensors have other writers", index);
      return;
    }
    pads[index] = pad;
  });
  // The MAX_POOL_2D a 4-D PAD feeds, when it is the PAD's only reader and
  // the only writer of its output: one partition, one pass (MaxPoolPadded).
  std::map<int, int> pad_pool;  // PAD node -> MAX_POOL_2D node
  ForEachBuiltin(context, plan, state->options.pad ? kBuiltinMaxPool2d : -1, [&](int, int index, TfLiteNode* node) {
    PoolSpec pool;
    std::string error;
    if (!ParseMaxPool(context, node, &pool, &error)) {
      Log(state, 2, "not claiming MAX_POOL_2D node %d: %s", index, error.c_str());
      return;
    }
    const auto w = writers.find(pool.input);
    const auto r = tensors.readers.find(pool.input);
    const auto ow = writers.find(pool.output);
    if (w == writers.end() || w->second.size() != 1 || r == tensors.readers.end() || r->second != 1 ||
        ow == writers.end() || ow->second.size() != 1)
      return;
    const auto claimed = pads.find(w->second.front());
    if (claimed == pads.end()) return;
    const PadSpec& pad = claimed->second;
    if (pad.rank != 4 || pad.before[0] != 0 || pad.after[0] != 0 || pad.before[3] != 0 || pad.after[3] != 0)
      return;
    pad_pool[w->second.front()] = index;
  });
  // Fused ADDs need one pass: the two-pass epilogue adds bias and activation after both.
  const auto parts = BuildPartitions(tensors, claim,
                                     state->options.int8_handover && state->options.activation_passes == 1,
                                     fused_add);
  for (const std::vector<int>& part : parts) {
    std::vector<int> list(part.size() + 1);
    list[0] = static_cast<int>(part.size());
    std::copy(part.begin(), part.end(), list.begin() + 1);
    if (context->ReplaceNodeSubsetsWithDelegateKernels(
            context, reg, reinterpret_cast<const TfLiteIntArray*>(list.data()), delegate) != kTfLiteOk)
      return kTfLiteError;
    const size_t convs = part.size() - add_conv.count(part.back());
    if (convs > 1) Log(state, 1, "chained %zu nodes from node %d (int8 hand-over)", convs, part[0]);
  }
  for (const auto& entry : pads) {
    const int index = entry.first;
    const auto pool = pad_pool.find(index);
    int list[3] = {pool == pad_pool.end() ? 1 : 2, index, pool == pad_pool.end() ? -1 : pool->second};
    if (context->ReplaceNodeSubsetsWithDelegateKernels(
            context, reg, reinterpret_cast<const TfLiteIntArray*>(list), delegate) != kTfLiteOk)
      return kTfLiteError;
    if (pool == pad_pool.end()) Log(state, 1, "claimed PAD node %d", index);
    else Log(state, 1, "claimed PAD node %d with MAX_POOL_2D node %d", index, pool->second);
  }
  state->claimed += static_cast<int>(claim.size());
  Log(state, 1, "%zu node(s) claimed in %zu partition(s) (and %zu PAD), kernels: %s", claim.size(), parts.size(),
      pads.size(),
      IsaName(SelectedIsa(state->options.force_reference, state->options.isa_cap)));
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

// "auto" (-1) or the name of an instruction set this build and CPU have.
bool ParseIsa(const char* v, int* out, std::string* error) {
  if (!std::strcmp(v, "auto")) {
    *out = -1;
    return true;
  }
  const Isa all[] = {Isa::kReference, Isa::kAvx2, Isa::kAvx512Vnni, Isa::kNeon, Isa::kNeonDotprod};
  std::string available = "auto";
  bool known = false;
  for (Isa isa : all) {
    if (IsaAvailable(isa)) available += std::string(", ") + IsaName(isa);
    if (!std::strcmp(v, IsaName(isa))) {
      known = true;
      if (IsaAvailable(isa)) {
        *out = static_cast<int>(isa);
        return true;
      }
    }
  }
  *error = std::string("isa '") + v + "' is " +
           (known ? "not available in this build on this CPU" : "unknown") +
           " (available: " + available + ")";
  return false;
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
    else if (!std::strcmp(k, "int8_handover")) ok = tfq::ParseBool(v, &options.int8_handover);
    else if (!std::strcmp(k, "activation_passes"))
      ok = tfq::ParseInt(v, 1, 2, &options.activation_passes);
    else if (!std::strcmp(k, "fuse_add")) ok = tfq::ParseBool(v, &options.fuse_add);
    else if (!std::strcmp(k, "pad")) ok = tfq::ParseBool(v, &options.pad);
    else if (!std::strcmp(k, "int8_conv")) {
      bool on = false;
      ok = !std::strcmp(v, "auto") || tfq::ParseBool(v, &on);
      options.int8_conv = !std::strcmp(v, "auto") ? -1 : (on ? 1 : 0);
    }
    else if (!std::strcmp(k, "isa")) {
      std::string error;
      ok = tfq::ParseIsa(v, &options.isa_cap, &error);
      if (!ok && !error.empty()) {
        if (report_error) report_error(("tfq delegate: " + error).c_str());
        return nullptr;
      }
    } else {
      if (report_error) {
        std::string msg = std::string("tfq delegate: unknown option '") + k +
                          "' (known: num_threads, force_reference, verbosity, int8_handover, fuse_add, pad, "
                          "int8_conv, isa, activation_passes)";
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
  // Zero-filled with room for fields newer runtimes append (docs/litert_abi.md, pitfall 2).
  void* mem = std::calloc(1, sizeof(TfLiteDelegate) + 256);
  if (mem == nullptr) return nullptr;
  auto* delegate = static_cast<TfLiteDelegate*>(mem);
  auto* state = new tfq::DelegateState;
  state->options = options;
  delegate->data_ = state;
  delegate->Prepare = tfq::DelegatePrepare;
  delegate->flags = kTfLiteDelegateFlagsAllowDynamicTensors;  // docs/litert_abi.md, pitfall 3
  return delegate;
}

TFQ_EXPORT void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate) {
  if (delegate == nullptr) return;
  delete tfq::StateOf(delegate);
  std::free(delegate);
}

// Name of the kernels the delegate runs on this CPU ("reference", "avx2",
// "avx512vnni", "neon", "neon_dotprod"; force_reference != 0: "reference"):
// what the Android demo shows (android_demo/.../tfq_jni.cc).
TFQ_EXPORT const char* tfq_delegate_isa(int force_reference) {
  return tfq::IsaName(tfq::SelectedIsa(force_reference != 0));
}

// The block-sparse path of those kernels ("scalar", "avx2-256", "vnni-512",
// "vnni-256": the vector width of its fast paths; TFQ_SPARSE_WIDTH=256|512
// overrides the per-CPU choice of the AVX-512 table): what benchmarks print.
TFQ_EXPORT const char* tfq_delegate_sparse_path(int force_reference) {
  return tfq::internal::SelectTable(force_reference != 0).sparse_path;
}
