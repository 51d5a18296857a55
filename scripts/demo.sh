#!/usr/bin/env bash
# The main job: trains LeNet-5 on MNIST, compresses it, converts it and
# benchmarks it. Installs what it needs first.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
if [ -z "${TFQ_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/datasets/mnist" ]; then
  export TFQ_DATA_DIR="$(cd "$ROOT/../shared/datasets" && pwd)"
fi
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m tfq.demo "$@"
