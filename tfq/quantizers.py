"""Low-bit weight sets and the projection of a float tensor onto them.

A weight set is `{scale[c] * level : level in levels}` per output channel `c`
(or one scale for the whole tensor). The projection of `w` onto a set solves

    min_{scale, codes}  sum_i mask_i * (w_i - scale[c(i)] * level(code_i))^2

by alternating the two closed-form steps of Leng et al. (AAAI 2018): codes
given the scale (nearest level) and the scale given the codes (least squares),
until the objective stops decreasing. It is vectorized over channels and over a
few starting scales (the problem is not convex; the best start wins), written
in TensorFlow ops so that it runs inside `tf.function`.

References:
    C. Leng, H. Li, S. Zhu, R. Jin. "Extremely Low Bit Neural Network: Squeeze
    the Last Bit Out with ADMM". AAAI 2018.
"""

import functools

import numpy as np
import keras
import tensorflow as tf

from tfq import schemes

__all__ = [
    "Quantizer",
    "Binary",
    "Ternary",
    "PowerOfTwo",
    "get",
    "names",
    "project",
    "project_binary",
    "project_ternary",
    "project_pow2",
    "fit_scale",
    "straight_through",
    "normalize_axes",
    "to_rows",
    "from_rows",
]

_MAX_ITERS = 50
# Projections of tensors at least this big run XLA-compiled (`jit=None`): the
# alternation is a chain of small elementwise passes plus row reductions that
# XLA fuses into a couple of passes per iteration (3x faster on a 400k kernel);
# smaller ones are not worth a compile per shape.
_JIT_MIN_SIZE = 1 << 16


def _levels_for(name):
    try:
        return schemes.get(name).levels_array()
    except ValueError:
        raise ValueError(f"Unknown scheme {name!r}; valid: {names()}") from None


def names():
    """The registered scheme names."""
    return list(schemes.NAMES)


def normalize_axes(channel_axis, ndim):
    """The channel axes as a sorted tuple of non-negative ints (() for None); ValueError when out of range."""
    if channel_axis is None:
        return ()
    axes = channel_axis if isinstance(channel_axis, (tuple, list)) else (channel_axis,)
    out = []
    for a in axes:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"channel_axis {channel_axis} out of range for a tensor of rank {ndim}")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"channel_axis {channel_axis} repeats an axis")
    return tuple(sorted(out))


def to_rows(x, axes):
    """Moves the channel axes to the front and flattens: [channels, n]."""
    ndim = len(x.shape)
    rest = [a for a in range(ndim) if a not in axes]
    perm = list(axes) + rest
    xt = tf.transpose(x, perm) if perm != list(range(ndim)) else x
    return tf.reshape(xt, [-1, _prod([x.shape[a] for a in rest])]), perm


def from_rows(rows, shape, perm):
    """Inverse of `to_rows`: the [channels, n] rows back in a tensor of `shape`."""
    tshape = [shape[p] for p in perm]
    xt = tf.reshape(rows, tshape)
    if perm == list(range(len(shape))):
        return xt
    return tf.transpose(xt, np.argsort(perm).tolist())


def _prod(xs):
    p = 1
    for v in xs:
        p *= int(v)
    return p


def _nearest_level(t, levels):
    """Nearest entry of the sorted integer `levels` (numpy) for every entry of `t`."""
    levels = np.asarray(levels)
    pos = levels[levels > 0]
    symmetric = np.array_equal(-pos[::-1], levels[levels < 0])
    if symmetric and 0 not in levels and pos.tolist() == [1]:  # binary
        return tf.where(t > 0, tf.ones_like(t), -tf.ones_like(t))
    if symmetric and 0 in levels and np.array_equal(pos, 2 ** np.arange(pos.size)):
        # {0, ±1, ±2, ..., ±2^J}: the boundary between 2^j and 2^(j+1) is
        # 1.5 * 2^j; |t| <= 0.5 is 0. O(1) per entry instead of one compare
        # per level.
        a = tf.abs(t)
        if t.dtype == tf.float32:
            # Exact, from the bits: |t| = 1.m * 2^e0 rounds up to 2^(e0+1)
            # when m >= .5, i.e. when the top mantissa bit is set. A few
            # integer ops instead of log, floor and pow (the projection's
            # inner loop for pow2 on big kernels was dominated by them).
            bits = tf.bitcast(a, tf.int32)
            e = tf.bitwise.right_shift(bits, 23) - 127 + tf.bitwise.bitwise_and(tf.bitwise.right_shift(bits, 22), 1)
            e = tf.clip_by_value(e, 0, pos.size - 1)
            mag = tf.bitcast(tf.bitwise.left_shift(e + 127, 23), tf.float32)
        else:
            tiny = tf.constant(np.finfo(t.dtype.as_numpy_dtype).tiny, t.dtype)
            e = tf.floor(tf.math.log(tf.maximum(a, tiny) / 0.75) / np.log(2.0))
            e = tf.clip_by_value(e, 0.0, float(pos.size - 1))
            mag = tf.pow(tf.constant(2.0, t.dtype), e)
        mag = tf.where(a > 0.5, mag, tf.zeros_like(a))
        return tf.where(t < 0, -mag, mag)
    mids = (levels[1:] + levels[:-1]) / 2.0
    lv = tf.fill(tf.shape(t), tf.constant(float(levels[0]), t.dtype))
    for j, m in enumerate(mids):
        lv = lv + float(levels[j + 1] - levels[j]) * tf.cast(t > m, t.dtype)
    return lv


def _objective(w, m, s, lv):
    r = (w - s[..., None] * lv) * m
    return tf.reduce_sum(r * r, axis=-1)


def _ls_scale(w, m, lv):
    num = tf.reduce_sum(w * lv * m, axis=-1)
    den = tf.reduce_sum(lv * lv * m, axis=-1)
    return tf.math.divide_no_nan(num, den)


def _codes(w, m, s, levels):
    safe = tf.where(s > 0, s, tf.ones_like(s))
    return _nearest_level(w / safe[..., None], levels) * m


def _project_rows(w, m, levels, init_scale=None):
    """Projects rows of `w` [C, n] (mask `m`) onto `levels`; returns (lv, scale).

    With `init_scale` [C] (a warm start, e.g. the previous projection's scale)
    the grid of starting scales is skipped.
    """
    levels = np.asarray(levels, dtype=np.float64)
    lmax = float(np.max(np.abs(levels)))
    # The objective is not convex in the scale. Starting scales amax * 2^(-k/4)
    # put the largest |w| on levels from 1 up to about 4 * lmax in
    # quarter-octave steps; each start gets two alternations, the best start
    # per channel is then iterated to convergence. This finds the global
    # optimum on small tensors (see the tests).
    n_starts = 4 * (int(round(np.log2(lmax))) + 2)
    factors = tf.constant(2.0 ** (-0.25 * np.arange(n_starts)), w.dtype)
    if init_scale is None:
        amax = tf.reduce_max(tf.abs(w) * m, axis=-1)  # [C]
        w3, m3 = w[None], m[None]
        s = factors[:, None] * amax[None, :]  # [S, C]
        for _ in range(2):
            lv = _codes(w3, m3, s, levels)
            s = _ls_scale(w3, m3, lv)
        f = _objective(w3, m3, s, lv)
        best = tf.argmin(f, axis=0, output_type=tf.int32)  # [C]
        s = tf.gather(tf.transpose(s), best, batch_dims=1)
    else:
        s = tf.cast(tf.reshape(init_scale, [-1]), w.dtype)
        amax = tf.reduce_max(tf.abs(w) * m, axis=-1)
        # A dead start (scale 0) restarts from the largest weight.
        s = tf.where(s > 0, s, amax / lmax)
    lv = _codes(w, m, s, levels)
    s = _ls_scale(w, m, lv)
    f = _objective(w, m, s, lv)

    def cond(i, s, lv, f, improved):
        return tf.logical_and(i < _MAX_ITERS, improved)

    def body(i, s, lv, f, improved):
        lv_new = _codes(w, m, s, levels)
        s_new = _ls_scale(w, m, lv_new)
        f_new = _objective(w, m, s_new, lv_new)
        better = f_new < f * (1.0 - 1e-7)
        lv = tf.where(better[:, None], lv_new, lv)
        s = tf.where(better, s_new, s)
        f = tf.where(better, f_new, f)
        return i + 1, s, lv, f, tf.reduce_any(better)

    _, s, lv, f, _ = tf.while_loop(cond, body, (tf.constant(0), s, lv, f, tf.constant(True)))
    # A negative least-squares scale can only come from a degenerate channel.
    s = tf.maximum(s, 0.0)
    if levels.min() < 0 and 0 not in levels:
        # Binary: an all-zero channel still gets valid codes (+1), scale 0.
        lv = tf.where(tf.equal(lv, 0), tf.ones_like(lv), lv) * m
    return lv, s


@functools.lru_cache(maxsize=None)
def _compiled_project_rows(levels, warm):
    """`_project_rows` for fixed levels as an XLA-compiled tf.function (one trace per shape)."""
    lv = np.asarray(levels)
    if warm:
        return tf.function(lambda w, m, s: _project_rows(w, m, lv, s), jit_compile=True)
    return tf.function(lambda w, m: _project_rows(w, m, lv), jit_compile=True)


def _is_numpy(x):
    return isinstance(x, (np.ndarray, np.generic, list, tuple, float, int))


def project(w, levels, mask=None, channel_axis=-1, init_scale=None, jit=None):
    """Projects `w` onto `{scale[c] * level}` for the given integer levels.

    Args:
        w: float array or tensor (numpy, tf.Tensor, Keras variable).
        levels: sorted integer levels, e.g. `[-1, 0, 1]`.
        mask: optional 0/1 array of w's shape; masked entries become exactly 0
            and do not enter the scale fit.
        channel_axis: the output-channel axis (int), a tuple of axes whose
            product forms the channels (e.g. `(2, 3)` for a depthwise kernel),
            or None for one scale for the whole tensor.
        init_scale: optional `[channels]` warm start (e.g. the scale of the
            previous projection); skips the grid of starting scales, so it is
            much cheaper but only finds the local optimum near it.
        jit: run the alternation XLA-compiled (True), as plain TF ops (False),
            or None: compiled for tensors of at least 65536 entries. Both give
            the same projection up to float rounding.

    Returns:
        `(q, scale)`: q has w's shape and equals `scale[c] * level` entrywise;
        scale has shape `[channels]` (`[1]` when `channel_axis` is None).
        NumPy arrays when `w` is a NumPy array, tensors otherwise.
    """
    as_numpy = _is_numpy(w)
    wt = tf.convert_to_tensor(w)
    if not wt.dtype.is_floating:
        wt = tf.cast(wt, tf.float32)
    shape = wt.shape.as_list()
    if any(d is None for d in shape):
        raise ValueError(f"project needs a fully defined shape, got {shape}")
    if len(shape) == 0:
        wt = tf.reshape(wt, [1])
        shape = [1]
        channel_axis = None
    axes = normalize_axes(channel_axis, len(shape))
    mt = tf.ones_like(wt) if mask is None else tf.cast(tf.convert_to_tensor(mask), wt.dtype)
    if mask is not None and mt.shape.as_list() != shape:
        raise ValueError(f"mask shape {mt.shape.as_list()} does not match weight shape {shape}")
    rows, perm = to_rows(wt, axes)
    mrows, _ = to_rows(mt, axes)
    if jit is None:
        jit = _prod(shape) >= _JIT_MIN_SIZE
    if jit:
        key = tuple(int(v) for v in np.asarray(levels).reshape(-1))
        if init_scale is None:
            lv, s = _compiled_project_rows(key, False)(rows, mrows)
        else:
            init = tf.reshape(tf.cast(tf.convert_to_tensor(init_scale), rows.dtype), [-1])
            lv, s = _compiled_project_rows(key, True)(rows, mrows, init)
    else:
        lv, s = _project_rows(rows, mrows, np.asarray(levels), init_scale)
    q = from_rows(s[:, None] * lv, shape, perm)
    if as_numpy:
        return q.numpy(), s.numpy()
    return q, s


def fit_scale(w, q, mask=None, channel_axis=-1):
    """Least-squares scales for fixed codes: the weights `s[c] * sign pattern of q`.

    `q` is any tensor whose per-channel pattern holds the codes (for example a
    previous projection). Used to fine-tune with frozen codes.

    Returns:
        `(w_new, scale)` with `w_new = scale[c] * levels(q)`.
    """
    wt = tf.convert_to_tensor(w)
    qt = tf.cast(tf.convert_to_tensor(q), wt.dtype)
    shape = wt.shape.as_list()
    axes = normalize_axes(channel_axis, len(shape))
    rows, perm = to_rows(wt, axes)
    qrows, _ = to_rows(qt, axes)
    if mask is not None:
        mrows, _ = to_rows(tf.cast(tf.convert_to_tensor(mask), wt.dtype), axes)
        qrows = qrows * mrows
    s = tf.maximum(_ls_scale(rows, tf.ones_like(rows), qrows), 0.0)
    return from_rows(s[:, None] * qrows, shape, perm), s


def project_binary(w, mask=None, channel_axis=-1):
    """Projection onto `{-a, +a}` per channel. See `project`."""
    return project(w, _levels_for("binary"), mask, channel_axis)


def project_ternary(w, mask=None, channel_axis=-1):
    """Projection onto `{-a, 0, +a}` per channel. See `project`."""
    return project(w, _levels_for("ternary"), mask, channel_axis)


def project_pow2(w, bits=3, mask=None, channel_axis=-1):
    """Projection onto `{0, ±a, ±2a, ...}` (3 or 4 bits) per channel. See `project`."""
    if bits not in (3, 4):
        raise ValueError(f"PowerOfTwo bits must be 3 or 4, got {bits!r}")
    return project(w, _levels_for(f"pow2_{bits}bit"), mask, channel_axis)


def straight_through(w, q):
    """`q` in the forward pass, identity gradient to `w` (straight-through estimator)."""
    return w + tf.stop_gradient(q - w)


class Quantizer:
    """Base class: a weight set of integer levels times a per-channel scale.

    Args:
        per_channel: one scale per output channel (default) or one per tensor.
    """

    name = None
    bits = None

    def __init__(self, per_channel=True):
        if not isinstance(per_channel, (bool, np.bool_)):
            raise TypeError(f"per_channel must be a bool, got {per_channel!r}")
        self.per_channel = bool(per_channel)

    @property
    def levels(self):
        """Sorted numpy int32 array of the integer levels."""
        return _levels_for(self.name)

    def project(self, w, mask=None, channel_axis=-1, init_scale=None, jit=None):
        """Projects `w` onto this set. See `tfq.quantizers.project`.

        With `per_channel=False` the channel axis is ignored and scale has shape [1].
        """
        return project(w, self.levels, mask, channel_axis if self.per_channel else None, init_scale, jit)

    def get_config(self):
        return {"per_channel": self.per_channel}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.get_config().items()))))

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


@keras.saving.register_keras_serializable(package="tfq")
class Binary(Quantizer):
    """Binary weights `{-a, +a}` (1 bit)."""

    name = "binary"
    bits = 1


@keras.saving.register_keras_serializable(package="tfq")
class Ternary(Quantizer):
    """Ternary weights `{-a, 0, +a}` (2 bits)."""

    name = "ternary"
    bits = 2


@keras.saving.register_keras_serializable(package="tfq")
class PowerOfTwo(Quantizer):
    """Powers of two: 3 bits `{0, ±a, ±2a, ±4a}`, 4 bits `{0, ±a, ..., ±64a}`.

    Args:
        bits: 3 or 4.
        per_channel: one scale per output channel (default) or per tensor.
    """

    def __init__(self, bits=3, per_channel=True):
        if bits not in (3, 4) or isinstance(bits, bool):
            raise ValueError(f"PowerOfTwo bits must be 3 or 4, got {bits!r}")
        super().__init__(per_channel=per_channel)
        self._pow2_bits = int(bits)

    @property
    def name(self):
        return f"pow2_{self._pow2_bits}bit"

    @property
    def bits(self):
        # Information bits (7 or 15 levels); the packed format stores both in
        # 4-bit fields (docs/format.md).
        return self._pow2_bits

    def get_config(self):
        return {"bits": self._pow2_bits, "per_channel": self.per_channel}


_BY_NAME = {
    "binary": lambda **kw: Binary(**kw),
    "ternary": lambda **kw: Ternary(**kw),
    "pow2_3bit": lambda **kw: PowerOfTwo(bits=3, **kw),
    "pow2_4bit": lambda **kw: PowerOfTwo(bits=4, **kw),
}


def get(identifier):
    """Returns a quantizer from None, a name, a config dict or an instance.

    Raises:
        ValueError: for an unknown name or an unusable identifier; the message
            lists the valid names.
    """
    if identifier is None or isinstance(identifier, Quantizer):
        return identifier
    if isinstance(identifier, str):
        key = identifier.lower()
        if key not in _BY_NAME:
            raise ValueError(f"Unknown quantization scheme {identifier!r}; valid: {names()}")
        return _BY_NAME[key]()
    if isinstance(identifier, dict):
        if "class_name" in identifier:
            obj = keras.saving.deserialize_keras_object(identifier)
            if not isinstance(obj, Quantizer):
                raise ValueError(f"Config {identifier!r} is not a tfq quantizer; valid: {names()}")
            return obj
        cfg = dict(identifier)
        name = cfg.pop("name", None)
        if name not in _BY_NAME:
            raise ValueError(f"Unknown quantization scheme {name!r} in {identifier!r}; valid: {names()}")
        return _BY_NAME[name](**cfg)
    raise ValueError(
        f"Cannot interpret {identifier!r} as a quantizer; pass None, one of the valid names {names()}, "
        "a config dict or a tfq.quantizers.Quantizer"
    )
