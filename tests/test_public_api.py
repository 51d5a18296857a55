"""tfq's public names (every one in `tfq.__all__`), and serialization of every registered object."""

import importlib
import inspect
import types

import keras
import numpy as np
import pytest

import tfq


def test_core_names_are_public():
    # The compression core users build on (README); a rename must keep these names.
    assert {"ADMMCallback", "PruningCallback", "quantize_model", "Binary", "Ternary", "PowerOfTwo"} <= set(tfq.__all__)


def test_dir_is_all():
    assert len(set(tfq.__all__)) == len(tfq.__all__), tfq.__all__
    assert dir(tfq) == sorted(tfq.__all__)


@pytest.mark.parametrize("name", tfq.__all__)
def test_every_public_name_resolves(name):
    """Each name of `tfq.__all__` loads (lazily) to a documented tfq module, class or function."""
    value = getattr(tfq, name)
    if isinstance(value, types.ModuleType):
        assert value is importlib.import_module(f"tfq.{name}")
    else:
        assert inspect.isclass(value) or inspect.isfunction(value), (name, value)
        assert value.__module__.startswith("tfq."), (name, value.__module__)
        assert value.__name__ == name
    assert inspect.getdoc(value), f"tfq.{name} has no docstring"


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        tfq.not_a_name  # noqa: B018


def test_models():
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
