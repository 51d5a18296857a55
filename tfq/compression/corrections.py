"""The data-free corrections of Nagel et al.: cross-layer equalization and bias correction.

References:
    Nagel, van Baalen, Blankevoort, Welling. "Data-Free Quantization Through
    Weight Equalization and Bias Correction", ICCV 2019.
"""

import numpy as np

from tfq.compression.graph import fused_positive_homogeneous, in_kernel, in_scalable, is_linear, layer_kind, out_scalable, positive_homogeneous, to_numpy
from tfq.compression.bn_stats import input_power


def bias_target(graph, layer):
    """Where an output shift of `layer` can be cancelled: ('bias', layer) or ('bn', bn) or None."""
    import keras

    if getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
        return "bias", layer
    nxt = graph.single_output(layer.name)
    if isinstance(nxt, keras.layers.BatchNormalization) and is_linear(layer):
        return "bn", nxt
    return None


def _equalization_pairs(graph, chosen):
    """(first, bn or None, second) triples where output channels of `first` can be rescaled into `second`."""
    import keras

    pairs = []
    for name, layer in graph.layers.items():
        if not out_scalable(layer) or not fused_positive_homogeneous(layer):
            continue
        node, bn, ok = graph.single_output(name), None, True
        if isinstance(node, keras.layers.BatchNormalization):
            if not is_linear(layer):
                continue  # f(Wx) followed by BN: BN does not commute with the scaling
            if not node.scale:
                continue
            bn, node = node, graph.single_output(node.name)
        while node is not None and not in_scalable(node):
            if not positive_homogeneous(node):
                ok = False
                break
            node = graph.single_output(node.name)
        per_tensor_first = name in chosen and not chosen[name].per_channel and bn is None
        if ok and node is not None and (node.name in chosen or per_tensor_first):
            pairs.append((layer, bn, node))
    return pairs


def _out_ranges(layer, bn):
    k = to_numpy(layer.kernel)
    r = np.abs(k.reshape(-1, int(np.prod(k.shape[-2:])) if layer_kind(layer) == "DepthwiseConv2D" else k.shape[-1]))
    r = r.max(0)
    if bn is not None:
        gamma = to_numpy(bn.gamma) if bn.scale else 1.0
        r = r * np.abs(gamma) / np.sqrt(to_numpy(bn.moving_variance) + bn.epsilon)
    return r


def _scale_out(layer, k, s):
    """Kernel k with output channel o multiplied by s[o] (depthwise: o = c * M + m)."""
    if layer_kind(layer) == "DepthwiseConv2D":
        return k * s.reshape(k.shape[-2:])
    return _scale_axis(k, s, k.ndim - 1)


def _scale_axis(a, s, axis):
    shape = [1] * a.ndim
    shape[axis] = -1
    return a * s.reshape(shape)


def _quant_error(quantizer, k, axis, weight_in=None, in_axis=None, in_scale=None):
    """Squared projection error of kernel k in the original coordinates."""
    q, _ = quantizer.project(k.astype(np.float32), channel_axis=axis)
    q = to_numpy(q).astype(np.float64)
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


def equalize(graph, chosen, specs, bias_correction=False):
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
        attr, k2, in_axis = in_kernel(second)
        c = k2.shape[in_axis]
        r1 = _out_ranges(first, bn)
        if r1.shape[0] != c:
            continue
        r2 = np.abs(np.moveaxis(k2, in_axis, 0).reshape(c, -1)).max(1)
        power = input_power(graph, first, bn, second, centered=bias_correction)
        if power.shape[0] != c:
            continue
        q2 = chosen.get(second.name)  # None: the second layer stays float, only the first one gains
        if q2 is not None:
            axis2 = dict((a, ax) for a, _, ax in specs[second.name])[attr]
            base2 = _quant_error(q2, k2, axis2, power, in_axis)
        per_tensor_first = first.name in chosen and bn is None and not chosen[first.name].per_channel
        if per_tensor_first:
            k1 = to_numpy(first.kernel).astype(np.float64)
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
            bn.gamma.assign(to_numpy(bn.gamma) / s)
            if bn.center:
                bn.beta.assign(to_numpy(bn.beta) / s)
        else:
            first.kernel.assign(_scale_out(first, to_numpy(first.kernel), 1.0 / s).astype(np.float32))
            if getattr(first, "use_bias", False):
                first.bias.assign((to_numpy(first.bias) / s).astype(np.float32))
        getattr(second, attr).assign(_scale_axis(k2, s, in_axis).astype(np.float32))
        notes[second.name] = f"equalized with {first.name} (-{2 - best_cost:.0%} error)"
        notes.setdefault(first.name, f"equalized with {second.name}")
    return notes
