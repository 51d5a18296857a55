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
  packed_v1  the same file with every op's rows padded to whole 32-byte blocks
             (format version 1, tfq.converter.sparse.as_version_1)
  packed     tfq.convert(): tfq custom ops, packed codes (docs/format.md); rows
             end in 32-weight mini-blocks (version 2 `dense`) where smaller

Prints bytes and the ratio float/size. Run: python benchmarks/size.py

With --sparse, the block-sparse table (format version 2): every weighted
layer projected onto ternary and block-pruned (`block="auto"`, whole blocks
of the smallest mean magnitude, as `tfq.compress` does without data; the
sparsity spread over the layers with `distribution="erk"`) at each
sparsity, written by `tfq.convert(sparse="auto")`; and ResNet-50 (random
weights, 90% block-sparse ternary, all but the first and last layer) with
where its bytes go. Sizes do not depend on training: pruning removes whole
blocks, and the zeros ternary adds inside live blocks are stored like any
code. Run: python benchmarks/size.py --sparse
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
    from tfq.converter import sparse as sparse_layout
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
        out["packed_v1"] = sparse_layout.as_version_1(out["packed"])
    return {k: len(v) for k, v in out.items()}


def block_prune_model(model, sparsity, skip_first_last=False, block="auto", distribution="erk"):
    """Projects every Dense/Conv2D kernel onto ternary after pruning its blocks of smallest mean magnitude.

    `sparsity` is spread over the pruned kernels as `tfq.PruningCallback(distribution=...)` does
    (the accuracy rows of benchmarks/accuracy.py --sparse use "erk" too).
    """
    import keras
    import tensorflow as tf
    from tfq import kernels, pruning, quantizers
    q = quantizers.get("ternary")
    specs = [s for layer in kernels.iter_layers(model) for s in (kernels.supported_kernels(layer) or [])
             if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D))]
    if skip_first_last:
        specs = specs[1:-1]
    pruned = [s for s in specs if not pruning.is_depthwise(s)]
    target = dict(zip([s.key for s in pruned], pruning.layer_sparsities(
        [tuple(s.variable.shape) for s in pruned], sparsity, distribution)))
    for spec in specs:
        w = spec.variable.numpy()
        mask = None
        if spec.key in target:
            grid = pruning.block_grid(spec, block)
            mask = pruning.block_prune_mask(tf.abs(tf.constant(w)), target[spec.key], None, False, grid).numpy()
        qw, _ = q.project(w, mask=mask, channel_axis=spec.channel_axis)
        spec.variable.assign(np.asarray(qw, np.float32))
    return model


def where_bytes(data):
    """{weights, indices, scales, builtin (float or int8) weights, rest} bytes of a .tflite, from tfq inspect."""
    from tfq.converter import inspect
    info = inspect.inspect_model(bytes(data), detect_sets=False)
    out = {"weights": 0, "indices": 0, "scales": 0, "builtin weights": 0}
    for r in info["ops"]:
        if r["kind"] == "tfq":
            out["weights"] += r["code_bytes"]
            out["indices"] += r["index_bytes"]
            out["scales"] += r["scale_bytes"]
        else:
            out["builtin weights"] += r["bytes"]
    out["rest (biases, graph)"] = info["file_bytes"] - sum(out.values())
    return out


def _float_tflite(model):
    """TFLiteConverter's float file, without the export's "Saved artifact" listing on stdout."""
    import contextlib
    import io
    import tensorflow as tf
    with contextlib.redirect_stdout(io.StringIO()):
        return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def main_sparse():
    import warnings
    import keras
    import tfq
    from tfq import models
    print("Block-sparse ternary (block='auto', distribution='erk', tfq.convert(sparse='auto')), every weighted layer "
          "compressed; "
          "bytes of the whole .tflite (ratio float / size)")
    print("| model | sparsity | float | tfq dense | tfq block-sparse (v2) | v2 vs float |")
    print("|---|---|---|---|---|---|")
    for builder, targets in (("lenet300_100", (0.9, 0.95)), ("lenet5", (0.9, 0.95)), ("small_bn_cnn", (0.8, 0.9))):
        for sparsity in targets:
            keras.utils.set_random_seed(0)
            model = block_prune_model(getattr(models, builder)(), sparsity)
            flt = _float_tflite(model)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dense, sp = tfq.convert(flt), tfq.convert(flt, sparse="auto")
            print(f"| {builder} | {sparsity:.0%} | {len(flt)} | {len(dense)} ({len(flt) / len(dense):.1f}x) | "
                  f"{len(sp)} ({len(flt) / len(sp):.1f}x) | {len(flt) / len(sp):.1f}x |")
    keras.utils.set_random_seed(0)
    resnet = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
    resnet = block_prune_model(resnet, 0.9, skip_first_last=True)
    flt = _float_tflite(resnet)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp = tfq.convert(flt, sparse="auto")
    print(f"\nResNet-50 (random weights, 90% block-sparse ternary, all but the first and last layer): "
          f"float {len(flt) / 2 ** 20:.1f} MB, tfq {len(sp) / 2 ** 20:.2f} MB, {len(flt) / len(sp):.1f}x")
    for k, v in where_bytes(sp).items():
        print(f"  {k:22s} {v / 2 ** 20:8.2f} MB  ({v / len(sp):5.1%})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sp8 = tfq.convert(flt, sparse="auto", float_layers="int8")
    print(f"\nThe same with float_layers='int8' (the first and last layer with 8-bit dynamic-range weights): "
          f"tfq {len(sp8) / 2 ** 20:.2f} MB, {len(flt) / len(sp8):.1f}x")
    for k, v in where_bytes(sp8).items():
        print(f"  {k:22s} {v / 2 ** 20:8.2f} MB  ({v / len(sp8):5.1%})")


def main():
    if "--sparse" in sys.argv[1:]:
        return main_sparse()
    import keras
    from tfq import models
    cols = ["float", "int8", "aeq4", "aeq2", "portable", "packed_v1", "packed"]
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
