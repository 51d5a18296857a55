"""End to end: what tfq.convert writes, run by the tfq delegate, equals the reference executor.

The reference executor's "delegate" mode is the ground truth for the delegate's
arithmetic (docs/format.md), so outputs agree up to float32 rounding of the
epilogue. Needs the built delegate (scripts/test.sh builds it).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tfq.converter import convert, format as fmt
from tfq.converter.reference import ReferenceInterpreter
from tfq import schemes, testing


@pytest.mark.parametrize("kind", ["cnn", "mlp"])
@pytest.mark.parametrize("scheme", schemes.NAMES)
def test_delegate_matches_reference(kind, scheme):
    model = testing.random_compressed_model(scheme, kind, seed=3, batch_norm=kind == "cnn",
                                            per_channel=scheme != "ternary")
    data = convert(model)
    x = np.random.default_rng(4).normal(size=(3,) + tuple(model.input_shape[1:])).astype(np.float32)
    want = ReferenceInterpreter(data, "delegate").predict(x)
    got = testing.run_with_delegate(data, x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * np.abs(want).max())


def test_delegate_runs_packed_lstm_loop():
    rng = np.random.default_rng(5)
    inputs = keras.Input((6, 5))
    x = keras.layers.LSTM(8, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    for v in model.get_layer("lstm").weights:
        if "kernel" in v.path:
            v.assign(testing.in_set_kernel(tuple(v.shape), "ternary", rng))
    data = convert(model)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    want = ReferenceInterpreter(data, "delegate").predict(x)
    np.testing.assert_allclose(testing.run_with_delegate(data, x), want, rtol=1e-5, atol=1e-6)


def _layer_model(kind):
    if kind == "conv1d_dilated":
        inputs = keras.Input((16, 4))
        return keras.Model(inputs, keras.layers.Conv1D(6, 3, padding="same", dilation_rate=2,
                                                       name="c")(inputs)), (2, 16, 4)
    if kind == "separable":
        inputs = keras.Input((10, 10, 4))
        return keras.Model(inputs, keras.layers.SeparableConv2D(
            6, 3, strides=2, padding="same", depth_multiplier=2, name="c")(inputs)), (2, 10, 10, 4)
    inputs = keras.Input((10, 10, 4))
    return keras.Model(inputs, keras.layers.Conv2D(8, 3, groups=2, name="c")(inputs)), (2, 10, 10, 4)


@pytest.mark.parametrize("kind", ["conv1d_dilated", "separable", "grouped"])
def test_more_layer_types(kind):
    """Dilated Conv1D (SPACE_TO_BATCH_ND around CONV_2D) and SeparableConv2D pack; grouped
    convolutions (no tfq op) stay builtin. Reference = Keras, delegate = reference."""
    from tfq import layers
    keras.utils.set_random_seed(6)
    model, shape = _layer_model(kind)
    if kind != "grouped":
        model = layers.quantize_model(model, "ternary", skip_first_last=False)
        data = convert(model)
        assert data.report and all(r.packed for r in data.report)
    else:
        with pytest.warns(UserWarning, match="plain float model"):
            data = convert(model)
        assert [r.reason for r in data.report] == ["grouped convolution"]
    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    want = ReferenceInterpreter(data, "delegate").predict(x)
    np.testing.assert_allclose(testing.run_with_delegate(data, x), want, rtol=1e-5, atol=1e-6 * np.abs(want).max())
