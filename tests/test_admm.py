"""ADMMCallback: kernels end exactly in the set, policies, logs, bad input, save/load, resume."""

import csv

import numpy as np
import pytest
import keras

import tfq
from tfq import models, quantizers
from tfq import state as tfq_state
from tfq import record

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(builder=models.lenet300_100, seed=0, lr=1e-3):
    keras.utils.set_random_seed(seed)
    model = builder()
    model.compile(keras.optimizers.Adam(lr), LOSS, metrics=["accuracy"])
    return model


def assert_in_set(w, quantizer, channel_axis=-1, mask=None):
    """Every channel of w is scale * level for one scale (checked via the projection)."""
    q, scale = quantizer.project(w, mask=mask, channel_axis=channel_axis)
    np.testing.assert_allclose(q, w, rtol=1e-5, atol=1e-7)
    axes = channel_axis if isinstance(channel_axis, tuple) else (channel_axis % w.ndim,)
    rest = tuple(a for a in range(w.ndim) if a not in axes)
    perm = list(axes) + list(rest)
    rows = np.transpose(w, perm).reshape(scale.size, -1)
    lv = rows / np.where(scale > 0, scale, 1)[:, None]
    assert np.allclose(lv, np.round(lv), atol=1e-4)
    assert set(np.unique(np.round(lv)).astype(int).tolist()) <= set(quantizer.levels.tolist())


@pytest.mark.parametrize("scheme", ["ternary", "pow2_3bit"])
def test_fit_leaves_kernels_in_set(mnist_small, scheme, tmp_path):
    (x, y), (xt, yt) = mnist_small
    model = compiled()
    log = str(tmp_path / "log.csv")
    model.fit(
        x, y, epochs=2, batch_size=64, verbose=0,
        callbacks=[tfq.ADMMCallback(scheme=scheme, update_every=4), keras.callbacks.CSVLogger(log)],
    )
    q = quantizers.get(scheme)
    fc1, fc2, fc3 = (model.get_layer(n) for n in ("fc1", "fc2", "fc3"))
    assert_in_set(fc2.kernel.numpy(), q)
    # Default policy: first and last layer stay float.
    assert len(np.unique(fc1.kernel.numpy())) > 1000 and len(np.unique(fc3.kernel.numpy())) > 500
    assert record.read(fc2) == {"kernel": {"scheme": scheme, "per_channel": True, "channel_axis": -1}}
    assert record.read(fc1) == {}
    with open(log) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["admm_rho"]) > float(rows[0]["admm_rho"])
    assert 0 <= float(rows[0]["admm_residual"]) < 1.5 and "admm_residual/fc2/kernel" in rows[0]
    # The training hook is gone after fit; what stays is the record, which changes no value.
    assert isinstance(fc2.kernel.constraint, record.CompressedKernel)
    np.testing.assert_array_equal(fc2.kernel.constraint(fc2.kernel).numpy(), fc2.kernel.numpy())
    # Round trip through .keras.
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(xt, verbose=0), model.predict(xt, verbose=0), rtol=1e-5, atol=1e-5)
    # The record is model state: it survives save and load_model.
    assert record.read(loaded.get_layer("fc2")) == record.read(fc2) and record.read(loaded.get_layer("fc1")) == {}


def _all_layer_types():
    inp = keras.Input((10, 10, 2))
    x = keras.layers.Conv2D(4, 3, name="conv")(inp)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(x)
    x = keras.layers.Conv2DTranspose(3, 3, name="convt")(x)
    x = keras.layers.Reshape((-1, 3))(x)
    x = keras.layers.Conv1D(4, 3, name="conv1d")(x)
    x = keras.layers.LSTM(5, return_sequences=True, name="lstm")(x)
    x = keras.layers.GRU(5, name="gru")(x)
    x = keras.layers.Dense(3, name="dense")(x)
    img = keras.Model(inp, x)
    tok = keras.Input((6,), dtype="int32")
    e = keras.layers.Embedding(20, 3, name="emb")(tok)
    e = keras.layers.GlobalAveragePooling1D()(e)
    out = keras.layers.Add()([img.output, e])
    model = keras.Model([inp, tok], out)
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_every_supported_layer_type():
    model = _all_layer_types()
    rng = np.random.default_rng(0)
    x = [rng.normal(size=(32, 10, 10, 2)).astype("float32"), rng.integers(0, 20, size=(32, 6))]
    y = rng.normal(size=(32, 3)).astype("float32")
    cb = tfq.ADMMCallback("ternary", skip_first_last=False, update_every=2, finetune_epochs=1)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, callbacks=[cb])
    keys = {s.key for s in cb.specs}
    assert keys == {
        "conv/kernel", "dw/kernel", "sep/depthwise_kernel", "sep/pointwise_kernel", "convt/kernel",
        "conv1d/kernel", "lstm/kernel", "lstm/recurrent_kernel", "gru/kernel", "gru/recurrent_kernel",
        "dense/kernel", "emb/embeddings",
    }
    for spec in cb.specs:
        assert_in_set(spec.variable.numpy(), quantizers.Ternary(), spec.channel_axis)
    assert dict((s.key, s.channel_axis) for s in cb.specs)["dw/kernel"] == (2, 3)
    assert dict((s.key, s.channel_axis) for s in cb.specs)["convt/kernel"] == -2


def test_policies_dict_and_callable(mnist_small):
    (x, y), _ = mnist_small
    model = compiled()
    cb = tfq.ADMMCallback(layers={"fc1": "binary", "fc3": True, "fc2": None}, scheme="pow2_4bit", finetune_epochs=0)
    model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0, callbacks=[cb])
    assert_in_set(model.get_layer("fc1").kernel.numpy(), quantizers.Binary())
    assert_in_set(model.get_layer("fc3").kernel.numpy(), quantizers.PowerOfTwo(4))
    assert len(np.unique(model.get_layer("fc2").kernel.numpy())) > 1000
    model = compiled()
    cb = tfq.ADMMCallback(layers=lambda layer: "ternary" if layer.name == "fc3" else None, finetune_epochs=0)
    model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0, callbacks=[cb])
    assert [s.key for s in cb.specs] == ["fc3/kernel"]


def test_bad_input_errors(mnist_small):
    (x, y), _ = mnist_small
    with pytest.raises(ValueError, match="valid"):
        tfq.ADMMCallback(scheme="int3")
    model = compiled()
    with pytest.raises(ValueError, match="not supported"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[tfq.ADMMCallback(layers={"flatten": True})])
    with pytest.raises(ValueError, match="not found"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[tfq.ADMMCallback(layers={"fc9": True})])
    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    tiny.compile("sgd", "mse")
    with pytest.raises(ValueError, match="nothing to compress"):
        tiny.fit(np.ones((4, 4)), np.ones((4, 2)), verbose=0, callbacks=[tfq.ADMMCallback()])


def test_unsupported_layers_listed_in_one_warning():
    inp = keras.Input((4, 6))
    x = keras.layers.Dense(6, name="a")(inp)
    x = keras.layers.EinsumDense("abc,cd->abd", output_shape=(4, 6), name="ein")(x)
    x = keras.layers.Dense(6, name="b")(x)
    x = keras.layers.Conv3D(2, 1, name="c3d")(keras.layers.Reshape((4, 6, 1, 1))(x))
    x = keras.layers.Dense(3, name="c")(keras.layers.Flatten()(x))
    model = keras.Model(inp, keras.layers.Dense(2, name="d")(x))
    model.compile("sgd", "mse")
    with pytest.warns(UserWarning, match=r"ein \(EinsumDense\), c3d \(Conv3D\)"):
        cb = tfq.ADMMCallback(finetune_epochs=0)
        cb.set_model(model)
    assert [s.key for s in cb.specs] == ["b/kernel", "c/kernel"]


def test_nan_weights_raise_naming_layer(mnist_small):
    (x, y), _ = mnist_small
    model = compiled()
    k = model.get_layer("fc2").kernel
    k.assign(np.where(np.arange(k.shape[0])[:, None] == 0, np.nan, k.numpy()))
    with pytest.raises(ValueError, match="fc2.*NaN"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[tfq.ADMMCallback()])


def test_nan_during_training_raises(mnist_small):
    (x, y), _ = mnist_small
    model = compiled(lr=1e-3)
    bad = x[:64].copy()
    bad[0, 0, 0, 0] = np.inf
    with pytest.raises(Exception, match="NaN or Inf in layer 'fc2'"):
        model.fit(bad, y[:64], epochs=1, verbose=0, callbacks=[tfq.ADMMCallback()])


def test_empty_channel_warns(mnist_small):
    (x, y), _ = mnist_small
    model = compiled()
    k = model.get_layer("fc2").kernel
    w = k.numpy()
    w[:, 3] = 0
    k.assign(w)
    with pytest.warns(UserWarning, match="fc2.*empty output channel"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[tfq.ADMMCallback(finetune_epochs=0)])


def test_empty_channel_warns_once_per_fit(mnist_small):
    """ADMM's start, its switch to fine-tuning and the end of pruning all see the same empty channel."""
    import warnings

    (x, y), _ = mnist_small
    model = compiled()
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    k = model.get_layer("fc2").kernel
    k.assign(np.where(np.arange(k.shape[1]) == 3, 0.0, k.numpy() + np.sign(k.numpy()) * 0.5))  # nothing else prunable to empty
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x[:64], y[:64], epochs=2, verbose=0,
                  callbacks=[tfq.PruningCallback(0.1, frequency=1), tfq.ADMMCallback(finetune_epochs=1)])
    empty = [str(w.message) for w in caught if "empty output channel" in str(w.message)]
    assert len(empty) == 1 and "fc2" in empty[0], empty


def test_backup_and_restore_resumes_identically(mnist_small, tmp_path):
    (x, y), _ = mnist_small

    def callbacks():
        return [tfq.PruningCallback(0.5, frequency=4), tfq.ADMMCallback("ternary", update_every=4)]

    model = compiled()
    model.fit(x, y, epochs=3, batch_size=64, shuffle=False, verbose=0, callbacks=callbacks())
    reference = [v.numpy() for v in model.weights]

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("interrupted")

    backup = str(tmp_path / "backup")
    model = compiled()
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            x, y, epochs=3, batch_size=64, shuffle=False, verbose=0,
            callbacks=callbacks() + [keras.callbacks.BackupAndRestore(backup), Interrupt()],
        )
    saved_state = [v.numpy() for v in tfq_state.get(model, tfq_state.ADMM).weights + tfq_state.get(model, tfq_state.PRUNING).weights]

    class Check(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            assert epoch == 2
            now = [v.numpy() for v in tfq_state.get(self.model, tfq_state.ADMM).weights + tfq_state.get(self.model, tfq_state.PRUNING).weights]
            for a, b in zip(saved_state, now):
                np.testing.assert_array_equal(a, b)

    model = compiled(seed=1)  # different init: everything must come from the backup
    model.fit(
        x, y, epochs=3, batch_size=64, shuffle=False, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup)] + callbacks() + [Check()],
    )
    for a, b in zip(reference, [v.numpy() for v in model.weights]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
