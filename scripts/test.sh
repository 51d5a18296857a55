#!/usr/bin/env bash
# Runs the whole test suite: installs what it needs, then pytest (Python and
# native tests, sanitizer and ARM-emulation checks included).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh --tests
export TFQ_DATA_DIR="${TFQ_DATA_DIR:-$(cd "$ROOT/.." && pwd)/shared/datasets}"
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
