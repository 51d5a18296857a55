#!/usr/bin/env bash
# Speed of tfq on a 64-bit ARM Linux board (Raspberry Pi 4/5 with a 64-bit OS,
# Jetson, Graviton...): the ratio table of benchmarks/speed.py, measured on
# the board. Run ON THE BOARD, in a clone of this repository:
#
#   1. on an x86 host:  python benchmarks/arm/bench_arm.py prepare
#                       scp -r out/bench board:tfq/out/
#   2. on the board:    bash benchmarks/arm/run_board.sh [--cases ...] [--threads 1,4]
#
# The board needs Python 3.10+, cmake and g++ (apt install cmake g++
# python3-venv); pip installs ai-edge-litert (aarch64 wheels exist) and tfq,
# whose build compiles the delegate with the NEON kernels.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
case "$(uname -m)" in aarch64|arm64) ;; *) echo "run this on the ARM board (this is $(uname -m))" >&2; exit 2;; esac
if [ ! -x .venv-arm/bin/python ]; then
  python3 -m venv .venv-arm
  .venv-arm/bin/pip install -q numpy "ai-edge-litert>=2.3,<2.4" absl-py flatbuffers scikit-build-core
fi
# The delegate only (no TensorFlow on the board): tfq is imported from the tree.
cmake -S tfq/delegates -B build-board -DCMAKE_BUILD_TYPE=Release -DTFQ_BUILD_NATIVE_TESTS=ON
cmake --build build-board -j"$(nproc)"
./build-board/tfq_kernels_test --expect-isa=any
export TFQ_DELEGATE_PATH="$ROOT/tfq/delegates/libtfq_delegate.so"
PYTHONPATH="$ROOT" .venv-arm/bin/python benchmarks/arm/bench_arm.py board "$@"
