"""The tfq demo: LeNet-5 on MNIST, float vs ternary by ADMM (accuracy and weight size).

Run with `python -m tfq.demo` (or `bash scripts/demo.sh`). Each step is a
function so later stages (conversion, speed) can be added to `main`.
"""

import argparse
import time

import keras

import tfq
from tfq import datasets, models

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def load_data(limit=None):
    """MNIST, optionally only the first `limit` training images."""
    (x, y), (xt, yt) = datasets.mnist()
    if limit:
        x, y = x[:limit], y[:limit]
    return (x, y), (xt, yt)


def train_float(data, epochs=2, batch_size=128, seed=0):
    """Trains LeNet-5 in float; returns the compiled model."""
    keras.utils.set_random_seed(seed)
    (x, y), _ = data
    model = models.lenet5()
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2)
    return model


def compress(model, data, scheme="ternary", epochs=3, batch_size=128):
    """Copies `model` and compresses it with ADMM (first and last layer stay float)."""
    (x, y), _ = data
    student = models.lenet5()
    student.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    student.set_weights(model.get_weights())
    student.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2, callbacks=[tfq.ADMMCallback(scheme=scheme)])
    return student


def evaluate(model, data):
    _, (xt, yt) = data
    return float(model.evaluate(xt, yt, verbose=0)[1])


def report(rows):
    print(f"\n{'model':<22}{'test accuracy':>14}{'weight bytes':>14}{'ratio':>8}")
    base = rows[0][2]
    for name, acc, size in rows:
        print(f"{name:<22}{acc * 100:>13.2f}%{size:>14,}{base / size:>7.1f}x")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=2, help="float training epochs")
    parser.add_argument("--admm-epochs", type=int, default=3, help="ADMM epochs (the last one fine-tunes scales)")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    args = parser.parse_args(argv)
    t0 = time.time()
    data = load_data(args.limit)
    print(f"[demo] training LeNet-5 in float for {args.epochs} epochs")
    float_model = train_float(data, args.epochs)
    print(f"[demo] compressing to ternary with ADMM for {args.admm_epochs} epochs")
    ternary = compress(float_model, data, "ternary", args.admm_epochs)
    rows = [
        ("LeNet-5 float32", evaluate(float_model, data), models.weight_bytes(float_model)[0]),
        ("LeNet-5 ternary (ADMM)", evaluate(ternary, data), models.weight_bytes(ternary)[0]),
    ]
    report(rows)
    print(f"\n[demo] done in {time.time() - t0:.0f} s")
    return {"float": float_model, "ternary": ternary, "rows": rows}


if __name__ == "__main__":
    main()
