"""`tfq.compress` with data: ADMM (and pruning) with hyper-parameters derived from the data size."""

import math
import sys

import numpy as np

from tfq import schemes
from tfq.kernels import iter_layers
from tfq.compression.graph import clone_model, layer_kind, select_layers, to_numpy
from tfq.compression.report import LayerReport
from tfq.permutation import permute_channels


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


def compress_with_data(model, scheme, sparsity, data, validation_data, epochs, *, layers, skip_first_last, learning_rate,
               batch_size, verbose, strategy=None, block=None, distribution="uniform", permute=True):
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
        card = int(to_numpy(data.cardinality())) if hasattr(data, "cardinality") else -1
        steps = card if card > 0 else 1000
        fit_args = {"x": data, "shuffle": False}  # a dataset shuffles itself (or not)
        y_sample = next(iter(data))[1]
    hp = derive_schedule(steps, epochs, learning_rate)

    scope = strategy.scope if strategy is not None else contextlib.nullcontext
    with scope():
        small = clone_model(model)
        if block is not None and permute:
            permute_channels(small, block)
    multi_worker = False
    if strategy is not None:
        import tensorflow as tf

        from tfq import distribute

        unsynced = [l for l in iter_layers(small)
                    if isinstance(l, keras.layers.BatchNormalization) and not l.synchronized]
        small = distribute.prepare(small, strategy)
        multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    originals = {}
    chosen, specs = select_layers(small, scheme, layers, skip_first_last)
    for name, kernels in specs.items():
        for attr, var, _ in kernels:
            originals[(name, attr)] = to_numpy(var).astype(np.float64)
    loss = getattr(model, "loss", None) or _default_loss(small, y_sample)
    with scope():
        small.compile(optimizer=keras.optimizers.Adam(hp["learning_rate"]), loss=loss, metrics=["accuracy"],
                      jit_compile=False if strategy is not None else "auto")
    policy = {name: q for name, q in chosen.items()}
    cbs = []
    if sparsity:
        prunable = [n for n in policy if block is None or any(not isinstance(axis, tuple) for _, _, axis in specs[n])]
        cbs.append(tfq_callbacks.PruningCallback(target_sparsity=sparsity, layers={n: True for n in prunable},
                                                 end_fraction=0.5, block=block, distribution=distribution))
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
        recalibrated = reestimate_batch_norm(small, fit_args["x"], batch_size)
    if strategy is not None:
        for layer in unsynced:  # synchronized for training only (prepare); the saved config as given
            layer.synchronized = False
    acc_after = evaluate_accuracy(small, validation_data, batch_size) if validation_data is not None else None

    layer_map = {l.name: l for l in iter_layers(small)}
    reports = {}
    for name, kernels in specs.items():
        q = chosen[name]
        num = den = 0.0
        zeros = total = 0
        for attr, var, _ in kernels:
            w = to_numpy(var).astype(np.float64)
            w0 = originals[(name, attr)]
            num += float(((w - w0) ** 2).sum())
            den += float((w0**2).sum())
            zeros += int((w == 0).sum())
            total += w.size
        reports[name] = LayerReport(
            name=name, kind=layer_kind(layer_map[name]), scheme=q.name, params=total,
            sparsity=zeros / max(total, 1), bits=schemes.get(q.name).storage_bits,
            relative_error=math.sqrt(num / max(den, 1e-30)), corrections=("ADMM",) + (("pruned",) if sparsity else ()),
        )
    settings = dict(hp, batch_size=batch_size, sparsity=sparsity, block=block, distribution=distribution,
                    skip_first_last=skip_first_last, batch_norm_reestimated_on=recalibrated, optimizer="Adam",
                    loss=getattr(loss, "name", str(loss)))
    return small, reports, acc_before, acc_after, settings


def reestimate_batch_norm(model, data, batch_size=128, max_batches=100):
    """Recomputes every batch norm's moving mean and variance for the model's current weights.

    Keras keeps these statistics as moving averages (momentum 0.99 by
    default), which lag the weights: after `fit` with `tfq.ADMMCallback`
    (whose last projection moves every kernel at once) or `tfq.PruningCallback`,
    and even after a short float training, they describe weights the model no
    longer has. Measured on MNIST's small BN CNN (docs/compression.md, "Batch
    norm after `fit`"): float 96.98 -> 98.14, 80% pruned + ternary
    84.48 -> 92.89. Call it after `fit`, before evaluating or `tfq.convert`
    (which folds the statistics into the weights). `tfq.compress(data=...)`
    calls it for you.

    The model runs in training mode on up to `max_batches` batches, each batch
    norm's momentum set so that its moving statistics end as the plain mean of
    the batches' statistics: what the moving averages estimate, without the
    lag. Training-only layers (Dropout, noise) act as during training, as
    they do when Keras updates the averages. Batch norms with
    `trainable=False` run in inference mode and keep their statistics.

    Args:
        model: a built Keras model (nested models included).
        data: training inputs: an array, a dict of arrays (several inputs),
            an `(x, y)` or `(x, y, sample_weight)` tuple of arrays, or a
            `tf.data.Dataset` / iterable of batches (each an x, or a tuple
            whose first element is x; a list of two or three bare arrays
            reads as `(x, y[, w])`, so give such batches as tuples).
        batch_size: batch size for array data (batch statistics depend on it:
            use the training batch size).
        max_batches: at most this many batches are averaged.

    Returns:
        the number of batches used (0 when the model has no batch norm).
    """
    import keras

    if int(batch_size) < 1 or int(max_batches) < 1:
        raise ValueError(f"batch_size and max_batches must be >= 1, got {batch_size} and {max_batches}.")
    bns = [l for l in iter_layers(model) if isinstance(l, keras.layers.BatchNormalization)]
    if not bns:
        return 0
    momenta = [bn.momentum for bn in bns]
    used = 0
    try:
        for k, xb in enumerate(_input_batches(data, int(batch_size))):
            if k >= max_batches:
                break
            for bn in bns:
                bn.momentum = k / (k + 1.0)  # running value = mean over the batches so far
            model(xb, training=True)
            used += 1
    finally:
        for bn, m in zip(bns, momenta):
            bn.momentum = m
    if used == 0:
        raise ValueError("reestimate_batch_norm: data is empty.")
    return used


def _input_batches(data, batch_size):
    """The model inputs of `data` (see `reestimate_batch_norm`), batch by batch."""
    if (isinstance(data, (tuple, list)) and len(data) in (2, 3)
            and (hasattr(data[0], "shape") or isinstance(data[0], dict))):
        data = data[0]  # (x, y[, w]) arrays, not a list of (x, y) batches
    if isinstance(data, dict) or hasattr(data, "shape"):
        arrays = data if isinstance(data, dict) else {None: data}
        n = len(next(iter(arrays.values()))) if arrays else 0
        for i in range(0, n, batch_size):
            part = {k: v[i : i + batch_size] for k, v in arrays.items()}
            yield part[None] if None in part else part
        return
    for batch in data:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def evaluate_accuracy(model, data, batch_size=None):
    """Top-1 accuracy of a Keras classifier on (x, y) arrays or a dataset of (x, y) batches."""
    correct = count = 0
    for x, y in _batches(data, batch_size or 256):
        logits = to_numpy(model(x, training=False))
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
            yield to_numpy(x), to_numpy(y)
