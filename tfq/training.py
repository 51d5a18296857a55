"""What ADMM and pruning share while they train: the kernel hook and the checks.

Both hook into training the same way: each compressed kernel variable gets a
constraint (`keras.Variable.constraint`, which the Keras optimizer applies
in-graph right after every update), a `KernelHook` that applies the layer's
own constraint, then pruning's per-step part, then ADMM's. So the per-step
work runs inside the compiled train step, also under `tf.distribute` and with
`steps_per_execution > 1`. NaN or Inf in a kernel (from the weights or the
gradients) is caught in-graph by every infrequent update and at every epoch
end, not per step (a per-step check cost 5% of a LeNet-300-100 step).
"""

import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfq import quantizers
from tfq import state as tfq_state
from tfq.kernels import select_kernels

__all__ = ["KernelHook", "KernelRun", "KernelState", "strategy_of", "to_numpy", "check_finite", "finite_or_raise", "nonfinite_message",
           "warn_empty_channels", "rebuild_train_function", "steps_per_epoch", "attached_state"]


class KernelHook(keras.constraints.Constraint):
    """The constraint tfq puts on a kernel: the original constraint, then pruning, then ADMM."""

    def __init__(self, original=None):
        self.original = original
        self.pruning = None
        self.admm = None
        # Sees the final value of the step: pruning measures the optimizer's
        # own step from it, excluding ADMM's pull.
        self.pruning_post = None

    def __call__(self, w):
        if self.original is not None:
            w = self.original(w)
        # Pruning's plain mask product is redundant when ADMM's step ends
        # with the same mask product.
        if self.pruning is not None and not (getattr(self.pruning, "mask_only", False) and getattr(self.admm, "masks", False)):
            w = self.pruning(w)
        if self.admm is not None:
            w = self.admm(w)
        if self.pruning_post is not None:
            self.pruning_post(w)
        return w

    @property
    def empty(self):
        return self.pruning is None and self.admm is None

    @staticmethod
    def attach(variable):
        hook = variable.constraint
        if not isinstance(hook, KernelHook):
            hook = KernelHook(hook)
            variable.constraint = hook
        return hook

    @staticmethod
    def detach_if_empty(variable):
        hook = variable.constraint
        if isinstance(hook, KernelHook) and hook.empty:
            variable.constraint = hook.original


def strategy_of(model):
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def to_numpy(v):
    return np.asarray(keras.ops.convert_to_numpy(v))


def check_finite(spec, value=None, trained=False):
    """Raises unless the kernel (or `value`) is finite; `trained`: say it came from the optimizer steps.

    The NumPy check used before training and at epoch ends (the infrequent
    updates check in-graph, `_finite_or_raise`).
    """
    w = to_numpy(spec.variable if value is None else value)
    if not np.all(np.isfinite(w)):
        raise ValueError(nonfinite_message(spec) if trained else
                         f"Layer {spec.layer.name!r}: {spec.name} contains NaN or Inf")


# layer -> {variable name: the empty channels last reported}: the ADMM projections and the end of
# pruning all look at the same kernel, and one message per layer and state is enough.
_EMPTY_REPORTED = weakref.WeakKeyDictionary()


def warn_empty_channels(spec, mask=None):
    w = to_numpy(spec.variable)
    if mask is not None:
        w = w * to_numpy(mask)
    axes = quantizers.normalize_axes(spec.channel_axis, w.ndim) if spec.quantizer is None or spec.quantizer.per_channel else ()
    if not axes:
        return
    rest = tuple(a for a in range(w.ndim) if a not in axes)
    live = np.any(w != 0, axis=rest).reshape(-1)
    if not np.all(live):
        dead = np.flatnonzero(~live)
        reported = _EMPTY_REPORTED.setdefault(spec.layer, {})
        if reported.get(spec.name) == tuple(dead.tolist()):
            return
        reported[spec.name] = tuple(dead.tolist())
        warnings.warn(
            f"Layer {spec.layer.name!r}: {spec.name} has {dead.size} empty output channel(s) "
            f"(all weights zero or pruned), e.g. {dead[:8].tolist()}; their scale is 0",
            stacklevel=3,
        )


def nonfinite_message(spec):
    return (f"tfq: NaN or Inf in layer {spec.layer.name!r} {spec.name} after the optimizer steps "
            "(weights or gradients)")


def finite_or_raise(w, msg):
    """`w`, after checking in-graph that it holds no NaN or Inf (raises with `msg`).

    `0 * w` is 0 for finite entries and NaN otherwise, so one sum decides;
    check_numerics over the whole kernel cost 3x more (about 20% of a
    LeNet-300-100 train step on its own).
    """
    w = tf.convert_to_tensor(w)
    bad = tf.reduce_sum(w * tf.zeros([], w.dtype))
    with tf.control_dependencies([tf.debugging.check_numerics(bad, msg)]):
        return tf.identity(w)


def rebuild_train_function(model):
    # A train function traced before the constraints changed would not apply
    # them; Keras reads `model.train_function` at every step, so a fresh one
    # takes effect immediately.
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def steps_per_epoch(params):
    steps = params.get("steps") if params else None
    return int(steps) if steps else None


def attached_state(model, kind, specs, make_state, compatible=lambda state: True):
    """The `kind` state layer on `model` (`tfq.state`), made anew unless it matches `specs`.

    A state restored by `BackupAndRestore` or left by an earlier `fit` over the
    same kernels is reused, so a resumed run goes on where it stopped.
    """
    state = tfq_state.get(model, kind)
    if state is None or state.keys != [s.key for s in specs] or not compatible(state):
        with strategy_of(model).scope():
            state = make_state()
        tfq_state.attach(model, kind, state)
    return state


class KernelRun:
    """What the ADMM and pruning runs share: the model they are bound to, its kernels, Keras' params.

    `tfq.callbacks` binds a run to the model (`bind`, from `set_model`) and
    hands it the `fit` parameters (`params`, from `set_params`).
    """

    def __init__(self):
        self.model = None
        self.params = {}
        self.specs = None  # the selected kernels, once the model is known and built
        self.state = None  # the state layer on the model (`tfq.state`)

    def bind(self, model):
        """Attaches to `model` (selecting the kernels now when it is built)."""
        self.model = model
        if model.built and self.specs is None:
            self._setup()

    def _setup(self):
        raise NotImplementedError

    def select(self, scheme, what, who):
        """The kernels this run's `layers` / `skip_first_last` policy selects (`tfq.kernels.select_kernels`)."""
        if not self.model.built:
            raise ValueError(f"{who}: model {self.model.name!r} must be built before fit")
        return select_kernels(self.model, scheme, self.layers, self.skip_first_last, what=what)


class KernelState(keras.layers.Layer):
    """A state layer of per-kernel variables and scalars (`tfq.admm.ADMMState`, `tfq.pruning.PruningState`).

    Not one of the model's layers: `tfq.state` attaches it to the model so
    that Keras saves it. Variable names and creation order are part of the
    saved files (a resumed run loads them by position), so subclasses create
    theirs in a fixed order.
    """

    def __init__(self, specs, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.keys = [s.key for s in specs]

    def kernel_variable(self, spec, name, shape=None, initializer="zeros"):
        """A variable of kernel `spec` named "<layer>__<variable>__<name>" (kernel-shaped by default).

        "mean" aggregation lets replicas assign identical values in replica
        context under tf.distribute.
        """
        tag = spec.key.replace("/", "__")
        shape = tuple(spec.variable.shape) if shape is None else shape
        return self.add_weight(shape=shape, initializer=initializer, trainable=False, name=f"{tag}__{name}",
                               aggregation="mean")

    def scalar(self, name, dtype="float32"):
        """A scalar variable, written by the first replica only."""
        return self.add_weight(shape=(), initializer="zeros", trainable=False, name=name, dtype=dtype,
                               aggregation="only_first_replica")

    def call(self, inputs):  # pragma: no cover - never called; state only
        return inputs
