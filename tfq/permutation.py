"""Channel permutations that group similar output channels into block rows.

Block pruning (`tfq.PruningCallback(block=(rows, cols))`) keeps or drops
`rows` consecutive output channels together over the same `cols` inputs. The
order of a hidden layer's channels is arbitrary, so a block row usually
joins channels that want different inputs, and each loses weights it needs.
`permute_channels` reorders the output channels of a layer so that channels
reading the same inputs sit in the same block row, and reorders whatever reads
those channels to match (the next Dense or convolution's input axis, and the
BatchNormalization, depthwise, pooling and activation layers in between).
The model computes exactly the same function afterwards; only the storage
order of its hidden channels changes.

Measured on LeNet-300-100 at 95% (every layer, 4x4 blocks, ternary; 3 seeds,
docs/compression.md, "Channel permutation"): the permutation turns 95.69% into
96.3-96.4%. Call it on the float model, before the callbacks are created:

    tfq.permute_channels(model, block="auto")
    model.fit(..., callbacks=[tfq.PruningCallback(0.95, block="auto"), ...])

`tfq.compress(..., block=...)` does it by itself.

A layer's channels are permuted only where every reader of them is known:
its output feeds exactly one layer, through a chain of channel-wise layers
(each with one reader) that ends in a Dense, Conv1D or Conv2D layer (after a
Flatten only a Dense layer). A layer whose channels reach a model output, a
merge (Add, Concatenate), a shared layer or anything else is left as it is.
"""

import numpy as np

import keras

from tfq import pruning, quantizers, state
from tfq.kernels import supported_kernels

__all__ = ["permute_channels", "group_rows"]

# Layers that act on each channel of the last axis alone: their per-channel
# weights, if any, are permuted with the channels.
_CHANNELWISE = ("BatchNormalization", "ReLU", "Activation", "LeakyReLU", "ELU", "PReLU", "Dropout",
                "SpatialDropout1D", "SpatialDropout2D", "GaussianNoise", "GaussianDropout", "MaxPooling1D",
                "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
                "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "ZeroPadding1D",
                "ZeroPadding2D", "Cropping1D", "Cropping2D", "UpSampling1D", "UpSampling2D",
                "DepthwiseConv1D", "DepthwiseConv2D")


def group_rows(strips, rows):
    """An order of the rows of `strips` ([channels, strips], non-negative) in groups of `rows` similar rows.

    Greedy: the strongest channel not yet placed opens a group and takes the
    `rows - 1` unplaced channels whose strip profiles are closest to it
    (cosine similarity), so that the channels of a block row want the same
    input strips.

    Returns:
        int64 permutation of range(channels).
    """
    strips = np.asarray(strips, np.float64)
    n = strips.shape[0]
    unit = strips / np.maximum(np.linalg.norm(strips, axis=1, keepdims=True), 1e-30)
    left = list(np.argsort(-strips.sum(1), kind="stable"))
    order = []
    while left:
        seed = left.pop(0)
        order.append(seed)
        if left and rows > 1:
            similar = unit[left] @ unit[seed]
            picks = [left[i] for i in np.argsort(-similar, kind="stable")[: rows - 1]]
            order += picks
            placed = set(picks)
            left = [c for c in left if c not in placed]
    assert len(order) == n
    return np.asarray(order, np.int64)


def _inbound(model):
    """{layer name: names of the layers it reads} and the names of output layers, from the model's config."""
    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        return {b: [a] for a, b in zip(names, names[1:])} | {n: [] for n in names[:1]}, set(names[-1:])
    try:
        config = model.get_config()
        specs = config["layers"]
    except Exception as e:  # noqa: BLE001: a model without a readable graph is not permuted
        raise ValueError(f"permute_channels: cannot read the layer graph of model {model.name!r} ({e})") from None

    def history(x, out):
        if isinstance(x, dict):
            if "keras_history" in x.get("config", {}):
                out.append(x["config"]["keras_history"][0])
            for v in x.values():
                history(v, out)
        elif isinstance(x, (list, tuple)):
            for v in x:
                history(v, out)
        return out

    inbound = {}
    for spec in specs:
        nodes = spec.get("inbound_nodes", [])
        # A layer called more than once shares its weights between calls: it is
        # marked with a sentinel reader so that no chain passes through it.
        inbound[spec["name"]] = history(nodes, []) + (["<shared>"] if len(nodes) > 1 else [])
    # [name, node, index] for one output, a list of those for several.
    entries = config.get("output_layers", [])
    entries = [entries] if entries and isinstance(entries[0], str) else entries
    return inbound, {entry[0] for entry in entries}


def _chain(name, inbound, readers, layers, outputs):
    """The channel-wise layers after `name` and the consumer reading its channels, or None.

    Returns:
        (passthrough layers, flattened, consumer layer) or None.
    """
    through, flattened, current = [], False, name
    while True:
        if current in outputs or len(readers.get(current, [])) != 1:
            return None
        layer = layers[readers[current][0]]
        if "<shared>" in inbound[layer.name]:
            return None
        kind = type(layer).__name__
        if kind in ("Dense", "Conv1D", "Conv2D") and not flattened or kind == "Dense":
            if getattr(layer, "data_format", "channels_last") != "channels_last" or getattr(layer, "groups", 1) != 1:
                return None
            return through, flattened, layer
        if kind == "Flatten" and not flattened:
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                return None
            flattened = True
        elif kind in _CHANNELWISE and not flattened or flattened and kind in ("Dropout", "ReLU", "Activation"):
            if getattr(layer, "data_format", "channels_last") != "channels_last":
                return None
            if kind == "BatchNormalization" and layer.axis not in (-1, [-1], len(layer.input.shape) - 1):
                return None
            if kind.startswith("DepthwiseConv") and layer.depth_multiplier != 1:
                return None
        else:
            return None
        through.append(layer)
        current = layer.name


def _take(variable, perm, axis):
    variable.assign(np.take(np.asarray(variable), perm, axis=axis))


def permute_channels(model, block="auto", layers=None):
    """Reorders hidden channels so that block rows join channels that read the same inputs.

    For each Dense, Conv1D or Conv2D layer whose output channels can be
    permuted (see the module docstring) and whose block has more than one
    row, its channels are grouped by `group_rows` on the weights' magnitude
    summed over each block's `cols` reduction positions, and the layers
    reading them are permuted to match. The model's outputs do not change.

    Args:
        model: a built Keras model, in float (before compression callbacks or
            `tfq.compress` are attached).
        block: the block shape pruning will use: `(rows, cols)`, "RxC", or
            "auto" (`tfq.pruning.auto_shape`, per layer).
        layers: None (every permutable layer) or names of the layers whose
            output channels may be permuted.

    Returns:
        {layer name: permutation}: new channel i of the layer is old channel
        `permutation[i]`.

    Raises:
        ValueError: a block of None, a model already carrying compression
            state, a name in `layers` that is not in the model.
    """
    if block is None:
        raise ValueError("permute_channels: block=None prunes single weights, which no permutation helps; "
                         "pass the block shape pruning will use")
    block = pruning.check_block(block)
    if state.has_any(model):
        raise ValueError(f"permute_channels: model {model.name!r} carries compression training state; permute the "
                         "float model before creating tfq's callbacks")
    by_name = {layer.name: layer for layer in model.layers}
    if layers is not None:
        unknown = sorted(set(layers) - set(by_name))
        if unknown:
            raise ValueError(f"permute_channels: no layer named {', '.join(map(repr, unknown))} in model "
                             f"{model.name!r}")
    inbound, outputs = _inbound(model)
    readers = {}
    for name, sources in inbound.items():
        for source in sources:
            readers.setdefault(source, []).append(name)
    done = {}
    for layer in model.layers:
        if type(layer).__name__ not in ("Dense", "Conv1D", "Conv2D") or layers is not None and layer.name not in layers:
            continue
        if ("<shared>" in inbound.get(layer.name, []) or getattr(layer, "groups", 1) != 1
                or getattr(layer, "data_format", "channels_last") != "channels_last"):
            continue
        chain = _chain(layer.name, inbound, readers, by_name, outputs)
        if chain is None:
            continue
        specs = supported_kernels(layer)
        spec = specs[0]
        grid = pruning.block_grid(spec, block)
        if grid.rows <= 1:
            continue
        magnitude, _ = quantizers.to_rows(np.abs(np.asarray(spec.variable)), grid.axes)
        magnitude = np.asarray(magnitude)
        pad = -magnitude.shape[1] % grid.cols
        strips = np.pad(magnitude, [(0, 0), (0, pad)]).reshape(magnitude.shape[0], -1, grid.cols).sum(2)
        perm = group_rows(strips, grid.rows)
        _permute(layer, perm, *chain)
        done[layer.name] = perm
    return done


def _permute(producer, perm, through, flattened, consumer):
    channels = len(perm)
    _take(producer.kernel, perm, -1)
    if producer.use_bias:
        _take(producer.bias, perm, 0)
    spatial_perm = perm
    for layer in through:
        kind = type(layer).__name__
        if kind == "Flatten":
            # Channels-last flatten: input position p * channels + c.
            positions = int(consumer.kernel.shape[0]) // channels
            spatial_perm = (np.arange(positions)[:, None] * channels + perm[None, :]).ravel()
        elif kind.startswith("DepthwiseConv"):
            _take(layer.kernel, perm, -2)
            if layer.use_bias:
                _take(layer.bias, perm, 0)
        else:  # BatchNormalization, PReLU: per-channel weights on the last axis (1 there: shared)
            for weight in layer.weights:
                if int(weight.shape[-1]) == channels:
                    _take(weight, perm, len(weight.shape) - 1)
    # The consumer reads the channels on its kernel's input axis: rows of a
    # Dense kernel, axis -2 of a convolution's.
    _take(consumer.kernel, spatial_perm, 0 if type(consumer).__name__ == "Dense" else -2)
