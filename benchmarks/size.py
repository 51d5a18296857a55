"""File sizes of the benchmark models: float, LiteRT int8, ai-edge-quantizer INT4/INT2, tfq.

For each model (tfq.models) and scheme, every Dense/Conv2D/DepthwiseConv2D
kernel (first and last layers included) is projected onto the set with
`tfq.quantizers` (per-channel scales; sizes do not depend on training), then
the same Keras model is written as:

  float      tf.lite.TFLiteConverter, no optimization
  int8       TFLiteConverter with Optimize.DEFAULT (dynamic-range int8 weights)
  aeq4/aeq2  ai-edge-quantizer 0.10 dynamic recipe, INT4 / INT2 per-channel weights
             (min-max rounding: not exact for pow2 sets)
  portable   tfq.convert(portable=True): exact INT2/INT4/INT8 builtin weights
  packed     tfq.convert(): tfq custom ops, packed codes (docs/format.md)

Prints bytes and the ratio float/size. Run: python benchmarks/size.py
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


def project_model(model, scheme):
    import keras
    from tfq import quantizers
    q = quantizers.get(scheme)
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kernel, axis = layer.kernel, (2, 3)
        elif isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            kernel, axis = layer.kernel, -1
        else:
            continue
        w, _ = q.project(kernel.numpy(), channel_axis=axis)
        kernel.assign(np.asarray(w, np.float32))
    return model


def sizes(model):
    import logging
    import warnings
    import tensorflow as tf
    from ai_edge_quantizer import qtyping, quantizer
    import tfq
    out = {}
    out["float"] = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    out["int8"] = conv.convert()
    logging.getLogger("absl").setLevel(logging.ERROR)
    for bits in (4, 2):
        q = quantizer.Quantizer(out["float"])
        q.add_dynamic_config(".*", qtyping.TFLOperationName.ALL_SUPPORTED, bits)
        out[f"aeq{bits}"] = bytes(q.quantize(enable_progress_report=False).quantized_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out["portable"] = tfq.convert(out["float"], portable=True)
        out["packed"] = tfq.convert(out["float"])
    return {k: len(v) for k, v in out.items()}


def main():
    import keras
    from tfq import models
    cols = ["float", "int8", "aeq4", "aeq2", "portable", "packed"]
    rows = []
    for builder in ("lenet5", "lenet300_100", "small_bn_cnn"):
        for scheme in ("binary", "ternary", "pow2_3bit"):
            keras.utils.set_random_seed(0)
            model = project_model(getattr(models, builder)(), scheme)
            s = sizes(model)
            rows.append((builder, scheme, s))
    head = f"| {'model':13s} | {'scheme':9s} | " + " | ".join(f"{c:>16s}" for c in cols) + " |"
    print("File size in bytes (ratio float / size); all weighted layers compressed, "
          "per-channel scales")
    print(head)
    print("|" + "|".join("-" * (len(x) + 2) for x in head.strip("|").split("|")[:-1]) + "|")
    for builder, scheme, s in rows:
        cells = [f"{s[c]:>8d} ({s['float'] / s[c]:5.1f}x)" for c in cols]
        print(f"| {builder:13s} | {scheme:9s} | " + " | ".join(f"{c:>16s}" for c in cells) + " |")


if __name__ == "__main__":
    main()
