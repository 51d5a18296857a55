"""`tfq.compress` without data: magnitude pruning, projection, corrections, per layer."""

import math
import sys
import time

import numpy as np
import tensorflow as tf

from tfq import pruning, schemes
from tfq.kernels import KernelSpec, iter_layers
from tfq.compression.corrections import bias_target, equalize
from tfq.compression.graph import Graph, layer_kind, to_numpy
from tfq.compression.report import LayerReport
from tfq.compression.bn_stats import input_stats, mean_response


class _Progress:
    """A one-line progress bar on stderr, one step per layer."""

    def __init__(self, total, label, verbose):
        self.total, self.label, self.verbose = total, label, verbose
        self.done = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, what):
        self.done += 1
        if not self.verbose:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        line = (
            f"{self.label} [{'=' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
            f"{time.perf_counter() - self.t0:5.1f}s {what}"
        )
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
            if self.done == self.total:
                sys.stderr.write("\n")
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _magnitude_mask(k, sparsity, grid=None):
    if not sparsity:
        return None
    if grid is not None:
        # Whole blocks by their mean magnitude, as PruningCallback(importance="magnitude") would.
        return pruning.block_prune_mask(tf.abs(tf.constant(k)), sparsity, None, False, grid).numpy()
    n_prune = int(round(sparsity * k.size))
    if n_prune <= 0:
        return None
    threshold = np.partition(np.abs(k).reshape(-1), n_prune - 1)[n_prune - 1]
    mask = (np.abs(k) > threshold).astype(np.float32)
    return mask


def _kernel_sparsities(layers, chosen, specs, sparsity, block, distribution):
    """{(layer name, attribute): sparsity} of the kernels to prune (depthwise ones are not block-pruned)."""
    if not sparsity:
        return {}
    keys, shapes = [], []
    for name in chosen:
        for attr, var, axis in specs[name]:
            if block is not None and pruning.is_depthwise(KernelSpec(layers[name], attr, var, axis)):
                continue
            keys.append((name, attr))
            shapes.append(tuple(var.shape))
    return dict(zip(keys, pruning.layer_sparsities(shapes, sparsity, distribution)))


def compress_data_free(model, chosen, specs, sparsity, corrections, verbose, block=None, distribution="uniform"):
    graph = Graph(model)
    layers = {l.name: l for l in iter_layers(model)}
    kernel_sparsity = _kernel_sparsities(layers, chosen, specs, sparsity, block, distribution)
    notes = {}
    do_eq = corrections in (True, "all", "equalization")
    do_bc = corrections in (True, "all", "bias")
    if corrections and not graph.known:
        print(
            "tfq.compress: the model has no layer graph (subclassed model); skipping the data-free corrections.",
            file=sys.stderr,
        )
        do_eq = do_bc = False
    if do_eq:
        for name, note in equalize(graph, chosen, specs, bias_correction=do_bc).items():
            notes.setdefault(name, []).append(note.split(" (")[0] if name not in chosen else note)

    # Input statistics are read after equalization (which rescales BN gamma/beta).
    stats = {}
    if do_bc:
        for name in chosen:
            s = input_stats(graph, layers[name])
            if s is not None:
                stats[name] = s

    progress = _Progress(len(chosen), "data-free", verbose)
    reports = {}
    for name, quantizer in chosen.items():
        layer = layers[name]
        float_k, quant_k = {}, {}
        err_num = err_den = 0.0
        zeros = total = 0
        for attr, var, axis in specs[name]:
            k = to_numpy(var).astype(np.float32)
            if not np.all(np.isfinite(k)):
                raise ValueError(f"Layer {name!r}: {attr} contains NaN or Inf; cannot compress it.")
            spec = KernelSpec(layer, attr, var, axis)
            grid = None if block is None or pruning.is_depthwise(spec) else pruning.block_grid(spec, block)
            mask = None if block is not None and grid is None else _magnitude_mask(
                k, kernel_sparsity.get((name, attr), 0.0), grid)
            q, _ = quantizer.project(k, mask=mask, channel_axis=axis)
            q = to_numpy(q).astype(np.float32)
            var.assign(q)
            float_k[attr], quant_k[attr] = k.astype(np.float64), q.astype(np.float64)
            err_num += float(((q - k) ** 2).sum())
            err_den += float((k.astype(np.float64) ** 2).sum())
            zeros += int((q == 0).sum())
            total += q.size
        applied = list(notes.get(name, []))
        if name in stats:
            dist, tile, src = stats[name]
            mu = np.tile(dist.mean(), tile)
            r_q = mean_response(layer, quant_k, mu)
            r_f = mean_response(layer, float_k, mu)
            target = bias_target(graph, layer)
            if r_q is not None and target is not None:
                delta = r_q - r_f
                kind, holder = target
                if kind == "bias":
                    holder.bias.assign((to_numpy(holder.bias) - delta).astype(np.float32))
                else:
                    holder.moving_mean.assign((to_numpy(holder.moving_mean) + delta).astype(np.float32))
                applied.append(f"bias corrected from {src[0]}" + (" via BN mean" if kind == "bn" else ""))
        reports[name] = LayerReport(
            name=name,
            kind=layer_kind(layer),
            scheme=quantizer.name,
            params=total,
            sparsity=zeros / max(total, 1),
            bits=schemes.get(quantizer.name).storage_bits,
            relative_error=math.sqrt(err_num / max(err_den, 1e-30)),
            corrections=tuple(applied),
        )
        progress.step(name)
    return reports, notes
