"""Keras callbacks that compress a model during `fit`: thin adapters over `tfq.admm` and `tfq.pruning`.

`ADMMCallback` and `PruningCallback` hand each Keras event to the run they
hold (`tfq.admm.ADMMTraining`, `tfq.pruning.PruningTraining`), where the
algorithms, their state and their schedules live. How the runs hook into the
train step is described in `tfq.training`; where their state is kept (so that
`model.save`, `save_weights` and `BackupAndRestore` carry it) in `tfq.state`.

After `fit` with `ADMMCallback`, each compressed kernel is exactly
`scale[c] * level` and its layer records the scheme (`tfq.record`), which
`model.save` and `load_model` keep.
"""

import keras

from tfq import admm, pruning

__all__ = ["ADMMCallback", "PruningCallback"]


class _RunCallback(keras.callbacks.Callback):
    """Forwards the Keras events of one `fit` to a run object with the same `on_*` methods."""

    def __init__(self, run):
        super().__init__()
        self.run = run

    @property
    def specs(self):
        """The selected kernels (`tfq.kernels.KernelSpec`), None before the model is known."""
        return self.run.specs

    @property
    def state(self):
        """The run's state layer on the model (`tfq.state`), None before the model is known."""
        return self.run.state

    def set_model(self, model):
        super().set_model(model)
        self.run.bind(model)

    def set_params(self, params):
        super().set_params(params)
        self.run.params = params

    def on_train_begin(self, logs=None):
        self.run.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self.run.on_epoch_begin(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self.run.on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        self.run.on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        self.run.on_train_end(logs)


class ADMMCallback(_RunCallback):
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
        super().__init__(admm.ADMMTraining(
            scheme=scheme, layers=layers, skip_first_last=skip_first_last, rho=rho, rho_growth=rho_growth,
            rho_max=rho_max, update_every=update_every, finetune_epochs=finetune_epochs, start_epoch=start_epoch,
            verbose=verbose,
        ))


class PruningCallback(_RunCallback):
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
        block: None (default: individual weights), `(rows, cols)` or "RxC"
            (e.g. (4, 4) or "4x4": whole blocks of `rows` output channels ×
            `cols` consecutive positions of the reduction axis are pruned,
            judged by the block's mean importance; each side one of 1, 2, 4,
            8, 16, 32), or "auto": per kind of layer, the shape measured best
            on kernel speed and accuracy together (`tfq.pruning.AUTO_BLOCKS`:
            16x4 for convolutions, fewer rows in narrow ones, 4x4 for Dense
            and recurrent kernels, 16x4 for those of at least 2**20 weights
            per gate). LSTM/GRU kernels are cut per gate;
            depthwise kernels are not block-pruned (they stay dense unless
            named in `layers`, which is an error). Call
            `tfq.permute_channels(model, block)` on the float model before
            creating the callbacks, so that each block row joins channels
            that read the same inputs (`tfq.compress` does).
        distribution: how `target_sparsity` is spread over the pruned
            kernels. "uniform" (default): each kernel reaches it.
            "erk": it counts all of their weights together, and each kernel
            keeps a share proportional to `sum(shape) / prod(shape)`
            (`tfq.pruning.layer_sparsities`): large kernels are pruned
            harder, small ones (an output layer) keep most of their weights.
            Use it when every layer is pruned (`skip_first_last=False`).

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
        block=None,
        distribution="uniform",
    ):
        super().__init__(pruning.PruningTraining(
            target_sparsity=target_sparsity, schedule=schedule, importance=importance, gamma=gamma, beta=beta,
            regrowth=regrowth, frequency=frequency, end_fraction=end_fraction, layers=layers, skip_first_last=skip_first_last,
            block=block, distribution=distribution,
        ))
