"""Keras callbacks that compress a model during `fit`: ADMM and pruning.

How they hook into training: each compressed kernel variable gets a
constraint (`keras.Variable.constraint`, which the Keras optimizer applies
in-graph right after every update). The constraint applies the per-step part
(pruning masks, the ADMM proximal pull, the frozen-code scale fit), so it runs
inside the compiled train step, also under `tf.distribute` and with
`steps_per_execution > 1`. The infrequent parts (ADMM's projection and dual
update, mask recomputation) run from `on_train_batch_end` as one `tf.function`.
The layers' own `kernel_constraint` is kept (applied first) and put back when
training ends. NaN or Inf in a kernel (from the weights or the gradients) is
caught in-graph by every infrequent update and at every epoch end, not per
step (a per-step check cost 5% of a LeNet-300-100 step). State lives in Keras layers attached to the model
(`model._tfq_admm`, `model._tfq_pruning`), so `model.save`, `save_weights`
and `BackupAndRestore` carry it.

After `fit` with `ADMMCallback`, each compressed layer carries a plain attribute
`tfq_compression`: `{variable name: {"scheme", "per_channel", "channel_axis"}}`.
It does not survive `load_model` (the kernels' values do; they are exactly
`scale[c] * level`).
"""

import warnings
import weakref

import keras
import numpy as np
import tensorflow as tf

from tfq import admm as admm_lib
from tfq import pruning as pruning_lib
from tfq import quantizers
from tfq.layers.kernels import select_kernels

__all__ = ["ADMMCallback", "PruningCallback", "KernelHook"]


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


def _strategy(model):
    return getattr(model, "distribute_strategy", None) or tf.distribute.get_strategy()


def _numpy(v):
    return np.asarray(keras.ops.convert_to_numpy(v))


def _check_finite(spec, value=None, trained=False):
    """Raises unless the kernel (or `value`) is finite; `trained`: say it came from the optimizer steps.

    The NumPy check used before training and at epoch ends (the infrequent
    updates check in-graph, `_finite_or_raise`).
    """
    w = _numpy(spec.variable if value is None else value)
    if not np.all(np.isfinite(w)):
        raise ValueError(_nonfinite_message(spec) if trained else
                         f"Layer {spec.layer.name!r}: {spec.name} contains NaN or Inf")


# layer -> {variable name: the empty channels last reported}: the ADMM projections and the end of
# pruning all look at the same kernel, and one message per layer and state is enough.
_EMPTY_REPORTED = weakref.WeakKeyDictionary()


def _warn_empty_channels(spec, mask=None):
    w = _numpy(spec.variable)
    if mask is not None:
        w = w * _numpy(mask)
    axes = quantizers._normalize_axes(spec.channel_axis, w.ndim) if spec.quantizer is None or spec.quantizer.per_channel else ()
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


def _nonfinite_message(spec):
    return (f"tfq: NaN or Inf in layer {spec.layer.name!r} {spec.name} after the optimizer steps "
            "(weights or gradients)")


def _finite_or_raise(w, msg):
    """`w`, after checking in-graph that it holds no NaN or Inf (raises with `msg`).

    `0 * w` is 0 for finite entries and NaN otherwise, so one sum decides;
    check_numerics over the whole kernel cost 3x more (about 20% of a
    LeNet-300-100 train step on its own).
    """
    w = tf.convert_to_tensor(w)
    bad = tf.reduce_sum(w * tf.zeros([], w.dtype))
    with tf.control_dependencies([tf.debugging.check_numerics(bad, msg)]):
        return tf.identity(w)


def _rebuild_train_function(model):
    # A train function traced before the constraints changed would not apply
    # them; Keras reads `model.train_function` at every step, so a fresh one
    # takes effect immediately.
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def _steps_per_epoch(params):
    steps = params.get("steps") if params else None
    return int(steps) if steps else None


def _gradient_averages(optimizer, variables):
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


class _KernelStateCallback(keras.callbacks.Callback):
    """Shared set-up of the callbacks that keep per-kernel state on the model."""

    def set_model(self, model):
        super().set_model(model)
        if model.built and self.specs is None:
            self._setup()

    def _attach_state(self, attr, make_state, compatible=lambda state: True):
        """Returns the state layer at `model.<attr>`, made anew unless it matches `self.specs`.

        The state is not a layer of the model (the model's config must not
        change) but is saved with it: Keras' saver walks all attributes.
        """
        model = self.model
        state = getattr(model, attr, None)
        if state is None or state.keys != [s.key for s in self.specs] or not compatible(state):
            with _strategy(model).scope():
                state = make_state()
            object.__setattr__(model, attr, state)
        return state


class ADMMCallback(_KernelStateCallback):
    """Trains the model's kernels into a low-bit set with ADMM (Leng et al., AAAI 2018).

    ADMM runs for the first `epochs - finetune_epochs` epochs; then every kernel
    is replaced by its projection and, for the last `finetune_epochs` epochs,
    kept in the set with frozen codes while the per-channel scales (and the
    float layers) keep training. When `fit` ends every compressed kernel is
    exactly `scale[c] * level`.

    Args:
        scheme: default scheme ("binary", "ternary", "pow2_3bit", "pow2_4bit",
            a config dict or a `tfq.quantizers.Quantizer`).
        layers: None (every supported layer except the first and the last), a
            dict `{layer name: scheme | True | None}` naming exactly the layers
            to compress, or a callable `layer -> scheme | True | None`.
        skip_first_last: with `layers=None`, keep the first and the last
            supported layer in float (default True).
        rho: rho in the first epoch.
        rho_growth: factor applied to rho every epoch.
        rho_max: upper bound of rho.
        update_every: steps between two projection/dual updates (k).
        finetune_epochs: epochs at the end with frozen codes (0: none; the
            kernels are projected when training ends).
        start_epoch: first ADMM epoch. None: the first epoch, or, with a
            `PruningCallback` in the same fit, the first epoch after pruning
            reached its target (prune first, then quantize), but no later than
            the epoch before fine-tuning.
        verbose: print the phase changes.

    Logs (per epoch, visible to CSVLogger/TensorBoard when this callback is
    listed before them): `admm_rho`, `admm_residual` (||W - G|| / ||W|| over all
    compressed kernels) and `admm_residual/<layer>/<variable>`.

    References:
        C. Leng, H. Li, S. Zhu, R. Jin. "Extremely Low Bit Neural Network:
        Squeeze the Last Bit Out with ADMM". AAAI 2018.
    """

    def __init__(
        self,
        scheme="ternary",
        layers=None,
        skip_first_last=True,
        rho=5.0,
        rho_growth=3.0,
        rho_max=1e4,
        update_every=32,
        finetune_epochs=1,
        start_epoch=None,
        verbose=0,
    ):
        super().__init__()
        self.start_epoch = None if start_epoch is None else int(start_epoch)
        self.scheme = quantizers.get(scheme)
        if self.scheme is None:
            raise ValueError(f"ADMMCallback needs a scheme; valid: {quantizers.names()}")
        self.layers = layers
        self.skip_first_last = bool(skip_first_last)
        if not rho > 0 or not rho_growth >= 1 or not rho_max >= rho:
            raise ValueError(f"need rho > 0, rho_growth >= 1 and rho_max >= rho; got {rho}, {rho_growth}, {rho_max}")
        self.rho0, self.rho_growth, self.rho_max = float(rho), float(rho_growth), float(rho_max)
        if int(update_every) < 1:
            raise ValueError(f"update_every must be >= 1, got {update_every}")
        self.update_every = int(update_every)
        if int(finetune_epochs) < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
        self.finetune_epochs = int(finetune_epochs)
        self.verbose = verbose
        self.specs = None
        self.state = None
        self._hook_phase = None
        self._phase = None
        self._update_fn = None
        self._last_update = None
        self._epoch_start_step = 0

    # -- setup -----------------------------------------------------------------

    def _setup(self):
        model = self.model
        if not model.built:
            raise ValueError(f"ADMMCallback: model {model.name!r} must be built before fit")
        self.specs = select_kernels(model, self.scheme, self.layers, self.skip_first_last, what="ADMM")
        self.state = self._attach_state("_tfq_admm", lambda: admm_lib.ADMMState(self.specs, name="tfq_admm_state"))

    def _masks(self):
        pstate = getattr(self.model, "_tfq_pruning", None)
        return [pstate.mask_for(s.key) if pstate is not None else None for s in self.specs]

    # -- per-step constraint (in the train step graph) ---------------------------

    def _make_step(self, i, phase):
        spec = self.specs[i]
        state = self.state
        masks = self._masks()
        mask = masks[i]
        optimizer = self.model.optimizer
        axis = spec.channel_axis if spec.quantizer.per_channel else None

        def step(w):
            if phase == admm_lib.PHASE_ADMM:
                eta_rho = tf.cast(optimizer.learning_rate, w.dtype) * tf.cast(state.rho, w.dtype)
                w = admm_lib.prox_step(w, state.g[i] - state.u[i], eta_rho)
            elif phase == admm_lib.PHASE_FINETUNE:
                w, _ = quantizers.fit_scale(w, state.codes[i], mask=mask, channel_axis=axis)
            if mask is not None:
                w = w * tf.cast(mask, w.dtype)
            return w

        step.masks = mask is not None
        return step

    def _install(self, phase):
        self._phase = phase
        if phase == admm_lib.PHASE_IDLE:
            # Waiting (e.g. for pruning): the ADMM step with rho = 0 is the
            # identity (G = U = 0 too), and installing it now saves retracing
            # and recompiling the train step when ADMM starts mid-fit.
            phase = admm_lib.PHASE_ADMM
        if self._hook_phase == phase:
            return
        for i, spec in enumerate(self.specs):
            hook = KernelHook.attach(spec.variable)
            hook.admm = self._make_step(i, phase) if phase in (admm_lib.PHASE_ADMM, admm_lib.PHASE_FINETUNE) else None
        self._hook_phase = phase
        _rebuild_train_function(self.model)

    def _uninstall(self):
        for spec in self.specs or []:
            hook = spec.variable.constraint
            if isinstance(hook, KernelHook):
                hook.admm = None
            KernelHook.detach_if_empty(spec.variable)
        self._hook_phase = None
        self._phase = None
        _rebuild_train_function(self.model)

    # -- infrequent updates (tf.function, cross-replica) -------------------------

    def _build_update_fn(self):
        specs, state, masks = self.specs, self.state, self._masks()

        @tf.function
        def update(step):
            for i, spec in enumerate(specs):
                axis = spec.channel_axis if spec.quantizer.per_channel else None
                g, u, scale = admm_lib.dual_update(
                    _finite_or_raise(spec.variable, _nonfinite_message(spec)), tf.convert_to_tensor(state.u[i]), spec.quantizer, masks[i], axis,
                    init_scale=tf.convert_to_tensor(state.scale[i]),
                )
                state.g[i].assign(g)
                state.u[i].assign(u)
                state.scale[i].assign(scale)
            state.step.assign(step)

        return update

    def _project_all(self, reset_dual):
        """G = Proj(W) (and U = 0), or W = G when switching to fine-tuning."""
        masks = self._masks()
        for i, spec in enumerate(self.specs):
            _check_finite(spec)
            _warn_empty_channels(spec, masks[i])
            axis = spec.channel_axis if spec.quantizer.per_channel else None
            q, scale = spec.quantizer.project(tf.convert_to_tensor(spec.variable), mask=masks[i], channel_axis=axis)
            self.state.g[i].assign(q)
            self.state.scale[i].assign(tf.reshape(scale, [-1]))
            if reset_dual:
                self.state.u[i].assign(tf.zeros_like(q))
            else:
                spec.variable.assign(q)
                self.state.codes[i].assign(admm_lib._levels_of(q, scale, axis))

    def _record(self):
        for spec in self.specs:
            info = dict(getattr(spec.layer, "tfq_compression", None) or {})
            info[spec.name] = {
                "scheme": spec.quantizer.name,
                "per_channel": spec.quantizer.per_channel,
                "channel_axis": spec.channel_axis,
            }
            object.__setattr__(spec.layer, "tfq_compression", info)

    # -- callback events ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.specs is None:
            self._setup()
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError("ADMMCallback: compile the model before fit")
        if int(_numpy(self.state.phase)) == admm_lib.PHASE_DONE:
            self.state.phase.assign(admm_lib.PHASE_IDLE)
        self._update_fn = self._build_update_fn()
        if int(_numpy(self.state.phase)) == admm_lib.PHASE_IDLE:
            # Trace (and XLA-compile) the update now, outside the epochs: the
            # first call costs about a second on LeNet-300-100, which would
            # otherwise land in the epoch where ADMM starts. Harmless while
            # idle: the start resets G, U, the scales and the step. A NaN
            # kernel gets the NumPy check's message, not the in-graph one.
            for spec in self.specs:
                _check_finite(spec)
            with _strategy(self.model).scope():
                self._update_fn(tf.constant(0, tf.int64))
        self._record()

    def _switch_epoch(self):
        epochs = int(self.params.get("epochs", 1)) if self.params else 1
        return max(epochs - self.finetune_epochs, 0)

    def _should_start(self, epoch):
        if self.start_epoch is not None:
            return epoch >= self.start_epoch
        if epoch >= self._switch_epoch() - 1:
            return True
        pstate = getattr(self.model, "_tfq_pruning", None)
        if pstate is None:
            return True
        end = int(_numpy(pstate.end_step))
        return end < 0 or int(_numpy(self.model.optimizer.iterations)) >= end

    def on_epoch_begin(self, epoch, logs=None):
        strategy = _strategy(self.model)
        with strategy.scope():
            phase = int(_numpy(self.state.phase))
            if phase == admm_lib.PHASE_IDLE and self._should_start(epoch):
                self._project_all(reset_dual=True)
                self.state.phase.assign(admm_lib.PHASE_ADMM)
                self.state.step.assign(0)
                self.state.start_epoch.assign(epoch)
                phase = admm_lib.PHASE_ADMM
                if self.verbose:
                    print(f"[tfq] ADMM: starting at epoch {epoch}")
            start = int(_numpy(self.state.start_epoch))
            rho = min(self.rho0 * self.rho_growth ** max(epoch - start, 0), self.rho_max)
            self.state.rho.assign(rho if phase != admm_lib.PHASE_IDLE else 0.0)
            if phase == admm_lib.PHASE_ADMM and epoch >= self._switch_epoch() and self.finetune_epochs > 0:
                self._project_all(reset_dual=False)
                self.state.phase.assign(admm_lib.PHASE_FINETUNE)
                phase = admm_lib.PHASE_FINETUNE
                if self.verbose:
                    print(f"[tfq] ADMM: epoch {epoch}: kernels projected, fine-tuning scales with frozen codes")
        self._epoch_start_step = int(_numpy(self.model.optimizer.iterations))
        self._last_update = self._epoch_start_step // self.update_every
        self._install(phase)

    def on_train_batch_end(self, batch, logs=None):
        if self._phase != admm_lib.PHASE_ADMM:
            return
        step = self._epoch_start_step + batch + 1
        if step // self.update_every != self._last_update:
            self._last_update = step // self.update_every
            with _strategy(self.model).scope():
                self._update_fn(tf.constant(step, tf.int64))

    def on_epoch_end(self, epoch, logs=None):
        for spec in self.specs:
            _check_finite(spec, trained=True)
        if logs is None:
            return
        if int(_numpy(self.state.phase)) == admm_lib.PHASE_IDLE:
            per, total = [1.0] * len(self.specs), 1.0  # not started (waiting for pruning)
        else:
            per, total = self.state.residuals([s.variable for s in self.specs])
        logs["admm_rho"] = float(_numpy(self.state.rho))
        logs["admm_residual"] = float(total)
        for spec, r in zip(self.specs, per):
            logs[f"admm_residual/{spec.key}"] = float(r)

    def on_train_end(self, logs=None):
        self._uninstall()
        with _strategy(self.model).scope():
            phase = int(_numpy(self.state.phase))
            if phase in (admm_lib.PHASE_ADMM, admm_lib.PHASE_IDLE):
                self._project_all(reset_dual=False)
            elif phase == admm_lib.PHASE_FINETUNE:
                # Already in the set after every step; fit once more so the
                # values are exactly scale * code even if training stopped early.
                masks = self._masks()
                for i, spec in enumerate(self.specs):
                    axis = spec.channel_axis if spec.quantizer.per_channel else None
                    w, _ = quantizers.fit_scale(spec.variable, self.state.codes[i], mask=masks[i], channel_axis=axis)
                    spec.variable.assign(w)
            self.state.phase.assign(admm_lib.PHASE_DONE)
        for spec in self.specs:
            _check_finite(spec)
        self._record()


class PruningCallback(_KernelStateCallback):
    """Prunes kernels during `fit` by importance (value and slope), to a target sparsity.

    Args:
        target_sparsity: final fraction of zeros per kernel, in [0, 1).
        schedule: None (polynomial decay from 0 reaching the target at
            `end_fraction` of training), a `tfq.pruning` schedule or any
            callable `step -> (should_prune, sparsity)`, e.g. TFMOT's
            `PruningSchedule` objects.
        importance: "gradient" (value and slope) or "magnitude" (value only).
            The slope is the optimizer's running average of the gradient
            when it keeps one (Adam, AdamW, Adamax, Nadam, Lion, SGD with
            momentum), else the mean step it took over a window (see
            `tfq.pruning`).
        gamma: weight of the slope term in the gradient-aware score.
        beta: decay of the slope running average (measured slope only).
        regrowth: let pruned connections come back when their score recovers.
        frequency: steps between mask updates for the default schedule.
        end_fraction: for the default schedule, fraction of the training
            steps after which the target is reached.
        layers / skip_first_last: which layers, with the same defaults as
            `ADMMCallback`: every supported layer except the first and the
            last (their few weights matter most: at 90% LeNet-5's first
            convolution lost whole output channels), so the two callbacks in
            one `fit` agree.

    Logs (per epoch): `sparsity` (all pruned kernels) and `sparsity/<layer>/<variable>`.
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
    ):
        super().__init__()
        self.target_sparsity = pruning_lib.check_sparsity(target_sparsity)
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
        self.specs = None
        self.state = None
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
        if not model.built:
            raise ValueError(f"PruningCallback: model {model.name!r} must be built before fit")
        self.specs = select_kernels(model, None, self.layers, self.skip_first_last, what="pruning")
        self.state = self._attach_state(
            "_tfq_pruning",
            lambda: pruning_lib.PruningState(self.specs, regrowth=self.regrowth, name="tfq_pruning_state"),
            compatible=lambda state: state.regrowth == self.regrowth,
        )

    def _make_step(self, i):
        spec, state = self.specs[i], self.state
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
        steps = _steps_per_epoch(self.params)
        if steps is None:
            raise ValueError("PruningCallback: cannot infer the number of steps; pass schedule=")
        # Counted from the step pruning began (kept in the state), so a run
        # resumed by BackupAndRestore follows the same schedule.
        start = int(_numpy(self.state.begin_step))
        total = max(epochs * steps, 1)
        end = start + max(int(total * self.end_fraction), 1)
        freq = min(self.frequency, max(1, (end - start) // 4))
        return pruning_lib.PolynomialDecay(0.0, self.target_sparsity, start, end, power=3, frequency=freq)

    def _build_update_fn(self, schedule):
        specs, state = self.specs, self.state
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
                    w = _finite_or_raise(spec.variable, _nonfinite_message(spec))
                    if moments is not None:
                        state.slope[i].assign(tf.cast(tf.abs(moments[i]), state.slope[i].dtype))
                    if regrowth:
                        # Pruned weights compete with the value they would have.
                        w = tf.where(state.mask[i] > 0, w, state.shadow[i])
                    score = pruning_lib.importance(w, tf.abs(state.slope[i]) if use_slope else None, gamma)
                    mask = pruning_lib.prune_mask(score, sparsity, state.mask[i], regrowth)
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
        if int(_numpy(self.state.initialized)) == 0:
            with _strategy(self.model).scope():
                for i, spec in enumerate(self.specs):
                    _check_finite(spec)
                    self.state.prev[i].assign(spec.variable)
                self.state.begin_step.assign(int(_numpy(self.model.optimizer.iterations)))
                self.state.step.assign(int(_numpy(self.model.optimizer.iterations)))
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
        _rebuild_train_function(self.model)

    def _find_moments(self):
        """Looks up the optimizer's gradient averages (it is built by the first step at the latest)."""
        if self.importance != "gradient":
            return False
        self._moments = _gradient_averages(self.model.optimizer, [s.variable for s in self.specs])
        return self._moments is not None

    def _make_schedule(self):
        schedule = self.schedule if self.schedule is not None else self._default_schedule()
        self._schedule = schedule
        self._update_fn = self._build_update_fn(schedule)
        end = getattr(schedule, "end_step", None)
        with _strategy(self.model).scope():
            self.state.end_step.assign(int(end) if isinstance(end, (int, np.integer)) and end >= 0 else -1)

    def on_epoch_begin(self, epoch, logs=None):
        if not self._schedule_fresh:
            # Once more after every on_train_begin (BackupAndRestore may have
            # restored the state after ours ran).
            self._make_schedule()
            self._schedule_fresh = True
        self._epoch_start_step = int(_numpy(self.model.optimizer.iterations))
        self._last_refresh = int(_numpy(self.state.step))

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
            with _strategy(self.model).scope():
                self._update_fn(tf.constant(step, tf.int64))
            self._last_refresh = step
        elif self._snapshot_fn is not None:
            # Snapshot the kernels `window` steps before the next mask update,
            # so the slope it uses is the mean step of those last steps.
            nxt = self._next_due(step)
            if nxt is not None and 0 < nxt - step <= self._window < nxt - self._last_refresh:
                with _strategy(self.model).scope():
                    self._snapshot_fn(tf.constant(step, tf.int64))
                self._last_refresh = step

    def on_epoch_end(self, epoch, logs=None):
        zeros, total = 0, 0
        for spec in self.specs:
            w = _numpy(spec.variable)
            _check_finite(spec, w, trained=True)
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
        _rebuild_train_function(self.model)
        for i, spec in enumerate(self.specs or []):
            _warn_empty_channels(spec, self.state.mask[i])
