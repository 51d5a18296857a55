// Runs the tfq delegate's node-level path on tensors exported from a converted
// model (benchmarks/arm/export_nodes.py writes them on x86), without a TFLite
// runtime: a minimal TfLiteContext stands in for the interpreter. The delegate
// is created with tflite_plugin_create_delegate, its Prepare claims the node
// through ReplaceNodeSubsetsWithDelegateKernels, and the registration it
// hands over is driven exactly as the interpreter drives it (init with
// TfLiteDelegateParams, prepare, invoke). So node validation (options, sizes,
// codes), shape inference, scratch sizing, the kernels and the epilogue all
// run as in LiteRT; only the graph walk between nodes is missing.
//
// Each node's output is compared with the output the x86 delegate produced
// inside LiteRT for the same input: bit for bit (the arithmetic is integer up
// to a shared float epilogue, docs/format.md), reporting the largest
// difference when they differ.
//
// Usage: tfq_node_runner FILE.tfqnodes [--expect-isa=NAME] [--threads=N]
//                        [--force-reference] [--repeat=N]
// --repeat=N also times N invokes per node (median, microseconds) of the
// selected kernels and of the reference; meaningful only on real hardware.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/kernels.h"
#include "tflite_abi.h"

extern "C" TfLiteDelegate* tflite_plugin_create_delegate(char** keys, char** values, size_t n,
                                                         void (*report_error)(const char*));
extern "C" void tflite_plugin_destroy_delegate(TfLiteDelegate* delegate);

namespace {

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

 private:
  std::vector<uint8_t> b_;
  size_t pos_ = 0;
};

bool ReadFile(const char* path, std::vector<NodeRecord>* nodes, std::string* error) {
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
    uint32_t len;
    std::vector<uint8_t> name;
    if (!r.Get(&len) || !r.Bytes(&name, len) || !r.Get(&len) || !r.Bytes(&rec.options, len)) {
      *error = std::string(path) + ": truncated node header";
      return false;
    }
    rec.name.assign(name.begin(), name.end());
    for (Blob& t : rec.tensors) {
      uint8_t present, type;
      uint32_t ndims;
      uint64_t nbytes;
      if (!r.Get(&present) || !r.Get(&type) || !r.Get(&ndims) || ndims > 8) {
        *error = std::string(path) + ": truncated tensor header in node " + rec.name;
        return false;
      }
      t.present = present != 0;
      t.type = type;
      t.dims.resize(ndims);
      for (auto& d : t.dims)
        if (!r.Get(&d)) return false;
      if (!r.Get(&nbytes) || !r.Bytes(&t.data, nbytes)) {
        *error = std::string(path) + ": truncated tensor data in node " + rec.name;
        return false;
      }
    }
    nodes->push_back(std::move(rec));
  }
  if (!r.AtEnd()) {
    *error = std::string(path) + ": trailing bytes";
    return false;
  }
  return true;
}

TfLiteIntArray* NewIntArray(const std::vector<int>& v) {
  auto* a = static_cast<TfLiteIntArray*>(std::calloc(1, sizeof(int) * (v.size() + 1)));
  a->size = static_cast<int>(v.size());
  for (size_t i = 0; i < v.size(); ++i) a->data[i] = v[i];
  return a;
}

// The stand-in interpreter: five tensors (input, weights, scale, bias,
// output) and one custom node.
struct FakeGraph {
  TfLiteContext context;
  TfLiteTensor tensors[5];
  std::vector<float> output_storage;
  TfLiteNode node;
  TfLiteRegistration node_reg;
  std::string custom_name;
  TfLiteIntArray* plan = nullptr;
  // What the delegate handed over.
  bool replaced = false;
  TfLiteRegistration delegate_reg;
  TfLiteDelegate* delegate = nullptr;
  std::vector<TfLiteIntArray*> owned;

  ~FakeGraph() {
    for (auto* a : owned) std::free(a);
  }
};

FakeGraph* GraphOf(TfLiteContext* c) { return static_cast<FakeGraph*>(c->impl_); }

TfLiteStatus GetExecutionPlan(TfLiteContext* c, TfLiteIntArray** plan) {
  *plan = GraphOf(c)->plan;
  return kTfLiteOk;
}

TfLiteStatus GetNodeAndRegistration(TfLiteContext* c, int index, TfLiteNode** node,
                                    TfLiteRegistration** reg) {
  if (index != 0) return kTfLiteError;
  *node = &GraphOf(c)->node;
  *reg = &GraphOf(c)->node_reg;
  return kTfLiteOk;
}

TfLiteStatus Replace(TfLiteContext* c, TfLiteRegistration reg, const TfLiteIntArray* nodes,
                     TfLiteDelegate* delegate) {
  FakeGraph* g = GraphOf(c);
  if (nodes->size != 1 || nodes->data[0] != 0 || g->replaced) return kTfLiteError;
  g->replaced = true;
  g->delegate_reg = reg;
  g->delegate = delegate;
  return kTfLiteOk;
}

TfLiteStatus ResizeTensor(TfLiteContext* c, TfLiteTensor* t, TfLiteIntArray* dims) {
  FakeGraph* g = GraphOf(c);
  if (t != &g->tensors[4]) {
    std::free(dims);
    return kTfLiteError;
  }
  int64_t n = 1;
  for (int i = 0; i < dims->size; ++i) n *= dims->data[i];
  g->output_storage.assign(n, 0.0f);
  t->data.f = g->output_storage.data();
  t->bytes = n * sizeof(float);
  t->dims = dims;
  g->owned.push_back(dims);
  return kTfLiteOk;
}

void ReportError(TfLiteContext*, const char* fmt, ...) {
  va_list args;
  va_start(args, fmt);
  std::fputs("runtime error: ", stderr);
  std::vfprintf(stderr, fmt, args);
  std::fputc('\n', stderr);
  va_end(args);
}

void FillTensor(FakeGraph* g, int i, Blob& b, TfLiteAllocationType alloc) {
  TfLiteTensor& t = g->tensors[i];
  std::memset(&t, 0, sizeof(t));
  t.type = static_cast<TfLiteType>(b.type);
  t.data.raw = reinterpret_cast<char*>(b.data.data());
  t.bytes = b.data.size();
  t.dims = NewIntArray(b.dims);
  g->owned.push_back(t.dims);
  t.allocation_type = alloc;
}

struct RunResult {
  bool ok = false;
  std::vector<float> output;
};

// Builds the graph for one node, applies a fresh delegate, runs `repeat`
// invokes (at least one) and returns the output; *median_us receives the
// median invoke time.
RunResult RunNode(NodeRecord& rec, int threads, bool force_reference, int repeat,
                  double* median_us) {
  RunResult result;
  FakeGraph g;
  std::memset(&g.context, 0, sizeof(g.context));
  std::memset(g.tensors, 0, sizeof(g.tensors));
  g.context.impl_ = &g;
  g.context.tensors = g.tensors;
  g.context.tensors_size = 5;
  g.context.GetExecutionPlan = GetExecutionPlan;
  g.context.GetNodeAndRegistration = GetNodeAndRegistration;
  g.context.ReplaceNodeSubsetsWithDelegateKernels = Replace;
  g.context.ResizeTensor = ResizeTensor;
  g.context.ReportError = ReportError;
  g.context.recommended_num_threads = threads;
  FillTensor(&g, 0, rec.tensors[0], kTfLiteArenaRw);
  for (int i = 1; i < 4; ++i)
    if (rec.tensors[i].present) FillTensor(&g, i, rec.tensors[i], kTfLiteMmapRo);
  // The output starts with the shape the model declares (the expected one).
  FillTensor(&g, 4, rec.tensors[4], kTfLiteArenaRw);
  g.output_storage.assign(rec.tensors[4].data.size() / sizeof(float), -12345.0f);  // poison
  g.tensors[4].data.f = g.output_storage.data();
  g.plan = NewIntArray({0});
  g.owned.push_back(g.plan);
  std::memset(&g.node, 0, sizeof(g.node));
  g.node.inputs = NewIntArray({0, 1, 2, rec.tensors[3].present ? 3 : -1});
  g.node.outputs = NewIntArray({4});
  g.owned.push_back(g.node.inputs);
  g.owned.push_back(g.node.outputs);
  g.node.custom_initial_data = rec.options.data();
  g.node.custom_initial_data_size = static_cast<int>(rec.options.size());
  std::memset(&g.node_reg, 0, sizeof(g.node_reg));
  g.node_reg.builtin_code = kBuiltinCustom;
  g.custom_name = rec.name;
  g.node_reg.custom_name = g.custom_name.c_str();

  std::string threads_s = std::to_string(threads), ref_s = force_reference ? "1" : "0";
  char* keys[] = {const_cast<char*>("num_threads"), const_cast<char*>("force_reference")};
  char* values[] = {const_cast<char*>(threads_s.c_str()), const_cast<char*>(ref_s.c_str())};
  TfLiteDelegate* delegate = tflite_plugin_create_delegate(keys, values, 2, nullptr);
  if (delegate == nullptr) {
    std::fprintf(stderr, "tflite_plugin_create_delegate failed\n");
    return result;
  }
  if (delegate->Prepare(&g.context, delegate) != kTfLiteOk || !g.replaced) {
    std::fprintf(stderr, "node %s: the delegate did not claim it\n", rec.name.c_str());
    tflite_plugin_destroy_delegate(delegate);
    return result;
  }
  // The interpreter's view of the delegated partition.
  TfLiteDelegateParams params;
  params.delegate = delegate;
  params.nodes_to_replace = g.plan;
  params.input_tensors = g.node.inputs;
  params.output_tensors = g.node.outputs;
  TfLiteNode dnode;
  std::memset(&dnode, 0, sizeof(dnode));
  dnode.inputs = g.node.inputs;
  dnode.outputs = g.node.outputs;
  dnode.delegate = delegate;
  const TfLiteRegistration& reg = g.delegate_reg;
  dnode.user_data = reg.init(&g.context, reinterpret_cast<const char*>(&params), 0);
  bool ok = dnode.user_data != nullptr && reg.prepare(&g.context, &dnode) == kTfLiteOk;
  std::vector<double> times;
  for (int i = 0; ok && i < std::max(1, repeat); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ok = reg.invoke(&g.context, &dnode) == kTfLiteOk;
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  if (dnode.user_data) reg.free(&g.context, dnode.user_data);
  tflite_plugin_destroy_delegate(delegate);
  if (!ok) {
    std::fprintf(stderr, "node %s: init/prepare/invoke failed\n", rec.name.c_str());
    return result;
  }
  std::sort(times.begin(), times.end());
  *median_us = times[times.size() / 2];
  result.ok = true;
  result.output = g.output_storage;
  return result;
}

std::string Shape(const std::vector<int>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? "," : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace

int main(int argc, char** argv) {
  const char* path = nullptr;
  std::string expect;
  int threads = 1, repeat = 0;
  bool force_reference = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strncmp(argv[i], "--expect-isa=", 13)) expect = argv[i] + 13;
    else if (!std::strncmp(argv[i], "--threads=", 10)) threads = std::atoi(argv[i] + 10);
    else if (!std::strncmp(argv[i], "--repeat=", 9)) repeat = std::atoi(argv[i] + 9);
    else if (!std::strcmp(argv[i], "--force-reference")) force_reference = true;
    else if (argv[i][0] != '-' && path == nullptr) path = argv[i];
    else {
      std::fprintf(stderr, "unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (path == nullptr || threads < 1) {
    std::fprintf(stderr,
                 "usage: tfq_node_runner FILE.tfqnodes [--expect-isa=NAME] [--threads=N] "
                 "[--force-reference] [--repeat=N]\n");
    return 2;
  }
  const char* isa = tfq::IsaName(tfq::SelectedIsa(force_reference));
  std::printf("kernels: %s, threads: %d\n", isa, threads);
  if (!expect.empty() && expect != isa) {
    std::fprintf(stderr, "FAIL: dispatcher selected %s, expected %s\n", isa, expect.c_str());
    return 1;
  }
  std::vector<NodeRecord> nodes;
  std::string error;
  if (!ReadFile(path, &nodes, &error)) {
    std::fprintf(stderr, "FAIL: %s\n", error.c_str());
    return 1;
  }
  int failures = 0;
  if (repeat > 0)
    std::printf("%-4s %-22s %-16s %-14s %12s %12s %7s\n", "node", "op", "input", "output",
                "ref us", (std::string(isa) + " us").c_str(), "ratio");
  for (size_t i = 0; i < nodes.size(); ++i) {
    NodeRecord& rec = nodes[i];
    double us = 0.0, ref_us = 0.0;
    const RunResult r = RunNode(rec, threads, force_reference, repeat, &us);
    const Blob& want = rec.tensors[4];
    const size_t n = want.data.size() / sizeof(float);
    if (!r.ok || r.output.size() != n) {
      std::printf("node %zu %s: FAILED to run\n", i, rec.name.c_str());
      ++failures;
      continue;
    }
    const float* w = reinterpret_cast<const float*>(want.data.data());
    size_t differ = 0;
    double max_diff = 0.0;
    for (size_t j = 0; j < n; ++j) {
      if (std::memcmp(&w[j], &r.output[j], sizeof(float)) != 0) {
        ++differ;
        max_diff = std::max(max_diff, std::fabs(double(w[j]) - double(r.output[j])));
      }
    }
    if (differ) ++failures;
    if (repeat > 0) {
      RunNode(rec, threads, true, repeat, &ref_us);
      std::printf("%-4zu %-22s %-16s %-14s %12.1f %12.1f %6.2fx%s\n", i, rec.name.c_str(),
                  Shape(rec.tensors[0].dims).c_str(), Shape(want.dims).c_str(), ref_us, us,
                  ref_us / us, differ ? "  MISMATCH" : "");
    } else {
      std::printf("node %zu %s %s -> %s: %zu values, %s", i, rec.name.c_str(),
                  Shape(rec.tensors[0].dims).c_str(), Shape(want.dims).c_str(), n,
                  differ ? "MISMATCH" : "bit-identical to x86");
      if (differ) std::printf(" (%zu differ, max |diff| %g)", differ, max_diff);
      std::printf("\n");
    }
  }
  std::printf("%zu nodes, %d failures\n", nodes.size(), failures);
  return failures == 0 && !nodes.empty() ? 0 : 1;
}
