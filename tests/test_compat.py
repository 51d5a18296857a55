"""Files saved by tfq 0.1.0 still load, predict the same and convert the same.

tests/data/release_0_1_0/ holds .keras files written by 0.1.0
(make_fixtures.py there): a model trained with ADMMCallback, the output of
`tfq.compress`, a `tfq.quantize_model` model with quantized layers and a
model with each of the nine `tfq.layers` classes, plus
the Keras outputs and the converter's per-layer schemes 0.1.0 gave for them.
"""

import os

import numpy as np
import pytest
import keras

import tfq
import tfq.layers  # noqa: F401  (registers the quantized layer classes for load_model)
from tfq.converter.reference import ReferenceInterpreter

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "release_0_1_0")
NAMES = ("admm_mlp", "compressed_cnn", "quantized_layers")


@pytest.fixture(scope="module")
def expected():
    return np.load(os.path.join(HERE, "expected.npz"))


@pytest.mark.parametrize("name", NAMES)
def test_release_0_1_0_file_loads_and_converts(name, expected):
    model = keras.models.load_model(os.path.join(HERE, name + ".keras"))
    x = expected[name + "_x"]
    y = model.predict(x, verbose=0)
    np.testing.assert_allclose(y, expected[name + "_y"], rtol=1e-5, atol=1e-5)
    data = tfq.convert(model)
    schemes = sorted(f"{r.layer}:{r.scheme}" for r in data.report if r.scheme)
    assert schemes == expected[name + "_schemes"].tolist()
    # The converted model computes what the Keras model does (float reference
    # executor on the packed weights: exact up to float rounding).
    got = ReferenceInterpreter(data, "float").predict(x)
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(y).max())))


def test_release_0_1_0_every_quantized_layer_loads_and_predicts():
    # All nine tfq.layers classes with masks (full, True, per-kernel dict), as 0.1.0 saved them.
    saved = np.load(os.path.join(HERE, "every_quantized_layer.npz"))
    model = keras.models.load_model(os.path.join(HERE, "every_quantized_layer.keras"))
    y = model.predict([saved["image"], saved["seq"], saved["ids"]], verbose=0)
    np.testing.assert_allclose(y, saved["y"], rtol=1e-5, atol=1e-5)
    kinds = sorted(type(layer).__name__ for layer in model.layers if type(layer).__name__.startswith("Quant"))
    assert kinds == sorted(tfq.layers.__all__[:-1])
    masks = {layer.name: [v.name for v in layer.weights if v.name.endswith("_mask")] for layer in model.layers}
    assert masks["quant_separable_conv2d"] == ["depthwise_kernel_mask", "pointwise_kernel_mask"]
    assert masks["quant_lstm"] == ["kernel_mask", "recurrent_kernel_mask"]
