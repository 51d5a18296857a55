"""Which kernels of which layers tfq compresses, and how to walk a model's layers.

The one answer to "what is a supported kernel, along which axes are its output
channels, and which layers does a policy select", shared by the callbacks,
`tfq.compress`, `quantize_model`, the size accounting and the converter, so
they all agree.
"""

import dataclasses
import warnings

import keras

from tfq import quantizers

__all__ = ["KernelSpec", "supported_kernels", "select_kernels", "iter_layers", "iter_named", "constraint_owner"]


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


def _kernel_table(layer):
    """(variable name, channel axis, constraint attribute) of a supported layer's kernels, else None.

    The constraint attribute is the layer argument that holds the variable's
    constraint (on the cell for LSTM and GRU): where Keras saves it, and so
    where the compression record lives (`tfq.record`).
    """
    L = keras.layers
    if isinstance(layer, L.SeparableConv2D) or isinstance(layer, L.SeparableConv1D):
        ndim = 4 if isinstance(layer, L.SeparableConv2D) else 3
        return [("depthwise_kernel", (ndim - 2, ndim - 1), "depthwise_constraint"),
                ("pointwise_kernel", -1, "pointwise_constraint")]
    if isinstance(layer, L.DepthwiseConv2D) or isinstance(layer, L.DepthwiseConv1D):
        ndim = 4 if isinstance(layer, L.DepthwiseConv2D) else 3
        return [("kernel", (ndim - 2, ndim - 1), "depthwise_constraint")]
    if isinstance(layer, (L.Conv2DTranspose, L.Conv1DTranspose)):
        # Transposed conv kernels are (..., out_channels, in_channels).
        return [("kernel", -2, "kernel_constraint")]
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Dense)):
        return [("kernel", -1, "kernel_constraint")]
    if isinstance(layer, (L.LSTM, L.GRU)):
        return [("kernel", -1, "kernel_constraint"), ("recurrent_kernel", -1, "recurrent_constraint")]
    if isinstance(layer, L.Embedding):
        return [("embeddings", -1, "embeddings_constraint")]
    return None


def _kernel_names(layer):
    """(variable name, channel axis) pairs of a supported layer, else None."""
    table = _kernel_table(layer)
    return None if table is None else [(name, axis) for name, axis, _ in table]


def constraint_owner(layer, name):
    """(object, attribute) holding the constraint of kernel `name` of a supported layer.

    Raises:
        ValueError: the layer has no compressible kernel of that name.
    """
    for var, _, attr in _kernel_table(layer) or ():
        if var == name:
            return (layer.cell if hasattr(layer, "cell") else layer), attr
    raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) has no compressible kernel {name!r}")


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


def iter_named(model):
    """Every named object inside a model, breadth first: nested models, wrappers
    and the layers they wrap, RNN cells.

    Converted tensors are named after these (an LSTM's kernel after its cell
    inside a `Bidirectional`), so the converter looks them all up by name.
    """
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        yield layer
        stack.extend(getattr(layer, "layers", []) or [])
        inner = getattr(layer, "layer", None)  # wrappers (Bidirectional, TimeDistributed, ...)
        if inner is not None:
            yield inner
        for attr in ("cell", "forward_layer", "backward_layer"):
            sub = getattr(layer, attr, None)
            if sub is not None:
                yield sub


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
