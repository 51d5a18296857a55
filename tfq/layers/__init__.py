"""Quantized drop-in Keras 3 layers and `quantize_model`.

Each layer is a subclass of its Keras counterpart taking the same constructor
arguments plus `scheme` (a `tfq.quantizers` identifier) and `mask` (None,
True, or an initial 0/1 array; a dict `{variable name: array}` for layers with
two kernels). It keeps the float variables under the Keras names; its `call`
computes with the projection of the float kernel onto the scheme's set
(pruned entries zero) with straight-through gradients, so training these
layers is the straight-through fine-tuning of the float "shadow" kernel. The
math is `tfq.quantizers.project`, the same the ADMM callback uses.
"""

import keras
import numpy as np

from tfq.layers.conv import (
    QuantConv1D,
    QuantConv2D,
    QuantConv2DTranspose,
    QuantDepthwiseConv2D,
    QuantSeparableConv2D,
)
from tfq.layers.core import QuantDense, QuantEmbedding
from tfq.kernels import iter_layers, select_kernels, supported_kernels
from tfq.layers.recurrent import QuantGRU, QuantLSTM

__all__ = [
    "QuantDense",
    "QuantConv1D",
    "QuantConv2D",
    "QuantDepthwiseConv2D",
    "QuantSeparableConv2D",
    "QuantConv2DTranspose",
    "QuantLSTM",
    "QuantGRU",
    "QuantEmbedding",
    "quantize_model",
]

_COUNTERPART = [
    (keras.layers.SeparableConv2D, QuantSeparableConv2D),
    (keras.layers.DepthwiseConv2D, QuantDepthwiseConv2D),
    (keras.layers.Conv2DTranspose, QuantConv2DTranspose),
    (keras.layers.Conv1D, QuantConv1D),
    (keras.layers.Conv2D, QuantConv2D),
    (keras.layers.Dense, QuantDense),
    (keras.layers.LSTM, QuantLSTM),
    (keras.layers.GRU, QuantGRU),
    (keras.layers.Embedding, QuantEmbedding),
]


def _counterpart(layer):
    for base, quant in _COUNTERPART:
        if type(layer) is base:
            return quant
    return None


def quantize_model(model, scheme="ternary", layers=None, skip_first_last=True):
    """Returns a copy of `model` with supported layers swapped for `tfq.layers` ones.

    Weights are copied; pruning masks of a `PruningCallback` attached to the
    model become the layers' masks. Layer selection as in `tfq.ADMMCallback`
    (by default the first and last supported layer stay float).

    Args:
        model: a built Keras model (Sequential or Functional).
        scheme: default scheme for the chosen layers.
        layers, skip_first_last: see `tfq.ADMMCallback`.

    Raises:
        ValueError: nothing to quantize, unknown scheme, unsupported named layer.
    """
    specs = select_kernels(model, scheme, layers, skip_first_last, what="quantize_model")
    chosen = {}
    for spec in specs:
        chosen.setdefault(spec.layer.name, (spec.layer, spec.quantizer))
    from tfq import pruning  # the masks of a PruningCallback run on `model`, if any

    masks = {}
    for name, (layer, _) in chosen.items():
        if _counterpart(layer) is None:
            raise ValueError(f"quantize_model: layer {name!r} ({type(layer).__name__}) has no tfq counterpart")
        kernels = supported_kernels(layer)
        for s, m in zip(kernels, pruning.masks_for(model, [s.key for s in kernels])):
            if m is not None:
                masks.setdefault(name, {})[s.name] = np.asarray(keras.ops.convert_to_numpy(m))

    def clone(layer):
        if layer.name in chosen:
            src, q = chosen[layer.name]
            cfg = dict(src.get_config())
            cfg["scheme"] = q
            cfg["mask"] = masks.get(layer.name)
            return _counterpart(src).from_config(cfg)
        return layer.__class__.from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone)
    old_layers = {l.name: l for l in iter_layers(model)}
    for layer in iter_layers(new):
        if not layer.weights:
            continue
        src = old_layers.get(layer.name)
        if src is None:
            raise ValueError(f"quantize_model: no source layer for {layer.name!r}")
        if layer.name not in chosen:
            layer.set_weights(src.get_weights())
            continue
        for v in layer.weights:
            if v.name.endswith("_mask"):
                continue  # set from the pruning masks at construction
            match = [w for w in src.weights if w.name == v.name]
            if len(match) != 1:
                raise ValueError(f"quantize_model: cannot match weight {v.name!r} of layer {layer.name!r}")
            v.assign(match[0])
    return new
