"""The public names of tfq's compression core, and serialization of every registered object."""

import importlib

import keras
import numpy as np
import pytest

import tfq

CORE_EXPORTS = ["ADMMCallback", "PruningCallback", "quantize_model", "Binary", "Ternary", "PowerOfTwo"]


@pytest.mark.parametrize("name", CORE_EXPORTS)
def test_exports_resolve(name):
    assert name in tfq.__all__
    assert getattr(tfq, name) is not None


def test_submodules():
    for name in ("quantizers", "layers", "datasets", "models", "callbacks"):
        assert importlib.import_module(f"tfq.{name}") is getattr(tfq, name)
    for fn in ("lenet5", "lenet300_100", "small_bn_cnn"):
        model = getattr(tfq.models, fn)()
        assert isinstance(model, keras.Model) and getattr(model, "optimizer", None) is None
        assert model.output_shape == (None, 10)


def _registered():
    """Every object tfq registers with Keras, as a constructed instance."""
    from tfq import layers as QL
    from tfq import pruning, quantizers, record

    objs = [
        quantizers.Binary(), quantizers.Ternary(per_channel=False), quantizers.PowerOfTwo(3), quantizers.PowerOfTwo(4),
        pruning.ConstantSparsity(0.5, 3, 40, 7), pruning.PolynomialDecay(0.1, 0.9, 0, 100, power=2, frequency=5),
        QL.QuantDense(4, scheme="binary"), QL.QuantConv1D(3, 2), QL.QuantConv2D(3, 2, scheme="pow2_4bit"),
        QL.QuantDepthwiseConv2D(3), QL.QuantSeparableConv2D(4, 3), QL.QuantConv2DTranspose(2, 3),
        QL.QuantLSTM(4, scheme="pow2_3bit"), QL.QuantGRU(4), QL.QuantEmbedding(10, 3, mask=True),
        record.CompressedKernel("ternary", channel_axis=(2, 3), wrapped=keras.constraints.MaxNorm(2.0)),
    ]
    return objs


def test_every_registered_class_is_covered():
    registered = {
        name for name in keras.saving.get_custom_objects() if name.startswith("tfq>")
    }
    covered = {keras.saving.get_registered_name(type(o)) for o in _registered()}
    # Cell classes are covered through their RNN layers.
    assert registered - covered <= {"tfq>QuantLSTMCell", "tfq>QuantGRUCell"}


@pytest.mark.parametrize("obj", _registered(), ids=lambda o: type(o).__name__)
def test_serialization_round_trip(obj):
    data = keras.saving.serialize_keras_object(obj)
    back = keras.saving.deserialize_keras_object(data)
    assert type(back) is type(obj)
    assert back.get_config() == obj.get_config()
