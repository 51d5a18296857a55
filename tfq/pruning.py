"""Gradient-aware pruning: masks, importance scores and sparsity schedules.

A weight is pruned only when both its value and its slope are small. The slope
is the magnitude of a running average of the weight's gradient. Where the
optimizer keeps one (the first moment of Adam, AdamW, Adamax, Nadam and Lion,
the momentum buffer of SGD with momentum; Keras callbacks see no gradients
themselves), that average is read at each mask update. With other optimizers
it is measured from the weights instead: the mean step the optimizer took
over a window (for plain SGD that is `lr * |running average of the
gradient|`). Without regrowth that window is measured, not every step: the
kernel is snapshotted (`prev`, at optimizer step `step`) about `1 / (1 -
beta)` steps before each mask update, and at the update `slope <- beta^n *
slope + (1 - beta^n) * (w - prev) / n` with `n` the steps since the snapshot
(the per-step average with decay `beta`, applied to the window's mean step;
with a schedule tfq cannot read ahead it is every step, `n = 1`). With
regrowth it is updated every step. Pruned weights keep receiving updates from
the optimizer, which are measured and then zeroed, so with `regrowth=True` a
pruned connection whose slope grows large can come back, as in Dynamic
Network Surgery (it returns with the value its steps accumulated while
pruned). The importance of a weight is

    score = |w| / mean|w|  *  (1 + gamma * slope / mean(slope))

per kernel (`importance="magnitude"` uses |w| alone, as TFMOT does).

On MNIST at 95% sparsity (3 seeds each, `benchmarks/accuracy.py`), the
gradient average of Adam beat magnitude-only pruning by about 0.15-0.3 points, while
the earlier measure (Adam's mean step, which Adam normalizes per weight) lost
to it by about 0.1.

References:
    Y. Guo, A. Yao, Y. Chen. "Dynamic Network Surgery for Efficient DNNs". NIPS 2016.
    P. Molchanov et al. "Importance Estimation for Neural Network Pruning". CVPR 2019.
    M. Zhu, S. Gupta. "To prune, or not to prune" (polynomial schedule). 2017.
"""

import dataclasses
import re

import keras
import numpy as np
import tensorflow as tf

from tfq import quantizers, schemes
from tfq import state as tfq_state
from tfq.training import (KernelHook, KernelRun, KernelState, attached_state, check_finite, finite_or_raise, nonfinite_message,
                          rebuild_train_function, steps_per_epoch, strategy_of, to_numpy, warn_empty_channels)

__all__ = ["ConstantSparsity", "PolynomialDecay", "importance", "prune_mask", "PruningState", "PruningTraining",
           "check_sparsity", "masks_for", "end_step", "gradient_averages", "DISTRIBUTIONS", "layer_sparsities",
           "AUTO_BLOCKS", "AUTO_LARGE_DENSE_WEIGHTS", "AUTO_MIN_BLOCK_ROWS", "auto_shape",
           "layer_kind"]


def check_sparsity(value, what="target_sparsity"):
    """Raises ValueError unless 0 <= value < 1."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}") from None
    if not (0.0 <= v < 1.0) or not np.isfinite(v):
        raise ValueError(f"{what} must be in [0, 1), got {value!r}")
    return v


@keras.saving.register_keras_serializable(package="tfq")
class ConstantSparsity:
    """Prune to `target_sparsity` every `frequency` steps from `begin_step` to `end_step` (-1: forever).

    Like TFMOT's schedules, a callable of the step returning `(should_prune, sparsity)`.
    """

    def __init__(self, target_sparsity, begin_step=0, end_step=-1, frequency=100):
        self.target_sparsity = check_sparsity(target_sparsity)
        self.begin_step, self.end_step, self.frequency = int(begin_step), int(end_step), int(frequency)
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        ok = tf.logical_and(step >= self.begin_step, tf.equal((step - self.begin_step) % self.frequency, 0))
        if self.end_step >= 0:
            ok = tf.logical_and(ok, step <= self.end_step)
        return ok, tf.constant(self.target_sparsity, tf.float32)

    def get_config(self):
        return {
            "target_sparsity": self.target_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfq")
class PolynomialDecay:
    """Sparsity rising from `initial_sparsity` to `final_sparsity` as `1 - (1 - t)^power` (Zhu & Gupta).

    A callable of the step returning `(should_prune, sparsity)`; pruning keeps
    the final sparsity after `end_step`.
    """

    def __init__(self, initial_sparsity, final_sparsity, begin_step, end_step, power=3, frequency=100):
        self.initial_sparsity = check_sparsity(initial_sparsity, "initial_sparsity")
        self.final_sparsity = check_sparsity(final_sparsity, "final_sparsity")
        self.begin_step, self.end_step = int(begin_step), int(end_step)
        self.power, self.frequency = float(power), int(frequency)
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({end_step}) must be greater than begin_step ({begin_step})")
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        t = tf.clip_by_value(
            tf.cast(step - self.begin_step, tf.float32) / float(self.end_step - self.begin_step), 0.0, 1.0
        )
        s = self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - t) ** self.power
        periodic = tf.equal((step - self.begin_step) % self.frequency, 0)
        ok = tf.logical_and(step >= self.begin_step, tf.logical_or(periodic, tf.equal(step, self.end_step)))
        return ok, s

    def get_config(self):
        return {
            "initial_sparsity": self.initial_sparsity,
            "final_sparsity": self.final_sparsity,
            "begin_step": self.begin_step,
            "end_step": self.end_step,
            "power": self.power,
            "frequency": self.frequency,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def importance(w, slope=None, gamma=1.0):
    """Importance score per weight: |w|/mean|w| (times 1 + gamma * slope/mean(slope)).

    The slope factor only protects: a small weight that the optimizer keeps
    pushing ranks above an equally small one left alone.
    """
    a = tf.abs(w)
    score = tf.math.divide_no_nan(a, tf.reduce_mean(a))
    if slope is not None:
        score = score * (1.0 + gamma * tf.math.divide_no_nan(slope, tf.reduce_mean(slope)))
    return score


def prune_mask(score, sparsity, mask=None, regrowth=False):
    """0/1 mask zeroing exactly `round(sparsity * size)` lowest-scoring entries.

    Without regrowth the entries already pruned in `mask` stay pruned (they are
    counted first).
    """
    flat = tf.reshape(score, [-1])
    n = tf.size(flat)
    if mask is not None and not regrowth:
        flat = tf.where(tf.reshape(mask, [-1]) > 0, flat, tf.fill(tf.shape(flat), -np.inf))
    k = tf.cast(tf.round(tf.cast(sparsity, tf.float32) * tf.cast(n, tf.float32)), tf.int32)
    if mask is not None and not regrowth:
        k = tf.maximum(k, tf.cast(tf.reduce_sum(1.0 - tf.reshape(mask, [-1])), tf.int32))
    # The same mask as dropping `argsort(flat, stable=True)[:k]` (ties: lower
    # index dropped first), from a partial top_k over the smaller side: a
    # full sort of LeNet-300-100's fc1 cost 20 ms, top_k of 10% of it 10 ms.

    def by_drop():
        drop = tf.math.top_k(-flat, k).indices  # equal values: lower index first
        return tf.tensor_scatter_nd_update(tf.ones([n], score.dtype), drop[:, None], tf.zeros([k], score.dtype))

    def by_keep():
        # Reversed, so that among equal values the higher index is kept.
        keep = n - 1 - tf.math.top_k(tf.reverse(flat, [0]), n - k).indices
        return tf.tensor_scatter_nd_update(tf.zeros([n], score.dtype), keep[:, None], tf.ones([n - k], score.dtype))

    new = tf.cond(2 * k <= n, by_drop, by_keep)
    return tf.reshape(new, tf.shape(score))


# --------------------------------------------------------------------------
# How a target sparsity is spread over the kernels
# --------------------------------------------------------------------------

DISTRIBUTIONS = ("uniform", "erk")


def layer_sparsities(shapes, target, distribution="uniform"):
    """The sparsity of each kernel for an overall `target` over kernels of `shapes`.

    "uniform": every kernel gets `target`. "erk" (Erdős–Rényi-Kernel, Evci et
    al. 2020, "Rigging the Lottery"): the target counts all the kernels'
    weights together, and a kernel's density is proportional to
    `sum(shape) / prod(shape)`, so small kernels (a 10-class output layer)
    keep far more of their weights than large ones (a first layer fed by
    784 pixels). A kernel whose density would exceed 1 is left dense and the
    others share the rest.

    Raises:
        ValueError: an unknown distribution.
    """
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {', '.join(map(repr, DISTRIBUTIONS))}; got {distribution!r}")
    target = float(target)
    if distribution == "uniform" or target == 0.0:
        return [target] * len(shapes)
    sizes = np.array([float(np.prod(s)) for s in shapes])
    ratio = np.array([float(np.sum(s)) for s in shapes]) / sizes
    keep = (1.0 - target) * sizes.sum()
    dense = np.zeros(len(shapes), bool)
    while True:
        eps = (keep - sizes[dense].sum()) / np.sum(ratio[~dense] * sizes[~dense])
        density = np.where(dense, 1.0, eps * ratio)
        over = ~dense & (density > 1.0)
        if not over.any():
            break
        dense[np.argmax(np.where(over, density, -np.inf))] = True
    return [float(1.0 - d) for d in np.clip(density, 0.0, 1.0)]


# --------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------

# `block="auto"`: per kind of layer, the shape measured best on kernel speed
# and accuracy together (docs/compression.md, "Choosing the block shape"):
# convolutions run as GEMM over pixels, where 16x4 is within 7% of the
# fastest loop and cost less accuracy than 32x4; Dense and recurrent kernels
# run as GEMV at batch 1, memory-bound, where 4x4 costs the least accuracy
# and still skips almost all the work. A kernel with fewer output channels
# (per gate) takes fewer rows.
AUTO_BLOCKS = {"conv": (16, 4), "dense": (4, 4), "large_dense": (16, 4)}
# A Dense or recurrent kernel with at least this many weights (per gate)
# takes "large_dense": there the GEMV's time is what a model waits for, and
# 4x4 blocks cost one activation gather per 16 weights (Dense 4096x4096 at
# 90%: 2.4x the best LiteRT variant against 5.6x with 16x4), while 16x4 on a
# 1024x1024 or 2048-wide hidden layer cost no accuracy measurably
# (docs/compression.md, "Large Dense layers").
AUTO_LARGE_DENSE_WEIGHTS = 1 << 20
# "auto" halves a kernel's block rows (down to 4) until it has at least this
# many block rows: a 32-channel convolution in 2 block rows of 16 lost 8
# points against 4x4 blocks (docs/compression.md, "Narrow convolutions").
AUTO_MIN_BLOCK_ROWS = 4


def auto_shape(kind, out_channels, reduction):
    """The `block="auto"` shape of a kernel of `out_channels` x `reduction` weights (per gate).

    kind: "conv" (convolutions, run as GEMM over pixels) or "dense" (Dense,
    recurrent and other kernels run as GEMV at batch 1). Rows are halved (not
    below 4) until there are `AUTO_MIN_BLOCK_ROWS` block rows, then cut to the
    largest power of two that fits `out_channels`.
    """
    if kind not in ("conv", "dense"):
        raise ValueError(f"kind must be 'conv' or 'dense', got {kind!r}")
    if kind == "dense" and out_channels * reduction >= AUTO_LARGE_DENSE_WEIGHTS:
        kind = "large_dense"
    rows, cols = AUTO_BLOCKS[kind]
    while rows > 4 and out_channels < AUTO_MIN_BLOCK_ROWS * rows:
        rows //= 2
    while rows > 1 and rows > out_channels:
        rows //= 2
    return rows, cols


def layer_kind(layer):
    """"conv" for the layers run as GEMM over pixels (convolutions), "dense" for the rest."""
    L = keras.layers
    conv = (L.Conv1D, L.Conv2D, L.Conv3D, L.Conv1DTranspose, L.Conv2DTranspose, L.Conv3DTranspose,
            L.SeparableConv1D, L.SeparableConv2D)
    return "conv" if isinstance(layer, conv) else "dense"


def check_block(block, what="block"):
    """None, "auto", or `(rows, cols)` from "RxC" or a pair of ints; ValueError otherwise."""
    if block is None or block == "auto":
        return block
    if isinstance(block, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", block)
        if not m:
            raise ValueError(f"{what} must be None, 'auto', 'RxC' (e.g. '4x4') or (rows, cols); got {block!r}")
        block = (int(m.group(1)), int(m.group(2)))
    try:
        rows, cols = (int(v) for v in block)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be None, 'auto', 'RxC' (e.g. '4x4') or (rows, cols); got {block!r}") from None
    if rows not in schemes.BLOCK_SIDES or cols not in schemes.BLOCK_SIDES or isinstance(block[0], bool):
        raise ValueError(
            f"{what} {block!r} does not divide the packed rows: rows and columns must each be one of "
            f"{', '.join(map(str, schemes.BLOCK_SIDES))} (blocks tile the 32-weight groups of the format)")
    return rows, cols


@dataclasses.dataclass(frozen=True)
class BlockGrid:
    """How one kernel is cut into blocks.

    The kernel is seen as the matrix the converter packs: one row per output
    channel, the reduction axis (kh·kw·cin for a convolution, the inputs of a
    dense layer) along the row, in the packed order (`tfq.quantizers.to_rows`).
    A block is `rows` output channels × `cols` consecutive reduction positions.
    The rows are cut in `groups` equal segments first (the gates of an LSTM or
    GRU, so that no block mixes two gates); blocks at the end of a segment or a
    row may be partial.
    """

    shape: tuple
    axes: tuple
    groups: int
    rows: int
    cols: int

    @property
    def out(self):
        return int(np.prod([self.shape[a] for a in self.axes]))

    @property
    def k(self):
        return int(np.prod(self.shape)) // self.out

    @property
    def counts(self):
        """(groups, block rows per group, block columns)."""
        per = self.out // self.groups
        return self.groups, -(-per // self.rows), -(-self.k // self.cols)

    def to_blocks(self, x):
        """[groups, block rows, rows, block cols, cols] view of a kernel-shaped tensor, zero-padded."""
        m, _ = quantizers.to_rows(tf.convert_to_tensor(x), self.axes)
        per = self.out // self.groups
        g, nbr, nbc = self.counts
        m = tf.reshape(m, [g, per, self.k])
        m = tf.pad(m, [[0, 0], [0, nbr * self.rows - per], [0, nbc * self.cols - self.k]])
        return tf.reshape(m, [g, nbr, self.rows, nbc, self.cols])

    def from_block_mask(self, bm, dtype):
        """The kernel-shaped 0/1 mask of a [groups, block rows, block cols] block mask."""
        g, nbr, nbc = self.counts
        per = self.out // self.groups
        full = tf.broadcast_to(tf.cast(bm, dtype)[:, :, None, :, None], [g, nbr, self.rows, nbc, self.cols])
        full = tf.reshape(full, [g, nbr * self.rows, nbc * self.cols])[:, :per, : self.k]
        perm = list(self.axes) + [a for a in range(len(self.shape)) if a not in self.axes]  # as to_rows
        return quantizers.from_rows(tf.reshape(full, [self.out, self.k]), list(self.shape), perm)


def is_depthwise(spec):
    """A depthwise kernel: one filter per input channel (its channel axes are a pair)."""
    return isinstance(spec.channel_axis, tuple)


def block_grid(spec, block):
    """The `BlockGrid` of a kernel (`tfq.kernels.KernelSpec`) for `block = (rows, cols)` or "auto".

    "auto" is `auto_shape` of the layer's kind and the kernel's output
    channels and reduction length (per gate).

    Raises:
        ValueError: a depthwise kernel (not block-pruned: docs/compression.md).
    """
    if is_depthwise(spec):
        raise ValueError(
            f"Layer {spec.layer.name!r} ({type(spec.layer).__name__}): its depthwise kernel {spec.name!r} cannot "
            "be block-pruned (a block of one channel's taps would remove the channel); leave the layer out of "
            "`layers` or use block=None")
    shape = tuple(int(d) for d in spec.variable.shape)
    axes = quantizers.normalize_axes(spec.channel_axis, len(shape))
    groups = 1
    if isinstance(spec.layer, keras.layers.LSTM):
        groups = 4
    elif isinstance(spec.layer, keras.layers.GRU):
        groups = 3
    if block == "auto":
        per = int(np.prod([shape[a] for a in axes])) // groups
        block = auto_shape(layer_kind(spec.layer), per, int(np.prod(shape)) // groups // max(per, 1))
    return BlockGrid(shape, axes, groups, *block)


def block_prune_mask(score, sparsity, mask, regrowth, grid):
    """Like `prune_mask`, for whole blocks: the blocks with the lowest mean score are pruned.

    `round(sparsity * number of blocks)` blocks are pruned (partial edge
    blocks count as blocks), except the best live block of each block row,
    which is kept; without regrowth a block already pruned in `mask` (all its
    weights pruned) stays pruned.
    """
    ones = tf.ones(grid.shape, score.dtype)
    total = tf.reduce_sum(grid.to_blocks(score), axis=[2, 4])
    count = tf.reduce_sum(grid.to_blocks(ones), axis=[2, 4])
    bscore = total / count
    bmask = None if mask is None else tf.reduce_max(grid.to_blocks(tf.cast(mask, score.dtype)), axis=[2, 4])
    # Every block row keeps its best live block: a block row is `rows` output
    # channels, and losing all its blocks kills them together (measured: at
    # 90% on every layer, a 10-class output layer in 8-row blocks lost whole
    # groups of classes and the model fell to chance).
    live = bscore if bmask is None or regrowth else tf.where(bmask > 0, bscore, tf.fill(tf.shape(bscore), -np.inf))
    best = tf.one_hot(tf.argmax(live, axis=-1), tf.shape(bscore)[-1], on_value=True, off_value=False)
    protected = tf.where(best, tf.fill(tf.shape(bscore), np.inf), bscore)
    return grid.from_block_mask(prune_mask(protected, sparsity, bmask, regrowth), score.dtype)


class PruningState(KernelState):
    """Variables of pruning for a list of kernels: masks, slope averages, snapshots.

    `prev` is the kernel's value at optimizer step `step` (the start of the
    slope window; every step with regrowth), `shadow` the value pruned
    weights would have (regrowth only).

    Attached to the model (`tfq.state`), like `tfq.admm.ADMMState`.
    """

    def __init__(self, specs, regrowth=False, **kwargs):
        super().__init__(specs, **kwargs)
        self.regrowth = bool(regrowth)
        self.mask, self.slope, self.prev, self.shadow = [], [], [], []
        for s in specs:
            self.mask.append(self.kernel_variable(s, "mask", initializer="ones"))
            self.slope.append(self.kernel_variable(s, "slope"))
            self.prev.append(self.kernel_variable(s, "prev"))
            if self.regrowth:
                # Pruned weights keep accumulating their optimizer steps here
                # (Dynamic Network Surgery); they come back with this value.
                self.shadow.append(self.kernel_variable(s, "shadow"))
        self.step = self.scalar("step", "int64")
        # Optimizer step when pruning began (the default schedule counts from it).
        self.begin_step = self.scalar("begin_step", "int64")
        # Optimizer step after which the schedule prunes no more (-1: unknown);
        # ADMMCallback waits for it.
        self.end_step = self.scalar("end_step", "int64")
        self.initialized = self.scalar("initialized", "int32")
        self.built = True

    def mask_for(self, key):
        return self.mask[self.keys.index(key)] if key in self.keys else None

def masks_for(model, keys):
    """The pruning mask variable of each kernel key ("layer/variable") of `model`, None where none."""
    state = tfq_state.get(model, tfq_state.PRUNING)
    return [state.mask_for(k) if state is not None else None for k in keys]


def end_step(model):
    """The optimizer step after which the model's pruning schedule prunes no more.

    -1 when the schedule does not say, None when the model is not being pruned.
    ADMM in the same fit waits for it (prune first, then quantize).
    """
    state = tfq_state.get(model, tfq_state.PRUNING)
    return None if state is None else int(to_numpy(state.end_step))


def gradient_averages(optimizer, variables):
    """The optimizer's running average of the gradient of each variable, or None.

    Adam, AdamW, Adamax, Nadam and Lion keep one (their first moment), and SGD
    with momentum keeps a multiple of one; Keras names these slots
    `<variable path with _>_momentum` (`add_variable_from_reference`). Returns
    None when the optimizer keeps none, or is not built yet.
    """
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    O = keras.optimizers
    kinds = (O.Adam, O.AdamW, O.Adamax, O.Nadam, O.Lion)
    if not (isinstance(optimizer, kinds) or (isinstance(optimizer, O.SGD) and float(optimizer.momentum) > 0)):
        return None
    if not optimizer.built:
        return None
    by_name = {v.name: v for v in optimizer.variables}
    found = [by_name.get(v.path.replace("/", "_") + "_momentum") for v in variables]
    if any(f is None or tuple(f.shape) != tuple(v.shape) for f, v in zip(found, variables)):
        return None
    return found


class PruningTraining(KernelRun):
    """The pruning run of one `fit`: the schedule, the slope measurement, the mask updates.

    Driven by `tfq.PruningCallback` (its docstring lists the arguments), which
    forwards the Keras events to the `on_*` methods of the same names.
    """

    def __init__(
        self,
        target_sparsity=0.9,
        schedule=None,
        importance="gradient",
        gamma=1.0,
        beta=0.9,
        regrowth=False,
        frequency=100,
        end_fraction=0.6,
        layers=None,
        skip_first_last=True,
        block=None,
        distribution="uniform",
    ):
        super().__init__()
        self.target_sparsity = check_sparsity(target_sparsity)
        self.block = check_block(block)
        layer_sparsities([], 0.0, distribution)  # validates the name
        self.distribution = distribution
        self.sparsities = None
        self.grids = None
        if schedule is not None and not callable(schedule):
            raise TypeError(f"schedule must be callable step -> (should_prune, sparsity), got {schedule!r}")
        self.schedule = schedule
        if importance not in ("gradient", "magnitude"):
            raise ValueError(f"importance must be 'gradient' or 'magnitude', got {importance!r}")
        self.importance = importance
        self.gamma, self.beta = float(gamma), float(beta)
        if not 0.0 <= self.beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta}")
        self.regrowth = bool(regrowth)
        self.frequency = int(frequency)
        if self.frequency < 1:
            raise ValueError(f"frequency must be >= 1, got {frequency}")
        if not 0.0 < float(end_fraction) <= 1.0:
            raise ValueError(f"end_fraction must be in (0, 1], got {end_fraction}")
        self.end_fraction = float(end_fraction)
        self.layers = layers
        self.skip_first_last = bool(skip_first_last)
        self._installed = False
        self._update_fn = None
        self._snapshot_fn = None
        self._window = 1
        self._moments = None  # the optimizer's gradient averages, once found
        self._moments_unresolved = False
        self._last_refresh = 0
        self._epoch_start_step = 0

    def _setup(self):
        model = self.model
        specs = self.select(None, what="pruning", who="PruningCallback")
        if self.block is not None:
            named = self.layers if isinstance(self.layers, dict) else {}
            # Depthwise kernels stay dense under block pruning (docs/compression.md):
            # naming a layer that has nothing else is an error (block_grid says why).
            for s in specs:
                if s.layer.name in named and all(is_depthwise(t) for t in specs if t.layer is s.layer):
                    block_grid(s, self.block)
            specs = [s for s in specs if not is_depthwise(s)]
            if not specs:
                raise ValueError(f"pruning: model {model.name!r} has no kernel to block-prune (depthwise kernels are "
                                 "not block-pruned)")
            self.grids = [block_grid(s, self.block) for s in specs]
        self.specs = specs
        self.sparsities = layer_sparsities([tuple(s.variable.shape) for s in specs], self.target_sparsity,
                                           self.distribution)
        self.state = attached_state(
            model, tfq_state.PRUNING, self.specs,
            lambda: PruningState(self.specs, regrowth=self.regrowth, name="tfq_pruning_state"),
            compatible=lambda state: state.regrowth == self.regrowth,
        )

    def _make_step(self, i):
        state = self.state
        beta, regrowth = self.beta, self.regrowth

        if not regrowth:
            # Per step only the mask product (pruned weights stay exactly 0);
            # the slope is measured from `prev` by the callback (`_refresh`).
            def step(w):
                return w * tf.cast(state.mask[i], w.dtype)

            step.mask_only = True
            return step, None

        # With regrowth the optimizer's steps on pruned weights are zeroed by
        # the mask every step, so they must be accumulated (and measured) per step.
        def step(w):
            w = tf.convert_to_tensor(w)
            masked = w * tf.cast(state.mask[i], w.dtype)
            alive = state.mask[i] > 0
            state.shadow[i].assign(tf.where(alive, w, state.shadow[i] + (w - state.prev[i])))
            # Signed running average: the steady drift survives, noise cancels.
            delta = w - state.prev[i]
            state.slope[i].assign(beta * state.slope[i] + (1.0 - beta) * delta)
            return masked

        def post(w_final):
            state.prev[i].assign(w_final)

        return step, post

    def _default_schedule(self):
        epochs = int(self.params.get("epochs", 1)) if self.params else 1
        steps = steps_per_epoch(self.params)
        if steps is None:
            raise ValueError("PruningCallback: cannot infer the number of steps; pass schedule=")
        # Counted from the step pruning began (kept in the state), so a run
        # resumed by BackupAndRestore follows the same schedule.
        start = int(to_numpy(self.state.begin_step))
        total = max(epochs * steps, 1)
        end = start + max(int(total * self.end_fraction), 1)
        freq = min(self.frequency, max(1, (end - start) // 4))
        return PolynomialDecay(0.0, self.target_sparsity, start, end, power=3, frequency=freq)

    def _build_update_fn(self, schedule):
        specs, state, grids = self.specs, self.state, self.grids
        # The schedule's sparsity is the overall one; each kernel follows it
        # in proportion to its own final sparsity.
        scales = [s / self.target_sparsity if self.target_sparsity > 0 else 1.0 for s in self.sparsities]
        gamma, regrowth, use_slope = self.gamma, self.regrowth, self.importance == "gradient"
        beta = self.beta
        moments = self._moments if use_slope else None
        # Without regrowth (and without the optimizer's gradient average) the
        # slope is refreshed here from the kernel's change since the snapshot
        # `prev` taken at optimizer step `state.step`.
        refresh = use_slope and not regrowth and moments is None

        @tf.function
        def update(step):
            should, sparsity = schedule(step)
            should = tf.convert_to_tensor(should)
            if refresh:
                n = tf.maximum(step - state.step, 1)
                b = tf.pow(tf.constant(beta, tf.float32), tf.cast(n, tf.float32))
                for i, spec in enumerate(specs):
                    w = tf.convert_to_tensor(spec.variable)
                    # Mean step per optimizer step over the window (the
                    # per-step EMA with decay beta, applied n steps at once).
                    delta = (w - state.prev[i]) / tf.cast(n, w.dtype)
                    state.slope[i].assign(tf.cast(b, w.dtype) * state.slope[i] + tf.cast(1.0 - b, w.dtype) * delta)

            def prune():
                for i, spec in enumerate(specs):
                    w = finite_or_raise(spec.variable, nonfinite_message(spec))
                    if moments is not None:
                        state.slope[i].assign(tf.cast(tf.abs(moments[i]), state.slope[i].dtype))
                    if regrowth:
                        # Pruned weights compete with the value they would have.
                        w = tf.where(state.mask[i] > 0, w, state.shadow[i])
                    score = importance(w, tf.abs(state.slope[i]) if use_slope else None, gamma)
                    s_i = tf.cast(sparsity, tf.float32) * scales[i]
                    if grids is None:
                        mask = prune_mask(score, s_i, state.mask[i], regrowth)
                    else:
                        mask = block_prune_mask(score, s_i, state.mask[i], regrowth, grids[i])
                    state.mask[i].assign(mask)
                    spec.variable.assign(w * mask)
                    state.prev[i].assign(w * mask)
                return tf.constant(True)

            tf.cond(should, prune, lambda: tf.constant(False))
            if refresh:
                for i, spec in enumerate(specs):
                    state.prev[i].assign(spec.variable)
            state.step.assign(step)

        @tf.function
        def snapshot(step):
            # Start of the slope window before the next mask update.
            for i, spec in enumerate(specs):
                state.prev[i].assign(spec.variable)
            state.step.assign(step)

        self._snapshot_fn = snapshot if refresh else None
        # Window length: the EMA's time constant, 1 / (1 - beta) steps.
        self._window = max(1, int(round(1.0 / (1.0 - beta))))
        return update

    def on_train_begin(self, logs=None):
        if self.specs is None:
            self._setup()
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError("PruningCallback: compile the model before fit")
        if int(to_numpy(self.state.initialized)) == 0:
            with strategy_of(self.model).scope():
                for i, spec in enumerate(self.specs):
                    check_finite(spec)
                    self.state.prev[i].assign(spec.variable)
                self.state.begin_step.assign(int(to_numpy(self.model.optimizer.iterations)))
                self.state.step.assign(int(to_numpy(self.model.optimizer.iterations)))
                self.state.initialized.assign(1)
        self._moments = None
        self._moments_unresolved = True
        self._find_moments()
        self._make_schedule()
        self._schedule_fresh = False
        for i, spec in enumerate(self.specs):
            hook = KernelHook.attach(spec.variable)
            hook.pruning, hook.pruning_post = self._make_step(i)
        self._installed = True
        rebuild_train_function(self.model)

    def _find_moments(self):
        """Looks up the optimizer's gradient averages (it is built by the first step at the latest)."""
        if self.importance != "gradient":
            return False
        self._moments = gradient_averages(self.model.optimizer, [s.variable for s in self.specs])
        return self._moments is not None

    def _make_schedule(self):
        schedule = self.schedule if self.schedule is not None else self._default_schedule()
        self._schedule = schedule
        self._update_fn = self._build_update_fn(schedule)
        end = getattr(schedule, "end_step", None)
        with strategy_of(self.model).scope():
            self.state.end_step.assign(int(end) if isinstance(end, (int, np.integer)) and end >= 0 else -1)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._schedule_fresh:
            # Once more after every on_train_begin (BackupAndRestore may have
            # restored the state after ours ran).
            self._make_schedule()
            self._schedule_fresh = True
        self._epoch_start_step = int(to_numpy(self.model.optimizer.iterations))
        self._last_refresh = int(to_numpy(self.state.step))

    def _timing(self):
        """(frequency, begin_step, end_step attribute or None) of a schedule with int frequency and begin (tfq's, TFMOT's), else None."""
        sch = self._schedule
        freq, begin = getattr(sch, "frequency", None), getattr(sch, "begin_step", None)
        if not isinstance(freq, int) or not isinstance(begin, int) or freq < 1:
            return None
        return freq, begin, getattr(sch, "end_step", None)

    def _next_due(self, step):
        """First step after `step` at which the schedule may prune (None: unknown or never)."""
        timing = self._timing()
        if timing is None:
            return None
        freq, begin, end = timing
        nxt = begin if step < begin else begin + ((step - begin) // freq + 1) * freq
        if isinstance(end, int) and end >= 0:
            if step >= end:
                return None
            nxt = min(nxt, end)
        return nxt

    def _maybe_due(self, step):
        # Skip the call on steps where a schedule with the usual attributes
        # (tfq's and TFMOT's have them) cannot prune; the schedule itself
        # decides in-graph on the others.
        timing = self._timing()
        if timing is None:
            return True
        freq, begin, end = timing
        if not self.regrowth and isinstance(end, int) and 0 <= end < step:
            # Past the end the target is reached; without regrowth a new mask
            # would be the same one (and each costs a sort per kernel).
            return False
        return step >= begin and ((step - begin) % freq == 0 or step == end)

    def on_train_batch_end(self, batch, logs=None):
        step = self._epoch_start_step + batch + 1
        if self._moments is None and self._moments_unresolved and self.model.optimizer.built:
            # Built by the first step: from now on the slope is its gradient average.
            self._moments_unresolved = False
            if self._find_moments():
                self._update_fn = self._build_update_fn(self._schedule)
        if self._maybe_due(step):
            with strategy_of(self.model).scope():
                self._update_fn(tf.constant(step, tf.int64))
            self._last_refresh = step
        elif self._snapshot_fn is not None:
            # Snapshot the kernels `window` steps before the next mask update,
            # so the slope it uses is the mean step of those last steps.
            nxt = self._next_due(step)
            if nxt is not None and 0 < nxt - step <= self._window < nxt - self._last_refresh:
                with strategy_of(self.model).scope():
                    self._snapshot_fn(tf.constant(step, tf.int64))
                self._last_refresh = step

    def on_epoch_end(self, epoch, logs=None):
        zeros, total = 0, 0
        for spec in self.specs:
            w = to_numpy(spec.variable)
            check_finite(spec, w, trained=True)
            z = int(np.sum(w == 0))
            zeros, total = zeros + z, total + w.size
            if logs is not None:
                logs[f"sparsity/{spec.key}"] = z / w.size
        if logs is not None:
            logs["sparsity"] = zeros / max(total, 1)

    def on_train_end(self, logs=None):
        for spec in self.specs or []:
            hook = spec.variable.constraint
            if isinstance(hook, KernelHook):
                hook.pruning = hook.pruning_post = None
            KernelHook.detach_if_empty(spec.variable)
        self._installed = False
        rebuild_train_function(self.model)
        for i, spec in enumerate(self.specs or []):
            warn_empty_channels(spec, self.state.mask[i])
