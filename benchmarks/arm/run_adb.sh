#!/usr/bin/env bash
# Speed of tfq on an Android phone over adb: the ratio table of
# benchmarks/speed.py, plus per-node kernel times (NEON vs scalar reference).
#
#   ANDROID_NDK=... BENCHMARK_MODEL=/path/to/android_aarch64_benchmark_model \
#     bash benchmarks/arm/run_adb.sh [--cases dense4096,conv3x3] [--threads 1,4]
#
# BENCHMARK_MODEL is TensorFlow Lite's benchmark tool for android_aarch64
# (prebuilt in TensorFlow's nightly tool downloads, or
# `bazel build -c opt --config=android_arm64 //tensorflow/lite/tools/benchmark:benchmark_model`
# in a TensorFlow checkout). Run on the x86 host with the phone connected;
# the models are made here (TensorFlow needed) and pushed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
: "${BENCHMARK_MODEL:?set BENCHMARK_MODEL to benchmark_model built for android_aarch64}"
bash "$ROOT/benchmarks/arm/build_android.sh"
OUT="${OUT:-$ROOT/build-android-arm64}"
"$PY" "$ROOT/benchmarks/arm/bench_arm.py" prepare "$@"
"$PY" "$ROOT/benchmarks/arm/bench_arm.py" adb --benchmark-model "$BENCHMARK_MODEL" \
  --delegate "$OUT/libtfq_delegate.so" "$@"

# Per-node kernel times of the demo's ternary LeNet-5 (no LiteRT involved):
# the delegate's node path with NEON kernels vs the scalar reference.
NODES="$ROOT/out/lenet5_ternary.tfqnodes"
"$PY" "$ROOT/benchmarks/arm/export_nodes.py" \
  "$ROOT/android_demo/app/src/main/assets/lenet5_tfq_ternary.tflite" "$NODES" --images 1
adb shell mkdir -p /data/local/tmp/tfq_bench
adb push "$OUT/tfq_node_runner" "$NODES" /data/local/tmp/tfq_bench/ >/dev/null
adb shell chmod 755 /data/local/tmp/tfq_bench/tfq_node_runner
adb shell /data/local/tmp/tfq_bench/tfq_node_runner /data/local/tmp/tfq_bench/lenet5_ternary.tfqnodes \
  --threads=1 --repeat=200
