"""Multi-worker training throughput with ADMM + pruning, and a model of scaling to 8-64 workers.

    python benchmarks/distributed.py [--steps 60] [--batch 64] [--models lenet5,small_bn_cnn]

For each model: one process without a strategy, then two worker processes
on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG), each with 1 TensorFlow
thread and the same batch per worker (so two workers process twice the
images per step). Training is `fit` with `PruningCallback` + `ADMMCallback`
(update every 32 steps) on MNIST; images/s are timed over the epochs after
the first (tracing excluded). In the two-worker job, the all-reduce of one
step's gradients (same tensors, same bytes) is then timed on its own, and a
4-byte all-reduce gives the per-collective latency.

The model on paper: per step, ring all-reduce of G gradient bytes over p
workers costs 2(p-1) latencies plus 2(p-1)/p * G / bandwidth. With fixed
batch per worker (weak scaling) the step time is compute + all-reduce, and
throughput is p * batch / step. ADMM (every k steps) and mask updates add
no collective in tfq: every worker projects its own, identical copy of the
kernels (docs/distributed.md), so they add compute (measured here per
update) that does not shrink with p; deciding on one worker and
broadcasting G and U instead would add 2 * 4 bytes per compressed weight
every k steps, also shown.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _cpu():
    name = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
        flags = next((l for l in text.splitlines() if l.startswith("flags")), "")
        isa = "avx512_vnni" if "avx512_vnni" in flags else "avx2" if "avx2" in flags else "baseline"
    except OSError:
        isa = "?"
    return name, isa, os.cpu_count()


# --------------------------------------------------------------------------
# One worker process (run with --worker)
# --------------------------------------------------------------------------


def worker(args):
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    import keras

    import tfq
    from tfq import datasets, distribute, models

    info = distribute.cluster_info()
    strategy = distribute.multi_worker_strategy() if info else tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync if info else 1
    global_batch = args.batch * replicas
    steps = args.steps
    (x, y), _ = datasets.mnist()
    n = steps * global_batch
    x, y = np.resize(x, (n,) + x.shape[1:]), np.resize(y, (n,))
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = getattr(models, args.model)()
    if info:
        model = distribute.prepare(model, strategy)

    class Clock(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append(time.perf_counter() - self.t)

    clock = Clock()
    pruning = tfq.PruningCallback(0.9, frequency=32, end_fraction=0.5)
    admm = tfq.ADMMCallback("ternary", update_every=32, start_epoch=1, finetune_epochs=0)
    with strategy.scope():
        model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=False)
        with distribute.worker_errors() if info else _null():
            model.fit(x, y, batch_size=global_batch, epochs=args.epochs, shuffle=False, verbose=0,
                      callbacks=[pruning, admm, clock])
    timed = clock.epochs[1:]
    images_per_s = len(timed) * n / sum(timed)
    step_ms = 1000 * sum(timed) / (len(timed) * steps)

    # ADMM's infrequent update on its own (what every k steps adds).
    t = time.perf_counter()
    reps = 3
    with strategy.scope():
        for _ in range(reps):
            admm._update_fn(tf.constant(1, tf.int64))
    admm_update_ms = 1000 * (time.perf_counter() - t) / reps

    grad_bytes = 4 * sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    compressed = sum(int(np.prod(s.variable.shape)) for s in admm.specs)
    out = {"model": args.model, "workers": replicas, "batch_per_worker": args.batch, "images_per_s": images_per_s,
           "step_ms": step_ms, "grad_bytes": grad_bytes, "compressed_weights": compressed,
           "admm_update_ms": admm_update_ms}
    if info:
        shapes = [tuple(v.shape) for v in model.trainable_variables]
        grads = [tf.ones(s) for s in shapes]
        one = [tf.ones(())]

        def timed_all_reduce(values, reps):
            @tf.function
            def run():
                return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, values))

            run()  # trace and warm up
            t = time.perf_counter()
            for _ in range(reps):
                res = run()
            strategy.experimental_local_results(res)[0][0].numpy()
            return 1000 * (time.perf_counter() - t) / reps

        out["allreduce_grad_ms"] = timed_all_reduce(grads, 20)
        out["allreduce_latency_ms"] = timed_all_reduce(one, 50)
    if not info or info.is_chief:
        with open(args.result, "w") as f:
            json.dump(out, f)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------


def _launch(model, n, args, tmp):
    from tfq import distribute

    result = os.path.join(tmp, f"{model}-{n}.json")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", model, "--result", result,
           "--steps", str(args.steps), "--batch", str(args.batch), "--epochs", str(args.epochs)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    configs = distribute.local_cluster(n) if n > 1 else [None]
    procs = []
    for c in configs:
        e = dict(env)
        if c:
            e["TF_CONFIG"] = c
        procs.append(subprocess.Popen(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                      start_new_session=True))
    try:
        for p in procs:
            _, err = p.communicate(timeout=args.timeout)
            if p.returncode != 0:
                raise SystemExit(f"{model} with {n} worker(s) failed:\n{err[-2000:]}")
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, 9)
    with open(result) as f:
        return json.load(f)


def _ring_ms(p, nbytes, latency_ms, bandwidth_bps):
    if p == 1:
        return 0.0
    return 2 * (p - 1) * latency_ms + 1000 * 2 * (p - 1) / p * nbytes / bandwidth_bps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="lenet5", help=argparse.SUPPRESS)
    parser.add_argument("--models", default="lenet5,small_bn_cnn")
    parser.add_argument("--steps", type=int, default=60, help="steps per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="epochs (the first is not timed)")
    parser.add_argument("--batch", type=int, default=64, help="batch per worker")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    cpu, isa, cores = _cpu()
    print(f"CPU: {cpu}, {cores} logical cores, ISA: {isa}; 1 TensorFlow thread per worker; "
          f"batch {args.batch} per worker, {args.steps} steps/epoch, {args.epochs - 1} timed epochs")
    print(f"UTC {time.strftime('%Y-%m-%d %H:%M', time.gmtime())}; load average before: "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())} (other jobs on this machine disturb the numbers)\n")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            one = _launch(model, 1, args, tmp)
            two = _launch(model, 2, args, tmp)
            rows.append((model, one, two))

    print("| model | workers | images/s | ratio to 1 worker | step ms | all-reduce of the gradients, ms/step (share of step) | 4-byte all-reduce ms | gradient KiB | ADMM update ms (every k=32 steps) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for model, one, two in rows:
        print(f"| {model} | 1 | {one['images_per_s']:.0f} | 1.00x | {one['step_ms']:.1f} | - | - | "
              f"{one['grad_bytes'] / 1024:.0f} | {one['admm_update_ms']:.1f} |")
        share = two["allreduce_grad_ms"] / two["step_ms"]
        print(f"| {model} | 2 | {two['images_per_s']:.0f} | {two['images_per_s'] / one['images_per_s']:.2f}x | "
              f"{two['step_ms']:.1f} | {two['allreduce_grad_ms']:.2f} ({100 * share:.0f}%) | "
              f"{two['allreduce_latency_ms']:.2f} | {two['grad_bytes'] / 1024:.0f} | {two['admm_update_ms']:.1f} |")

    # The model on paper, from the measurements.
    print("\nModel of weak scaling (batch per worker fixed): step = compute + ring all-reduce + ADMM update / k;")
    print("compute = the 1-worker step; ring all-reduce = 2(p-1) latencies + 2(p-1)/p * gradient bytes / bandwidth.")
    print("'loopback': latency and bandwidth fitted from the 2-worker measurements here;")
    print("'10 GbE': 50 us per message, 1.1 GB/s. Extra bytes if G and U were broadcast every k steps instead of")
    print("computed on every worker: 8 bytes per compressed weight / k, per step.\n")
    print("| model | network | p | all-reduce ms/step | ADMM ms/step (k=32) | step ms | images/s | efficiency | broadcast alternative, extra KiB/step |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for model, one, two in rows:
        lat = two["allreduce_latency_ms"] / 2  # 2(p-1) = 2 messages at p = 2
        # 2 workers: 2(p-1)/p = 1 times the bytes.
        bw = two["grad_bytes"] / max((two["allreduce_grad_ms"] - 2 * lat) / 1000, 1e-6)
        compute = one["step_ms"]
        admm = one["admm_update_ms"] / 32
        bcast_kib = 8 * one["compressed_weights"] / 32 / 1024
        for net, latency, bandwidth in (("loopback", lat, bw), ("10 GbE", 0.05, 1.1e9)):
            for p in (8, 16, 32, 64):
                ar = _ring_ms(p, one["grad_bytes"], latency, bandwidth)
                step = compute + ar + admm
                ips = p * args.batch / step * 1000
                eff = compute / step
                print(f"| {model} | {net} | {p} | {ar:.2f} | {admm:.2f} | {step:.1f} | {ips:.0f} | {100 * eff:.0f}% | {bcast_kib:.0f} |")
    print(f"\n(loopback fit: latency and bandwidth per model from its own 2-worker run)")


if __name__ == "__main__":
    main()
