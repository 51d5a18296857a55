"""Quantized drop-in Keras 3 layers and `quantize_model`.

Each layer takes the constructor arguments of its Keras counterpart plus
`scheme` (a `tfq.quantizers` identifier) and `mask` (None, True, or an initial
0/1 array; a dict `{variable name: array}` for layers with two kernels). The
forward pass uses the projection of the float kernel onto the scheme's set
(pruned entries zero) with straight-through gradients, so training these
layers is the straight-through fine-tuning of the float "shadow" kernel. The
math is `tfq.quantizers.project`, the same the ADMM callback uses.
"""

import keras
import numpy as np
import tensorflow as tf

from tfq import quantizers
from tfq.kernels import iter_layers, select_kernels, supported_kernels

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


class _QuantMixin:
    """Projection of the named kernels with straight-through gradients."""

    # (variable name, channel axis) pairs; set by each class.
    _tfq_kernels = ()

    def _tfq_init(self, scheme, mask):
        q = quantizers.get(scheme)
        if q is None:
            raise ValueError(f"{type(self).__name__}: scheme is required; valid: {quantizers.names()}")
        self.scheme = q
        if mask is not None and mask is not True and not isinstance(mask, (dict, np.ndarray, list)):
            if not hasattr(mask, "shape"):
                raise TypeError(f"{type(self).__name__}: mask must be None, True, an array or a dict, got {mask!r}")
        self._tfq_mask_init = mask
        self._tfq_masks = {}

    def _tfq_build_masks(self):
        mask = self._tfq_mask_init
        if mask is None or mask is False:
            return
        for name, _ in self._tfq_kernels:
            var = self._tfq_raw(name)
            init = mask.get(name) if isinstance(mask, dict) else (None if mask is True else mask)
            if isinstance(mask, dict) and name not in mask:
                init = None
            if init is not None:
                arr = np.asarray(init, dtype="float32")
                if arr.shape != tuple(var.shape):
                    raise ValueError(
                        f"Layer {self.name!r}: mask for {name} has shape {arr.shape}, kernel has {tuple(var.shape)}"
                    )
                initializer = keras.initializers.Constant(arr)
            else:
                initializer = "ones"
            self._tfq_masks[name] = self.add_weight(
                shape=tuple(var.shape), initializer=initializer, trainable=False, name=f"{name}_mask"
            )

    def _tfq_raw(self, name):
        return getattr(self, "_tfq_raw_" + name)

    def _tfq_project(self, name, w):
        axis = dict(self._tfq_kernels)[name]
        mask = self._tfq_masks.get(name)
        w = tf.convert_to_tensor(w)
        # Plain ops: this runs inside the layer's forward pass (compiled with
        # the train step as a whole), not as a separate XLA cluster.
        q, _ = self.scheme.project(w, mask=None if mask is None else tf.convert_to_tensor(mask), channel_axis=axis, jit=False)
        return quantizers.straight_through(w, q)

    def quantized_weights(self):
        """`{variable name: (q, scale)}` as NumPy arrays: the kernels as the forward pass uses them."""
        out = {}
        for name, axis in self._tfq_kernels:
            mask = self._tfq_masks.get(name)
            w = np.asarray(keras.ops.convert_to_numpy(self._tfq_raw(name)))
            m = None if mask is None else np.asarray(keras.ops.convert_to_numpy(mask))
            out[name] = self.scheme.project(w, mask=m, channel_axis=axis)
        return out

    # Dense/Conv/Embedding save a fixed list of names (for their own int8
    # modes); tfq layers save every variable they own, masks included.
    def save_own_variables(self, store):
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store):
        keras.layers.Layer.load_own_variables(self, store)

    def _tfq_config(self, config):
        config = dict(config)
        config["scheme"] = keras.saving.serialize_keras_object(self.scheme)
        config["mask"] = True if (self._tfq_masks or self._tfq_mask_init is not None) else None
        return config

    @staticmethod
    def _tfq_from(config):
        config = dict(config)
        scheme = config.get("scheme")
        if isinstance(scheme, dict):
            config["scheme"] = quantizers.get(scheme)
        return config


def _raw_property(name):
    """A kernel attribute whose reads give the projected kernel.

    The Keras layer's `build` assigns the variable through the setter; the
    variable itself stays reachable as `_tfq_raw_<name>`.
    """

    def getter(self):
        raw = getattr(self, "_tfq_raw_" + name)
        if not self.built or getattr(self, "_tfq_building", False):
            return raw
        return self._tfq_project(name, raw)

    def setter(self, value):
        setattr(self, "_tfq_raw_" + name, value)

    return property(getter, setter)


def _wrap_property(base_cls, name, private):
    """Projected version of a Keras property that reads `self.<private>`."""

    def getter(self):
        if not self.built or getattr(self, "_tfq_building", False):
            return getattr(base_cls, name).fget(self)
        return self._tfq_project(name, getattr(self, private))

    return property(getter)


def _make_simple(base_cls, kernels, props, doc):
    """A quantized subclass of a Keras layer whose kernels are attributes or properties."""

    namespace = {"_tfq_kernels": tuple(kernels), "__doc__": doc}
    for name, private in props.items():
        if private is None:
            namespace[name] = _raw_property(name)
        else:
            namespace[name] = _wrap_property(base_cls, name, private)
            namespace["_tfq_raw_" + name] = property(lambda self, p=private: getattr(self, p))

    def __init__(self, *args, scheme="ternary", mask=None, **kwargs):
        self._tfq_init(scheme, mask)
        base_cls.__init__(self, *args, **kwargs)

    def build(self, input_shape):
        self._tfq_building = True
        try:
            base_cls.build(self, input_shape)
        finally:
            self._tfq_building = False
        self._tfq_build_masks()

    def get_config(self):
        return self._tfq_config(base_cls.get_config(self))

    @classmethod
    def from_config(cls, config):
        return cls(**cls._tfq_from(config))

    namespace.update(__init__=__init__, build=build, get_config=get_config, from_config=from_config)
    return namespace


def _define(name, base_cls, kernels, props, doc):
    cls = type(name, (_QuantMixin, base_cls), _make_simple(base_cls, kernels, props, doc))
    cls.__module__ = __name__
    return keras.saving.register_keras_serializable(package="tfq")(cls)


QuantDense = _define(
    "QuantDense", keras.layers.Dense, [("kernel", -1)], {"kernel": "_kernel"},
    "`keras.layers.Dense` with a low-bit kernel (`scheme`, optional `mask`).",
)
QuantConv1D = _define(
    "QuantConv1D", keras.layers.Conv1D, [("kernel", -1)], {"kernel": "_kernel"},
    "`keras.layers.Conv1D` with a low-bit kernel (`scheme`, optional `mask`).",
)
QuantConv2D = _define(
    "QuantConv2D", keras.layers.Conv2D, [("kernel", -1)], {"kernel": "_kernel"},
    "`keras.layers.Conv2D` with a low-bit kernel (`scheme`, optional `mask`).",
)
QuantDepthwiseConv2D = _define(
    "QuantDepthwiseConv2D", keras.layers.DepthwiseConv2D, [("kernel", (2, 3))], {"kernel": None},
    "`keras.layers.DepthwiseConv2D` with a low-bit kernel; one scale per output channel (C * multiplier).",
)
QuantSeparableConv2D = _define(
    "QuantSeparableConv2D", keras.layers.SeparableConv2D,
    [("depthwise_kernel", (2, 3)), ("pointwise_kernel", -1)],
    {"depthwise_kernel": None, "pointwise_kernel": None},
    "`keras.layers.SeparableConv2D` with both kernels low-bit.",
)
QuantConv2DTranspose = _define(
    "QuantConv2DTranspose", keras.layers.Conv2DTranspose, [("kernel", -2)], {"kernel": None},
    "`keras.layers.Conv2DTranspose` with a low-bit kernel (channels on axis -2).",
)
QuantEmbedding = _define(
    "QuantEmbedding", keras.layers.Embedding, [("embeddings", -1)], {"embeddings": "_embeddings"},
    "`keras.layers.Embedding` with a low-bit table (one scale per output dimension).",
)

_QuantLSTMCell = _define(
    "QuantLSTMCell", keras.layers.LSTMCell, [("kernel", -1), ("recurrent_kernel", -1)],
    {"kernel": None, "recurrent_kernel": None}, "LSTM cell with low-bit input and recurrent kernels.",
)
_QuantGRUCell = _define(
    "QuantGRUCell", keras.layers.GRUCell, [("kernel", -1), ("recurrent_kernel", -1)],
    {"kernel": None, "recurrent_kernel": None}, "GRU cell with low-bit input and recurrent kernels.",
)


def _define_rnn(name, base_cls, cell_cls, doc):
    def __init__(self, units, *args, scheme="ternary", mask=None, **kwargs):
        base_cls.__init__(self, units, *args, **kwargs)
        cfg = self.cell.get_config()
        cfg.update(scheme=scheme, mask=mask)
        self.cell = cell_cls(**cfg)
        self.scheme = self.cell.scheme

    def get_config(self):
        config = base_cls.get_config(self)
        config["scheme"] = keras.saving.serialize_keras_object(self.scheme)
        config["mask"] = True if (self.cell._tfq_masks or self.cell._tfq_mask_init is not None) else None
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("scheme"), dict):
            config["scheme"] = quantizers.get(config["scheme"])
        return cls(**config)

    def quantized_weights(self):
        return self.cell.quantized_weights()

    cls = type(
        name,
        (base_cls,),
        {"__init__": __init__, "get_config": get_config, "from_config": from_config,
         "quantized_weights": quantized_weights, "__doc__": doc},
    )
    cls.__module__ = __name__
    return keras.saving.register_keras_serializable(package="tfq")(cls)


QuantLSTM = _define_rnn("QuantLSTM", keras.layers.LSTM, _QuantLSTMCell, "`keras.layers.LSTM` with low-bit kernels.")
QuantGRU = _define_rnn("QuantGRU", keras.layers.GRU, _QuantGRUCell, "`keras.layers.GRU` with low-bit kernels.")

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
