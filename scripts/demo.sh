#!/usr/bin/env bash
# The main job, end to end through the `tfq` command line: trains LeNet-5 on
# MNIST in float, compresses it (ternary with ADMM on the data, from the
# float model's 3-epoch checkpoint so that both had 6 epochs of training;
# pow2_4bit without data), converts to .tflite with packed weights, inspects,
# evaluates and benchmarks through LiteRT with the tfq delegate against
# LiteRT float and int8, and draws the accuracy/size/latency report.
# Installs what it needs first. MNIST comes from $TFQ_DATA_DIR/mnist/ (the
# four gzipped IDX files) when set, otherwise from the Keras download.
# Output goes to $TFQ_DEMO_DIR (default artifacts/demo).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup_env.sh
# A checkout next to a datasets folder (as in CI) uses it instead of a download.
if [ -z "${TFQ_DATA_DIR:-}" ] && [ -d "$ROOT/../shared/datasets/mnist" ]; then
  export TFQ_DATA_DIR="$(cd "$ROOT/../shared/datasets" && pwd)"
fi
OUT="${TFQ_DEMO_DIR:-artifacts/demo}"
mkdir -p "$OUT"
PY=.venv/bin/python
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
tfq() { step "$PY" -m tfq "$@"; }
START=$SECONDS

step "$PY" -m tfq.demo --out "$OUT/lenet5.keras" --epochs 6 --parent_epochs 3
tfq compress --model "$OUT/lenet5_3ep.keras" --scheme ternary --data mnist --epochs 3 --out "$OUT/lenet5_ternary.keras"
tfq compress --model "$OUT/lenet5.keras" --scheme pow2_4bit --eval_data mnist --out "$OUT/lenet5_pow2_4bit_datafree.keras"
tfq convert --model "$OUT/lenet5_ternary.keras" --out "$OUT/lenet5_ternary.tflite"
tfq convert --model "$OUT/lenet5_ternary.keras" --portable --out "$OUT/lenet5_ternary_portable.tflite"
tfq inspect "$OUT/lenet5_ternary.tflite"
tfq evaluate "$OUT/lenet5_ternary.tflite" --data mnist
tfq benchmark "$OUT/lenet5_ternary.tflite" --baseline "$OUT/lenet5.keras" --threads 1,2
tfq report --models "$OUT/lenet5.keras" "$OUT/lenet5_ternary.keras" "$OUT/lenet5_pow2_4bit_datafree.keras" \
  --data mnist --out "$OUT/report.png"
echo
echo "[demo] done in $((SECONDS - START)) s after set-up: the figure is $OUT/report.png, the table $OUT/report.md"
