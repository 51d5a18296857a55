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

#include "fake_graph.h"
#include "kernels/kernels.h"
#include "tflite_abi.h"

namespace {

using tfq_test::Blob;
using tfq_test::FakeGraph;
using tfq_test::NodeRecord;

struct RunResult {
  bool ok = false;
  std::vector<float> output;
};

// Builds the graph for one node (five tensors: input, weights, scale, bias,
// output; fake_graph.h), applies a fresh delegate, runs `repeat` invokes (at
// least one) and returns the output; *median_us receives the median invoke
// time.
RunResult RunNode(NodeRecord& rec, int threads, bool force_reference, int repeat,
                  double* median_us) {
  RunResult result;
  FakeGraph g(5);
  g.context()->recommended_num_threads = threads;
  const auto fill = [&](int i, TfLiteAllocationType alloc) {
    const Blob& b = rec.tensors[i];
    g.SetTensor(i, b.type, b.dims, b.data.data(), b.data.size(), alloc);
  };
  fill(0, kTfLiteArenaRw);
  for (int i = 1; i < 4; ++i)
    if (rec.tensors[i].present) fill(i, kTfLiteMmapRo);
  // The output starts with the shape the model declares (the expected one),
  // poisoned.
  const Blob& want = rec.tensors[4];
  const std::vector<float> poison(want.data.size() / sizeof(float), -12345.0f);
  g.SetTensor(4, want.type, want.dims, poison.data(), want.data.size(), kTfLiteArenaRw);
  g.set_plan({0});
  g.set_graph_outputs({4});
  g.AddNode(rec.name, rec.options, {0, 1, 2, rec.tensors[3].present ? 3 : -1}, {4});

  std::string threads_s = std::to_string(threads), ref_s = force_reference ? "1" : "0";
  char* keys[] = {const_cast<char*>("num_threads"), const_cast<char*>("force_reference")};
  char* values[] = {const_cast<char*>(threads_s.c_str()), const_cast<char*>(ref_s.c_str())};
  TfLiteDelegate* delegate = tflite_plugin_create_delegate(keys, values, 2, nullptr);
  if (delegate == nullptr) {
    std::fprintf(stderr, "tflite_plugin_create_delegate failed\n");
    return result;
  }
  if (delegate->Prepare(g.context(), delegate) != kTfLiteOk || g.partitions().size() != 1) {
    std::fprintf(stderr, "node %s: the delegate did not claim it\n", rec.name.c_str());
    tflite_plugin_destroy_delegate(delegate);
    return result;
  }
  bool ok = g.InitPartitions(delegate) && g.Prepare(0) == kTfLiteOk;
  std::vector<double> times;
  for (int i = 0; ok && i < std::max(1, repeat); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    ok = g.Invoke(0) == kTfLiteOk;
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  if (ok) {
    const TfLiteTensor* out = g.tensor(4);
    result.output.assign(out->data.f, out->data.f + out->bytes / sizeof(float));
  }
  // The partitions are freed before the delegate that made them.
  g.FreePartitions();
  tflite_plugin_destroy_delegate(delegate);
  if (!ok) {
    std::fprintf(stderr, "node %s: init/prepare/invoke failed\n", rec.name.c_str());
    result.output.clear();
    return result;
  }
  std::sort(times.begin(), times.end());
  *median_us = times[times.size() / 2];
  result.ok = true;
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
  if (!tfq_test::ReadFile(path, &nodes, &error)) {
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
