"""Compress a model on MNIST with ADMM + pruning, on one or several worker processes.

One process:        python scripts/compress_multiworker.py --out lenet5_t.keras
Two local workers:  scripts/train_multiworker.sh -n 2 scripts/compress_multiworker.py --out lenet5_t.keras
A cluster:          the same command on every machine, each with its TF_CONFIG (docs/distributed.md)

Every worker runs this script with the same arguments; only the chief
(worker 0) writes the model and prints the report.
"""

import argparse
import json

import tfq
from tfq import datasets, distribute, models


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5", choices=models.__all__)
    parser.add_argument("--scheme", default="ternary")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size (split between the workers)")
    parser.add_argument("--samples", type=int, default=None, help="use the first N training images")
    parser.add_argument("--val-samples", type=int, default=None, help="use the first N test images")
    parser.add_argument("--out", required=True, help="where the chief saves the compressed model (.keras)")
    args = parser.parse_args()

    import keras

    info = distribute.cluster_info()
    # Without TF_CONFIG: one process, no strategy.
    strategy = distribute.multi_worker_strategy() if info else None
    (x, y), (xt, yt) = datasets.mnist()
    if args.samples:
        x, y = x[: args.samples], y[: args.samples]
    if args.val_samples:
        xt, yt = xt[: args.val_samples], yt[: args.val_samples]
    keras.utils.set_random_seed(0)  # the same float model on every worker
    model = getattr(models, args.model)()
    small, report = tfq.compress(
        model, scheme=args.scheme, sparsity=args.sparsity, data=(x, y), validation_data=(xt, yt),
        epochs=args.epochs, batch_size=args.batch_size, verbose=1 if (info is None or info.is_chief) else 0,
        return_report=True, strategy=strategy,
    )
    if info:
        distribute.barrier(strategy)  # the chief, which hosts the coordination service, exits last
    if info is None or info.is_chief:
        small.save(args.out)
        print(json.dumps({"workers": info.num_workers if info else 1, "accuracy": report.accuracy_after,
                          "ratio": round(report.ratio, 2), "out": args.out}))


if __name__ == "__main__":
    main()
