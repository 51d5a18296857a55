"""Which builtin op + INT2/INT4/INT8 weight combinations stock LiteRT runs, and how fast.

The measurement behind tfq's portable path (tfq/converter/portable.py). For
one FULLY_CONNECTED (batch 1, 1024 -> 1024, then 1024 -> 1024), one CONV_2D
(28x28x32 -> 64, 3x3) and one DEPTHWISE_CONV_2D (28x28x64, 3x3), it writes
the weights as: float; dynamic-range integer weights (the op takes float
activations and quantizes them on the fly) at INT8/INT4/INT2; and
weight-only integer weights followed by DEQUANTIZE at INT8/INT4. The
quantized files come from ai-edge-quantizer (same tensor layout tfq writes).
`n/a` = the quantizer leaves the op float (the runtime has no such kernel).

LiteRT 2.3 Python interpreter, XNNPACK on, 1 thread; median of interleaved
invocations (ABAB...), microseconds, and the ratio to float of the same run.
"""

import logging
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def _variants(float_bytes):
    from ai_edge_quantizer import qtyping, quantizer
    from tfq.converter import tflite_io
    out = {"float": float_bytes}
    for kind in ("dynamic", "weight_only"):
        for bits in (8, 4, 2):
            if kind == "weight_only" and bits == 2:
                continue
            q = quantizer.Quantizer(float_bytes)
            add = q.add_dynamic_config if kind == "dynamic" else q.add_weight_only_config
            add(".*", qtyping.TFLOperationName.ALL_SUPPORTED, bits)
            data = bytes(q.quantize(enable_progress_report=False).quantized_model)
            fb, raw, _ = tflite_io.load_model(data)
            types = {t.type for t in fb.subgraphs[0].tensors}
            want = {8: tflite_io.schema.TensorType.INT8, 4: tflite_io.schema.TensorType.INT4,
                    2: tflite_io.schema.TensorType.INT2}[bits]
            out[f"{kind} INT{bits}"] = data if want in types else None
    return out


def _time(variants, rounds=40, inner=20):
    from ai_edge_litert.interpreter import Interpreter
    its = {}
    for name, data in variants.items():
        if data is None:
            continue
        it = Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.random.default_rng(0).random(d["shape"]).astype(np.float32))
        for _ in range(5):
            it.invoke()
        its[name] = it
    samples = {name: [] for name in its}
    for _ in range(rounds):
        for name, it in its.items():          # interleaved
            t = time.perf_counter()
            for _ in range(inner):
                it.invoke()
            samples[name].append((time.perf_counter() - t) / inner * 1e6)
    return {name: float(np.median(v)) for name, v in samples.items()}


def main():
    import keras
    import tensorflow as tf
    logging.getLogger("absl").setLevel(logging.ERROR)
    models = {}
    i = keras.Input((1024,))
    models["FULLY_CONNECTED 1024x1024 x2"] = keras.Model(
        i, keras.layers.Dense(1024)(keras.layers.Dense(1024, activation="relu")(i)))
    i = keras.Input((28, 28, 32))
    models["CONV_2D 3x3 32->64 28x28"] = keras.Model(i, keras.layers.Conv2D(64, 3, padding="same")(i))
    i = keras.Input((28, 28, 64))
    models["DEPTHWISE_CONV_2D 3x3 64 28x28"] = keras.Model(
        i, keras.layers.DepthwiseConv2D(3, padding="same")(i))
    names = ["float", "dynamic INT8", "dynamic INT4", "dynamic INT2", "weight_only INT8",
             "weight_only INT4"]
    print("median us per invoke (ratio to float), LiteRT 2.3, XNNPACK, 1 thread")
    print("| op | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, model in models.items():
        variants = _variants(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        t = _time(variants)
        cells = [f"{t[n]:.0f} ({t[n] / t['float']:.2f})" if n in t else "n/a" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
