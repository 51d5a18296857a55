"""One-call compression: data-free projection with corrections, or ADMM training.

`compress(model, scheme)` without data projects every selected kernel onto the
low-bit set (per-channel optimal scale, `tfq.quantizers`), after cross-layer
weight equalization and followed by analytic bias correction, the two
data-free corrections of Nagel et al. With data it runs the ADMM training of
`tfq.ADMMCallback` (plus `tfq.PruningCallback` when a sparsity is asked for)
with derived hyper-parameters. Either way it returns a new model; the input
model is left untouched.

What applies to which layer is documented in docs/data_free.md. The package,
by concern: `graph` (the layer graph, the copy, the selection), `bn_stats`
(activation statistics from batch norm), `corrections` (equalization, bias
correction), `data_free` and `with_data` (the two paths), `report`.

References:
    Nagel, van Baalen, Blankevoort, Welling. "Data-Free Quantization Through
    Weight Equalization and Bias Correction", ICCV 2019.
    Leng, Dou, Li, Zhu, Jin. "Extremely Low Bit Neural Network: Squeeze the
    Last Bit Out with ADMM", AAAI 2018.
"""

import time

import numpy as np

from tfq import record
from tfq.compression.data_free import compress_data_free
from tfq.compression.graph import all_kernels, clone_model, first_line, layer_kind, select_layers
from tfq.compression.report import CompressionReport, LayerReport
from tfq.compression.with_data import compress_with_data, derive_schedule, evaluate_accuracy, reestimate_batch_norm
from tfq.kernels import iter_layers
from tfq.permutation import permute_channels

__all__ = ["compress", "strip_training_state", "reestimate_batch_norm", "derive_schedule", "evaluate_accuracy",
           "CompressionReport", "LayerReport"]


def compress(
    model,
    scheme="ternary",
    sparsity=None,
    data=None,
    validation_data=None,
    epochs=None,
    *,
    layers=None,
    skip_first_last=True,
    corrections=True,
    learning_rate=None,
    batch_size=None,
    verbose=1,
    return_report=False,
    keep_training_state=False,
    strategy=None,
    block=None,
    distribution="uniform",
    permute=None,
):
    """Compresses a Keras 3 model to low-bit weights in one call.

    Without `data`, every selected kernel is projected onto the scheme's set
    with the optimal per-channel scale, after cross-layer equalization and
    followed by bias correction from batch-norm statistics (Nagel et al.);
    this takes seconds. With `data`, the model is fine-tuned with ADMM (and
    gradient-aware pruning when `sparsity` is set) with hyper-parameters
    derived from the data size (`derive_schedule`, docs/cli.md).

    Args:
        model: a built Keras 3 model. It is not modified.
        scheme: "binary", "ternary", "pow2_3bit", "pow2_4bit" or a
            `tfq.quantizers` quantizer: the default scheme.
        sparsity: fraction of weights to set to zero, in [0, 1). Without data
            the smallest magnitudes are pruned per layer before projection.
        block: prune whole blocks instead of single weights (with
            `sparsity`): None, `(rows, cols)`, "RxC" or "auto", as for
            `tfq.PruningCallback`; without data, the blocks of smallest mean
            magnitude. Depthwise kernels are not block-pruned.
        permute: with `block`, first reorder hidden channels so that each
            block row joins channels that read the same inputs
            (`tfq.permute_channels`; the function does not change, the order
            of hidden channels in the returned model may). None (default):
            with `data` only; the data-free path keeps the order, where it
            measured worse (docs/compression.md, "Channel permutation").
        distribution: how `sparsity` is spread over the pruned kernels:
            "uniform" (each kernel) or "erk" (all of them together, large
            kernels pruned harder), as for `tfq.PruningCallback`.
        data: training data (a `tf.data.Dataset` of (x, y) batches, or a tuple
            (x, y) of arrays). None selects the data-free path.
        validation_data: same forms as `data`; used for the accuracy in the
            report (and, with data, for the Keras logs).
        epochs: training epochs on the data path (derived when None).
        corrections: data-free corrections: True (equalization and bias
            correction), False, "bias" or "equalization".
        layers: which layers, as for `tfq.ADMMCallback`: None (every
            supported layer, except the first and last when
            `skip_first_last`), a dict {layer name: scheme, True or None}
            naming exactly the layers to compress, or a function
            layer -> scheme, True or None.
        skip_first_last: with `layers=None`, keep the first and last
            supported layers in float (their few weights matter most).
        learning_rate: optimizer learning rate on the data path (derived when None).
        batch_size: batch size when `data` is given as arrays (default 128).
        verbose: 0 silent, 1 progress bars.
        return_report: also return a `CompressionReport`.
        keep_training_state: keep the ADMM and pruning state and the
            optimizer on the returned model (compiled, to resume training with
            the callbacks). By default the returned model is stripped
            (`strip_training_state`: uncompiled, no state), so its saved
            file is no larger than its float parent's.
        strategy: a `tf.distribute` strategy to train with on the data path,
            e.g. `tfq.distribute.multi_worker_strategy()` on every worker of
            a multi-machine job (call `compress` outside its scope, with the
            same model and arguments on every worker; docs/distributed.md).
            With several workers `data` as arrays is split between them by
            Keras; a `tf.data.Dataset` is sharded by its auto-shard policy.

    Returns:
        The compressed model, or (model, report) when `return_report` is set.

    Raises:
        ValueError: unknown scheme, sparsity outside [0, 1), a model with
            nothing to compress, a layer named in `layers` that is missing or
            cannot be compressed, NaN or Inf in a kernel, a model that cannot
            be copied.
        TypeError: `model` is not a Keras model.

    References:
        Nagel et al., "Data-Free Quantization Through Weight Equalization and
        Bias Correction", ICCV 2019. Leng et al., "Extremely Low Bit Neural
        Network: Squeeze the Last Bit Out with ADMM", AAAI 2018.
    """
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"compress expects a keras.Model, got {type(model).__name__}.")
    if sparsity is not None and not (0.0 <= float(sparsity) < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}.")
    from tfq import pruning

    block = pruning.check_block(block)
    pruning.layer_sparsities([], 0.0, distribution)  # validates the name
    if block is not None and not sparsity:
        raise ValueError(f"block={block!r} needs a sparsity: blocks are what is pruned.")
    if corrections not in (True, False, None, "all", "bias", "equalization"):
        raise ValueError(f"corrections must be True, False, 'bias' or 'equalization', got {corrections!r}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on an input or give it an Input first.")
    t0 = time.perf_counter()
    if data is None:
        small = clone_model(model)
        if block is not None and permute:  # None: not without data
            permute_channels(small, block)
        chosen, specs = select_layers(small, scheme, layers, skip_first_last)
        reports, _ = compress_data_free(small, chosen, specs, sparsity, corrections, verbose, block,
                                        distribution)
        _record(small, specs, chosen)
        mode = "data-free"
        acc_before = acc_after = None
        if validation_data is not None:
            acc_before = evaluate_accuracy(model, validation_data, batch_size)
            acc_after = evaluate_accuracy(small, validation_data, batch_size)
        settings = {"corrections": corrections, "sparsity": sparsity, "block": block,
                    "distribution": distribution, "skip_first_last": skip_first_last}
    else:
        small, reports, acc_before, acc_after, settings = compress_with_data(
            model, scheme, sparsity, data, validation_data, epochs,
            layers=layers, skip_first_last=skip_first_last, learning_rate=learning_rate, batch_size=batch_size,
            verbose=verbose, strategy=strategy, block=block, distribution=distribution,
            permute=permute is not False,
        )
        mode = "admm" + (" + pruning" if sparsity else "")
    if not keep_training_state:
        small = strip_training_state(small)
    all_reports = []
    for layer in iter_layers(small):
        if layer.name in reports:
            all_reports.append(reports[layer.name])
        elif all_kernels(layer):
            n = sum(int(np.prod(v.shape)) for _, v, _ in all_kernels(layer))
            all_reports.append(LayerReport(layer.name, layer_kind(layer), "float", n))
    comp_bytes, float_bytes, _ = record.weight_bytes(small)
    report = CompressionReport(
        mode=mode,
        scheme=scheme if isinstance(scheme, str) else getattr(scheme, "name", "mixed"),
        layers=all_reports,
        float_bytes=float_bytes,
        compressed_bytes=comp_bytes,
        seconds=time.perf_counter() - t0,
        accuracy_before=acc_before,
        accuracy_after=acc_after,
        settings=settings,
    )
    if return_report:
        return small, report
    return small


def strip_training_state(model):
    """A copy of a compressed model without what only training needs.

    `tfq.ADMMCallback` and `tfq.PruningCallback` keep their state on the model
    (three kernel-sized ADMM tensors per compressed kernel, the pruning masks
    and slopes) so that `model.save` and `BackupAndRestore` can resume a run,
    and the optimizer keeps its own (Adam: two more kernel-sized tensors).
    A model that is done training needs none of it. Like TFMOT's
    `strip_pruning`, this returns an uncompiled copy with the same weights
    (still exactly in their sets) and the same compression record; its
    `.keras` file is no larger than that of an uncompiled float model.
    `tfq.compress` calls it unless `keep_training_state=True`; after `fit`
    with the callbacks, call it yourself before saving the final model.

    Args:
        model: a Keras model (Sequential, functional, or a subclassed model
            whose config round-trips).

    Returns:
        A new, uncompiled `keras.Model` (`model` itself when it is not
        compiled and carries no state).
    """
    import keras

    import tfq.layers  # noqa: F401  (registers tfq layers for deserialization)

    from tfq import state

    if not model.compiled and not state.has_any(model):
        return model  # nothing to strip (the data-free path): no copy
    # From the config without its compile part: clone_model would compile (and so build) a new optimizer.
    config = keras.saving.serialize_keras_object(model)
    config.pop("compile_config", None)
    try:
        stripped = keras.saving.deserialize_keras_object(config)
    except (TypeError, ValueError, NotImplementedError) as err:
        raise ValueError(f"strip_training_state cannot copy model {model.name!r} ({type(model).__name__}): "
                         f"its config does not round-trip ({first_line(err)})") from err
    stripped.set_weights(model.get_weights())  # the record came with the config (`tfq.record`)
    return stripped


def _record(model, specs, chosen):
    """Records the compressed kernels the way `ADMMCallback` does (`tfq.record`)."""
    layers = {l.name: l for l in iter_layers(model)}
    for name, kernels in specs.items():
        for attr, _, axis in kernels:
            record.mark(layers[name], attr, chosen[name], axis)
