#!/usr/bin/env bash
# Creates (or reuses) .venv with the pinned Python packages, installs the Debian
# packages the native builds need (the JDK for jni.h: the Android demo's JNI
# bridge is compile-checked), builds/installs tfq itself (which compiles the
# C++ delegate through scikit-build-core); with --tests also the emulated
# aarch64 Python with LiteRT (scripts/arm_env.sh). Run by demo.sh and test.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

need_apt=()
for pkg in cmake g++ clang qemu-user g++-aarch64-linux-gnu bazel-bootstrap default-jdk-headless; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# libFuzzer's runtime (tests/test_libfuzzer.py) is only a recommendation of
# clang's package.
if ! command -v clang++ >/dev/null 2>&1 ||
   [ ! -f "$(clang++ -print-file-name=libclang_rt.fuzzer-$(uname -m).a 2>/dev/null)" ]; then
  need_apt+=(libclang-rt-dev)
fi
if [ "${#need_apt[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${need_apt[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.requirements.sha256"
want="$(sha256sum requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] pip install -r requirements.txt"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
echo "[setup] building tfq (C++ delegate via CMake)"
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
# For the tests (test.sh passes --tests; the demo does not need it): the
# emulated aarch64 CPython with the real LiteRT interpreter that
# tests/test_arm_litert.py runs the cross-compiled delegate in (cached in
# ~/.cache/tfq, so only the first run downloads).
if [ "${1:-}" = "--tests" ]; then
  echo "[setup] aarch64 LiteRT environment (scripts/arm_env.sh)"
  bash scripts/arm_env.sh prepare >/dev/null
fi
