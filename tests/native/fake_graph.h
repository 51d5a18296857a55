// Shared by tfq_node_runner (node_runner.cc) and the libFuzzer target
// (fuzz_node.cc): the reader of node records (.tfqnodes, written by
// benchmarks/arm/export_nodes.py) and a stand-in for the interpreter, a
// TfLiteContext over a small graph that drives the delegate the way LiteRT
// does (delegate Prepare, then init / prepare / invoke / free of each
// partition it hands over), without a TFLite runtime.
//
// Every tensor buffer is its own heap allocation of exactly tensor->bytes, so
// that AddressSanitizer sees any read or write past a tensor.
#ifndef TFQ_TESTS_NATIVE_FAKE_GRAPH_H_
#define TFQ_TESTS_NATIVE_FAKE_GRAPH_H_

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "tflite_abi.h"

// The delegate's external entry points (delegate.cc), which the programs
// using this graph drive.
extern "C" TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                                         void (*report_error)(const char*));
extern "C" void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);

namespace tfq_test {

constexpr int32_t kBuiltinCustom = 32;
constexpr char kMagic[8] = {'T', 'F', 'Q', 'N', 'O', 'D', 'E', 'S'};

struct Blob {
  bool present = false;
  int type = 0;  // TfLiteType: 1 float32, 3 uint8
  std::vector<int> dims;
  std::vector<uint8_t> data;
};

// One exported node: custom code, options, then input, packed weights,
// scales, bias (may be absent) and the expected output.
struct NodeRecord {
  std::string name;
  std::vector<uint8_t> options;
  Blob tensors[5];
};

class Reader {
 public:
  explicit Reader(std::vector<uint8_t> bytes) : b_(std::move(bytes)) {}
  bool Take(void* dst, size_t n) {
    if (n > b_.size() - pos_) return false;
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  template <class T>
  bool Get(T* v) { return Take(v, sizeof(T)); }
  bool Bytes(std::vector<uint8_t>* v, uint64_t n) {
    if (n > b_.size() - pos_) return false;
    v->assign(b_.begin() + pos_, b_.begin() + pos_ + n);
    pos_ += n;
    return true;
  }
  bool AtEnd() const { return pos_ == b_.size(); }
  size_t Remaining() const { return b_.size() - pos_; }

 private:
  std::vector<uint8_t> b_;
  size_t pos_ = 0;
};

// One node record (the part of a .tfqnodes file after its header). `where`
// names the source in error messages.
inline bool ReadNode(Reader* r, NodeRecord* rec, const std::string& where, std::string* error) {
  uint32_t len;
  std::vector<uint8_t> name;
  if (!r->Get(&len) || !r->Bytes(&name, len) || !r->Get(&len) || !r->Bytes(&rec->options, len)) {
    *error = where + ": truncated node header";
    return false;
  }
  rec->name.assign(name.begin(), name.end());
  for (Blob& t : rec->tensors) {
    uint8_t present, type;
    uint32_t ndims;
    uint64_t nbytes;
    if (!r->Get(&present) || !r->Get(&type) || !r->Get(&ndims) || ndims > 8) {
      *error = where + ": truncated tensor header in node " + rec->name;
      return false;
    }
    t.present = present != 0;
    t.type = type;
    t.dims.resize(ndims);
    for (auto& d : t.dims) {
      if (!r->Get(&d)) {
        *error = where + ": truncated tensor header in node " + rec->name;
        return false;
      }
    }
    if (!r->Get(&nbytes) || !r->Bytes(&t.data, nbytes)) {
      *error = where + ": truncated tensor data in node " + rec->name;
      return false;
    }
  }
  return true;
}

// A whole .tfqnodes file: header, then `count` node records.
inline bool ReadFile(const char* path, std::vector<NodeRecord>* nodes, std::string* error) {
  FILE* f = std::fopen(path, "rb");
  if (!f) {
    *error = std::string("cannot open ") + path;
    return false;
  }
  std::vector<uint8_t> bytes;
  uint8_t buf[1 << 16];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) bytes.insert(bytes.end(), buf, buf + n);
  std::fclose(f);
  Reader r(std::move(bytes));
  char magic[8];
  uint32_t version = 0, count = 0;
  if (!r.Take(magic, 8) || std::memcmp(magic, kMagic, 8) != 0 || !r.Get(&version) ||
      version != 1 || !r.Get(&count)) {
    *error = std::string(path) + ": not a version-1 .tfqnodes file";
    return false;
  }
  for (uint32_t i = 0; i < count; ++i) {
    NodeRecord rec;
    if (!ReadNode(&r, &rec, path, error)) return false;
    nodes->push_back(std::move(rec));
  }
  if (!r.AtEnd()) {
    *error = std::string(path) + ": trailing bytes";
    return false;
  }
  return true;
}

inline TfLiteIntArray* NewIntArray(const std::vector<int>& v) {
  auto* a = static_cast<TfLiteIntArray*>(std::calloc(1, sizeof(int) * (v.size() + 1)));
  a->size = static_cast<int>(v.size());
  for (size_t i = 0; i < v.size(); ++i) a->data[i] = v[i];
  return a;
}

inline std::vector<int> ToVector(const TfLiteIntArray* a) {
  std::vector<int> v;
  for (int i = 0; a != nullptr && i < a->size; ++i) v.push_back(a->data[i]);
  return v;
}

// Bytes of one element of a tensor type the fake graph can allocate; 0 for
// the others. The type is read as a raw int: a record may hold any value,
// and loading one outside the enumerators as TfLiteType is undefined.
static_assert(sizeof(TfLiteType) == sizeof(int), "TfLiteType is stored as an int");
inline size_t ElementBytes(const TfLiteTensor* t) {
  int type;
  std::memcpy(&type, &t->type, sizeof(type));
  switch (type) {
    case kTfLiteFloat32: return 4;
    case kTfLiteUInt8: return 1;
    default: return 0;
  }
}

// The stand-in interpreter: tensors, nodes (custom or builtin), an execution
// plan and graph outputs; records what the delegate replaces and runs it.
class FakeGraph {
 public:
  // One partition the delegate handed over, as the interpreter's delegate
  // node: its registration, params and node (user_data: what init returned).
  struct Partition {
    TfLiteRegistration reg;
    TfLiteIntArray* nodes = nullptr;
    TfLiteIntArray* inputs = nullptr;
    TfLiteIntArray* outputs = nullptr;
    TfLiteDelegateParams params;
    TfLiteNode node;
    bool initialized = false;
  };

  // quiet: ReportError records the message (errors()) but does not print it.
  explicit FakeGraph(int num_tensors, bool quiet = false)
      : tensors_(num_tensors), buffers_(num_tensors, nullptr), quiet_(quiet) {
    std::memset(&context_, 0, sizeof(context_));
    std::memset(tensors_.data(), 0, sizeof(TfLiteTensor) * tensors_.size());
    context_.impl_ = this;
    context_.tensors = tensors_.data();
    context_.tensors_size = tensors_.size();
    context_.GetExecutionPlan = GetExecutionPlan;
    context_.GetNodeAndRegistration = GetNodeAndRegistration;
    context_.ReplaceNodeSubsetsWithDelegateKernels = Replace;
    context_.ResizeTensor = ResizeTensor;
    context_.ReportError = ReportError;
    context_.recommended_num_threads = 1;
  }
  FakeGraph(const FakeGraph&) = delete;
  FakeGraph& operator=(const FakeGraph&) = delete;

  ~FakeGraph() {
    FreePartitions();
    for (auto* a : owned_) std::free(a);
    for (void* b : buffers_) std::free(b);
  }

  TfLiteContext* context() { return &context_; }
  TfLiteTensor* tensor(int i) { return &tensors_[i]; }
  // Every message the delegate reported, in order.
  const std::vector<std::string>& errors() const { return errors_; }
  std::vector<Partition>& partitions() { return partitions_; }
  void set_plan(const std::vector<int>& plan) { plan_ = Own(NewIntArray(plan)); }
  void set_graph_outputs(const std::vector<int>& outputs) { graph_outputs_ = outputs; }

  // Gives tensor i its own buffer of exactly `bytes` bytes holding `data`
  // (zeros when data is null).
  void SetTensor(int i, int type, const std::vector<int>& dims, const void* data, size_t bytes,
                 TfLiteAllocationType alloc) {
    TfLiteTensor& t = tensors_[i];
    std::memset(&t, 0, sizeof(t));
    std::memcpy(&t.type, &type, sizeof(type));  // any value, see ElementBytes
    std::free(buffers_[i]);
    buffers_[i] = std::malloc(bytes);
    if (data != nullptr && bytes > 0) std::memcpy(buffers_[i], data, bytes);
    else if (bytes > 0) std::memset(buffers_[i], 0, bytes);
    t.data.raw = static_cast<char*>(buffers_[i]);
    t.bytes = bytes;
    t.dims = Own(NewIntArray(dims));
    t.allocation_type = alloc;
  }

  // A custom node (builtin_code CUSTOM) or, with an empty name, a builtin
  // one (builtin_code `builtin`); returns its index.
  int AddNode(const std::string& custom_name, const std::vector<uint8_t>& options,
              const std::vector<int>& inputs, const std::vector<int>& outputs, int builtin = 0) {
    std::unique_ptr<Node> n(new Node);
    std::memset(&n->node, 0, sizeof(n->node));
    std::memset(&n->reg, 0, sizeof(n->reg));
    n->name = custom_name;
    n->options = options;
    n->node.inputs = Own(NewIntArray(inputs));
    n->node.outputs = Own(NewIntArray(outputs));
    if (!custom_name.empty()) {
      n->node.custom_initial_data = n->options.data();
      n->node.custom_initial_data_size = static_cast<int>(n->options.size());
      n->reg.builtin_code = kBuiltinCustom;
      n->reg.custom_name = n->name.c_str();
    } else {
      n->reg.builtin_code = builtin;
    }
    nodes_.push_back(std::move(n));
    replaced_.push_back(false);
    return static_cast<int>(nodes_.size()) - 1;
  }

  // Calls every partition's init, as the interpreter does after the
  // delegate's Prepare; false when one returns null.
  bool InitPartitions(TfLiteDelegate* delegate) {
    for (Partition& p : partitions_) {
      p.params.delegate = delegate;
      p.params.nodes_to_replace = p.nodes;
      p.params.input_tensors = p.inputs;
      p.params.output_tensors = p.outputs;
      std::memset(&p.node, 0, sizeof(p.node));
      p.node.inputs = p.inputs;
      p.node.outputs = p.outputs;
      p.node.delegate = delegate;
      p.node.user_data = p.reg.init(&context_, reinterpret_cast<const char*>(&p.params), 0);
      p.initialized = true;
      if (p.node.user_data == nullptr) return false;
    }
    return true;
  }
  TfLiteStatus Prepare(size_t i) {
    return partitions_[i].reg.prepare(&context_, &partitions_[i].node);
  }
  TfLiteStatus Invoke(size_t i) { return partitions_[i].reg.invoke(&context_, &partitions_[i].node); }
  // Calls the free of every initialized partition; due before the delegate
  // that made them is destroyed (their state lives in it).
  void FreePartitions() {
    for (Partition& p : partitions_) {
      if (p.initialized && p.node.user_data != nullptr && p.reg.free != nullptr)
        p.reg.free(&context_, p.node.user_data);
      p.node.user_data = nullptr;
      p.initialized = false;
    }
  }

 private:
  struct Node {
    TfLiteNode node;
    TfLiteRegistration reg;
    std::string name;
    std::vector<uint8_t> options;
  };

  TfLiteIntArray* Own(TfLiteIntArray* a) {
    owned_.push_back(a);
    return a;
  }

  static FakeGraph* Of(TfLiteContext* c) { return static_cast<FakeGraph*>(c->impl_); }

  static TfLiteStatus GetExecutionPlan(TfLiteContext* c, TfLiteIntArray** plan) {
    *plan = Of(c)->plan_;
    return kTfLiteOk;
  }

  static TfLiteStatus GetNodeAndRegistration(TfLiteContext* c, int index, TfLiteNode** node,
                                             TfLiteRegistration** reg) {
    FakeGraph* g = Of(c);
    if (index < 0 || static_cast<size_t>(index) >= g->nodes_.size()) return kTfLiteError;
    *node = &g->nodes_[index]->node;
    *reg = &g->nodes_[index]->reg;
    return kTfLiteOk;
  }

  // As the interpreter: a partition's inputs are the tensors its nodes read
  // and do not write; its outputs, the tensors its nodes write that are
  // graph outputs or read by a node outside it.
  static TfLiteStatus Replace(TfLiteContext* c, TfLiteRegistration reg, const TfLiteIntArray* nodes,
                              TfLiteDelegate* delegate) {
    FakeGraph* g = Of(c);
    std::vector<int> members = ToVector(nodes);
    std::vector<bool> in_part(g->nodes_.size(), false);
    for (int n : members) {
      if (n < 0 || static_cast<size_t>(n) >= g->nodes_.size() || g->replaced_[n]) return kTfLiteError;
      in_part[n] = true;
    }
    std::vector<int> written, inputs, outputs;
    for (int n : members)
      for (int t : ToVector(g->nodes_[n]->node.outputs)) written.push_back(t);
    const auto has = [](const std::vector<int>& v, int x) {
      for (int y : v)
        if (y == x) return true;
      return false;
    };
    for (int n : members)
      for (int t : ToVector(g->nodes_[n]->node.inputs))
        if (t >= 0 && !has(written, t) && !has(inputs, t)) inputs.push_back(t);
    for (int t : written) {
      bool external = has(g->graph_outputs_, t);
      for (size_t n = 0; n < g->nodes_.size() && !external; ++n)
        external = !in_part[n] && has(ToVector(g->nodes_[n]->node.inputs), t);
      if (external && !has(outputs, t)) outputs.push_back(t);
    }
    for (int n : members) g->replaced_[n] = true;
    Partition p;
    std::memset(&p.params, 0, sizeof(p.params));
    std::memset(&p.node, 0, sizeof(p.node));
    p.reg = reg;
    p.nodes = g->Own(NewIntArray(members));
    p.inputs = g->Own(NewIntArray(inputs));
    p.outputs = g->Own(NewIntArray(outputs));
    g->partitions_.push_back(p);
    (void)delegate;
    return kTfLiteOk;
  }

  // As the interpreter: a constant mapped from the model (kTfLiteMmapRo)
  // only gets the new dims; any other tensor gets a new buffer of exactly
  // the new size.
  static constexpr size_t kMaxTensorBytes = size_t{256} << 20;

  static TfLiteStatus ResizeTensor(TfLiteContext* c, TfLiteTensor* t, TfLiteIntArray* dims) {
    FakeGraph* g = Of(c);
    const int i = static_cast<int>(t - g->tensors_.data());
    const size_t elem = ElementBytes(t);
    if (i < 0 || static_cast<size_t>(i) >= g->tensors_.size() || elem == 0) {
      std::free(dims);
      return kTfLiteError;
    }
    g->Own(dims);
    t->dims = dims;
    if (t->allocation_type == kTfLiteMmapRo) return kTfLiteOk;
    size_t n = 1;
    for (int d = 0; d < dims->size; ++d) {
      const size_t v = dims->data[d] < 0 ? SIZE_MAX : static_cast<size_t>(dims->data[d]);
      if (v != 0 && n > SIZE_MAX / elem / v) return kTfLiteError;
      n *= v;
    }
    // Like an interpreter whose arena cannot grow that far: a clean failure
    // the delegate must report, and a bound on the fuzzer's memory.
    if (n > kMaxTensorBytes / elem) return kTfLiteError;
    std::free(g->buffers_[i]);
    g->buffers_[i] = std::calloc(n, elem);
    t->data.raw = static_cast<char*>(g->buffers_[i]);
    t->bytes = n * elem;
    return kTfLiteOk;
  }

  static void ReportError(TfLiteContext* c, const char* fmt, ...) {
    FakeGraph* g = Of(c);
    char message[1024];
    va_list args;
    va_start(args, fmt);
    std::vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    g->errors_.push_back(message);
    if (!g->quiet_) std::fprintf(stderr, "runtime error: %s\n", message);
  }

  TfLiteContext context_;
  std::vector<TfLiteTensor> tensors_;
  std::vector<void*> buffers_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<bool> replaced_;
  std::vector<Partition> partitions_;
  std::vector<int> graph_outputs_;
  TfLiteIntArray* plan_ = nullptr;
  std::vector<TfLiteIntArray*> owned_;
  std::vector<std::string> errors_;
  bool quiet_;
};

}  // namespace tfq_test

#endif  // TFQ_TESTS_NATIVE_FAKE_GRAPH_H_
