"""Data-free compression against float, LiteRT dynamic-range int8 and tfq with data (MNIST).

For LeNet-5 and the small CNN with batch norm (`tfq.models.small_bn_cnn`):
train the float model, then compare in one table

  * float (LiteRT float32),
  * LiteRT dynamic-range int8 (the stock data-free peer: int8 weights, float activations),
  * tfq data-free ternary / pow2_3bit / pow2_4bit, plain projection and with the
    corrections (cross-layer equalization where it helps, bias correction from
    batch-norm statistics),
  * tfq with data (ADMM with the derived defaults of `tfq.compress`),

each converted to .tflite and evaluated through LiteRT (with the tfq delegate for
tfq models) on the 10,000 MNIST test images; "Keras" is the accuracy of the Keras
model before conversion. Also times the data-free path on a MobileNetV2-sized
model (224x224, 3.5M parameters; random weights, since nothing is downloaded).

Usage:
    TFQ_DATA_DIR=DIR python benchmarks/data_free.py [--quick]   # DIR holds mnist/*.gz (else: Keras download)
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

import tfq  # noqa: E402
from tfq import compression, report  # noqa: E402


def train_float(name, x, y, epochs, seed=0):
    keras.utils.set_random_seed(seed)
    model = getattr(tfq.models, name)()
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    # Batch-norm moving averages lag the weights after short training; the
    # data-free corrections read them, so settle them first (as a converged
    # training run would have).
    tfq.reestimate_batch_norm(model, x, 128)
    return model


def row(table, model_name, method, scheme, corrections, keras_acc, blob, x, y, seconds=None, float_acc=None):
    acc = report.tflite_accuracy(blob, x, y)
    table.append({
        "model": model_name, "method": method, "scheme": scheme, "corrections": corrections,
        "keras": keras_acc, "litert": acc, "delta": None if float_acc is None else acc - float_acc,
        "kib": len(blob) / 1024, "seconds": seconds,
    })
    print(f"  {method:<22} {scheme:<10} {corrections:<14} LiteRT {100 * acc:6.2f}%", flush=True)
    return acc


def fmt(table):
    lines = [
        "| model | method | scheme | corrections | accuracy Keras | accuracy LiteRT | vs float | .tflite KiB | compress s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        keras_acc = "-" if r["keras"] is None else f"{100 * r['keras']:.2f}%"
        delta = "-" if r["delta"] is None else f"{100 * r['delta']:+.2f}"
        secs = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['model']} | {r['method']} | {r['scheme']} | {r['corrections']} | {keras_acc} "
                     f"| {100 * r['litert']:.2f}% | {delta} | {r['kib']:.1f} | {secs} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k training images, 1 float epoch, 2 ADMM epochs")
    parser.add_argument("--epochs", type=int, default=None, help="float training epochs (default 4)")
    parser.add_argument("--models", default="lenet5,small_bn_cnn")
    args = parser.parse_args()

    (x, y), (xt, yt) = tfq.datasets.mnist()
    float_epochs = args.epochs or (1 if args.quick else 4)
    admm_epochs = 2 if args.quick else None
    if args.quick:
        x, y = x[:10000], y[:10000]
    table = []
    for name in args.models.split(","):
        print(f"== {name}: float training, {float_epochs} epochs", flush=True)
        model = train_float(name, x, y, float_epochs)
        keras_float = compression.evaluate_accuracy(model, (xt, yt))
        float_acc = row(table, name, "float", "float32", "-", keras_float, report.keras_to_tflite(model), xt, yt)
        table[-1]["delta"] = 0.0
        row(table, name, "LiteRT dynamic range", "int8", "-", None, report.keras_to_tflite(model, int8=True),
            xt, yt, float_acc=float_acc)
        for scheme in ("ternary", "pow2_3bit", "pow2_4bit"):
            for corr, label in ((False, "none"), (True, "eq + bias")):
                t0 = time.perf_counter()
                small = tfq.compress(model, scheme, corrections=corr, verbose=0)
                secs = time.perf_counter() - t0
                row(table, name, "tfq data-free", scheme, label, compression.evaluate_accuracy(small, (xt, yt)),
                    bytes(tfq.convert(small)), xt, yt, secs, float_acc)
        t0 = time.perf_counter()
        small, rep = tfq.compress(model, "ternary", data=(x, y), epochs=admm_epochs, verbose=0, return_report=True)
        secs = time.perf_counter() - t0
        row(table, name, f"tfq with data ({rep.settings['epochs']} ep)", "ternary", "ADMM",
            compression.evaluate_accuracy(small, (xt, yt)), bytes(tfq.convert(small)), xt, yt, secs, float_acc)

    print()
    print(f"MNIST, {len(x)} training / {len(xt)} test images; float models trained {float_epochs} epochs "
          "(Adam 1e-3, batch 128, batch-norm statistics re-estimated on 100 training batches). tfq rows keep the "
          "first and last layer float (the default policy); 'tfq with data' fine-tunes the float model for the "
          "epochs shown (derived defaults), so it has seen more training than the float row.")
    print(fmt(table))

    mnv2 = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        tfq.compress(mnv2, "ternary", verbose=0)
        times.append(time.perf_counter() - t0)
    print()
    print(f"Data-free ternary with corrections on MobileNetV2 (224x224, {mnv2.count_params():,} parameters, "
          f"{len(mnv2.layers)} layers): median {sorted(times)[1]:.2f} s of 3 runs (target < 10 s); "
          f"{report.machine_summary()}.")


if __name__ == "__main__":
    main()
