"""The first step of the tfq demo: train LeNet-5 on MNIST in float and save it.

`bash scripts/demo.sh` runs this, then the `tfq` command line end to end on
the saved model (compress -> convert -> inspect -> evaluate -> benchmark ->
report). Run alone: `python -m tfq.demo --out artifacts/demo/lenet5.keras`.
"""

import argparse
import os
import time

import keras

from tfq import datasets, models

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def load_data(limit=None):
    """MNIST, optionally only the first `limit` training images."""
    (x, y), (xt, yt) = datasets.mnist()
    if limit:
        x, y = x[:limit], y[:limit]
    return (x, y), (xt, yt)


def train_float(data, epochs=3, batch_size=128, seed=0):
    """Trains LeNet-5 in float; returns the compiled model."""
    keras.utils.set_random_seed(seed)
    (x, y), _ = data
    model = models.lenet5()
    model.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=2)
    return model


def evaluate(model, data):
    _, (xt, yt) = data
    return float(model.evaluate(xt, yt, verbose=0)[1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="artifacts/demo/lenet5.keras", help="where to save the float model")
    parser.add_argument("--epochs", type=int, default=3, help="float training epochs")
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images")
    args = parser.parse_args(argv)
    t0 = time.time()
    data = load_data(args.limit)
    print(f"[demo] training LeNet-5 in float for {args.epochs} epochs on {len(data[0][0])} MNIST images")
    model = train_float(data, args.epochs)
    acc = evaluate(model, data)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    model.save(args.out)
    float_bytes = models.weight_bytes(model)[1]
    print(f"[demo] float LeNet-5: test accuracy {acc * 100:.2f}%, {float_bytes:,} bytes of weights, "
          f"saved to {args.out} ({time.time() - t0:.0f} s)")
    return model


if __name__ == "__main__":
    main()
