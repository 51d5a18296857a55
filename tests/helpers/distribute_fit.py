"""Run by tests/test_distribute.py in a fresh process: two logical CPUs, MirroredStrategy."""

import json
import sys

import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, models, quantizers  # noqa: E402

(x, y), _ = datasets.mnist()
x, y = x[:512], y[:512]
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    keras.utils.set_random_seed(0)
    model = models.lenet5()
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
hist = model.fit(
    x, y, epochs=2, batch_size=64, verbose=0,
    callbacks=[tfq.PruningCallback(0.5, frequency=4), tfq.ADMMCallback("ternary", update_every=4)],
)
out = {"replicas": strategy.num_replicas_in_sync, "layers": {}, "history": sorted(hist.history)}
for name in ("conv2", "fc1"):
    var = model.get_layer(name).kernel
    copies = [np.asarray(v) for v in var.value.values]
    w = copies[0]
    q, _ = quantizers.Ternary().project(w, mask=(w != 0).astype(np.float32))
    out["layers"][name] = {
        "replica_diff": float(max(np.abs(c - w).max() for c in copies)),
        "sparsity": float((w == 0).mean()),
        "in_set_err": float(np.abs(q - w).max()),
    }
json.dump(out, sys.stdout)
