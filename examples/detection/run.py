"""Digit detection end to end: MNIST scenes -> CenterNet-style detector -> pruning + ADMM pow2_3bit -> .tflite -> LiteRT + tfq delegate.

    python examples/detection/run.py [--train 6000] [--epochs 20] [--sparsity 0.75] [--deep-width 512 --deep-blocks 3]
                                     [--out artifacts/detection]

Block pruning (`block="auto"`, the kernels of 2048 weights or more:
`tfq.tasks.detection_prune_layers`) and ADMM in one fit, converted with
`sparse="auto"` (format version 2 stores only the non-zero blocks).

Draws the detections of the first test scenes to `<out>/detections.png`.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import numpy as np  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, report, tasks  # noqa: E402


def draw(x, dets, path, threshold=0.3):
    from PIL import Image, ImageDraw

    tiles = []
    for img, (boxes, scores, classes) in zip(x, dets):
        tile = Image.fromarray((img[..., 0] * 255).astype(np.uint8)).convert("RGB").resize((192, 192))
        d = ImageDraw.Draw(tile)
        for box, s, c in zip(boxes, scores, classes):
            if s >= threshold:
                d.rectangle([float(v) * 2 for v in box], outline=(255, 64, 64))
                d.text((float(box[0]) * 2, float(box[1]) * 2 - 10), f"{c} {s:.2f}", fill=(255, 255, 0))
        tiles.append(tile)
    sheet = Image.new("RGB", (192 * len(tiles), 192))
    for i, t in enumerate(tiles):
        sheet.paste(t, (192 * i, 0))
    sheet.save(path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=6000)
    p.add_argument("--test", type=int, default=500)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--admm-epochs", type=int, default=8)
    p.add_argument("--scheme", default="pow2_3bit")
    p.add_argument("--sparsity", type=float, default=0.75)
    p.add_argument("--block", default="auto", help='pruning block: "auto", "4x4", "8x4", ...')
    p.add_argument("--distribution", default="erk", choices=("uniform", "erk"),
                   help="how the sparsity is spread over the pruned kernels (tfq.PruningCallback)")
    p.add_argument("--deep-width", type=int, default=None, help="channels of the stride-8 stage (default 64)")
    p.add_argument("--deep-blocks", type=int, default=2)
    p.add_argument("--out", default="artifacts/detection")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    x, b, c = datasets.digit_scenes(a.train, seed=0)
    xt, bt, ct = datasets.digit_scenes(a.test, seed=1, split="test")
    model = tasks.centernet(deep_width=a.deep_width, deep_blocks=a.deep_blocks)
    print(f"float training: {tasks.train_detector(model, x, b, c, a.epochs, verbose=2):.0f} s")
    print("float (Keras):", tasks.detection_scores(model.predict(xt, verbose=0), bt, ct))
    small, secs = tasks.compress_with_admm(
        model, x, tasks.detection_targets(b, c), tasks.detection_loss(), a.scheme, a.admm_epochs,
        layers=tasks.layers_except({"stem"}), sparsity=a.sparsity or None, block=a.block,
        prune_layers=tasks.detection_prune_layers(model), distribution=a.distribution, verbose=2)
    print(f"pruning {a.sparsity:.0%} (block {a.block}, {a.distribution}) + ADMM {a.scheme}: {secs:.0f} s")
    blob = tfq.convert(small, sparse="auto")
    print(blob.summary())
    for name, data in (("float.tflite", report.keras_to_tflite(model)), ("compressed.tflite", blob)):
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data) / 1024:.1f} KiB")
    out = tasks.run_tflite(blob, xt)  # LiteRT with the tfq delegate
    print("compressed (LiteRT + tfq delegate):", tasks.detection_scores(out, bt, ct))
    draw(xt[:6], tasks.detection_decode(out[:6]), os.path.join(a.out, "detections.png"))
    print(f"wrote {os.path.join(a.out, 'detections.png')}")


if __name__ == "__main__":
    main()
