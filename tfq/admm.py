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

This module holds all of ADMM: the math, the state (a Keras layer owning G, U,
the frozen codes and the scalars) and the run (`ADMMTraining`: when ADMM
starts, how rho grows, the switch to fine-tuning with frozen codes, the final
projection). `tfq.ADMMCallback` is the thin Keras adapter that drives it.

The run, epoch by epoch: idle until its start epoch (or until pruning in the
same fit has reached its target), then ADMM with rho growing geometrically,
then `finetune_epochs` epochs with every kernel projected and its codes
frozen while the per-channel scales keep training; when `fit` ends every
compressed kernel is exactly `scale[c] * level` and is recorded as such
(`tfq.record`).

References:
    C. Leng, H. Li, S. Zhu, R. Jin. "Extremely Low Bit Neural Network: Squeeze
    the Last Bit Out with ADMM". AAAI 2018.
"""

import keras
import numpy as np
import tensorflow as tf

from tfq import pruning, quantizers, record
from tfq import state as tfq_state
from tfq.training import (KernelHook, KernelRun, KernelState, attached_state, check_finite, finite_or_raise, nonfinite_message,
                          rebuild_train_function, strategy_of, to_numpy, warn_empty_channels)

__all__ = ["prox_step", "dual_update", "ADMMState", "ADMMTraining", "PHASE_IDLE", "PHASE_ADMM", "PHASE_FINETUNE",
           "PHASE_DONE"]

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
    axes = quantizers.normalize_axes(channel_axis, len(shape))
    rows, perm = quantizers.to_rows(q, axes)
    s = tf.reshape(scale, [-1, 1])
    lv = tf.round(tf.math.divide_no_nan(rows, s))
    return quantizers.from_rows(lv, shape, perm)


class ADMMState(KernelState):
    """Variables of ADMM for a list of kernels: G, U, frozen codes, scales, rho, phase.

    Attached to the model (`tfq.state`) so that `model.save`, `save_weights`
    and `BackupAndRestore` carry it; it is not one of the model's layers, so a
    model rebuilt by `load_model` simply has no ADMM state.

    Args:
        specs: list of `tfq.kernels.KernelSpec`.
    """

    def __init__(self, specs, **kwargs):
        super().__init__(specs, **kwargs)
        self.g, self.u, self.codes, self.scale = [], [], [], []
        for s in specs:
            shape = tuple(s.variable.shape)
            if s.quantizer.per_channel:
                axes = quantizers.normalize_axes(s.channel_axis, len(shape))
                channels = int(np.prod([shape[a] for a in axes]))
            else:
                channels = 1
            self.g.append(self.kernel_variable(s, "g"))
            self.u.append(self.kernel_variable(s, "u"))
            self.codes.append(self.kernel_variable(s, "codes"))
            self.scale.append(self.kernel_variable(s, "scale", shape=(channels,)))
        self.rho = self.scalar("rho")
        self.phase = self.scalar("phase", "int32")
        self.step = self.scalar("step", "int64")
        self.start_epoch = self.scalar("start_epoch", "int32")
        self.built = True

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


class ADMMTraining(KernelRun):
    """The ADMM run of one `fit`: the phase machine, the rho schedule, the updates.

    Driven by `tfq.ADMMCallback` (its docstring lists the arguments), which
    forwards the Keras events to the `on_*` methods of the same names.
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
        self._hook_phase = None
        self._phase = None
        self._update_fn = None
        self._last_update = None
        self._epoch_start_step = 0

    # -- setup -----------------------------------------------------------------

    def _setup(self):
        model = self.model
        self.specs = self.select(self.scheme, what="ADMM", who="ADMMCallback")
        self.state = attached_state(model, tfq_state.ADMM, self.specs, lambda: ADMMState(self.specs, name="tfq_admm_state"))

    def _masks(self):
        return pruning.masks_for(self.model, [s.key for s in self.specs])

    # -- per-step constraint (in the train step graph) ---------------------------

    def _make_step(self, i, phase):
        spec = self.specs[i]
        state = self.state
        masks = self._masks()
        mask = masks[i]
        optimizer = self.model.optimizer
        axis = spec.channel_axis if spec.quantizer.per_channel else None

        def step(w):
            if phase == PHASE_ADMM:
                eta_rho = tf.cast(optimizer.learning_rate, w.dtype) * tf.cast(state.rho, w.dtype)
                w = prox_step(w, state.g[i] - state.u[i], eta_rho)
            elif phase == PHASE_FINETUNE:
                w, _ = quantizers.fit_scale(w, state.codes[i], mask=mask, channel_axis=axis)
            if mask is not None:
                w = w * tf.cast(mask, w.dtype)
            return w

        step.masks = mask is not None
        return step

    def _install(self, phase):
        self._phase = phase
        if phase == PHASE_IDLE:
            # Waiting (e.g. for pruning): the ADMM step with rho = 0 is the
            # identity (G = U = 0 too), and installing it now saves retracing
            # and recompiling the train step when ADMM starts mid-fit.
            phase = PHASE_ADMM
        if self._hook_phase == phase:
            return
        for i, spec in enumerate(self.specs):
            hook = KernelHook.attach(spec.variable)
            hook.admm = self._make_step(i, phase) if phase in (PHASE_ADMM, PHASE_FINETUNE) else None
        self._hook_phase = phase
        rebuild_train_function(self.model)

    def _uninstall(self):
        for spec in self.specs or []:
            hook = spec.variable.constraint
            if isinstance(hook, KernelHook):
                hook.admm = None
            KernelHook.detach_if_empty(spec.variable)
        self._hook_phase = None
        self._phase = None
        rebuild_train_function(self.model)

    # -- infrequent updates (tf.function, cross-replica) -------------------------

    def _build_update_fn(self):
        specs, state, masks = self.specs, self.state, self._masks()

        @tf.function
        def update(step):
            for i, spec in enumerate(specs):
                axis = spec.channel_axis if spec.quantizer.per_channel else None
                g, u, scale = dual_update(
                    finite_or_raise(spec.variable, nonfinite_message(spec)), tf.convert_to_tensor(state.u[i]), spec.quantizer, masks[i], axis,
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
            check_finite(spec)
            warn_empty_channels(spec, masks[i])
            axis = spec.channel_axis if spec.quantizer.per_channel else None
            q, scale = spec.quantizer.project(tf.convert_to_tensor(spec.variable), mask=masks[i], channel_axis=axis)
            self.state.g[i].assign(q)
            self.state.scale[i].assign(tf.reshape(scale, [-1]))
            if reset_dual:
                self.state.u[i].assign(tf.zeros_like(q))
            else:
                spec.variable.assign(q)
                self.state.codes[i].assign(_levels_of(q, scale, axis))

    def _record(self):
        for spec in self.specs:
            record.mark(spec.layer, spec.name, spec.quantizer, spec.channel_axis)

    # -- callback events ---------------------------------------------------------

    def on_train_begin(self, logs=None):
        if self.specs is None:
            self._setup()
        if getattr(self.model, "optimizer", None) is None:
            raise ValueError("ADMMCallback: compile the model before fit")
        if int(to_numpy(self.state.phase)) == PHASE_DONE:
            self.state.phase.assign(PHASE_IDLE)
        self._update_fn = self._build_update_fn()
        if int(to_numpy(self.state.phase)) == PHASE_IDLE:
            # Trace (and XLA-compile) the update now, outside the epochs: the
            # first call costs about a second on LeNet-300-100, which would
            # otherwise land in the epoch where ADMM starts. Harmless while
            # idle: the start resets G, U, the scales and the step. A NaN
            # kernel gets the NumPy check's message, not the in-graph one.
            for spec in self.specs:
                check_finite(spec)
            with strategy_of(self.model).scope():
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
        end = pruning.end_step(self.model)
        if end is None:
            return True
        return end < 0 or int(to_numpy(self.model.optimizer.iterations)) >= end

    def on_epoch_begin(self, epoch, logs=None):
        strategy = strategy_of(self.model)
        with strategy.scope():
            phase = int(to_numpy(self.state.phase))
            if phase == PHASE_IDLE and self._should_start(epoch):
                self._project_all(reset_dual=True)
                self.state.phase.assign(PHASE_ADMM)
                self.state.step.assign(0)
                self.state.start_epoch.assign(epoch)
                phase = PHASE_ADMM
                if self.verbose:
                    print(f"[tfq] ADMM: starting at epoch {epoch}")
            start = int(to_numpy(self.state.start_epoch))
            rho = min(self.rho0 * self.rho_growth ** max(epoch - start, 0), self.rho_max)
            self.state.rho.assign(rho if phase != PHASE_IDLE else 0.0)
            if phase == PHASE_ADMM and epoch >= self._switch_epoch() and self.finetune_epochs > 0:
                self._project_all(reset_dual=False)
                self.state.phase.assign(PHASE_FINETUNE)
                phase = PHASE_FINETUNE
                if self.verbose:
                    print(f"[tfq] ADMM: epoch {epoch}: kernels projected, fine-tuning scales with frozen codes")
        self._epoch_start_step = int(to_numpy(self.model.optimizer.iterations))
        self._last_update = self._epoch_start_step // self.update_every
        self._install(phase)

    def on_train_batch_end(self, batch, logs=None):
        if self._phase != PHASE_ADMM:
            return
        step = self._epoch_start_step + batch + 1
        if step // self.update_every != self._last_update:
            self._last_update = step // self.update_every
            with strategy_of(self.model).scope():
                self._update_fn(tf.constant(step, tf.int64))

    def on_epoch_end(self, epoch, logs=None):
        for spec in self.specs:
            check_finite(spec, trained=True)
        if logs is None:
            return
        if int(to_numpy(self.state.phase)) == PHASE_IDLE:
            per, total = [1.0] * len(self.specs), 1.0  # not started (waiting for pruning)
        else:
            per, total = self.state.residuals([s.variable for s in self.specs])
        logs["admm_rho"] = float(to_numpy(self.state.rho))
        logs["admm_residual"] = float(total)
        for spec, r in zip(self.specs, per):
            logs[f"admm_residual/{spec.key}"] = float(r)

    def on_train_end(self, logs=None):
        self._uninstall()
        with strategy_of(self.model).scope():
            phase = int(to_numpy(self.state.phase))
            if phase in (PHASE_ADMM, PHASE_IDLE):
                self._project_all(reset_dual=False)
            elif phase == PHASE_FINETUNE:
                # Already in the set after every step; fit once more so the
                # values are exactly scale * code even if training stopped early.
                masks = self._masks()
                for i, spec in enumerate(self.specs):
                    axis = spec.channel_axis if spec.quantizer.per_channel else None
                    w, _ = quantizers.fit_scale(spec.variable, self.state.codes[i], mask=masks[i], channel_axis=axis)
                    spec.variable.assign(w)
            self.state.phase.assign(PHASE_DONE)
        for spec in self.specs:
            check_finite(spec)
        self._record()
