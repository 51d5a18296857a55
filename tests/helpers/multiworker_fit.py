"""Run by tests/test_multiworker.py: a small LeNet-5 on 256 MNIST images with pruning + ADMM.

With TF_CONFIG set it is one worker of a MultiWorkerMirroredStrategy job,
without it a single process over the same global batch. Writes to --out:
`result-<rank>.json` (history, checksums, test accuracy), `weights-<rank>.npz`
(the final weights and tfq state), `epochs-<rank>.jsonl` (checksums of every
variable after every epoch) and `progress-<rank>` (epoch and batch, for the
kill test).
"""

import argparse
import json
import os
import sys

import numpy as np

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True)
parser.add_argument("--epochs", type=int, default=4)
parser.add_argument("--batch", type=int, default=64, help="global batch size")
parser.add_argument("--samples", type=int, default=256)
parser.add_argument("--model", default="tiny", choices=["tiny", "lenet5"])
parser.add_argument("--backup", default=None, help="BackupAndRestore base directory")
parser.add_argument("--startup-timeout", type=float, default=60.0)
parser.add_argument("--collective-timeout", type=float, default=60.0)
args = parser.parse_args()

import tensorflow as tf  # noqa: E402

tf.config.threading.set_inter_op_parallelism_threads(1)
tf.config.threading.set_intra_op_parallelism_threads(1)

import keras  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, distribute, models  # noqa: E402

info = distribute.cluster_info()
rank = info.rank if info else 0
os.makedirs(args.out, exist_ok=True)
strategy = distribute.multi_worker_strategy(args.startup_timeout, args.collective_timeout) if info else tf.distribute.get_strategy()

(x, y), (xt, yt) = datasets.mnist()
x, y = x[: args.samples], y[: args.samples]
xt, yt = xt[:500], yt[:500]

def tiny():
    """A LeNet-5 with fewer filters and units and a batch norm: 17k weights."""
    L = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(8, 5, use_bias=False, name="conv1"), L.BatchNormalization(name="bn1"), L.ReLU(),
        L.MaxPooling2D(2),
        L.Conv2D(16, 5, activation="relu", name="conv2"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(64, activation="relu", name="fc1"), L.Dense(10, name="fc2"),
    ], name="tiny")


with strategy.scope():
    keras.utils.set_random_seed(0)
    model = tiny() if args.model == "tiny" else models.lenet5()
if info:
    model = distribute.prepare(model, strategy)  # batch norm synchronized: statistics of the global batch
else:
    # The same statistics, computed by the same formula (E[x^2] - E[x]^2 over
    # the batch) as the workers' synchronized batch norm.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


class Progress(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        with open(os.path.join(args.out, f"progress-{rank}"), "w") as f:
            f.write(f"{self.epoch} {batch}\n")


callbacks = [
    tfq.PruningCallback(0.5, frequency=2),
    tfq.ADMMCallback("ternary", update_every=2),
    Progress(),
]
if args.backup:
    callbacks.insert(0, keras.callbacks.BackupAndRestore(distribute.worker_dir(args.backup, info)))
if info:
    callbacks.append(distribute.ConsistencyCheck(strategy, os.path.join(args.out, f"epochs-{rank}.jsonl")))
else:
    class Log(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            with open(os.path.join(args.out, f"epochs-{rank}.jsonl"), "a") as f:
                f.write(json.dumps({"epoch": epoch, "checksums": distribute.state_checksums(self.model)}) + "\n")

    callbacks.append(Log())

with strategy.scope(), distribute.worker_errors():
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], jit_compile=False)
    hist = model.fit(x, y, epochs=args.epochs, batch_size=args.batch, shuffle=False, verbose=0, callbacks=callbacks)

pred = np.argmax(model.predict(xt, batch_size=100, verbose=0), axis=-1)
weights = {name.replace("/", "|"): np.asarray(keras.ops.convert_to_numpy(v))
           for name, v in distribute._state_variables(model)}
np.savez(os.path.join(args.out, f"weights-{rank}.npz"), **weights)
if info:
    distribute.barrier(strategy)
result = {
    "rank": rank,
    "replicas": strategy.num_replicas_in_sync,
    "history": {k: [float(a) for a in v] for k, v in hist.history.items() if "/" not in k},
    "checksums": distribute.state_checksums(model),
    "accuracy": float(np.mean(pred == yt)),
}
with open(os.path.join(args.out, f"result-{rank}.json"), "w") as f:
    json.dump(result, f)
print(json.dumps({"rank": rank, "accuracy": result["accuracy"]}))
sys.stdout.flush()
