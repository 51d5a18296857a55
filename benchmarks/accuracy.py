"""Accuracy of compressed LeNet-300-100 and LeNet-5 on MNIST, at equal training budgets.

Every compressed model starts from the same float model pre-trained for
`--pre` epochs and trains `--comp` more epochs with its compression; the float
reference trains `--pre + --comp` epochs in total (the same budget), and the
naive projections project that float model without any training. Baselines
(TFMOT magnitude pruning, Larq `ste_tern`) run in a subprocess under tf_keras
with the same budget (`_legacy_baselines.py`).

Prints one table: accuracy, difference to float, sparsity of the weights,
stored bits per weight, bytes of all weights (packed codes + float32 scales
for compressed kernels, float32 for the rest; pruning alone is counted dense),
and the compression ratio. Then the issue's targets, each marked.

Usage:
    python benchmarks/accuracy.py            # full: both models, whole MNIST (about 30 min on 2 cores)
    python benchmarks/accuracy.py --quick    # smoke run: small data, 1+1 epochs
    python benchmarks/accuracy.py --sparse   # block-sparse vs unstructured + ternary (issue 12's rows)
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, models, pruning, record  # noqa: E402
from tfq.kernels import select_kernels  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
SCHEMES = ["binary", "ternary", "pow2_3bit", "pow2_4bit"]
BUILDERS = {"lenet300_100": models.lenet300_100, "lenet5": models.lenet5, "small_bn_cnn": models.small_bn_cnn}


class CosineDecay(keras.callbacks.Callback):
    """Sets the optimizer's learning rate to a cosine decay from `lr` to 0 over `steps` batches of one fit.

    A callback, not a `LearningRateSchedule`, so that the float reference can
    decay in its last epochs while keeping the Adam state of its first ones.
    """

    def __init__(self, lr, steps):
        super().__init__()
        self.lr, self.steps, self.step = lr, max(int(steps), 1), 0

    def on_train_batch_begin(self, batch, logs=None):
        t = min(self.step, self.steps) / self.steps
        self.model.optimizer.learning_rate.assign(0.5 * self.lr * (1.0 + math.cos(math.pi * t)))
        self.step += 1


def fresh(builder, weights=None, lr=1e-3):
    model = builder()
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    if weights is not None:
        model.set_weights(weights)
    return model


def evaluate(model, test):
    return float(model.evaluate(test[0], test[1], batch_size=1000, verbose=0)[1])


def correct(model, test):
    """Per test image: was it classified right (for the paired test below)."""
    return np.argmax(model.predict(test[0], batch_size=1000, verbose=0), axis=-1) == test[1]


def mcnemar_p(a, b):
    """One-sided exact McNemar test that classifier `a` beats `b` on the same images.

    Only the images exactly one of them gets right count; under the null
    hypothesis each such image favours `a` with probability 1/2. Returns
    P(at least as many wins for `a` | null).
    """
    wins, losses = int(np.sum(a & ~b)), int(np.sum(~a & b))
    n = wins + losses
    if n == 0:
        return 1.0
    log_half = n * np.log(0.5)
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) + log_half for i in range(wins, n + 1)]
    return float(min(1.0, np.exp(np.logaddexp.reduce(logs))))


def sparsity(model):
    """Fraction of exact zeros over all kernels (biases excluded)."""
    zeros = total = 0
    for layer in model.layers:
        for v in layer.weights:
            if len(v.shape) >= 2:
                w = np.asarray(v)
                zeros += int(np.sum(w == 0))
                total += w.size
    return zeros / max(total, 1)


def project_naive(model, scheme, skip_first_last):
    """Post-training projection of every selected kernel (no training)."""
    for spec in select_kernels(model, scheme, None, skip_first_last, what="naive"):
        q, _ = spec.quantizer.project(np.asarray(spec.variable), channel_axis=spec.channel_axis)
        spec.variable.assign(q)
        record.mark(spec.layer, spec.name, spec.quantizer, spec.channel_axis)
    return model


def row(model_name, method, policy, model, test, seconds):
    size, float_size, n = record.weight_bytes(model)
    return {
        "model": model_name, "method": method, "policy": policy, "acc": evaluate(model, test),
        "correct": correct(model, test),
        "sparsity": sparsity(model), "bits": 8.0 * size / n, "bytes": size, "ratio": float_size / size,
        "seconds": seconds,
    }


def run_model(name, train, test, pre, comp, batch, log, seeds=3, bn=True):
    builder = BUILDERS[name]
    x, y = train
    results = []

    def fit(model, epochs, callbacks=()):
        t = time.time()
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0, callbacks=list(callbacks))
        if bn:
            tfq.reestimate_batch_norm(model, x, batch)
        return time.time() - t

    keras.utils.set_random_seed(0)
    base = fresh(builder)
    t_pre = fit(base, pre)
    pre_weights = base.get_weights()
    log(f"{name}: float pre-training {pre} epochs: {evaluate(base, test) * 100:.2f}% ({t_pre:.0f} s)")

    t = fit(base, comp)  # the float reference gets the same budget
    results.append(row(name, "float", "-", base, test, t_pre + t))
    float_weights = base.get_weights()
    log(f"{name}: float {pre + comp} epochs: {results[-1]['acc'] * 100:.2f}%")

    for policy, skip in (("default", True), ("all", False)):
        for scheme in SCHEMES:
            m = project_naive(fresh(builder, float_weights), scheme, skip)
            results.append(row(name, f"naive {scheme}", policy, m, test, 0.0))
            log(f"{name}: naive {scheme} ({policy}): {results[-1]['acc'] * 100:.2f}%")
        for scheme in SCHEMES:
            keras.utils.set_random_seed(1)
            m = fresh(builder, pre_weights)
            t = fit(m, comp, [tfq.ADMMCallback(scheme, skip_first_last=skip)])
            results.append(row(name, f"ADMM {scheme}", policy, m, test, t))
            log(f"{name}: ADMM {scheme} ({policy}): {results[-1]['acc'] * 100:.2f}% ({t:.0f} s)")

    for target in (0.9, 0.95):
        for importance in ("gradient", "magnitude"):
            # At 95% the two importances differ by about the run-to-run noise,
            # so that comparison is the mean over `seeds` runs.
            runs = []
            for seed in range(1, (seeds if target == 0.95 else 1) + 1):
                keras.utils.set_random_seed(seed)
                m = fresh(builder, pre_weights)
                t = fit(m, comp, [tfq.PruningCallback(target, importance=importance)])
                runs.append(row(name, "", "all", m, test, t))
            label = "grad" if importance == "gradient" else "mag"
            r = dict(runs[-1], acc=float(np.mean([q["acc"] for q in runs])), seed_accs=[q["acc"] for q in runs])
            r["method"] = f"prune {int(target * 100)}% {label}" + (f" ({len(runs)} seeds)" if len(runs) > 1 else "")
            results.append(r)
            log(f"{name}: prune {target} {importance}: {r['acc'] * 100:.2f}% "
                f"({', '.join(f'{a * 100:.2f}' for a in r['seed_accs'])})")
            if target == 0.9:
                keras.utils.set_random_seed(1)
                m = fresh(builder, pre_weights)
                t = fit(m, comp, [tfq.PruningCallback(target, importance=importance), tfq.ADMMCallback("ternary")])
                results.append(row(name, f"prune 90% {label} + ternary", "default", m, test, t))
                log(f"{name}: prune 90% {importance} + ternary: {results[-1]['acc'] * 100:.2f}% ({t:.0f} s)")
    return results


def _shape_label(block):
    b = tfq.pruning.check_block(block)
    return "auto" if b == "auto" else "x".join(map(str, b))


def run_sparse(name, train, test, pre, comp, batch, log, seeds=3, block="auto", targets=(0.8, 0.9, 0.95),
               distribution="erk", permute=True, seeded_targets=(0.9,), comp_lr=2e-3, bn=True, schedule="constant"):
    """Issue 12's rows: block-sparse vs unstructured pruning + ternary, "all" and default policies.

    Every run starts from the same float model pre-trained `pre` epochs and
    trains `comp` epochs with `PruningCallback` + `ADMMCallback("ternary")`;
    at 90% the block runs also compare gradient-aware and magnitude block
    importance. Where two rows are compared (block vs unstructured at 90%,
    gradient vs magnitude), each is the mean of `seeds` runs. `distribution`
    spreads each target over the pruned kernels (`tfq.PruningCallback`), the
    same way for block and unstructured rows. With `permute` the block runs
    first reorder hidden channels (`tfq.permute_channels`, as `tfq.compress`
    does). `seeded_targets`: the targets whose rows average `seeds` runs.
    `comp_lr`: Adam's learning rate in the `comp` compression epochs (the
    float reference and the pre-training keep 1e-3: with 2e-3 in its last 4
    epochs the float LeNet-300-100 reached 97.40 / 97.91 with seeds 0 / 1
    against 97.82 at 1e-3, so 1e-3 stays the stricter reference). ADMM's pull is
    `lr * rho` per step, and the pruned rows have to relearn: 2e-3 lifted
    LeNet-300-100 95% 4x4 + ternary from 96.38 to 96.88 (3 seeds) and the
    unstructured row from 97.35 to 97.57; 3e-3 96.90, 4e-3 96.61
    (docs/benchmarks.md, "Block sparsity"). With `bn` every row's model
    (float included) gets `tfq.reestimate_batch_norm` after its fit, as
    `tfq.compress(data=...)` does. `schedule="cosine"` decays the learning
    rate to 0 over the `comp` epochs of every row (float: from 1e-3,
    compressed: from `comp_lr`); "constant" keeps it.
    """
    builder = BUILDERS[name]
    x, y = train
    results = []

    def settle(model):
        if bn:
            tfq.reestimate_batch_norm(model, x, batch)

    steps = comp * math.ceil(len(x) / batch)

    def decay(lr):
        return [CosineDecay(lr, steps)] if schedule == "cosine" else []

    def fit(model, callbacks):
        t = time.time()
        model.fit(x, y, epochs=comp, batch_size=batch, verbose=0, callbacks=list(callbacks) + decay(comp_lr))
        settle(model)
        return time.time() - t

    keras.utils.set_random_seed(0)
    base = fresh(builder)
    fit_t = time.time()
    base.fit(x, y, epochs=pre, batch_size=batch, verbose=0)
    pre_weights = base.get_weights()
    base.fit(x, y, epochs=comp, batch_size=batch, verbose=0, callbacks=decay(1e-3))
    settle(base)
    results.append(row(name, "float", "-", base, test, time.time() - fit_t))
    log(f"{name}: float {pre + comp} epochs: {results[-1]['acc'] * 100:.2f}%")
    shape = _shape_label(block)
    for policy, skip in (("all", False), ("default", True)):
        for target in targets:
            variants = [("unstructured", None, "gradient"), (f"block {shape}", block, "gradient")]
            if target == 0.9:
                variants.append((f"block {shape} mag", block, "magnitude"))
            for label, blk, importance in variants:
                n_seeds = seeds if target in seeded_targets else 1
                runs = []
                for seed in range(1, n_seeds + 1):
                    keras.utils.set_random_seed(seed)
                    m = fresh(builder, pre_weights, lr=comp_lr)
                    if blk is not None and permute:
                        tfq.permute_channels(m, block=blk)
                    t = fit(m, [tfq.PruningCallback(target, importance=importance, block=blk, skip_first_last=skip,
                                                    distribution=distribution),
                                tfq.ADMMCallback("ternary", skip_first_last=skip)])
                    runs.append(row(name, "", policy, m, test, t))
                r = dict(runs[-1], acc=float(np.mean([q["acc"] for q in runs])), seed_accs=[q["acc"] for q in runs],
                         seed_correct=[q["correct"] for q in runs])
                r["method"] = f"{int(target * 100)}% {label} + tern" + (f" ({n_seeds} seeds)" if n_seeds > 1 else "")
                results.append(r)
                log(f"{name}: {r['method']} ({policy}): {r['acc'] * 100:.2f}% "
                    f"({', '.join(f'{a * 100:.2f}' for a in r['seed_accs'])})")
    return results


def check_sparse_targets(results, shape):
    def find(model, prefix, policy):
        return next((r for r in results if r["model"] == model and r["method"].startswith(prefix)
                     and r["policy"] == policy), None)

    def acc(model, prefix, policy):
        r = find(model, prefix, policy)
        return None if r is None else r["acc"] * 100

    def paired(model, policy):
        """Magnitude against gradient-aware on the same test images, run k of one against run k of the other."""
        rg, rm = find(model, f"90% block {shape} +", policy), find(model, f"90% block {shape} mag", policy)
        g = np.concatenate(rg.get("seed_correct", [rg["correct"]]))
        m = np.concatenate(rm.get("seed_correct", [rm["correct"]]))
        p = mcnemar_p(m, g)
        return (f"; paired over {len(g) // len(rg['correct'])} seed(s) x {len(rg['correct'])} images: magnitude "
                f"alone right on {int(np.sum(m & ~g))}, gradient-aware alone on {int(np.sum(g & ~m))}, "
                f"one-sided McNemar p = {p:.2f} that magnitude is better")

    lines = []
    checks = [("lenet5", 90, 0.5), ("lenet300_100", 95, 1.0), ("small_bn_cnn", 80, 1.0)]
    for model, target, tol in checks:
        for policy in ("all", "default"):
            f, a = acc(model, "float", "-"), acc(model, f"{target}% block {shape} +", policy)
            if f is not None and a is not None:
                lines.append(f"[{'MET ' if f - a <= tol else 'MISS'}] {model} {target}% block-sparse + ternary within "
                             f"{tol} of float ({policy}): {a:.2f} vs {f:.2f} (diff {a - f:+.2f})")
    for model in sorted({r["model"] for r in results}):
        for policy in ("all", "default"):
            b, u = acc(model, f"90% block {shape} +", policy), acc(model, "90% unstructured", policy)
            m = acc(model, f"90% block {shape} mag", policy)
            if b is not None and u is not None:
                lines.append(f"[{'MET ' if u - b <= 0.3 else 'MISS'}] {model} 90%: block costs at most 0.3 against "
                             f"unstructured ({policy}): {b:.2f} vs {u:.2f} (diff {b - u:+.2f})")
            if b is not None and m is not None:
                lines.append(f"[{'MET ' if b >= m else 'MISS'}] {model} 90% block: gradient-aware >= magnitude "
                             f"({policy}): {b:.2f} vs {m:.2f}{paired(model, policy)}")
    print("\n".join(lines))


def run_baselines(names, pre, comp, batch, limit, log):
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_legacy_baselines.py")
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    cmd = [sys.executable, script, "--models", ",".join(names), "--pre", str(pre), "--comp", str(comp),
           "--batch", str(batch)]
    if limit:
        cmd += ["--limit", str(limit)]
    log("baselines: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        log("baselines FAILED:\n" + proc.stderr[-4000:])
        return []
    return json.loads(proc.stdout.strip().splitlines()[-1])


def print_table(results):
    w = max([28] + [len(r["method"]) + 2 for r in results])
    header = f"{'model':<13}{'method':<{w}}{'policy':<9}{'acc %':>7}{'vs float':>9}{'sparsity':>9}{'bits/w':>7}{'KB':>9}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    floats = {r["model"]: r["acc"] for r in results if r["method"] == "float"}
    for r in results:
        delta = (r["acc"] - floats.get(r["model"], r["acc"])) * 100
        print(
            f"{r['model']:<13}{r['method']:<{w}}{r['policy']:<9}{r['acc'] * 100:>7.2f}{delta:>+9.2f}"
            f"{r['sparsity'] * 100:>8.1f}%{r['bits']:>7.2f}{r['bytes'] / 1024:>9.1f}{r['ratio']:>6.1f}x"
        )


def check_targets(results):
    def find(model, method, policy):
        for r in results:
            if r["model"] == model and r["method"] == method and r["policy"] == policy:
                return r
        return None

    def acc(model, method, policy):
        r = find(model, method, policy)
        return None if r is None else r["acc"] * 100

    lines = []
    f = acc("lenet5", "float", "-")
    checks = [
        ("LeNet-5 ternary within 0.3 of float (default policy)", acc("lenet5", "ADMM ternary", "default"), f, 0.3),
        ("LeNet-5 ternary within 0.6 of float (every layer)", acc("lenet5", "ADMM ternary", "all"), f, 0.6),
        ("LeNet-5 pow2_3bit within 0.2 of float (default)", acc("lenet5", "ADMM pow2_3bit", "default"), f, 0.2),
        ("LeNet-5 binary within 1.0 of float (default)", acc("lenet5", "ADMM binary", "default"), f, 1.0),
        ("LeNet-5 90% sparse + ternary within 0.5 of float", acc("lenet5", "prune 90% grad + ternary", "default"), f, 0.5),
    ]
    for text, a, ref, tol in checks:
        if a is None or ref is None:
            continue
        lines.append(f"[{'MET ' if ref - a <= tol else 'MISS'}] {text}: {a:.2f} vs {ref:.2f} (diff {a - ref:+.2f})")
    for model in sorted({r["model"] for r in results}):
        for scheme in ("binary", "ternary"):
            for policy in ("default", "all"):
                ra, rn = find(model, f"ADMM {scheme}", policy), find(model, f"naive {scheme}", policy)
                if ra is not None and rn is not None:
                    # "Clearly ahead": more accurate, and the paired test on the
                    # same test images says it is no accident (p < 0.01).
                    a, n = ra["acc"] * 100, rn["acc"] * 100
                    p = mcnemar_p(ra["correct"], rn["correct"])
                    lines.append(f"[{'MET ' if a > n and p < 0.01 else 'MISS'}] {model} ADMM {scheme} clearly ahead of "
                                 f"naive ({policy}): {a:.2f} vs {n:.2f} (McNemar one-sided p = {p:.1e})")
        rg = next((r for r in results if r["model"] == model and r["method"].startswith("prune 95% grad")), None)
        rm = next((r for r in results if r["model"] == model and r["method"].startswith("prune 95% mag")), None)
        if rg is not None and rm is not None:
            g, m = rg["acc"] * 100, rm["acc"] * 100
            each = lambda r: "/".join(f"{a * 100:.2f}" for a in r.get("seed_accs", [r["acc"]]))  # noqa: E731
            lines.append(f"[{'MET ' if g >= m else 'MISS'}] {model} gradient-aware >= magnitude at 95% "
                         f"(mean of seeds): {g:.2f} vs {m:.2f} ({each(rg)} vs {each(rm)})")
    print("\n".join(lines))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small data and 1+1 epochs (smoke test)")
    parser.add_argument("--models", default="lenet300_100,lenet5")
    parser.add_argument("--pre", type=int, default=3, help="float pre-training epochs")
    parser.add_argument("--comp", type=int, default=4, help="compression epochs (float gets pre+comp)")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--seeds", type=int, default=3, help="runs averaged for the 95%% pruning comparison")
    parser.add_argument("--no-baselines", action="store_true", help="skip TFMOT/Larq")
    parser.add_argument("--sparse", action="store_true",
                        help="only the block-sparse rows: block vs unstructured pruning + ternary at 80/90/95%%")
    parser.add_argument("--block", default="auto", help="block shape for --sparse: auto or RxC")
    parser.add_argument("--targets", default="0.8,0.9,0.95", help="for --sparse: the sparsities of the rows")
    parser.add_argument("--no-permute", action="store_true",
                        help="for --sparse: keep the hidden channels' order (no tfq.permute_channels first)")
    parser.add_argument("--seeded", default="0.9",
                        help="for --sparse: the targets whose rows average --seeds runs ('all' for every one)")
    parser.add_argument("--comp-lr", type=float, default=2e-3,
                        help="for --sparse: Adam's learning rate in the --comp compression epochs (float: 1e-3)")
    parser.add_argument("--distribution", default="erk", choices=pruning.DISTRIBUTIONS,
                        help="for --sparse: how each target is spread over the pruned kernels (default erk)")
    parser.add_argument("--comp-schedule", default="constant", choices=("constant", "cosine"),
                        help="for --sparse: the learning rate in the --comp epochs of every row, float included: "
                             "constant, or a cosine decay to 0")
    parser.add_argument("--no-bn-reestimate", action="store_true",
                        help="keep Keras' moving batch-norm statistics after each fit (default: every tfq and float "
                             "row gets tfq.reestimate_batch_norm, as tfq.compress(data=...) does)")
    args = parser.parse_args()
    names = args.models.split(",")
    for n in names:
        if n not in BUILDERS:
            parser.error(f"unknown model {n!r}; choose from {sorted(BUILDERS)}")
    (x, y), (xt, yt) = datasets.mnist()
    limit = None
    if args.quick:
        limit, args.pre, args.comp = 4096, 1, 2
        x, y, xt, yt = x[:limit], y[:limit], xt[:2000], yt[:2000]

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    t0 = time.time()
    bn_note = ("; batch norm as Keras left it" if args.no_bn_reestimate
               else "; batch-norm statistics re-estimated after each fit")
    if args.sparse:
        shape = _shape_label(args.block)
        results = []
        targets = tuple(float(t) for t in args.targets.split(","))
        seeded = targets if args.seeded == "all" else tuple(float(t) for t in args.seeded.split(","))
        for name in names:
            results += run_sparse(name, (x, y), (xt, yt), args.pre, args.comp, args.batch, log, args.seeds, args.block,
                                  targets=targets, distribution=args.distribution, permute=not args.no_permute,
                                  seeded_targets=seeded, comp_lr=args.comp_lr, bn=not args.no_bn_reestimate,
                                  schedule=args.comp_schedule)
        decay = ", cosine-decayed to 0 (float: from 1e-3)" if args.comp_schedule == "cosine" else ""
        print(f"\nMNIST, block {shape} vs unstructured pruning + ADMM ternary, sparsity spread {args.distribution}: "
              f"{args.pre} float + {args.comp} "
              f"compression epochs (float: {args.pre + args.comp}); Adam 1e-3, {args.comp_lr:g} in the compression "
              f"epochs{decay}; batch {args.batch}; {len(x)} training / "
              f"{len(xt)} test images; rows at {args.seeded}: mean of {args.seeds} seeds; block rows "
              f"{'in the original channel order' if args.no_permute else 'after tfq.permute_channels'}{bn_note}")
        print_table(results)
        print()
        check_sparse_targets(results, shape)
        print(f"\n(total {time.time() - t0:.0f} s)")
        return
    results = []
    for name in names:
        results += run_model(name, (x, y), (xt, yt), args.pre, args.comp, args.batch, log, args.seeds,
                             bn=not args.no_bn_reestimate)
    if not args.no_baselines:
        results += run_baselines(names, args.pre, args.comp, args.batch, limit, log)
    order = {n: i for i, n in enumerate(names)}
    results.sort(key=lambda r: order.get(r["model"], 99))
    print(f"\nMNIST, equal budgets: float {args.pre}+{args.comp} epochs; compressed = {args.pre} float + {args.comp} "
          f"compression epochs; Adam 1e-3, batch {args.batch}; {len(x)} training / {len(xt)} test images{bn_note}")
    print_table(results)
    print()
    check_targets(results)
    print(f"\n(total {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
