// libFuzzer target over the delegate's node path: ParseNode and the graph
// checks (DelegatePrepare), KernelInit, KernelPrepare, KernelInvoke and
// KernelFree, driven through the stand-in interpreter of fake_graph.h, with
// every tensor in its own heap buffer of exactly its bytes (built with
// -fsanitize=fuzzer,address,undefined by tests/native/fuzz.cmake).
//
// Input: one node record, encoded as in a .tfqnodes file after its header
// (benchmarks/arm/export_nodes.py, encode_node), followed by a trailer of
// structure choices (missing bytes read as zero) and, for a chain, a second
// node record:
//   byte 0  bits 0-1: kernels: force_reference, isa=avx2, isa=avx512vnni,
//                     or auto (an ISA this build or CPU lacks: the
//                     reference kernels);
//           bits 2-3: delegate threads - 1;
//           bit 4:    invoke twice;
//           bit 5:    the tensor resized after prepare (byte 1, bit 5) is
//                     the node's input, not its output;
//           bit 6:    then the input is resized to a smaller shape (byte
//                     2, bits 2-7), every partition prepared and invoked
//                     again (as after resize_tensor_input).
//   byte 1  bit 0: the output is one of the node's inputs (byte 2, bits 0-1);
//           bit 1: the output is a constant (kTfLiteMmapRo);
//           bit 2: a second node in the plan writes the same output: the
//                  same tfq op, or (bit 7) a builtin op;
//           bit 3: that node comes first in the plan;
//           bit 4: that node reads a smaller copy of the input (byte 2,
//                  bits 2-7, say how much smaller), so its prepare shrinks
//                  the shared output;
//           bit 5: after the partitions are prepared, the output is
//                  resized smaller (to byte 3 / 256 of its elements), as
//                  a later writer's prepare would;
//           bit 6: two builtin nodes, first in the plan, write the node's
//                  input.
//   byte 4  bit 0: a chain: the second record's node follows and reads the
//                  first one's output (the delegate hands ReLU6
//                  convolutions' outputs over inside one partition; the
//                  resized and compared "output" is then the second's);
//           bit 1: the link between them is also a graph output;
//           bit 2: delegate option int8_handover=0.
// The delegate must refuse such graphs or fail the invoke with an error;
// any out-of-bounds access is a sanitizer report, and a write into a
// constant tensor (weights, scales, bias, a constant output) is reported
// here by a trap.
//
// TFQ_FUZZ_VERBOSE=1 prints, per input, the choices and what the delegate
// did (claimed partitions, prepare and invoke results, its errors) and
// whether the output equals the record's expected output bit for bit
// (tests/test_libfuzzer.py checks the seed corpus with it).
#include <algorithm>
#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fake_graph.h"
#include "tflite_abi.h"

namespace {

using tfq_test::Blob;
using tfq_test::FakeGraph;
using tfq_test::NodeRecord;

constexpr int kTrailerBytes = 5;
constexpr int kBuiltinAdd = 0;  // any builtin op: the delegate does not claim it
// Tensors: 0 input, 1 packed weights, 2 scales, 3 bias, 4 output, 5 the
// second writer's smaller input, 6-8 the chained node's weights, scales and
// bias, 9 its output.
constexpr int kTensors = 10;

struct Choices {
  int kernels = 0;
  int threads = 1;
  bool invoke_twice = false;
  bool alias_input = false;
  int alias_slot = 0;
  bool const_output = false;
  bool second_writer = false;
  bool second_first = false;
  bool second_builtin = false;
  bool second_smaller = false;
  int smaller_by = 0;
  bool shrink_after_prepare = false;
  bool shrink_input = false;
  int shrink_fraction = 0;
  bool input_two_writers = false;
  bool reprepare = false;
  bool chain = false;
  bool link_is_output = false;
  bool no_handover = false;
};

Choices ParseTrailer(const uint8_t* t) {
  Choices c;
  c.kernels = t[0] & 3;
  c.threads = 1 + ((t[0] >> 2) & 3);
  c.invoke_twice = t[0] & 16;
  c.shrink_input = t[0] & 32;
  c.reprepare = t[0] & 64;
  c.alias_input = t[1] & 1;
  c.const_output = t[1] & 2;
  c.second_writer = t[1] & 4;
  c.second_first = t[1] & 8;
  c.second_smaller = t[1] & 16;
  c.shrink_after_prepare = t[1] & 32;
  c.input_two_writers = t[1] & 64;
  c.second_builtin = t[1] & 128;
  c.alias_slot = t[2] & 3;
  c.smaller_by = t[2] >> 2;
  c.shrink_fraction = t[3];
  c.chain = t[4] & 1;
  c.link_is_output = t[4] & 2;
  c.no_handover = t[4] & 4;
  return c;
}

bool Verbose() {
  static const bool v = std::getenv("TFQ_FUZZ_VERBOSE") != nullptr;
  return v;
}

// Whether the delegate accepts isa=<name> (this build and CPU have it).
bool IsaAccepted(const char* name) {
  char* keys[] = {const_cast<char*>("isa")};
  char* values[] = {const_cast<char*>(name)};
  TfLiteDelegate* d = tflite_plugin_create_delegate(keys, values, 1, nullptr);
  tflite_plugin_destroy_delegate(d);
  return d != nullptr;
}

// Delegate options for the kernel choice; an ISA the delegate refuses here
// becomes the reference kernels.
std::vector<std::pair<std::string, std::string>> DelegateOptions(const Choices& c) {
  static const bool avx2 = IsaAccepted("avx2");
  static const bool avx512 = IsaAccepted("avx512vnni");
  std::vector<std::pair<std::string, std::string>> o = {{"num_threads", std::to_string(c.threads)}};
  if (c.kernels == 0 || (c.kernels == 1 && !avx2) || (c.kernels == 2 && !avx512))
    o.push_back({"force_reference", "1"});
  else if (c.kernels == 1)
    o.push_back({"isa", "avx2"});
  else if (c.kernels == 2)
    o.push_back({"isa", "avx512vnni"});
  if (c.no_handover) o.push_back({"int8_handover", "0"});
  return o;  // kernels 3 (auto): the best table of this CPU
}

// The input's shape with its first non-channel dimension larger than 1
// made smaller by 1 + amount (mod its size); empty when there is none.
std::vector<int> SmallerShape(const std::vector<int>& dims, int amount) {
  for (size_t i = 0; i + 1 < dims.size(); ++i) {
    if (dims[i] > 1) {
      std::vector<int> d = dims;
      d[i] -= 1 + amount % (dims[i] - 1 > 0 ? dims[i] - 1 : 1);
      return d;
    }
  }
  return {};
}

// Elements of a shape, saturated at INT_MAX (negative dimensions count as 0).
size_t Elements(const std::vector<int>& dims) {
  size_t n = 1;
  for (int d : dims) n = std::min<size_t>(n * (d < 0 ? 0 : static_cast<size_t>(d)), INT_MAX);
  return n;
}

__attribute__((format(printf, 1, 2))) void Say(const char* fmt, ...) {
  if (!Verbose()) return;
  va_list args;
  va_start(args, fmt);
  std::vfprintf(stderr, fmt, args);
  va_end(args);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tfq_test::Reader r(std::vector<uint8_t>(data, data + size));
  NodeRecord rec;
  std::string error;
  if (!tfq_test::ReadNode(&r, &rec, "input", &error)) return 0;
  uint8_t trailer[kTrailerBytes] = {0, 0, 0, 0, 0};
  r.Take(trailer, std::min<size_t>(kTrailerBytes, r.Remaining()));
  Choices c = ParseTrailer(trailer);
  NodeRecord rec2;
  if (c.chain && !tfq_test::ReadNode(&r, &rec2, "input", &error)) c.chain = false;
  Say("fuzz: node %s, kernels %d, threads %d, alias %d (slot %d), const output %d, "
      "second writer %d (first %d, builtin %d, smaller %d), shrink after prepare %d "
      "(%s, %d/256), input two writers %d, invoke twice %d, re-prepare %d, chain %d (%s, "
      "link output %d, no hand-over %d)\n",
      rec.name.c_str(), c.kernels, c.threads, c.alias_input, c.alias_slot, c.const_output,
      c.second_writer, c.second_first, c.second_builtin, c.second_smaller, c.shrink_after_prepare,
      c.shrink_input ? "input" : "output", c.shrink_fraction, c.input_two_writers, c.invoke_twice,
      c.reprepare, c.chain, c.chain ? rec2.name.c_str() : "-", c.link_is_output, c.no_handover);

  FakeGraph g(kTensors, /*quiet=*/true);
  g.context()->recommended_num_threads = c.threads;
  const auto fill = [&](int i, TfLiteAllocationType alloc) {
    const Blob& b = rec.tensors[i];
    g.SetTensor(i, b.type, b.dims, b.data.data(), b.data.size(), alloc);
  };
  fill(0, kTfLiteArenaRw);
  for (int i = 1; i < 4; ++i)
    if (rec.tensors[i].present) fill(i, kTfLiteMmapRo);
  fill(4, c.const_output ? kTfLiteMmapRo : kTfLiteArenaRw);

  const int bias = rec.tensors[3].present ? 3 : -1;
  const int output = c.alias_input ? (c.alias_slot == 3 ? bias : c.alias_slot) : 4;
  std::vector<int> plan = {g.AddNode(rec.name, rec.options, {0, 1, 2, bias}, {output})};
  std::vector<int> graph_outputs = {output};
  int last = output;  // the output of the last tfq node
  if (c.chain) {
    for (int i = 1; i < 4; ++i)
      if (rec2.tensors[i].present)
        g.SetTensor(5 + i, rec2.tensors[i].type, rec2.tensors[i].dims, rec2.tensors[i].data.data(),
                    rec2.tensors[i].data.size(), kTfLiteMmapRo);
    const Blob& out2 = rec2.tensors[4];
    g.SetTensor(9, out2.type, out2.dims, out2.data.data(), out2.data.size(), kTfLiteArenaRw);
    plan.push_back(g.AddNode(rec2.name, rec2.options, {output, 6, 7, rec2.tensors[3].present ? 8 : -1}, {9}));
    if (!c.link_is_output) graph_outputs.clear();
    graph_outputs.push_back(9);
    last = 9;
  }
  if (c.second_writer) {
    int second_input = 0;
    const std::vector<int> smaller = c.second_smaller ? SmallerShape(rec.tensors[0].dims, c.smaller_by)
                                                      : std::vector<int>();
    if (!smaller.empty() && Elements(smaller) * sizeof(float) <= rec.tensors[0].data.size()) {
      // A copy of the input's first elements, exactly as many as the shape holds.
      const size_t bytes = Elements(smaller) * sizeof(float);
      g.SetTensor(5, rec.tensors[0].type, smaller, rec.tensors[0].data.data(), bytes, kTfLiteArenaRw);
      second_input = 5;
    }
    const int second = c.second_builtin
                           ? g.AddNode("", {}, {second_input}, {output}, kBuiltinAdd)
                           : g.AddNode(rec.name, rec.options, {second_input, 1, 2, bias}, {output});
    if (c.second_first) plan.insert(plan.begin(), second);
    else plan.push_back(second);
  }
  if (c.input_two_writers) {
    // Two builtin nodes write the node's input (the interpreter would let
    // the later one's prepare resize it).
    for (int i = 0; i < 2; ++i) plan.insert(plan.begin(), g.AddNode("", {}, {1}, {0}, kBuiltinAdd));
  }
  g.set_plan(plan);
  g.set_graph_outputs(graph_outputs);

  // The constants as the model holds them: no node may write into them.
  std::vector<std::pair<int, std::vector<uint8_t>>> constants;
  for (int i = 1; i < kTensors; ++i) {
    const TfLiteTensor* t = g.tensor(i);
    if (t->allocation_type == kTfLiteMmapRo && t->data.raw != nullptr)
      constants.push_back({i, std::vector<uint8_t>(t->data.uint8, t->data.uint8 + t->bytes)});
  }
  const auto check_constants = [&](const char* when) {
    for (const auto& k : constants) {
      const TfLiteTensor* t = g.tensor(k.first);
      if (t->bytes != k.second.size() ||
          (t->bytes > 0 && std::memcmp(t->data.raw, k.second.data(), t->bytes) != 0)) {
        std::fprintf(stderr, "fuzz_node: constant tensor %d was modified %s\n", k.first, when);
        __builtin_trap();
      }
    }
  };

  const auto options = DelegateOptions(c);
  std::vector<char*> keys, values;
  for (const auto& o : options) {
    keys.push_back(const_cast<char*>(o.first.c_str()));
    values.push_back(const_cast<char*>(o.second.c_str()));
  }
  TfLiteDelegate* delegate = tflite_plugin_create_delegate(keys.data(), values.data(), keys.size(), nullptr);
  if (delegate == nullptr) {
    Say("fuzz: delegate not created\n");
    return 0;
  }
  const bool claimed = delegate->Prepare(g.context(), delegate) == kTfLiteOk && !g.partitions().empty();
  Say("fuzz: %zu partition(s) claimed\n", g.partitions().size());
  bool ok = claimed && g.InitPartitions(delegate);
  if (claimed) Say("fuzz: init %s\n", ok ? "ok" : "refused");
  const auto prepare_all = [&] {
    for (size_t p = 0; ok && p < g.partitions().size(); ++p) ok = g.Prepare(p) == kTfLiteOk;
    if (claimed) Say("fuzz: prepare %s\n", ok ? "ok" : "refused");
  };
  const auto invoke_all = [&] {
    for (size_t p = 0; ok && p < g.partitions().size(); ++p) ok = g.Invoke(p) == kTfLiteOk;
    if (claimed) Say("fuzz: invoke %s\n", ok ? "ok" : "refused");
    check_constants("by an invoke");
  };
  prepare_all();
  const int shrunk = c.shrink_input ? 0 : last;
  if (ok && c.shrink_after_prepare && shrunk >= 0) {
    // Another writer's prepare, run after ours, resizes the shared tensor.
    TfLiteTensor* out = g.tensor(shrunk);
    const size_t elems = Elements(tfq_test::ToVector(out->dims));
    const int smaller = static_cast<int>(elems / 256 * c.shrink_fraction + elems % 256 * c.shrink_fraction / 256);
    g.context()->ResizeTensor(g.context(), out, tfq_test::NewIntArray({smaller}));
  }
  invoke_all();
  if (c.invoke_twice && ok) invoke_all();
  const bool first_ok = ok;
  const std::vector<int> smaller = SmallerShape(tfq_test::ToVector(g.tensor(0)->dims), c.smaller_by);
  if (ok && c.reprepare && !smaller.empty()) {
    // The application resizes the input; the interpreter prepares again.
    TfLiteTensor* in = g.tensor(0);
    if (g.context()->ResizeTensor(g.context(), in, tfq_test::NewIntArray(smaller)) == kTfLiteOk) {
      std::memcpy(in->data.raw, rec.tensors[0].data.data(), std::min(in->bytes, rec.tensors[0].data.size()));
      prepare_all();
      invoke_all();
    }
  }
  for (const std::string& e : g.errors()) Say("fuzz: delegate error: %s\n", e.c_str());
  if (Verbose() && first_ok && !c.reprepare && !c.alias_input) {
    const TfLiteTensor* out = g.tensor(last);
    const std::vector<uint8_t>& want = (c.chain ? rec2 : rec).tensors[4].data;
    const bool same = out->bytes == want.size() &&
                      (want.empty() || std::memcmp(out->data.raw, want.data(), want.size()) == 0);
    std::fprintf(stderr, "fuzz: output %s the expected output\n", same ? "equals" : "differs from");
  }
  g.FreePartitions();
  tflite_plugin_destroy_delegate(delegate);
  check_constants("at the end");
  return 0;
}
