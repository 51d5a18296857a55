"""tfq.reestimate_batch_norm: batch-norm statistics recomputed for the current weights."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfq


def _stack(seed=0):
    """Dense -> BN -> ReLU -> Conv-free head; a second BN after the ReLU (statistics depend on the first)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, name="fc1")(inp)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Dense(5, name="fc2")(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    return keras.Model(inp, keras.layers.Dense(3, name="head")(h))


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(2.0, 3.0, size=(n, 6)) * np.arange(1, 7)).astype("float32")


def test_single_batch_makes_inference_equal_training_mode():
    """Statistics of one batch holding all the data: inference = training-mode output on that batch."""
    model, x = _stack(), _data()
    train_out = np.asarray(model(x, training=True))  # uses the batch statistics, whatever the moving ones are
    assert not np.allclose(np.asarray(model(x, training=False)), train_out, atol=1e-3)  # stale (initial) statistics
    assert tfq.reestimate_batch_norm(model, x, batch_size=len(x)) == 1
    np.testing.assert_allclose(np.asarray(model(x, training=False)), train_out, rtol=1e-4, atol=1e-4)


def test_statistics_are_the_mean_over_batches():
    model, x = _stack(), _data()
    fc1, bn1 = model.get_layer("fc1"), model.get_layer("bn1")
    used = tfq.reestimate_batch_norm(model, x, batch_size=32)
    assert used == 3
    h = np.asarray(fc1(x), dtype=np.float64).reshape(3, 32, -1)
    np.testing.assert_allclose(np.asarray(bn1.moving_mean), h.mean(1).mean(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(bn1.moving_variance), h.var(1).mean(0), rtol=1e-4, atol=1e-5)
    assert bn1.momentum == 0.99 and model.get_layer("bn2").momentum == 0.99  # restored


def test_max_batches_and_data_forms():
    x = _data(n=100)
    y = np.zeros(100, dtype="int64")
    reference = _stack()
    tfq.reestimate_batch_norm(reference, x, batch_size=25, max_batches=2)
    expected = [np.asarray(v) for v in reference.non_trainable_weights]
    forms = {
        "tuple": ((x, y), {"batch_size": 25}),
        "triple": ((x, y, np.ones(100)), {"batch_size": 25}),
        "dataset": (tf.data.Dataset.from_tensor_slices((x, y)).batch(25), {}),
        "dataset of x": (tf.data.Dataset.from_tensor_slices(x).batch(25), {}),
        "list of batches": ([(x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25)], {}),
        "list of 3 batches": ([(x[i:i + 25], y[i:i + 25]) for i in range(0, 75, 25)], {}),
        "list of 2 batches": ([(x[i:i + 25], y[i:i + 25]) for i in range(0, 50, 25)], {}),
        "tensor": (tf.constant(x), {"batch_size": 25}),
    }
    for name, (data, kw) in forms.items():
        model = _stack()
        assert tfq.reestimate_batch_norm(model, data, max_batches=2, **kw) == 2, name
        for got, want in zip(model.non_trainable_weights, expected):
            np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6, err_msg=name)


def test_several_inputs_as_a_dict():
    keras.utils.set_random_seed(0)
    a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    h = keras.layers.BatchNormalization(name="bn")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(2)(h))
    rng = np.random.default_rng(1)
    xa, xb = rng.normal(1, 2, (40, 3)).astype("float32"), rng.normal(-3, 1, (40, 3)).astype("float32")
    assert tfq.reestimate_batch_norm(model, {"a": xa, "b": xb}, batch_size=40) == 1
    np.testing.assert_allclose(np.asarray(model.get_layer("bn").moving_mean),
                               np.concatenate([xa, xb], 1).mean(0), rtol=1e-5, atol=1e-5)


def test_frozen_batch_norm_and_nested_models():
    inner = _stack()
    inner.get_layer("bn2").trainable = False
    frozen = [np.asarray(v) for v in inner.get_layer("bn2").non_trainable_weights]
    outer = keras.Sequential([keras.Input((6,)), inner])
    x = _data()
    tfq.reestimate_batch_norm(outer, x, batch_size=len(x))
    h = np.asarray(inner.get_layer("fc1")(x), dtype=np.float64)
    np.testing.assert_allclose(np.asarray(inner.get_layer("bn1").moving_mean), h.mean(0), rtol=1e-5, atol=1e-5)
    for got, want in zip(inner.get_layer("bn2").non_trainable_weights, frozen):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_no_batch_norm_and_bad_arguments():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    assert tfq.reestimate_batch_norm(model, _data()) == 0
    with pytest.raises(ValueError, match="empty"):
        tfq.reestimate_batch_norm(_stack(), np.zeros((0, 6), "float32"))
    with pytest.raises(ValueError, match="batch_size"):
        tfq.reestimate_batch_norm(_stack(), _data(), batch_size=0)
    with pytest.raises(ValueError, match="max_batches"):
        tfq.reestimate_batch_norm(_stack(), _data(), max_batches=0)


def test_after_compression_training():
    """After fit with pruning + ADMM callbacks: inference matches training mode, the low-bit kernels are untouched."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean((1, 2, 3)) > x[:, 4:].mean((1, 2, 3))).astype("int64")
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.Conv2D(16, 3, use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=64, verbose=0,
              callbacks=[tfq.PruningCallback(0.8, skip_first_last=False), tfq.ADMMCallback("ternary")])
    kernels = [np.asarray(l.kernel) for l in model.layers if hasattr(l, "kernel")]
    tfq.reestimate_batch_norm(model, x, batch_size=len(x))
    np.testing.assert_allclose(np.asarray(model(x, training=False)), np.asarray(model(x, training=True)),
                               rtol=1e-3, atol=1e-3)
    for k, l in zip(kernels, [l for l in model.layers if hasattr(l, "kernel")]):
        np.testing.assert_array_equal(np.asarray(l.kernel), k)  # weights untouched: still in the low-bit set
