"""Which kernels of which layers tfq compresses, and along which channel axes.

Shared by `ADMMCallback`, `PruningCallback` and `quantize_model`, so the three
agree on what a "supported kernel" is.
"""

import dataclasses
import warnings

import keras

from tfq import quantizers

__all__ = ["KernelSpec", "supported_kernels", "select_kernels", "iter_layers"]


@dataclasses.dataclass
class KernelSpec:
    """One compressible kernel.

    Attributes:
        layer: the Keras layer owning it.
        name: the variable's name inside the layer ("kernel", "recurrent_kernel",
            "depthwise_kernel", "pointwise_kernel", "embeddings").
        variable: the `keras.Variable`.
        channel_axis: output-channel axis (int) or axes (tuple) of the kernel.
        quantizer: the `tfq.quantizers.Quantizer` chosen for it (None for
            pruning-only selections).
    """

    layer: object
    name: str
    variable: object
    channel_axis: object
    quantizer: object = None

    @property
    def key(self):
        """A stable identifier: "<layer name>/<variable name>"."""
        return f"{self.layer.name}/{self.name}"


def _kernel_names(layer):
    """(variable name, channel axis) pairs of a supported layer, else None."""
    L = keras.layers
    if isinstance(layer, L.SeparableConv2D) or isinstance(layer, L.SeparableConv1D):
        ndim = 4 if isinstance(layer, L.SeparableConv2D) else 3
        return [("depthwise_kernel", (ndim - 2, ndim - 1)), ("pointwise_kernel", -1)]
    if isinstance(layer, L.DepthwiseConv2D) or isinstance(layer, L.DepthwiseConv1D):
        ndim = 4 if isinstance(layer, L.DepthwiseConv2D) else 3
        return [("kernel", (ndim - 2, ndim - 1))]
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose)):
        # Transposed conv kernels are (..., out_channels, in_channels).
        return [("kernel", -2)]
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Dense)):
        return [("kernel", -1)]
    if isinstance(layer, (L.LSTM, L.GRU)):
        return [("kernel", -1), ("recurrent_kernel", -1)]
    if isinstance(layer, L.Embedding):
        return [("embeddings", -1)]
    return None


def _find_variable(layer, name):
    found = [v for v in layer.weights if v.name == name]
    if len(found) != 1:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}): expected one variable named {name!r}, "
            f"found {len(found)}; is the layer built?"
        )
    return found[0]


def supported_kernels(layer):
    """The compressible kernels of one built layer, or None when unsupported.

    Returns:
        list of `KernelSpec` (quantizer None), or None.
    """
    names = _kernel_names(layer)
    if names is None:
        return None
    if not layer.built:
        raise ValueError(f"Layer {layer.name!r} is not built; build the model (call it on data) first")
    return [KernelSpec(layer, n, _find_variable(layer, n), axis) for n, axis in names]


def iter_layers(model):
    """Leaf layers of a model in order, descending into nested models and `Bidirectional` wrappers."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)
        elif isinstance(layer, keras.layers.Bidirectional):
            # The wrapper holds no kernels itself; its two recurrent layers do.
            yield layer.forward_layer
            yield layer.backward_layer
        else:
            yield layer


def _looks_compressible(layer):
    return any(v.trainable and len(v.shape) >= 2 for v in layer.weights)


def select_kernels(model, scheme=None, layers=None, skip_first_last=True, what="compression"):
    """Resolves a per-layer policy into the list of kernels to compress.

    Args:
        model: a built Keras model.
        scheme: default quantizer identifier (None for pruning-only).
        layers: None (default policy: every supported layer, except the first
            and last when `skip_first_last`), a dict `{layer name: scheme, True,
            or None/False to keep float}` listing exactly the layers to
            compress, or a callable `layer -> scheme | True | None/False`.
        skip_first_last: with `layers=None`, keep the first and the last
            supported layer in float (their few weights matter most).
        what: word used in messages ("ADMM", "pruning").

    Returns:
        list of `KernelSpec` with `quantizer` set.

    Raises:
        ValueError: a named layer that does not exist or is unsupported, or
            nothing to compress.
    """
    default_q = quantizers.get(scheme)
    all_layers = list(iter_layers(model))
    by_name = {layer.name: layer for layer in all_layers}
    chosen = []  # (layer, quantizer)
    unsupported = []

    def resolve(value, layer):
        if value is None or value is False:
            return False, None
        if value is True:
            return True, default_q
        return True, quantizers.get(value)

    if layers is None:
        supported = [layer for layer in all_layers if _kernel_names(layer) is not None]
        unsupported = [layer for layer in all_layers if _kernel_names(layer) is None and _looks_compressible(layer)]
        if skip_first_last and len(supported) > 2:
            supported = supported[1:-1]
        elif skip_first_last:
            supported = []
        chosen = [(layer, default_q) for layer in supported]
    elif isinstance(layers, dict):
        for name, value in layers.items():
            if name not in by_name:
                raise ValueError(
                    f"{what}: layer {name!r} not found in model {model.name!r}; layers: {sorted(by_name)}"
                )
            layer = by_name[name]
            use, q = resolve(value, layer)
            if not use:
                continue
            if _kernel_names(layer) is None:
                raise ValueError(
                    f"{what}: layer {name!r} ({type(layer).__name__}) is not supported; supported types: "
                    "Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, LSTM, GRU, Embedding"
                )
            chosen.append((layer, q))
    elif callable(layers):
        for layer in all_layers:
            use, q = resolve(layers(layer), layer)
            if not use:
                if _kernel_names(layer) is None and _looks_compressible(layer):
                    unsupported.append(layer)
                continue
            if _kernel_names(layer) is None:
                raise ValueError(f"{what}: layer {layer.name!r} ({type(layer).__name__}) is not supported")
            chosen.append((layer, q))
    else:
        raise TypeError(f"{what}: `layers` must be None, a dict or a callable, got {type(layers).__name__}")

    if unsupported:
        warnings.warn(
            f"{what}: these layers are not supported and stay float: "
            + ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in unsupported),
            stacklevel=3,
        )
    specs = []
    for layer, q in chosen:
        for spec in supported_kernels(layer):
            spec.quantizer = q
            specs.append(spec)
    if not specs:
        raise ValueError(
            f"{what}: model {model.name!r} has nothing to compress "
            f"(supported layers found: {[l.name for l in all_layers if _kernel_names(l) is not None]}, "
            f"skip_first_last={skip_first_last})"
        )
    return specs
