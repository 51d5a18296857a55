"""Float zero PADs run by the delegate (docs/delegate.md, "Zero padding").

The delegate claims a builtin PAD (float32, rank 1-4, constant non-negative
paddings) as its own partition. Its output must be bit-identical to LiteRT's
own PAD (`pad=0`), feeding a tfq convolution, a builtin one, or a model
output; PADs it must not trust (negative, huge or non-constant paddings,
other types) stay with LiteRT, and a crafted one never makes it touch memory
outside its tensors.
"""

import pathlib
import sys

import numpy as np
import pytest

import tfq
from tfq.converter import convert, tflite_io
from tfq.testing import set_in_set_weights

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
from delegated import litert as _litert, run_all as _run  # noqa: E402


def _model(kind):
    import keras

    if kind == "pad2d_conv":  # the ResNet stem pattern, asymmetric pads, a padded output too
        inp = keras.Input((9, 11, 3))
        p = keras.layers.ZeroPadding2D(((1, 2), (3, 0)), name="pad")(inp)
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(p)
        x = keras.layers.ZeroPadding2D(1, name="pad2")(x)
        x = keras.layers.Conv2D(4, 3, name="conv2")(x)
        return keras.Model(inp, [x, p]), ("conv", "conv2")
    if kind == "pad1d":  # rank 3, into a tfq fully connected layer
        inp = keras.Input((13, 5))
        x = keras.layers.ZeroPadding1D((2, 1), name="pad")(inp)
        x = keras.layers.Dense(6, name="conv")(x)
        return keras.Model(inp, x), ("conv",)
    if kind == "pad_float_conv":  # the PAD feeds a convolution left to LiteRT
        inp = keras.Input((7, 7, 4))
        x = keras.layers.ZeroPadding2D(2, name="pad")(inp)
        x = keras.layers.Conv2D(5, 3, name="float_conv")(x)
        x = keras.layers.Conv2D(6, 1, name="conv")(x)
        return keras.Model(inp, x), ("conv",)
    raise ValueError(kind)


@pytest.fixture(scope="module")
def pad_models():
    out = {}
    for i, kind in enumerate(("pad2d_conv", "pad1d", "pad_float_conv")):
        model, packed = _model(kind)
        set_in_set_weights(model, {n: "ternary" for n in packed}, seed=i)
        out[kind] = bytes(convert(model))
    return out


@pytest.mark.parametrize("kind", ("pad2d_conv", "pad1d", "pad_float_conv"))
@pytest.mark.parametrize("batch", (1, 2))
def test_pad_equals_litert_pad(pad_models, kind, batch, capfd):
    data = pad_models[kind]
    shape = _litert(data, {}).get_input_details()[0]["shape"][1:]
    x = np.random.default_rng(batch).standard_normal((batch, *shape)).astype(np.float32)
    want = _run(_litert(data, {"pad": "0"}), x)
    got = _run(_litert(data, {"verbosity": "1"}), x)
    assert "claimed PAD node" in capfd.readouterr().err
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    # Re-invoked with other values and with a NaN: same again.
    x[0, 0, 0] = np.nan
    for g, w in zip(_run(_litert(data, {}), x), _run(_litert(data, {"pad": "0"}), x)):
        np.testing.assert_array_equal(g, w)


def test_pad_option_is_validated(pad_models, capfd):
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"pad": "maybe"})
    _run(_litert(pad_models["pad1d"], {"pad": "0", "verbosity": "1"}), np.zeros((1, 13, 5), np.float32))
    assert "claimed PAD" not in capfd.readouterr().err


def _with_paddings(data, values, dtype=np.int32):
    """The model with its first PAD's paddings tensor replaced by `values` (rows [before, after])."""
    model, raw, _ = tflite_io.load_model(bytes(data))
    sg = model.subgraphs[0]
    op = next(o for o in sg.operators if tflite_io.op_name(model, o) == "PAD")
    t = sg.tensors[int(op.inputs[1])]
    arr = np.asarray(values, dtype=dtype)
    from ai_edge_litert import schema_py_generated as schema

    buf = schema.BufferT()
    buf.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
    model.buffers.append(buf)
    t.buffer = len(model.buffers) - 1
    t.shape = np.asarray(arr.shape, dtype=np.int32)
    t.type = schema.TensorType.INT32 if dtype == np.int32 else schema.TensorType.INT64
    return tflite_io.save_model(model)


def test_int64_paddings_are_read(pad_models, capfd):
    data = _with_paddings(pad_models["pad1d"], [[0, 0], [2, 1], [0, 0]], np.int64)
    x = np.random.default_rng(0).standard_normal((1, 13, 5)).astype(np.float32)
    want = _run(_litert(data, {"pad": "0"}), x)
    got = _run(_litert(data, {"verbosity": "1"}), x)
    assert "claimed PAD node" in capfd.readouterr().err
    np.testing.assert_array_equal(got[0], want[0])


@pytest.mark.parametrize("paddings, why", [
    ([[0, 0], [-1, 1], [0, 0]], "outside [0,"),
    ([[0, 0], [2 ** 21, 0], [0, 0]], "outside [0,"),
    ([[0, 0], [1, 1]], "shape [3, 2]"),
    ([[0, 0, 1], [1, 1, 0], [0, 0, 0]], "shape [3, 2]"),
])
def test_untrusted_paddings_stay_with_litert(pad_models, paddings, why, capfd):
    data = _with_paddings(pad_models["pad1d"], paddings)
    try:
        interp = _litert(data, {"verbosity": "2"})
        interp.allocate_tensors()
    except (RuntimeError, ValueError):
        pass  # LiteRT's own PAD may refuse them; the delegate never claimed it
    err = capfd.readouterr().err
    assert "claimed PAD" not in err
    assert "not claiming PAD" in err and why in err


# A PAD feeding a MAX_POOL_2D runs with it as one pass (MaxPoolPadded): the
# pool reads the PAD's input through the padding. Max is exact: the outputs
# must equal LiteRT's PAD + MAX_POOL_2D (pad=0) bit for bit, with negative
# inputs (where the zeros win), SAME and VALID pools, strides, asymmetric
# pads and a fused activation.
POOL_CASES = [
    # name, input shape, ZeroPadding2D padding, MaxPooling2D kwargs
    ("resnet_stem", (12, 12, 5), 1, dict(pool_size=3, strides=2)),
    ("asym_same", (9, 11, 3), ((1, 2), (3, 0)), dict(pool_size=(2, 3), strides=(1, 2), padding="same")),
    ("big_pad", (5, 6, 8), 3, dict(pool_size=2, strides=3)),
    # Windows wholly in the padding, above and left of the image: zeros.
    ("corner_windows", (4, 5, 3), ((3, 1), (4, 0)), dict(pool_size=1, strides=2)),
    ("corner_windows_same", (4, 5, 3), 3, dict(pool_size=2, strides=2, padding="same")),
]


def _pool_model(shape, padding, kwargs, padded_output=False, relu=False):
    import keras

    inp = keras.Input(shape)
    p = keras.layers.ZeroPadding2D(padding)(inp)
    x = keras.layers.MaxPooling2D(**kwargs)(p)
    if relu:
        x = keras.layers.ReLU()(x)  # the converter fuses it into the pool
    return keras.Model(inp, [x, p] if padded_output else x)


@pytest.mark.parametrize("name, shape, padding, kwargs", POOL_CASES, ids=[c[0] for c in POOL_CASES])
@pytest.mark.parametrize("padded_output", (False, True))
def test_pad_and_max_pool_equal_litert(name, shape, padding, kwargs, padded_output, capfd):
    data = convert(_pool_model(shape, padding, kwargs, padded_output, relu=name == "big_pad"))
    x = np.random.default_rng(3).standard_normal((2,) + shape).astype(np.float32)
    got = _run(_litert(data, {"verbosity": "1"}), x)
    assert "with MAX_POOL_2D node" in capfd.readouterr().err
    want = _run(_litert(data, {"pad": "0"}), x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_max_pool_without_pad_stays_with_litert(capfd):
    import keras

    inp = keras.Input((8, 8, 4))
    data = convert(keras.Model(inp, keras.layers.MaxPooling2D(2)(inp)))
    _run(_litert(data, {"verbosity": "1"}), np.ones((1, 8, 8, 4), np.float32))
    assert "MAX_POOL_2D" not in capfd.readouterr().err
