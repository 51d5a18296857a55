"""Activation statistics derived from batch norm, for the data-free bias correction.

A batch norm's output channel is modelled as a normal distribution (Nagel et
al., sec. 4.2), carried through elementwise activations as weighted support
points; a layer's input statistics come from the nearest batch norm upstream.
"""

import statistics

import numpy as np

from tfq.compression.graph import activation_fn, is_identity_at_inference, layer_kind, to_numpy


# Support points per channel for the BN-derived activation distributions.


_QUANTILES = 256


class ChannelDist:
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
        return ChannelDist(
            np.take_along_axis(values, order, 1), np.take_along_axis(self.weights, order, 1), self.exact_shape
        )

    def averaged(self):
        return ChannelDist(self.values, self.weights, exact_shape=False)

    def mean(self):
        return np.sum(self.values * self.weights, axis=1)

    def second_moment(self):
        return np.sum(self.values**2 * self.weights, axis=1)


def _bn_output_dist(bn):
    gamma = to_numpy(bn.gamma) if bn.scale else np.ones(bn.moving_mean.shape)
    beta = to_numpy(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
    return ChannelDist.gaussian(beta.astype(np.float64), gamma.astype(np.float64))


def input_stats(graph, layer):
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
        fn = activation_fn(op)
        if fn is not None:
            if not dist.exact_shape or tile > 1:
                return None
            dist = dist.map(fn)
        elif is_identity_at_inference(op):
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


def mean_response(layer, kernels, mu):
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


def input_power(graph, first, bn, second, centered):
    """E[x_i^2] (Var[x_i] when `centered`) of the second layer's input channels, up to a common factor.

    From the batch norm statistics when there are any (centered when bias
    correction will remove the mean part of the error); otherwise from the
    first layer's weights (output power ~ ||W1[..., i]||^2 for inputs of equal
    power).
    """
    stats = input_stats(graph, second)
    if stats is not None and stats[1] == 1:
        dist = stats[0]
        power = dist.second_moment()
        return np.maximum(power - dist.mean() ** 2, 1e-12 * power.max()) if centered else power
    k1 = to_numpy(first.kernel).astype(np.float64)
    if layer_kind(first) == "DepthwiseConv2D":
        power = (k1**2).reshape(-1, k1.shape[-2] * k1.shape[-1]).sum(0)
    else:
        power = (k1**2).reshape(-1, k1.shape[-1]).sum(0)
    if bn is not None:
        power = power * (to_numpy(bn.gamma) ** 2) / (to_numpy(bn.moving_variance) + bn.epsilon)
    return power
