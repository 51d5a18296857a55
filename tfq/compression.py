"""One-call compression: data-free projection with corrections, or ADMM training.

`compress(model, scheme)` without data projects every selected kernel onto the
low-bit set (per-channel optimal scale, `tfq.quantizers`), after cross-layer
weight equalization and followed by analytic bias correction, the two
data-free corrections of Nagel et al. With data it runs the ADMM training of
`tfq.ADMMCallback` (plus `tfq.PruningCallback` when a sparsity is asked for)
with derived hyper-parameters. Either way it returns a new model; the input
model is left untouched.

What applies to which layer is documented in docs/data_free.md.

References:
    Nagel, van Baalen, Blankevoort, Welling. "Data-Free Quantization Through
    Weight Equalization and Bias Correction", ICCV 2019.
    Leng, Dou, Li, Zhu, Jin. "Extremely Low Bit Neural Network: Squeeze the
    Last Bit Out with ADMM", AAAI 2018.
"""

import dataclasses
import math
import statistics
import sys
import time

import numpy as np

from tfq import schemes

# Support points per channel for the BN-derived activation distributions.
_QUANTILES = 256


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------


@dataclasses.dataclass
class LayerReport:
    """What happened to one layer."""

    name: str
    kind: str
    scheme: str  # "float" when the layer was left alone
    params: int
    sparsity: float = 0.0
    bits: float = 32.0
    relative_error: float = 0.0  # ||W_q - W|| / ||W|| over the layer's kernels
    corrections: tuple = ()


@dataclasses.dataclass
class CompressionReport:
    """Summary returned by `compress(..., return_report=True)`.

    Sizes count weight bytes as the converter stores them: 4 bytes per float
    parameter, packed codes (`bits` per weight, docs/format.md) plus one
    float32 scale per channel for compressed kernels.
    """

    mode: str
    scheme: str
    layers: list
    float_bytes: int
    compressed_bytes: int
    seconds: float
    accuracy_before: float = None
    accuracy_after: float = None
    settings: dict = dataclasses.field(default_factory=dict)

    @property
    def ratio(self):
        return self.float_bytes / max(self.compressed_bytes, 1)

    def to_dict(self):
        d = dataclasses.asdict(self)
        d["ratio"] = self.ratio
        return d

    def to_markdown(self):
        lines = [f"**tfq.compress** ({self.mode}, scheme `{self.scheme}`, {self.seconds:.1f} s)", ""]
        lines.append("| | before | after |")
        lines.append("|---|---|---|")
        if self.accuracy_before is not None or self.accuracy_after is not None:
            lines.append(f"| accuracy | {_fmt_acc(self.accuracy_before)} | {_fmt_acc(self.accuracy_after)} |")
        lines.append(f"| weight bytes | {self.float_bytes:,} | {self.compressed_bytes:,} |")
        lines.append(f"| compression | 1.0x | {self.ratio:.1f}x |")
        lines.append("")
        lines.append("| layer | kind | scheme | params | bits | sparsity | rel. error | corrections |")
        lines.append("|---|---|---|---:|---:|---:|---:|---|")
        for l in self.layers:
            lines.append(
                f"| {l.name} | {l.kind} | {l.scheme} | {l.params:,} | {l.bits:g} | {l.sparsity:.1%} "
                f"| {l.relative_error:.3f} | {', '.join(l.corrections) or '-'} |"
            )
        return "\n".join(lines)

    def __str__(self):
        return self.to_markdown()


def _fmt_acc(a):
    return "-" if a is None else f"{100 * a:.2f}%"


# --------------------------------------------------------------------------
# Layers and kernels
# --------------------------------------------------------------------------


def _layer_kind(layer):
    return type(layer).__name__


def _select(model, scheme, layers, skip_first_last):
    """Resolves the policy with the core's `select_kernels` (same layers and axes as ADMM).

    Returns:
        ({layer name: quantizer}, {layer name: [(variable name, variable, channel axis)]}).
    """
    from tfq.layers.kernels import select_kernels

    chosen, specs = {}, {}
    for spec in select_kernels(model, scheme, layers, skip_first_last, what="tfq.compress"):
        chosen[spec.layer.name] = spec.quantizer
        specs.setdefault(spec.layer.name, []).append((spec.name, spec.variable, spec.channel_axis))
    return chosen, specs


def _all_kernels(layer):
    from tfq.layers.kernels import supported_kernels

    return [(k.name, k.variable, k.channel_axis) for k in (supported_kernels(layer) or [])]


def _first_line(err):
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def _flat_layers(model):
    """Layers in order, descending into nested models."""
    import keras

    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out.extend(_flat_layers(layer))
        else:
            out.append(layer)
    return out


def _clone(model):
    import keras

    import tfq.layers  # noqa: F401  (registers tfq layers for cloning)

    try:
        clone = keras.models.clone_model(model)
    except (TypeError, ValueError, NotImplementedError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(
            f"tfq.compress cannot copy model {model.name!r} ({type(model).__name__}): it needs a Sequential or "
            f"functional model, or a subclassed model whose get_config/from_config round-trip ({first})"
        ) from err
    clone.set_weights(model.get_weights())
    return clone


# --------------------------------------------------------------------------
# Graph
# --------------------------------------------------------------------------


class _Graph:
    """Producer/consumer links between the layers of a Sequential or functional model."""

    def __init__(self, model):
        import keras

        self.layers = {l.name: l for l in model.layers}
        self.inputs = {}  # name -> [producer names]
        self.known = True
        if isinstance(model, keras.Sequential):
            prev = None
            for layer in model.layers:
                self.inputs[layer.name] = [prev] if prev else []
                prev = layer.name
        else:
            try:
                config = model.get_config()
                for lc in config["layers"]:
                    producers = []
                    for node in lc.get("inbound_nodes", []):
                        _collect_history(node, producers)
                    self.inputs[lc["name"]] = producers
            except (KeyError, TypeError, NotImplementedError):
                self.known = False  # subclassed model: no graph, no corrections
        self.outputs = {}
        for name, producers in self.inputs.items():
            for p in producers:
                self.outputs.setdefault(p, []).append(name)

    def single_input(self, name):
        producers = self.inputs.get(name, [])
        if len(producers) != 1 or producers[0] not in self.layers:
            return None
        return self.layers[producers[0]]

    def single_output(self, name):
        consumers = self.outputs.get(name, [])
        if len(consumers) != 1 or consumers[0] not in self.layers:
            return None
        return self.layers[consumers[0]]


def _collect_history(obj, out):
    if isinstance(obj, dict):
        if "keras_history" in obj.get("config", {}) if isinstance(obj.get("config"), dict) else False:
            out.append(obj["config"]["keras_history"][0])
            return
        for v in obj.values():
            _collect_history(v, out)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _collect_history(v, out)


# --------------------------------------------------------------------------
# Distributions derived from batch norm (for bias correction)
# --------------------------------------------------------------------------


class _ChannelDist:
    """Per-channel distributions as weighted support points, shape [C, K].

    A batch norm's output channel c is taken to be N(beta_c, gamma_c^2)
    (Nagel et al., sec. 4.2); elementwise activations map the support points;
    after averaging only the mean is kept meaningful.
    """

    _grid = None

    def __init__(self, values, weights, exact_shape=True):
        self.values = values
        self.weights = weights
        self.exact_shape = exact_shape  # False after averaging: only the mean is right

    @classmethod
    def gaussian(cls, mu, sigma):
        if cls._grid is None:
            nd = statistics.NormalDist()
            cls._grid = np.array([nd.inv_cdf((k + 0.5) / _QUANTILES) for k in range(_QUANTILES)])
        values = mu[:, None] + np.abs(sigma)[:, None] * cls._grid[None, :]
        weights = np.full(values.shape, 1.0 / _QUANTILES)
        return cls(values, weights)

    def map(self, fn):
        values = np.asarray(fn(self.values), dtype=np.float64)
        order = np.argsort(values, axis=1, kind="stable")
        return _ChannelDist(
            np.take_along_axis(values, order, 1), np.take_along_axis(self.weights, order, 1), self.exact_shape
        )

    def averaged(self):
        return _ChannelDist(self.values, self.weights, exact_shape=False)

    def mean(self):
        return np.sum(self.values * self.weights, axis=1)

    def second_moment(self):
        return np.sum(self.values**2 * self.weights, axis=1)


def _bn_output_dist(bn):
    gamma = _np(bn.gamma) if bn.scale else np.ones(bn.moving_mean.shape)
    beta = _np(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
    return _ChannelDist.gaussian(beta.astype(np.float64), gamma.astype(np.float64))


def _activation_fn(layer):
    """The elementwise function a layer applies, as numpy -> numpy, or None."""
    import keras

    L = keras.layers
    if isinstance(layer, L.Activation):
        name = layer.get_config().get("activation")
        if name in ("softmax", "log_softmax"):
            return None
        fn = keras.activations.get(name)
    elif isinstance(layer, (L.ReLU, L.LeakyReLU, L.ELU)):
        fn = layer
    else:
        return None
    return lambda v: keras.ops.convert_to_numpy(fn(v.astype(np.float32).T)).T.astype(np.float64)


def _is_identity_at_inference(layer):
    import keras

    L = keras.layers
    return isinstance(
        layer, (L.Dropout, L.SpatialDropout1D, L.SpatialDropout2D, L.GaussianNoise, L.GaussianDropout, L.AlphaDropout)
    ) or _layer_kind(layer) == "Identity"


def _input_stats(graph, layer):
    """Distribution of the input channels of `layer`, from the nearest batch norm upstream.

    Returns (dist, tile, path) where tile > 1 means the layer sees the
    channels flattened with `tile` spatial positions, or None when the input
    is not described by a batch norm through layers we can model.
    """
    import keras

    L = keras.layers
    path = []
    node = graph.single_input(layer.name)
    while node is not None and not isinstance(node, L.BatchNormalization):
        path.append(node)
        node = graph.single_input(node.name)
    if node is None or node.axis not in (-1, len(node.input.shape) - 1):
        return None
    dist = _bn_output_dist(node)
    tile = 1
    for op in reversed(path):
        if getattr(op, "data_format", "channels_last") == "channels_first":
            return None
        fn = _activation_fn(op)
        if fn is not None:
            if not dist.exact_shape or tile > 1:
                return None
            dist = dist.map(fn)
        elif _is_identity_at_inference(op):
            continue
        elif isinstance(op, (L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D)):
            # Neighbouring activations are strongly correlated, so the maximum of
            # a small window is close to any one of them: keep the distribution.
            # (The maximum of independent draws overestimated the mean two- to
            # three-fold after conv-BN-ReLU on MNIST.)
            continue
        elif isinstance(
            op,
            (L.AveragePooling1D, L.AveragePooling2D, L.AveragePooling3D, L.GlobalAveragePooling1D,
             L.GlobalAveragePooling2D, L.GlobalAveragePooling3D),
        ):
            dist = dist.averaged()
        elif isinstance(op, L.Flatten):
            spatial = op.input.shape[1:-1]
            if any(s is None for s in spatial):
                return None
            tile *= int(np.prod(spatial)) if len(spatial) else 1
        else:
            return None
    return dist, tile, [node.name] + [op.name for op in reversed(path)]


# --------------------------------------------------------------------------
# Expected responses (for bias correction)
# --------------------------------------------------------------------------


def _np(v):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(v))


def _mean_response(layer, kernels, mu):
    """E[output] - bias of `layer` for inputs with per-channel mean mu (padding ignored).

    Returns None for layers whose mean response is not a per-channel constant.
    """
    import keras

    L = keras.layers
    if getattr(layer, "data_format", "channels_last") == "channels_first":
        return None
    if isinstance(layer, (L.SeparableConv2D, getattr(L, "SeparableConv1D", L.SeparableConv2D))):
        dw, pw = kernels["depthwise_kernel"], kernels["pointwise_kernel"]
        taps = dw.reshape(-1, dw.shape[-2], dw.shape[-1]).sum(0)  # [C, M]
        mid = (taps * mu[:, None]).reshape(-1)
        return pw.reshape(-1, pw.shape[-1]).T @ mid if pw.shape[-2] == mid.shape[0] else None
    if isinstance(layer, (L.DepthwiseConv2D, getattr(L, "DepthwiseConv1D", L.DepthwiseConv2D))):
        k = kernels["kernel"]
        taps = k.reshape(-1, k.shape[-2], k.shape[-1]).sum(0)  # [C, M]
        return (taps * mu[:, None]).reshape(-1)
    if isinstance(layer, (L.Conv1D, L.Conv2D, L.Conv3D)) and not isinstance(
        layer, (L.Conv2DTranspose, L.Conv1DTranspose, L.Conv3DTranspose)
    ):
        if getattr(layer, "groups", 1) != 1:
            return None
        k = kernels["kernel"]
        taps = k.reshape(-1, k.shape[-2], k.shape[-1]).sum(0)  # [I, O]
        return mu @ taps if taps.shape[0] == mu.shape[0] else None
    if isinstance(layer, L.Dense):
        k = kernels["kernel"]
        return mu @ k if k.shape[0] == mu.shape[0] else None
    return None


def _bias_target(graph, layer):
    """Where an output shift of `layer` can be cancelled: ('bias', layer) or ('bn', bn) or None."""
    import keras

    if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
        return "bias", layer
    nxt = graph.single_output(layer.name)
    if isinstance(nxt, keras.layers.BatchNormalization) and _is_linear(layer):
        return "bn", nxt
    return None


def _is_linear(layer):
    import keras

    act = getattr(layer, "activation", None)
    return act is None or keras.activations.serialize(act) in ("linear", None)


# --------------------------------------------------------------------------
# Cross-layer equalization
# --------------------------------------------------------------------------


def _positive_homogeneous(layer):
    """True for layers f with f(x / s) = f(x) / s for s > 0, per channel."""
    import keras

    L = keras.layers
    if _is_identity_at_inference(layer):
        return True
    pools = (
        L.MaxPooling1D, L.MaxPooling2D, L.MaxPooling3D, L.AveragePooling1D, L.AveragePooling2D,
        L.AveragePooling3D, L.GlobalMaxPooling1D, L.GlobalMaxPooling2D, L.GlobalMaxPooling3D,
        L.GlobalAveragePooling1D, L.GlobalAveragePooling2D, L.GlobalAveragePooling3D,
    )
    if isinstance(layer, pools):
        return True
    if isinstance(layer, L.ReLU):
        c = layer.get_config()
        return c.get("max_value") is None and not c.get("threshold")
    if isinstance(layer, L.LeakyReLU):
        return True
    if isinstance(layer, L.Activation):
        return layer.get_config().get("activation") in ("relu", "linear", "leaky_relu")
    return False


def _fused_positive_homogeneous(layer):
    import keras

    act = getattr(layer, "activation", None)
    return act is None or keras.activations.serialize(act) in ("linear", "relu", "leaky_relu")


def _out_scalable(layer):
    import keras

    L = keras.layers
    return type(layer) in (L.Dense, L.Conv1D, L.Conv2D, L.DepthwiseConv2D) and getattr(layer, "groups", 1) == 1 and (
        getattr(layer, "data_format", "channels_last") == "channels_last"
    )


def _in_scalable(layer):
    import keras

    L = keras.layers
    return type(layer) in (L.Dense, L.Conv1D, L.Conv2D, L.DepthwiseConv2D, L.SeparableConv2D) and getattr(
        layer, "groups", 1
    ) == 1 and getattr(layer, "data_format", "channels_last") == "channels_last"


def _equalization_pairs(graph, chosen):
    """(first, bn or None, second) triples where output channels of `first` can be rescaled into `second`."""
    import keras

    pairs = []
    for name, layer in graph.layers.items():
        if not _out_scalable(layer) or not _fused_positive_homogeneous(layer):
            continue
        node, bn, ok = graph.single_output(name), None, True
        if isinstance(node, keras.layers.BatchNormalization):
            if not _is_linear(layer):
                continue  # f(Wx) followed by BN: BN does not commute with the scaling
            if not node.scale:
                continue
            bn, node = node, graph.single_output(node.name)
        while node is not None and not _in_scalable(node):
            if not _positive_homogeneous(node):
                ok = False
                break
            node = graph.single_output(node.name)
        per_tensor_first = name in chosen and not chosen[name].per_channel and bn is None
        if ok and node is not None and (node.name in chosen or per_tensor_first):
            pairs.append((layer, bn, node))
    return pairs


def _out_ranges(layer, bn):
    k = _np(layer.kernel)
    r = np.abs(k.reshape(-1, int(np.prod(k.shape[-2:])) if _layer_kind(layer) == "DepthwiseConv2D" else k.shape[-1]))
    r = r.max(0)
    if bn is not None:
        gamma = _np(bn.gamma) if bn.scale else 1.0
        r = r * np.abs(gamma) / np.sqrt(_np(bn.moving_variance) + bn.epsilon)
    return r


def _scale_out(layer, k, s):
    """Kernel k with output channel o multiplied by s[o] (depthwise: o = c * M + m)."""
    if _layer_kind(layer) == "DepthwiseConv2D":
        return k * s.reshape(k.shape[-2:])
    return _scale_axis(k, s, k.ndim - 1)


def _in_kernel(layer):
    """(attribute, kernel array, input-channel axis) of a layer's first kernel."""
    if _layer_kind(layer) == "SeparableConv2D":
        k = _np(layer.depthwise_kernel)
        return "depthwise_kernel", k, k.ndim - 2
    k = _np(layer.kernel)
    return "kernel", k, (0 if k.ndim == 2 else k.ndim - 2)


def _scale_axis(a, s, axis):
    shape = [1] * a.ndim
    shape[axis] = -1
    return a * s.reshape(shape)


def _quant_error(quantizer, k, axis, weight_in=None, in_axis=None, in_scale=None):
    """Squared projection error of kernel k in the original coordinates."""
    q, _ = quantizer.project(k.astype(np.float32), channel_axis=axis)
    q = _np(q).astype(np.float64)
    diff = q - k
    if in_scale is not None:
        diff = _scale_axis(diff, 1.0 / in_scale, in_axis)
    d2 = diff**2
    if weight_in is not None:
        d2 = _scale_axis(d2, weight_in, in_axis)
    return float(d2.sum())


# Equalization is applied only when the modelled error of the pair drops by at
# least this fraction. The model assumes independent input channels; on the
# small BN CNN (MNIST) scalings with a modelled gain of 0-5% cost up to 10
# points of accuracy for pow2_4bit and ternary, while unbalanced networks gain
# well over 50%.
_MIN_EQUALIZATION_GAIN = 0.1


def _input_power(graph, first, bn, second, centered):
    """E[x_i^2] (Var[x_i] when `centered`) of the second layer's input channels, up to a common factor.

    From the batch norm statistics when there are any (centered when bias
    correction will remove the mean part of the error); otherwise from the
    first layer's weights (output power ~ ||W1[..., i]||^2 for inputs of equal
    power).
    """
    stats = _input_stats(graph, second)
    if stats is not None and stats[1] == 1:
        dist = stats[0]
        power = dist.second_moment()
        return np.maximum(power - dist.mean() ** 2, 1e-12 * power.max()) if centered else power
    k1 = _np(first.kernel).astype(np.float64)
    if _layer_kind(first) == "DepthwiseConv2D":
        power = (k1**2).reshape(-1, k1.shape[-2] * k1.shape[-1]).sum(0)
    else:
        power = (k1**2).reshape(-1, k1.shape[-1]).sum(0)
    if bn is not None:
        power = power * (_np(bn.gamma) ** 2) / (_np(bn.moving_variance) + bn.epsilon)
    return power


def _equalize(graph, chosen, specs, bias_correction=False):
    """Cross-layer equalization (Nagel et al. sec. 4.1), kept only where it lowers the quantization error.

    For each pair (first, second) with a positive-homogeneous path between
    them, the output channel i of `first` is divided by s_i and the input
    channel i of `second` multiplied by s_i, which leaves the float function
    unchanged. With per-output-channel scales the first layer's error does not
    move; the second layer's error, measured in the original coordinates and
    weighted by the power of each input channel, decides. Candidates: Nagel's
    range balance s = sqrt(r1 / r2), and the importance balance
    s = (sqrt(p) / r2)^a for a in (0.5, 1) (rows of the second kernel get
    ranges proportional to the signal they carry). The best candidate is kept
    when it beats no scaling.

    Returns {layer name: note} for the layers that were rescaled.
    """
    notes = {}
    for first, bn, second in _equalization_pairs(graph, chosen):
        attr, k2, in_axis = _in_kernel(second)
        c = k2.shape[in_axis]
        r1 = _out_ranges(first, bn)
        if r1.shape[0] != c:
            continue
        r2 = np.abs(np.moveaxis(k2, in_axis, 0).reshape(c, -1)).max(1)
        power = _input_power(graph, first, bn, second, centered=bias_correction)
        if power.shape[0] != c:
            continue
        q2 = chosen.get(second.name)  # None: the second layer stays float, only the first one gains
        if q2 is not None:
            axis2 = dict((a, ax) for a, _, ax in specs[second.name])[attr]
            base2 = _quant_error(q2, k2, axis2, power, in_axis)
        per_tensor_first = first.name in chosen and bn is None and not chosen[first.name].per_channel
        if per_tensor_first:
            k1 = _np(first.kernel).astype(np.float64)
            ax1 = dict((a, ax) for a, _, ax in specs[first.name])["kernel"]
            base1 = _quant_error(chosen[first.name], k1, ax1)
        with np.errstate(divide="ignore", invalid="ignore"):
            candidates = [np.sqrt(r1 / r2)] + [(np.sqrt(power) / r2) ** a for a in (0.5, 1.0)]
        best, best_cost = None, 2.0 - _MIN_EQUALIZATION_GAIN
        for s in candidates:
            s = np.where(np.isfinite(s) & (s > 0), s, 1.0)
            s = s / np.exp(np.mean(np.log(s)))  # only relative scales matter; keep magnitudes near 1
            s = np.clip(s, 1e-4, 1e4)
            cost = 1.0
            if q2 is not None:
                cost = _quant_error(q2, _scale_axis(k2, s, in_axis), axis2, power, in_axis, in_scale=s) / max(
                    base2, 1e-30
                )
            if per_tensor_first:
                cost += _quant_error(chosen[first.name], _scale_out(first, k1, 1.0 / s), ax1) / max(base1, 1e-30)
            else:
                cost += 1.0
            if cost < best_cost:
                best, best_cost = s, cost
        if best is None:
            continue
        s = best
        # Apply: first layer's outputs (or its BN) divided by s, second layer's inputs multiplied by s.
        if bn is not None:
            bn.gamma.assign(_np(bn.gamma) / s)
            if bn.center:
                bn.beta.assign(_np(bn.beta) / s)
        else:
            first.kernel.assign(_scale_out(first, _np(first.kernel), 1.0 / s).astype(np.float32))
            if getattr(first, "use_bias", False):
                first.bias.assign((_np(first.bias) / s).astype(np.float32))
        getattr(second, attr).assign(_scale_axis(k2, s, in_axis).astype(np.float32))
        notes[second.name] = f"equalized with {first.name} (-{2 - best_cost:.0%} error)"
        notes.setdefault(first.name, f"equalized with {second.name}")
    return notes


# --------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------


class _Progress:
    """A one-line progress bar on stderr, one step per layer."""

    def __init__(self, total, label, verbose):
        self.total, self.label, self.verbose = total, label, verbose
        self.done = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, what):
        self.done += 1
        if not self.verbose:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"{self.label} [{'=' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{time.perf_counter() - self.t0:5.1f}s {what}"
        )
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


# --------------------------------------------------------------------------
# Data-free compression
# --------------------------------------------------------------------------


def _magnitude_mask(k, sparsity):
    if not sparsity:
        return None
    n_prune = int(round(sparsity * k.size))
    if n_prune <= 0:
        return None
    threshold = np.partition(np.abs(k).reshape(-1), n_prune - 1)[n_prune - 1]
    mask = (np.abs(k) > threshold).astype(np.float32)
    return mask


def _data_free(model, chosen, specs, sparsity, corrections, verbose):
    graph = _Graph(model)
    layers = {l.name: l for l in _flat_layers(model)}
    notes = {}
    do_eq = corrections in (True, "all", "equalization")
    do_bc = corrections in (True, "all", "bias")
    if corrections and not graph.known:
        print(
            "tfq.compress: the model has no layer graph (subclassed model); skipping the data-free corrections.",
            file=sys.stderr,
        )
        do_eq = do_bc = False
    if do_eq:
        for name, note in _equalize(graph, chosen, specs, bias_correction=do_bc).items():
            notes.setdefault(name, []).append(note.split(" (")[0] if name not in chosen else note)

    # Input statistics are read after equalization (which rescales BN gamma/beta).
    stats = {}
    if do_bc:
        for name in chosen:
            s = _input_stats(graph, layers[name])
            if s is not None:
                stats[name] = s

    progress = _Progress(len(chosen), "data-free", verbose)
    reports = {}
    for name, quantizer in chosen.items():
        layer = layers[name]
        float_k, quant_k = {}, {}
        err_num = err_den = 0.0
        zeros = total = 0
        for attr, var, axis in specs[name]:
            k = _np(var).astype(np.float32)
            if not np.all(np.isfinite(k)):
                raise ValueError(f"Layer {name!r}: {attr} contains NaN or Inf; cannot compress it.")
            mask = _magnitude_mask(k, sparsity)
            q, _ = quantizer.project(k, mask=mask, channel_axis=axis)
            q = _np(q).astype(np.float32)
            var.assign(q)
            float_k[attr], quant_k[attr] = k.astype(np.float64), q.astype(np.float64)
            err_num += float(((q - k) ** 2).sum())
            err_den += float((k.astype(np.float64) ** 2).sum())
            zeros += int((q == 0).sum())
            total += q.size
        applied = list(notes.get(name, []))
        if name in stats:
            dist, tile, src = stats[name]
            mu = np.tile(dist.mean(), tile)
            r_q = _mean_response(layer, quant_k, mu)
            r_f = _mean_response(layer, float_k, mu)
            target = _bias_target(graph, layer)
            if r_q is not None and target is not None:
                delta = r_q - r_f
                kind, holder = target
                if kind == "bias":
                    holder.bias.assign((_np(holder.bias) - delta).astype(np.float32))
                else:
                    holder.moving_mean.assign((_np(holder.moving_mean) + delta).astype(np.float32))
                applied.append(f"bias corrected from {src[0]}" + (" via BN mean" if kind == "bn" else ""))
        reports[name] = LayerReport(
            name=name,
            kind=_layer_kind(layer),
            scheme=quantizer.name,
            params=total,
            sparsity=zeros / max(total, 1),
            bits=schemes.get(quantizer.name).storage_bits,
            relative_error=math.sqrt(err_num / max(err_den, 1e-30)),
            corrections=tuple(applied),
        )
        progress.step(name)
    return reports, notes


# --------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------


def weight_bytes(model, reports=None):
    """(float bytes, compressed bytes) of a model's weights, as the converter stores them."""
    reports = reports or {}
    float_bytes = compressed = 0
    seen = set()
    for layer in _flat_layers(model):
        compressed_attrs = {}
        if layer.name in reports and reports[layer.name].scheme != "float":
            bits = reports[layer.name].bits
            for attr, var, axis in _all_kernels(layer):
                compressed_attrs[id(var)] = (bits, var, axis)
        for w in layer.weights:
            if id(w) in seen:
                continue
            seen.add(id(w))
            n = int(np.prod(w.shape))
            if not w.trainable and _layer_kind(layer) != "BatchNormalization":
                continue  # optimizer-free state such as masks and ADMM variables is not part of the model
            float_bytes += 4 * n
            if id(w) in compressed_attrs:
                bits, var, axis = compressed_attrs[id(w)]
                axes = axis if isinstance(axis, tuple) else (axis,)
                channels = int(np.prod([w.shape[a] for a in axes]))
                compressed += math.ceil(n * bits / 8) + 4 * channels
            else:
                compressed += 4 * n
    return float_bytes, compressed


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def compress(
    model,
    scheme="ternary",
    sparsity=None,
    data=None,
    validation_data=None,
    epochs=None,
    *,
    layers=None,
    skip_first_last=True,
    corrections=True,
    learning_rate=None,
    batch_size=None,
    verbose=1,
    return_report=False,
    keep_training_state=False,
    strategy=None,
):
    """Compresses a Keras 3 model to low-bit weights in one call.

    Without `data`, every selected kernel is projected onto the scheme's set
    with the optimal per-channel scale, after cross-layer equalization and
    followed by bias correction from batch-norm statistics (Nagel et al.);
    this takes seconds. With `data`, the model is fine-tuned with ADMM (and
    gradient-aware pruning when `sparsity` is set) with hyper-parameters
    derived from the data size (`derive_schedule`, docs/cli.md).

    Args:
        model: a built Keras 3 model. It is not modified.
        scheme: "binary", "ternary", "pow2_3bit", "pow2_4bit" or a
            `tfq.quantizers` quantizer: the default scheme.
        sparsity: fraction of weights to set to zero, in [0, 1). Without data
            the smallest magnitudes are pruned per layer before projection.
        data: training data (a `tf.data.Dataset` of (x, y) batches, or a tuple
            (x, y) of arrays). None selects the data-free path.
        validation_data: same forms as `data`; used for the accuracy in the
            report (and, with data, for the Keras logs).
        epochs: training epochs on the data path (derived when None).
        corrections: data-free corrections: True (equalization and bias
            correction), False, "bias" or "equalization".
        layers: which layers, as for `tfq.ADMMCallback`: None (every
            supported layer, except the first and last when
            `skip_first_last`), a dict {layer name: scheme, True or None}
            naming exactly the layers to compress, or a function
            layer -> scheme, True or None.
        skip_first_last: with `layers=None`, keep the first and last
            supported layers in float (their few weights matter most).
        learning_rate: optimizer learning rate on the data path (derived when None).
        batch_size: batch size when `data` is given as arrays (default 128).
        verbose: 0 silent, 1 progress bars.
        return_report: also return a `CompressionReport`.
        keep_training_state: keep the ADMM and pruning state and the
            optimizer on the returned model (compiled, to resume training with
            the callbacks). By default the returned model is stripped
            (`strip_training_state`: uncompiled, no state), so its saved
            file is no larger than its float parent's.
        strategy: a `tf.distribute` strategy to train with on the data path,
            e.g. `tfq.distribute.multi_worker_strategy()` on every worker of
            a multi-machine job (call `compress` outside its scope, with the
            same model and arguments on every worker; docs/distributed.md).
            With several workers `data` as arrays is split between them by
            Keras; a `tf.data.Dataset` is sharded by its auto-shard policy.

    Returns:
        The compressed model, or (model, report) when `return_report` is set.

    Raises:
        ValueError: unknown scheme, sparsity outside [0, 1), a model with
            nothing to compress, a layer named in `layers` that is missing or
            cannot be compressed, NaN or Inf in a kernel, a model that cannot
            be copied.
        TypeError: `model` is not a Keras model.

    References:
        Nagel et al., "Data-Free Quantization Through Weight Equalization and
        Bias Correction", ICCV 2019. Leng et al., "Extremely Low Bit Neural
        Network: Squeeze the Last Bit Out with ADMM", AAAI 2018.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"compress expects a keras.Model, got {type(model).__name__}.")
    if sparsity is not None and not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    if corrections not in (True, False, None, "all", "bias", "equalization"):
        raise ValueError(f"corrections must be True, False, 'bias' or 'equalization', got {corrections!r}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on an input or give it an Input first.")
    t0 = time.perf_counter()
    if data is None:
        small = _clone(model)
        chosen, specs = _select(small, scheme, layers, skip_first_last)
        reports, _ = _data_free(small, chosen, specs, sparsity, corrections, verbose)
        _record(small, specs, chosen)
        mode = "data-free"
        acc_before = acc_after = None
        if validation_data is not None:
            acc_before = evaluate_accuracy(model, validation_data, batch_size)
            acc_after = evaluate_accuracy(small, validation_data, batch_size)
        settings = {"corrections": corrections, "sparsity": sparsity, "skip_first_last": skip_first_last}
    else:
        small, reports, acc_before, acc_after, settings = _with_data(
            model, scheme, sparsity, data, validation_data, epochs,
            layers=layers, skip_first_last=skip_first_last, learning_rate=learning_rate, batch_size=batch_size,
            verbose=verbose, strategy=strategy,
        )
        mode = "admm" + (" + pruning" if sparsity else "")
    if not keep_training_state:
        small = strip_training_state(small)
    all_reports = []
    for layer in _flat_layers(small):
        if layer.name in reports:
            all_reports.append(reports[layer.name])
        elif _all_kernels(layer):
            n = sum(int(np.prod(v.shape)) for _, v, _ in _all_kernels(layer))
            all_reports.append(LayerReport(layer.name, _layer_kind(layer), "float", n))
    float_bytes, comp_bytes = weight_bytes(small, reports)
    report = CompressionReport(
        mode=mode,
        scheme=scheme if isinstance(scheme, str) else getattr(scheme, "name", "mixed"),
        layers=all_reports,
        float_bytes=float_bytes,
        compressed_bytes=comp_bytes,
        seconds=time.perf_counter() - t0,
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        settings=settings,
    )
    if return_report:
        return small, report
    return small


# Where tfq.callbacks attaches its state to the model (`_KernelStateCallback._attach_state`).
_STATE_ATTRS = ("_tfq_admm", "_tfq_pruning")


def strip_training_state(model):
    """A copy of a compressed model without what only training needs.

    `tfq.ADMMCallback` and `tfq.PruningCallback` keep their state on the model
    (three kernel-sized ADMM tensors per compressed kernel, the pruning masks
    and slopes) so that `model.save` and `BackupAndRestore` can resume a run,
    and the optimizer keeps its own (Adam: two more kernel-sized tensors).
    A model that is done training needs none of it. Like TFMOT's
    `strip_pruning`, this returns an uncompiled copy with the same weights
    (still exactly in their sets) and the same `tfq_compression` marks; its
    `.keras` file is no larger than that of an uncompiled float model.
    `tfq.compress` calls it unless `keep_training_state=True`; after `fit`
    with the callbacks, call it yourself before saving the final model.

    Args:
        model: a Keras model (Sequential, functional, or a subclassed model
            whose config round-trips).

    Returns:
        A new, uncompiled `keras.Model` (`model` itself when it is not
        compiled and carries no state).
    """
    import keras

    import tfq.layers  # noqa: F401  (registers tfq layers for deserialization)

    if not model.compiled and not any(attr in vars(model) for attr in _STATE_ATTRS):
        return model  # nothing to strip (the data-free path): no copy
    # From the config without its compile part: clone_model would compile (and so build) a new optimizer.
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    try:
        stripped = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ValueError(f"strip_training_state cannot copy model {model.name!r} ({type(model).__name__}): "
                         f"its config does not round-trip ({_first_line(err)})") from err
    stripped.set_weights(model.get_weights())
    marks = {l.name: getattr(l, "tfq_compression", None) for l in _flat_layers(model)}
    for layer in _flat_layers(stripped):
        if marks.get(layer.name):
            object.__setattr__(layer, "tfq_compression", dict(marks[layer.name]))
    return stripped


# --------------------------------------------------------------------------
# With data: ADMM (+ pruning) with derived hyper-parameters
# --------------------------------------------------------------------------

# Target pull per epoch, as the fraction of the distance to G a kernel keeps
# after one epoch of proximal steps: (1 + lr*rho)^-S ~ exp(-S*lr*rho). The ADMM
# phase starts gentle (S*lr*rho = 0.5: the loss still moves the weights) and
# ends firm (S*lr*rho = 20: the kernels sit on the set before fine-tuning).
_PULL_START, _PULL_END = 0.5, 20.0
_TARGET_STEPS = 2500  # optimizer steps of the whole run when epochs is not given


def derive_schedule(steps_per_epoch, epochs=None, learning_rate=None):
    """The derived ADMM hyper-parameters for a run (see docs/cli.md, "Defaults with data").

    Args:
        steps_per_epoch: optimizer steps per epoch.
        epochs: total epochs (ADMM + one fine-tuning epoch); derived when None
            as about 2500 steps, between 3 and 30 epochs.
        learning_rate: Adam learning rate (default 1e-3).

    Returns:
        dict with epochs, finetune_epochs, learning_rate, rho, rho_growth, rho_max.
    """
    steps = max(int(steps_per_epoch), 1)
    lr = float(learning_rate) if learning_rate else 1e-3
    if epochs is None:
        epochs = min(max(math.ceil(_TARGET_STEPS / steps), 3), 30)
    epochs = int(epochs)
    finetune = 1 if epochs >= 2 else 0
    admm_epochs = max(epochs - finetune, 1)
    rho0 = _PULL_START / (steps * lr)
    growth = (_PULL_END / _PULL_START) ** (1.0 / max(admm_epochs - 1, 1))
    return {
        "epochs": epochs,
        "finetune_epochs": finetune,
        "learning_rate": lr,
        "rho": rho0,
        "rho_growth": growth,
        "rho_max": rho0 * (_PULL_END / _PULL_START) * 2,
        "steps_per_epoch": steps,
    }


def _default_loss(model, y_sample):
    import keras

    last = model.layers[-1]
    act = getattr(last, "activation", None)
    softmax = (act is not None and keras.activations.serialize(act) == "softmax") or isinstance(
        last, keras.layers.Softmax
    ) or (isinstance(last, keras.layers.Activation) and last.get_config().get("activation") == "softmax")
    y = np.asarray(y_sample)
    one_hot = y.ndim >= 2 and y.shape[-1] > 1
    if one_hot:
        return keras.losses.CategoricalCrossentropy(from_logits=not softmax)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=not softmax)


def _with_data(model, scheme, sparsity, data, validation_data, epochs, *, layers, skip_first_last, learning_rate,
               batch_size, verbose, strategy=None):
    import contextlib

    import keras

    from tfq import callbacks as tfq_callbacks

    if epochs is not None and int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    batch_size = int(batch_size or 128)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"data: x and y must be non-empty and of equal length, got {len(x)} and {len(y)}.")
        steps = math.ceil(len(x) / batch_size)
        fit_args = {"x": x, "y": y, "batch_size": batch_size}
        y_sample = y[:1]
    else:
        card = int(_np(data.cardinality())) if hasattr(data, "cardinality") else -1
        steps = card if card > 0 else 1000
        fit_args = {"x": data, "shuffle": False}  # a dataset shuffles itself (or not)
        y_sample = next(iter(data))[1]
    hp = derive_schedule(steps, epochs, learning_rate)

    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    with scope():
        small = _clone(model)
    multi_worker = False
    if strategy is not None:
        import tensorflow as tf

        from tfq import distribute

        unsynced = [l for l in _flat_layers(small)
                    if isinstance(l, keras.layers.BatchNormalization) and not l.synchronized]
        small = distribute.prepare(small, strategy)
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    originals = {}
    chosen, specs = _select(small, scheme, layers, skip_first_last)
    for name, kernels in specs.items():
        for attr, var, _ in kernels:
            originals[(name, attr)] = _np(var).astype(np.float64)
    loss = getattr(model, "loss", None) or _default_loss(small, y_sample)
    with scope():
        small.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]), loss=loss, metrics=["accuracy"],
                      jit_compile=False if strategy is not None else "auto")
    policy = {name: q for name, q in chosen.items()}
    cbs = []
    if sparsity:
        cbs.append(tfq_callbacks.PruningCallback(target_sparsity=sparsity, layers={n: True for n in policy},
                                                 end_fraction=0.5))
    cbs.append(tfq_callbacks.ADMMCallback(
        scheme=next(iter(policy.values())), layers=policy, rho=hp["rho"], rho_growth=hp["rho_growth"],
        rho_max=hp["rho_max"], finetune_epochs=hp["finetune_epochs"], verbose=1 if verbose else 0,
    ))
    acc_before = evaluate_accuracy(model, validation_data, batch_size) if validation_data is not None else None
    val = validation_data
    if isinstance(val, list):
        val = tuple(val)
    # Keras' bar redraws in place on a terminal; in a log file one line per epoch reads better.
    fit_verbose = (1 if sys.stdout.isatty() else 2) if verbose else 0
    if multi_worker:
        # Every worker starts from and keeps the same state (checked, not assumed).
        cbs.append(distribute.ConsistencyCheck(strategy))
    lost = distribute.worker_errors if multi_worker else contextlib.nullcontext
    with scope(), lost():
        small.fit(**fit_args, epochs=hp["epochs"], validation_data=val, callbacks=cbs, verbose=fit_verbose)
        recalibrated = _reestimate_batch_norm(small, fit_args, batch_size)
    if strategy is not None:
        for layer in unsynced:  # synchronized for training only (prepare); the saved config as given
            layer.synchronized = False
    acc_after = evaluate_accuracy(small, validation_data, batch_size) if validation_data is not None else None

    layer_map = {l.name: l for l in _flat_layers(small)}
    reports = {}
    for name, kernels in specs.items():
        q = chosen[name]
        num = den = 0.0
        zeros = total = 0
        for attr, var, _ in kernels:
            w = _np(var).astype(np.float64)
            w0 = originals[(name, attr)]
            num += float(((w - w0) ** 2).sum())
            den += float((w0**2).sum())
            zeros += int((w == 0).sum())
            total += w.size
        reports[name] = LayerReport(
            name=name, kind=_layer_kind(layer_map[name]), scheme=q.name, params=total,
            sparsity=zeros / max(total, 1), bits=schemes.get(q.name).storage_bits,
            relative_error=math.sqrt(num / max(den, 1e-30)), corrections=("ADMM",) + (("pruned",) if sparsity else ()),
        )
    settings = dict(hp, batch_size=batch_size, sparsity=sparsity, skip_first_last=skip_first_last,
                    batch_norm_reestimated_on=recalibrated, optimizer="Adam", loss=getattr(loss, "name", str(loss)))
    return small, reports, acc_before, acc_after, settings


def _reestimate_batch_norm(model, fit_args, batch_size, max_batches=100):
    """Recomputes the batch-norm moving statistics of the final weights from training batches.

    The moving averages lag the weights (momentum 0.99), and the last epochs
    change the weights a lot (projection, frozen codes); with few steps per
    epoch the stale statistics cost many points. Averaging the batch
    statistics of up to `max_batches` batches with the final weights fixes it.

    Returns:
        the number of batches used (0 when the model has no batch norm).
    """
    import keras

    bns = [l for l in _flat_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    if "y" in fit_args:
        x = fit_args["x"]
        batches = (x[i : i + batch_size] for i in range(0, len(x), batch_size))
    else:
        batches = (b[0] for b in fit_args["x"])
    used = 0
    try:
        for k, xb in enumerate(batches):
            if k >= max_batches:
                break
            for bn in bns:
                bn.momentum = k / (k + 1.0)  # running value = mean over the batches so far
            model(xb, training=True)
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    return used


def _record(model, specs, chosen):
    """Marks compressed layers the way `ADMMCallback` does, for the converter's cross-check."""
    layers = {l.name: l for l in _flat_layers(model)}
    for name, kernels in specs.items():
        q = chosen[name]
        info = {attr: {"scheme": q.name, "per_channel": q.per_channel, "channel_axis": axis}
                for attr, _, axis in kernels}
        object.__setattr__(layers[name], "tfq_compression", info)


def evaluate_accuracy(model, data, batch_size=None):
    """Top-1 accuracy of a Keras classifier on (x, y) arrays or a dataset of (x, y) batches."""
    correct = count = 0
    for x, y in _batches(data, batch_size or 256):
        logits = _np(model(x, training=False))
        y = np.asarray(y).reshape(-1)
        correct += int((logits.reshape(len(y), -1).argmax(-1) == y).sum())
        count += len(y)
    if count == 0:
        raise ValueError("validation data is empty.")
    return correct / count


def _batches(data, batch_size):
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
    else:
        for x, y, *_ in data:
            yield _np(x), _np(y)
