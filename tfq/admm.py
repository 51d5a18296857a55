"""ADMM for low-bit weights (Leng et al., AAAI 2018).

For every compressed kernel W the problem `min L(W) s.t. W in C` (C the
low-bit set of `tfq.quantizers`) is split with an auxiliary G in C and a scaled
dual U:

    W <- argmin L(W) + rho/2 ||W - G + U||^2      (the optimizer, plus a pull)
    G <- Proj_C(W + U)                            (every `update_every` steps)
    U <- U + W - G

The pull is applied as a decoupled proximal step after each optimizer step,
`W <- (W + eta*rho*(G - U)) / (1 + eta*rho)` with eta the optimizer's current
learning rate, so any optimizer works. rho grows geometrically per epoch.

This module holds the math and the state (a Keras layer owning G, U, the frozen
codes and the scalars); `tfq.callbacks.ADMMCallback` drives it.

References:
    C. Leng, H. Li, S. Zhu, R. Jin. "Extremely Low Bit Neural Network: Squeeze
    the Last Bit Out with ADMM". AAAI 2018.
"""

import keras
import numpy as np
import tensorflow as tf

from tfq import quantizers

__all__ = ["prox_step", "dual_update", "ADMMState", "PHASE_IDLE", "PHASE_ADMM", "PHASE_FINETUNE", "PHASE_DONE"]

PHASE_IDLE, PHASE_ADMM, PHASE_FINETUNE, PHASE_DONE = 0, 1, 2, 3


def prox_step(w, target, eta_rho):
    """Proximal step of `rho/2 ||W - target||^2` with step size eta: exact, stable for any eta*rho."""
    return (w + eta_rho * target) / (1.0 + eta_rho)


def dual_update(w, u, quantizer, mask=None, channel_axis=-1, init_scale=None):
    """`G = Proj(W + U)`, `U + W - G`: returns `(G, U_new, scale)`.

    `init_scale` warm-starts the projection from the previous scale (W moves
    little between two updates), which skips the projection's multi-start.
    """
    g, scale = quantizer.project(w + u, mask=mask, channel_axis=channel_axis, init_scale=init_scale)
    return g, u + w - g, scale


def _levels_of(q, scale, channel_axis):
    """Integer levels of a projected tensor `q = scale[c] * level` (0 where scale is 0)."""
    q = tf.convert_to_tensor(q)
    shape = q.shape.as_list()
    axes = quantizers._normalize_axes(channel_axis, len(shape))
    rows, perm = quantizers._to_rows(q, axes)
    s = tf.reshape(scale, [-1, 1])
    lv = tf.round(tf.math.divide_no_nan(rows, s))
    return quantizers._from_rows(lv, shape, perm)


class ADMMState(keras.layers.Layer):
    """Variables of ADMM for a list of kernels: G, U, frozen codes, scales, rho, phase.

    Attached to the model (as `model._tfq_admm`) so that `model.save`,
    `save_weights` and `BackupAndRestore` carry it; it is not one of the
    model's layers, so a model rebuilt by `load_model` simply has no ADMM state.

    Args:
        specs: list of `tfq.layers.kernels.KernelSpec`.
    """

    def __init__(self, specs, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.keys = [s.key for s in specs]
        self.g, self.u, self.codes, self.scale = [], [], [], []
        for s in specs:
            shape = tuple(s.variable.shape)
            if s.quantizer.per_channel:
                axes = quantizers._normalize_axes(s.channel_axis, len(shape))
                channels = int(np.prod([shape[a] for a in axes]))
            else:
                channels = 1
            tag = s.key.replace("/", "__")
            # "mean" aggregation lets replicas assign identical values in
            # replica context under tf.distribute.
            self.g.append(self.add_weight(shape=shape, initializer="zeros", trainable=False, name=f"{tag}__g", aggregation="mean"))
            self.u.append(self.add_weight(shape=shape, initializer="zeros", trainable=False, name=f"{tag}__u", aggregation="mean"))
            self.codes.append(self.add_weight(shape=shape, initializer="zeros", trainable=False, name=f"{tag}__codes", aggregation="mean"))
            self.scale.append(self.add_weight(shape=(channels,), initializer="zeros", trainable=False, name=f"{tag}__scale", aggregation="mean"))
        self.rho = self.add_weight(shape=(), initializer="zeros", trainable=False, name="rho", aggregation="only_first_replica")
        self.phase = self.add_weight(shape=(), initializer="zeros", trainable=False, name="phase", dtype="int32", aggregation="only_first_replica")
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, name="step", dtype="int64", aggregation="only_first_replica")
        self.start_epoch = self.add_weight(shape=(), initializer="zeros", trainable=False, name="start_epoch", dtype="int32", aggregation="only_first_replica")
        self.built = True

    def call(self, inputs):  # pragma: no cover - never called; state only
        return inputs

    def residuals(self, variables):
        """Per-kernel `||W - G|| / ||W||` (NumPy floats) and the global one."""
        out, num, den = [], 0.0, 0.0
        for v, g in zip(variables, self.g):
            w = np.asarray(keras.ops.convert_to_numpy(v))
            gg = np.asarray(keras.ops.convert_to_numpy(g))
            a, b = float(np.sum((w - gg) ** 2)), float(np.sum(w**2))
            out.append(np.sqrt(a / b) if b > 0 else 0.0)
            num, den = num + a, den + b
        return out, (np.sqrt(num / den) if den > 0 else 0.0)
