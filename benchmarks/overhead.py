"""Training-time overhead of the tfq callbacks: seconds per epoch, plain fit vs ADMM / pruning.

The configurations run round-robin (interleaved, so load changes on a shared
machine hit all of them alike) after an untimed warm-up fit of each, each on a
fresh model; each `fit` runs 2 epochs
and only the second is timed (the first includes tracing; with the default
pruning schedule, masks still change during the first 20% of it),
from the start of the epoch to the end of training (all callback work of the
epoch included). Prints the median seconds per epoch and the ratio to plain fit.

Usage:
    python benchmarks/overhead.py [--rounds 3] [--images 20000] [--models lenet5,lenet300_100]
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, models  # noqa: E402

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
CONFIGS = {
    "plain fit": lambda: [],
    "ADMM ternary": lambda: [tfq.ADMMCallback("ternary", finetune_epochs=0)],
    "ADMM pow2_4bit": lambda: [tfq.ADMMCallback("pow2_4bit", finetune_epochs=0)],
    "pruning 90% (grad)": lambda: [tfq.PruningCallback(0.9)],
    "pruning + ADMM ternary": lambda: [tfq.PruningCallback(0.9), tfq.ADMMCallback("ternary", finetune_epochs=0)],
}


class LastEpochTimer(keras.callbacks.Callback):
    """Listed first: from the last epoch's begin to train end."""

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_train_end(self, logs=None):
        self.seconds = time.perf_counter() - self.start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--models", default="lenet5,lenet300_100")
    args = parser.parse_args()
    (x, y), _ = datasets.mnist()
    x, y = x[: args.images], y[: args.images]
    builders = {"lenet5": models.lenet5, "lenet300_100": models.lenet300_100}
    print(f"{platform.machine()} {platform.processor() or ''}, {os.cpu_count()} cores; {len(x)} images/epoch, "
          f"batch {args.batch}, {args.rounds} interleaved rounds, median of the timed epochs")
    for name in args.models.split(","):
        runs = {label: (None, []) for label in CONFIGS}
        # Warm-up, untimed: one short fit per configuration, so one-off
        # process-wide costs (the XLA compiles of the projections, the first
        # traces) do not land in the first round.
        for make in CONFIGS.values():
            model = builders[name]()
            model.compile(keras.optimizers.Adam(1e-3), LOSS)
            model.fit(x[:4096], y[:4096], epochs=2, batch_size=args.batch, verbose=0, callbacks=make())
        for _ in range(args.rounds):
            for label, make in CONFIGS.items():
                times = runs[label][1]
                keras.utils.set_random_seed(0)
                model = builders[name]()  # fresh each round: pruning and ADMM run their whole course
                model.compile(keras.optimizers.Adam(1e-3), LOSS)
                timer = LastEpochTimer()
                model.fit(x, y, epochs=2, batch_size=args.batch, verbose=0, callbacks=[timer] + make())
                times.append(timer.seconds)
        base = statistics.median(runs["plain fit"][1])
        print(f"\n{name}")
        print(f"{'configuration':<26}{'s/epoch':>9}{'ratio':>8}{'overhead':>10}")
        for label, (_, times) in runs.items():
            med = statistics.median(times)
            print(f"{label:<26}{med:>9.2f}{med / base:>8.2f}{(med / base - 1) * 100:>9.1f}%")


if __name__ == "__main__":
    main()
