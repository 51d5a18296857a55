"""tfq.layers against plain Keras layers fed the same projected weights; quantize_model."""

import numpy as np
import pytest
import keras

from tfq import layers as QL

CASES = [
    (QL.QuantDense, keras.layers.Dense, dict(units=5), (3, 7)),
    (QL.QuantConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3), (2, 9, 3)),
    (QL.QuantConv2D, keras.layers.Conv2D, dict(filters=4, kernel_size=3, padding="same"), (2, 8, 8, 3)),
    (QL.QuantDepthwiseConv2D, keras.layers.DepthwiseConv2D, dict(kernel_size=3, depth_multiplier=2), (2, 8, 8, 3)),
    (QL.QuantSeparableConv2D, keras.layers.SeparableConv2D, dict(filters=4, kernel_size=3, depth_multiplier=2), (2, 8, 8, 3)),
    (QL.QuantConv2DTranspose, keras.layers.Conv2DTranspose, dict(filters=4, kernel_size=3, strides=2), (2, 5, 5, 3)),
    (QL.QuantLSTM, keras.layers.LSTM, dict(units=6), (2, 4, 3)),
    (QL.QuantGRU, keras.layers.GRU, dict(units=6), (2, 4, 3)),
    (QL.QuantGRU, keras.layers.GRU, dict(units=6, reset_after=False), (2, 4, 3)),
    (QL.QuantConv1D, keras.layers.Conv1D, dict(filters=4, kernel_size=3, padding="causal", dilation_rate=2), (2, 9, 3)),
    (QL.QuantEmbedding, keras.layers.Embedding, dict(input_dim=11, output_dim=4), None),
]


def _inputs(shape, rng):
    if shape is None:
        return rng.integers(0, 11, size=(2, 5))
    return rng.normal(size=shape).astype("float32")


@pytest.mark.parametrize("scheme", ["ternary", "pow2_3bit"])
@pytest.mark.parametrize("qcls,kcls,kwargs,shape", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_matches_plain_layer_with_projected_weights(qcls, kcls, kwargs, shape, scheme):
    rng = np.random.default_rng(0)
    x = _inputs(shape, rng)
    ql = qcls(scheme=scheme, **kwargs)
    ql(x)
    projected = ql.quantized_weights()
    kl = kcls(**kwargs)
    kl(x)
    kl.set_weights([projected[v.name][0] if v.name in projected else v.numpy() for v in ql.weights])
    np.testing.assert_allclose(np.asarray(ql(x)), np.asarray(kl(x)), rtol=1e-5, atol=1e-5)
    # ... and differs from the plain layer with the raw float weights.
    kl.set_weights(ql.get_weights())
    assert not np.allclose(np.asarray(ql(x)), np.asarray(kl(x)), atol=1e-4)
    # Config round trip keeps the scheme.
    clone = qcls.from_config(ql.get_config())
    assert clone.scheme == ql.scheme


@pytest.mark.parametrize("qcls,kwargs", [
    (QL.QuantLSTM, dict(dropout=0.3, recurrent_dropout=0.3)),  # one dropout mask per gate
    (QL.QuantLSTM, dict(dropout=0.3)),
    (QL.QuantGRU, dict(dropout=0.3, recurrent_dropout=0.3, reset_after=False)),
    (QL.QuantGRU, dict(dropout=0.3, recurrent_dropout=0.3)),
])
def test_recurrent_dropout_trains(qcls, kwargs):
    x = np.random.default_rng(3).normal(size=(4, 5, 3)).astype("float32")
    model = keras.Sequential([keras.Input((5, 3)), qcls(6, scheme="ternary", **kwargs), keras.layers.Dense(1)])
    model.compile("adam", "mse")
    history = model.fit(x, np.ones((4, 1)), epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Inference has no dropout: two calls agree.
    np.testing.assert_array_equal(model.predict(x, verbose=0), model.predict(x, verbose=0))


def test_straight_through_gradient():
    import tensorflow as tf

    layer = QL.QuantDense(3, scheme="binary", use_bias=False)
    x = tf.ones((2, 4))
    layer(x)
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(layer(x))
    g = tape.gradient(y, layer.trainable_weights[0])
    np.testing.assert_allclose(g.numpy(), np.full((4, 3), 2.0))


def test_mask_zeroes_entries_and_saves(tmp_path):
    mask = np.ones((6, 4), np.float32)
    mask[:3] = 0
    inp = keras.Input((6,))
    model = keras.Model(inp, QL.QuantDense(4, scheme="ternary", mask=mask, name="qd")(inp))
    q, _ = model.get_layer("qd").quantized_weights()["kernel"]
    assert np.all(q[:3] == 0)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_array_equal(loaded.get_layer("qd").weights[-1].numpy(), mask)


def test_bad_mask_shape():
    layer = QL.QuantDense(4, mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match="mask"):
        layer(np.ones((2, 6), "float32"))


def _functional():
    inp = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.SeparableConv2D(6, 3, name="sep")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(8, activation="relu", name="d1")(x)
    return keras.Model(inp, keras.layers.Dense(3, name="out")(x))


def test_quantize_model_swaps_and_keeps_weights(tmp_path):
    model = _functional()
    qmodel = QL.quantize_model(model, scheme="ternary")
    kinds = {l.name: type(l).__name__ for l in qmodel.layers}
    assert kinds["c1"] == "Conv2D" and kinds["out"] == "Dense"  # first/last stay float
    assert kinds["dw"] == "QuantDepthwiseConv2D" and kinds["sep"] == "QuantSeparableConv2D"
    assert kinds["d1"] == "QuantDense"
    # Same as the float model with projected kernels.
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    for name in ("dw", "sep", "d1"):
        projected = qmodel.get_layer(name).quantized_weights()
        layer = ref.get_layer(name)
        layer.set_weights([projected[v.name][0] if v.name in projected else v.numpy() for v in layer.weights])
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(qmodel.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    path = str(tmp_path / "q.keras")
    qmodel.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qmodel.predict(x, verbose=0), rtol=1e-6)


def test_quantize_model_policies():
    model = _functional()
    q = QL.quantize_model(model, layers={"c1": "binary", "out": True}, scheme="pow2_3bit")
    assert q.get_layer("c1").scheme.name == "binary" and q.get_layer("out").scheme.name == "pow2_3bit"
    assert type(q.get_layer("d1")).__name__ == "Dense"
    q = QL.quantize_model(model, layers=lambda l: "ternary" if l.name.startswith("d") else None)
    assert [type(q.get_layer(n)).__name__ for n in ("dw", "d1")] == ["QuantDepthwiseConv2D", "QuantDense"]
    with pytest.raises(ValueError, match="not found"):
        QL.quantize_model(model, layers={"nope": True})
    with pytest.raises(ValueError, match="not supported"):
        QL.quantize_model(model, layers={"flatten": True} if "flatten" in [l.name for l in model.layers] else {model.layers[4].name: True})
    with pytest.raises(ValueError, match="Unknown"):
        QL.quantize_model(model, scheme="int3")
