"""Baselines under Keras 2 (tf_keras): TFMOT magnitude pruning and Larq ternary (`ste_tern`).

Run by `benchmarks/accuracy.py` in a subprocess with TF_USE_LEGACY_KERAS=1
(TFMOT and Larq do not support Keras 3). Same protocol as tfq: float
pre-training for `--pre` epochs, then `--comp` epochs with the compression.
Prints one JSON list of result rows on the last line of stdout.
"""

import argparse
import json
import os
import sys
import time

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfq import datasets  # noqa: E402  (NumPy only; does not import Keras 3)

import tf_keras  # noqa: E402

keras = tf.keras
assert tf_keras.__version__.startswith("2."), f"expected tf_keras (Keras 2), got {tf_keras.__version__}"
assert keras.layers.Dense is tf_keras.layers.Dense, "TF_USE_LEGACY_KERAS=1 must be set before TensorFlow loads"


def lenet300_100(dense=None):
    dense = dense or (lambda units, name, **kw: keras.layers.Dense(units, name=name, **kw))
    return keras.Sequential([
        keras.layers.InputLayer((28, 28, 1)),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(300, activation="relu", name="fc1"),
        dense(100, "fc2", activation="relu"),
        keras.layers.Dense(10, name="fc3"),
    ])


def lenet5(dense=None, conv=None):
    dense = dense or (lambda units, name, **kw: keras.layers.Dense(units, name=name, **kw))
    conv = conv or (lambda filters, k, name, **kw: keras.layers.Conv2D(filters, k, name=name, **kw))
    return keras.Sequential([
        keras.layers.InputLayer((28, 28, 1)),
        keras.layers.Conv2D(20, 5, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2),
        conv(50, 5, "conv2", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        dense(500, "fc1", activation="relu"),
        keras.layers.Dense(10, name="fc2"),
    ])


BUILDERS = {"lenet300_100": lenet300_100, "lenet5": lenet5}
LOSS = lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True)  # noqa: E731


def compile_(model):
    model.compile(keras.optimizers.Adam(1e-3), LOSS(), metrics=["accuracy"])
    return model


def sizes(model, ternary_names=()):
    size = float_size = n = zeros = kern = 0
    for layer in model.layers:
        for v in layer.weights:
            w = v.numpy()
            n += w.size
            float_size += 4 * w.size
            if len(w.shape) >= 2:
                zeros += int(np.sum(w == 0))
                kern += w.size
            if layer.name in ternary_names and "kernel" in v.name:
                size += (w.size * 2 + 7) // 8  # Larq ste_tern: codes only, no scale
            else:
                size += 4 * w.size
    return size, float_size, n, zeros / max(kern, 1)


def tfmot_pruning(name, pre_weights, train, test, comp, batch):
    import tensorflow_model_optimization as tfmot

    model = compile_(BUILDERS[name]())
    model.set_weights(pre_weights)
    steps = int(np.ceil(len(train[0]) / batch)) * comp
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=max(int(steps * 0.6), 1),
                                                    frequency=max(1, min(100, steps // 8)))
    pruned = compile_(tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule))
    t = time.time()
    pruned.fit(*train, epochs=comp, batch_size=batch, verbose=0, callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    t = time.time() - t
    final = compile_(tfmot.sparsity.keras.strip_pruning(pruned))
    acc = final.evaluate(*test, batch_size=1000, verbose=0)[1]
    size, float_size, n, sp = sizes(final)
    return {"model": name, "method": "TFMOT prune 90% mag", "policy": "all", "acc": float(acc), "sparsity": sp,
            "bits": 8.0 * size / n, "bytes": size, "ratio": float_size / size, "seconds": t}


def larq_ternary(name, pre_weights, train, test, comp, batch):
    import larq as lq

    quant = dict(kernel_quantizer=lq.quantizers.SteTern(ternary_weight_networks=True), kernel_constraint=None)

    def dense(units, lname, **kw):
        return lq.layers.QuantDense(units, name=lname, **quant, **kw)

    def conv(filters, k, lname, **kw):
        return lq.layers.QuantConv2D(filters, k, name=lname, **quant, **kw)

    model = compile_(BUILDERS[name](dense=dense, conv=conv) if name == "lenet5" else BUILDERS[name](dense=dense))
    model.set_weights(pre_weights)
    t = time.time()
    model.fit(*train, epochs=comp, batch_size=batch, verbose=0)
    t = time.time() - t
    acc = model.evaluate(*test, batch_size=1000, verbose=0)[1]
    ternary = {"fc2"} if name == "lenet300_100" else {"conv2", "fc1"}
    # Report the weights the model computes with (the quantized latent kernels).
    for layer in model.layers:
        if layer.name in ternary:
            layer.kernel.assign(layer.kernel_quantizer(tf.constant(layer.kernel.numpy())))
    size, float_size, n, sp = sizes(model, ternary)
    return {"model": name, "method": "Larq ste_tern (TWN)", "policy": "default", "acc": float(acc), "sparsity": sp,
            "bits": 8.0 * size / n, "bytes": size, "ratio": float_size / size, "seconds": t}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="lenet300_100,lenet5")
    p.add_argument("--pre", type=int, default=3)
    p.add_argument("--comp", type=int, default=4)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--limit", type=int, default=None)
    args = p.parse_args()
    (x, y), (xt, yt) = datasets.mnist()
    if args.limit:
        x, y, xt, yt = x[: args.limit], y[: args.limit], xt[:2000], yt[:2000]
    rows = []
    for name in args.models.split(","):
        tf.keras.utils.set_random_seed(0)
        base = compile_(BUILDERS[name]())
        base.fit(x, y, epochs=args.pre, batch_size=args.batch, verbose=0)
        pre = base.get_weights()
        rows.append(tfmot_pruning(name, pre, (x, y), (xt, yt), args.comp, args.batch))
        print(f"{name}: TFMOT {rows[-1]['acc']:.4f}", file=sys.stderr, flush=True)
        rows.append(larq_ternary(name, pre, (x, y), (xt, yt), args.comp, args.batch))
        print(f"{name}: Larq {rows[-1]['acc']:.4f}", file=sys.stderr, flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
