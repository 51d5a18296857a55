"""The compression record: which scheme each compressed kernel was trained for.

When `tfq.ADMMCallback` or `tfq.compress` finishes, every compressed kernel
holds exactly `scale[c] * level` of its scheme, and the layer says so: the
kernel's constraint argument (`kernel_constraint`, `depthwise_constraint`,
`recurrent_constraint`, ... : `tfq.kernels.constraint_owner` knows which)
becomes a `CompressedKernel(scheme, per_channel, channel_axis)`. Keras saves a
layer's constraints in its config, so the record survives `model.save` and
`keras.models.load_model` with public APIs only, and the converter reads it
(and still checks it against the values, which are the ground truth).

`CompressedKernel` changes no value: like Keras' base `Constraint` it returns
the weight as it is (after the constraint it replaced, kept as `wrapped`).
Training a compressed model further with plain `fit` therefore moves its
kernels out of the set; train it with `tfq.ADMMCallback` to keep them in.

Layers of `tfq.layers` carry their scheme in their own config and are read
here too.
"""

import collections

import keras
import numpy as np

from tfq import schemes
from tfq.kernels import constraint_owner, iter_layers, supported_kernels

__all__ = ["CompressedKernel", "mark", "read", "layer_scheme", "compressed_layers", "WeightBytes", "weight_bytes"]


@keras.saving.register_keras_serializable(package="tfq")
class CompressedKernel(keras.constraints.Constraint):
    """Records that a kernel holds `scale[c] * level` of `scheme` (see the module docstring).

    Args:
        scheme: a `tfq.schemes` name.
        per_channel: one scale per output channel (True) or per tensor.
        channel_axis: the kernel's output-channel axis or axes.
        wrapped: the constraint the layer had before (applied unchanged), or None.
    """

    def __init__(self, scheme, per_channel=True, channel_axis=-1, wrapped=None):
        self.scheme = schemes.check(scheme)
        self.per_channel = bool(per_channel)
        self.channel_axis = tuple(channel_axis) if isinstance(channel_axis, (list, tuple)) else int(channel_axis)
        if isinstance(wrapped, dict):
            wrapped = keras.saving.deserialize_keras_object(wrapped)
        while isinstance(wrapped, CompressedKernel):  # a second compression replaces the first record
            wrapped = wrapped.wrapped
        self.wrapped = wrapped

    def __call__(self, w):
        return w if self.wrapped is None else self.wrapped(w)

    def get_config(self):
        return {
            "scheme": self.scheme,
            "per_channel": self.per_channel,
            "channel_axis": list(self.channel_axis) if isinstance(self.channel_axis, tuple) else self.channel_axis,
            "wrapped": None if self.wrapped is None else keras.saving.serialize_keras_object(self.wrapped),
        }

    def as_dict(self):
        return {"scheme": self.scheme, "per_channel": self.per_channel, "channel_axis": self.channel_axis}

    def __repr__(self):
        return f"CompressedKernel({self.scheme!r}, per_channel={self.per_channel}, channel_axis={self.channel_axis})"


def mark(layer, name, quantizer, channel_axis):
    """Records on `layer` that its kernel `name` now holds values of `quantizer`'s set.

    Sets the kernel's constraint argument (what the layer's config saves) and
    the variable's constraint (what a further `fit` would apply) to a
    `CompressedKernel` wrapping the constraint that was there.
    """
    owner, attr = constraint_owner(layer, name)
    record = CompressedKernel(quantizer.name, quantizer.per_channel, channel_axis, wrapped=getattr(owner, attr, None))
    setattr(owner, attr, record)
    for spec in supported_kernels(layer):
        if spec.name == name:
            spec.variable.constraint = record


def read(layer):
    """`{variable name: {"scheme", "per_channel", "channel_axis"}}` of a layer's compressed kernels ({} for none)."""
    out = {}
    scheme = getattr(layer, "scheme", None) or getattr(getattr(layer, "cell", None), "scheme", None)
    if scheme is not None and getattr(scheme, "name", None) in schemes.SCHEMES:
        # A tfq.layers layer: every kernel is projected onto its scheme.
        for spec in supported_kernels(layer) or []:
            out[spec.name] = {"scheme": scheme.name, "per_channel": scheme.per_channel,
                              "channel_axis": spec.channel_axis}
        return out
    for spec in supported_kernels(layer) or []:
        owner, attr = constraint_owner(layer, spec.name)
        record = getattr(owner, attr, None)
        if isinstance(record, CompressedKernel):
            out[spec.name] = record.as_dict()
    return out


def layer_scheme(layer):
    """The widest scheme recorded on a layer's kernels, or None."""
    return schemes.widest(c["scheme"] for c in read(layer).values())


def compressed_layers(model):
    """`{layer name: read(layer)}` for every layer of `model` with a record."""
    found = {}
    for layer in iter_layers(model):
        info = read(layer)
        if info:
            found[layer.name] = info
    return found


WeightBytes = collections.namedtuple("WeightBytes", ["compressed", "float", "params"])


def weight_bytes(model):
    """Bytes of a model's weights as tfq stores them, from the record.

    A recorded kernel takes its packed codes (the scheme's storage bits per
    weight; the padding of rows to whole blocks is left out) plus one float32
    scale per channel; every other weight 4 bytes per value. Pruning masks of
    `tfq.layers` layers are not counted (the zero codes imply them), and a
    weight shared by two layers counts once.

    Returns:
        `WeightBytes(compressed, float, params)`.
    """
    compressed = float_bytes = params = 0
    seen = set()
    for layer in iter_layers(model):
        info = read(layer)
        for v in layer.weights:
            if id(v) in seen or v.name.endswith("_mask"):
                continue
            seen.add(id(v))
            n = int(np.prod(v.shape))
            params += n
            float_bytes += 4 * n
            c = info.get(v.name)
            if c is None:
                compressed += 4 * n
                continue
            axes = c["channel_axis"] if isinstance(c["channel_axis"], tuple) else (c["channel_axis"],)
            channels = int(np.prod([v.shape[a] for a in axes])) if c["per_channel"] else 1
            compressed += (n * schemes.get(c["scheme"]).storage_bits + 7) // 8 + 4 * channels
    return WeightBytes(compressed, float_bytes, params)
