"""A block-sparse ternary CNN trained on MNIST, end to end: accuracy, size and speed.

The speed tables of `benchmarks/sparse_speed.py` use random block-sparse
weights. This script checks that the speed holds on weights that training
produced:

1. A float CNN (`tfq.models.mnist_cnn`: five 3x3 convolutions of 32 to 128
   channels with batch norm, then a Dense classifier) trains `--pre` epochs
   on MNIST: the float parent.
2. A copy trains `--comp` more epochs with
   `PruningCallback(--sparsity, block="auto")` and `ADMMCallback("ternary")`
   (first and last layer float, as by default); the float parent trains the
   same `--comp` epochs alone, so both had the same budget. Both then get
   `tfq.reestimate_batch_norm` (the moving batch-norm averages lag the
   weights after so few epochs: the parent's accuracy was 96.14% without it).
3. Conversions: the float parent to LiteRT fp32 (XNNPACK) and full int8
   (calibrated on 200 training images); the compressed model with
   `tfq.convert(sparse="auto")` (block-sparse ops, format version 2) and with
   `sparse=False` (the same weights stored dense, format version 1).
4. Accuracy on the 10,000 test images in Keras and through LiteRT (the tfq
   ones with the delegate), the top-1 agreement of the tfq file with its
   Keras model, file sizes, and batch-1 latency at 1 and 2 threads
   (interleaved in one process, medians, as `benchmarks/speed.py` does).

Usage: python benchmarks/sparse_trained.py [--pre 2] [--comp 3] [--sparsity 0.9]
       [--train N] [--seconds 3] [--threads 1,2]
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402


def litert_full_int8(model, calibration):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]

    def data():
        for x in calibration:
            yield [x[None].astype(np.float32)]

    conv.representative_dataset = data
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def predict_litert(path, x, tfq_delegate, batch=1):
    """Class scores of every image through LiteRT (batch 1, one thread)."""
    import tfq
    from ai_edge_litert.interpreter import Interpreter

    it = tfq.Interpreter(str(path), num_threads=1) if tfq_delegate else Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    d, o = it.get_input_details()[0], it.get_output_details()[0]
    out = np.empty((len(x), int(o["shape"][-1])), np.float32)
    for i in range(len(x)):
        it.set_tensor(d["index"], x[i:i + 1].astype(np.float32))
        it.invoke()
        out[i] = it.get_tensor(o["index"])[0]
    return out


def sparse_path():
    """Which block-sparse kernels the delegate runs on this CPU (the library's own answer)."""
    import ctypes

    from tfq import runtime

    lib = ctypes.CDLL(runtime.delegate_path())
    isa = getattr(lib, "tfq_delegate_isa", None)
    path = getattr(lib, "tfq_delegate_sparse_path", None)
    parts = []
    if isa is not None:
        isa.restype, isa.argtypes = ctypes.c_char_p, [ctypes.c_int]
        parts.append(f"dense kernels: {isa(0).decode()}")
    if path is not None:
        path.restype, path.argtypes = ctypes.c_char_p, [ctypes.c_int]
        parts.append(f"block-sparse kernels: {path(0).decode()}")
    return "; ".join(parts) or "kernels: unknown"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pre", type=int, default=2, help="float epochs before compression")
    ap.add_argument("--comp", type=int, default=3, help="compression epochs (the float parent trains them too)")
    ap.add_argument("--sparsity", type=float, default=0.9, help="block sparsity of the pruned layers")
    ap.add_argument("--train", type=int, default=60000, help="training images used")
    ap.add_argument("--seconds", type=float, default=3.0, help="timing budget per thread count")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", default=None, help="folder for the .tflite files (default: a temporary one)")
    args = ap.parse_args(argv)

    import keras

    import tfq
    from speed import time_case
    from tfq import datasets, models
    from tfq.report import machine_summary

    (x, y), (xt, yt) = datasets.mnist()
    x, y = x[: args.train], y[: args.train]
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    out = pathlib.Path(args.out or tempfile.mkdtemp(prefix="tfq_sparse_trained_"))
    out.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    keras.utils.set_random_seed(0)
    parent = models.mnist_cnn()
    parent.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    parent.fit(x, y, epochs=args.pre, batch_size=128, verbose=0)
    log(f"float parent: {args.pre} epochs")
    small = models.mnist_cnn()
    small.compile(keras.optimizers.Adam(1e-3), loss, metrics=["accuracy"])
    small.set_weights(parent.get_weights())
    t0 = time.time()
    tfq.permute_channels(small, block="auto")
    small.fit(x, y, epochs=args.comp, batch_size=128, verbose=0, callbacks=[
        tfq.PruningCallback(args.sparsity, block="auto"), tfq.ADMMCallback("ternary")])
    tfq.reestimate_batch_norm(small, x, 128)  # the moving averages lag the final (projected) weights
    comp_s = time.time() - t0
    log(f"compressed: {args.comp} epochs, {comp_s:.0f} s")
    parent.fit(x, y, epochs=args.comp, batch_size=128, verbose=0)
    tfq.reestimate_batch_norm(parent, x, 128)  # the same for the float parent
    log(f"float parent: {args.comp} more epochs")

    import tensorflow as tf

    files = {}
    files["LiteRT fp32"] = tf.lite.TFLiteConverter.from_keras_model(parent).convert()
    files["LiteRT full-int8"] = litert_full_int8(parent, x[:200])
    files["tfq dense (v1)"] = tfq.convert(small, sparse=False)
    files["tfq block-sparse (v2)"] = tfq.convert(small, sparse="auto")
    paths = {}
    for name, data in files.items():
        p = out / (name.replace(" ", "_").replace("(", "").replace(")", "") + ".tflite")
        p.write_bytes(data)
        paths[name] = p
    log(f"converted to {out}")

    keras_small = np.argmax(small.predict(xt, batch_size=1000, verbose=0), -1)
    keras_parent = np.argmax(parent.predict(xt, batch_size=1000, verbose=0), -1)
    rows = []
    for name, p in paths.items():
        is_tfq = name.startswith("tfq")
        pred = np.argmax(predict_litert(p, xt, is_tfq), -1)
        ref = keras_small if is_tfq else keras_parent
        rows.append((name, float(np.mean(pred == yt)), float(np.mean(pred == ref)), p.stat().st_size))
        log(f"{name}: accuracy {rows[-1][1] * 100:.2f}%")

    variants = {"fp32": paths["LiteRT fp32"], "full-int8": paths["LiteRT full-int8"],
                "tfq-dense": paths["tfq dense (v1)"], "tfq-sparse": paths["tfq block-sparse (v2)"]}
    timing = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        # make_interpreter picks the delegate for names starting with "tfq-".
        timing[threads] = time_case(variants, threads, args.seconds)

    float_bytes = rows[0][3]
    print(f"\n# sparse_trained, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU: {machine_summary()}; "
          f"{sparse_path()}")
    print(f"# mnist_cnn: {args.pre} float epochs, then {args.comp} epochs of PruningCallback({args.sparsity}, "
          f"block='auto') + ADMMCallback('ternary') (first and last layer float); float parent {args.pre + args.comp} "
          f"epochs; {len(x)} training / {len(xt)} test images; Keras accuracy: float "
          f"{np.mean(keras_parent == yt) * 100:.2f}%, compressed {np.mean(keras_small == yt) * 100:.2f}%; "
          f"compression took {comp_s:.0f} s")
    names = {"LiteRT fp32": "fp32", "LiteRT full-int8": "full-int8", "tfq dense (v1)": "tfq-dense",
             "tfq block-sparse (v2)": "tfq-sparse"}
    ths = sorted(timing)
    head = "| model | accuracy | top-1 agreement with its Keras model | .tflite bytes | smaller than fp32 | "
    head += " | ".join(f"us ({t} thr) | fp32 / this | int8 / this" for t in ths) + " |"
    print(head)
    print("|" + "---|" * (5 + 3 * len(ths)))
    for name, acc, agree, size in rows:
        v = names[name]
        cells = [name, f"{acc * 100:.2f}%", f"{agree * 100:.2f}%", f"{size:,}", f"{float_bytes / size:.1f}x"]
        for t in ths:
            us = timing[t][v] * 1e6
            cells += [f"{us:.0f}", f"{timing[t]['fp32'] / timing[t][v]:.2f}x",
                      f"{timing[t]['full-int8'] / timing[t][v]:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    agree = rows[-1][2]
    print(f"\n[{'MET ' if agree >= 0.995 else 'MISS'}] top-1 agreement of the block-sparse file with Keras >= 99.5%: "
          f"{agree * 100:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
