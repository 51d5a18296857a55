"""The delegate's 8-bit convolutions: builtin dynamic-range CONV_2D ops.

`tfq.convert(float_layers="int8")` (and LiteRT's own dynamic-range
quantization) write the float first and last layers as CONV_2D with a
constant int8 filter, per-channel scales and float input/output. On CPUs
with AVX-512 VNNI the delegate claims them (option `int8_conv`, "auto") and
runs them with its block-sparse int8 kernels, every block stored: the input
quantized per image with absmax like every tfq layer, the int32 dot products
exact. Checked here: against an integer numpy model of exactly that
arithmetic, against LiteRT's own hybrid kernel (which quantizes
differently: close, not equal), SIMD against the scalar reference bit for
bit, and filters the delegate must leave to LiteRT.
"""

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfq.converter import convert, tflite_io
from helpers.delegated import litert, run_all

# (name, input shape, Conv2D kwargs): the run layout (in_c % 4 != 0), the
# plain implicit one (in_c % 4 == 0), partial 8- and 16-row blocks, strides,
# SAME and VALID. The TFLite converter writes a dilated convolution as
# SPACE_TO_BATCH_ND, CONV_2D on a batch of 4, BATCH_TO_SPACE_ND (and its
# bias as an ADD): that case checks the batch, against LiteRT only.
CASES = [
    ("stem7x7s2", (30, 30, 3), dict(filters=16, kernel_size=7, strides=2, activation="relu")),
    ("same3x3c8", (11, 13, 8), dict(filters=10, kernel_size=3, padding="same", activation="relu6")),
    ("dilated_c5", (14, 12, 5), dict(filters=24, kernel_size=3, dilation_rate=2)),
    ("rect_c6", (9, 17, 6), dict(filters=5, kernel_size=(2, 5), strides=(1, 2), padding="same")),
    ("pw_c2", (7, 7, 2), dict(filters=33, kernel_size=1)),
]


def _model(shape, kwargs, seed):
    import keras

    inp = keras.Input(shape)
    out = keras.layers.Conv2D(name="conv", **kwargs)(inp)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(seed)
    for w in model.layers[1].weights:
        w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    return model


@pytest.fixture(scope="module", params=CASES, ids=[c[0] for c in CASES])
def case(request):
    name, shape, kwargs = request.param
    model = _model(shape, kwargs, seed=len(name))
    return name, model, kwargs, convert(model, float_layers="int8")


def _ops(data):
    m, _, _ = tflite_io.load_model(bytes(data))
    return [tflite_io.op_name(m, op) for op in m.subgraphs[0].operators]


def _filter(data):
    """The CONV_2D's int8 filter [O, KH, KW, I], its scales and the float bias."""
    m, d, _ = tflite_io.load_model(bytes(data))
    sg = m.subgraphs[0]
    (op,) = [op for op in sg.operators if tflite_io.op_name(m, op) == "CONV_2D"]
    t = sg.tensors[int(op.inputs[1])]
    q = tflite_io.constant_array(m, d, t).astype(np.int64)
    bias = tflite_io.constant_array(m, d, sg.tensors[int(op.inputs[2])]) if len(op.inputs) > 2 else None
    return q, np.asarray(t.quantization.scale, np.float32), bias


def _reference(x, q, scale, bias, kwargs):
    """The delegate's arithmetic in numpy: per-image absmax int8 input, exact int dot, float epilogue."""
    import keras

    amax = np.abs(x).max()
    s = np.float32(127.0) / np.float32(amax)
    xq = np.rint(x * s).astype(np.float32)
    # An integer convolution through Keras' float one: |acc| < 2^24, exact in float32.
    conv = keras.layers.Conv2D(**{k: v for k, v in kwargs.items() if k != "activation"}, use_bias=False)
    conv.build((None,) + x.shape[1:])
    conv.kernel.assign(np.transpose(q, (1, 2, 3, 0)).astype(np.float32))
    acc = np.asarray(conv(xq))
    y = acc * (scale / s).astype(np.float32) + (0 if bias is None else bias)
    act = kwargs.get("activation")
    if act == "relu":
        y = np.maximum(y, 0)
    elif act == "relu6":
        y = np.clip(y, 0, 6)
    return y


def test_int8_conv_matches_its_arithmetic_and_litert(case, capfd):
    name, model, kwargs, data = case
    x = np.random.default_rng(7).standard_normal((1,) + model.input_shape[1:]).astype(np.float32)
    (got,) = run_all(litert(data, {"int8_conv": "true", "verbosity": "1"}), x)
    assert "(CONV_2D, int8" in capfd.readouterr().err
    top = np.abs(got).max()
    if _ops(data) == ["CONV_2D"]:
        q, scale, bias = _filter(data)
        want = _reference(x, q, scale, bias, kwargs)
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * top)
    else:
        assert name == "dilated_c5" and "SPACE_TO_BATCH_ND" in _ops(data)
    # LiteRT's hybrid kernel quantizes the input its own way: close, not equal.
    (lite,) = run_all(litert(data, {"int8_conv": "false"}), x)
    (plain,) = run_all(Interpreter(model_content=bytes(data)), x)
    np.testing.assert_array_equal(lite, plain)  # int8_conv=false leaves the node to LiteRT
    assert np.abs(got - lite).max() <= 0.03 * top
    assert np.abs(got - np.asarray(model(x))).max() <= 0.05 * top


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_int8_conv_simd_equals_reference(case, threads):
    _, model, _, data = case
    x = np.random.default_rng(threads).standard_normal((2,) + model.input_shape[1:]).astype(np.float32)
    (ref,) = run_all(litert(data, {"int8_conv": "true", "force_reference": "true"}, threads=threads), x)
    (got,) = run_all(litert(data, {"int8_conv": "true"}, threads=threads), x)
    np.testing.assert_array_equal(got, ref)


def test_int8_conv_zero_and_nan_images(case):
    _, model, kwargs, data = case
    shape = (1,) + model.input_shape[1:]
    (zero,) = run_all(litert(data, {"int8_conv": "true"}), np.zeros(shape, np.float32))
    bias = np.asarray(model.layers[1].bias)
    want = np.broadcast_to(bias, zero.shape)
    act = kwargs.get("activation")
    want = np.maximum(want, 0) if act == "relu" else np.clip(want, 0, 6) if act == "relu6" else want
    np.testing.assert_array_equal(zero, want)
    x = np.ones(shape, np.float32)
    x.flat[3] = np.nan
    (nan,) = run_all(litert(data, {"int8_conv": "true"}), x)
    # A non-finite image makes every output of its convolution NaN (the
    # dilated case convolves 4 sub-images, one of them holds the NaN).
    assert np.isnan(nan).all() if _ops(data) == ["CONV_2D"] else np.isnan(nan).mean() >= 0.25


def _with_quantization(data, **change):
    m, _, _ = tflite_io.load_model(bytes(data))
    sg = m.subgraphs[0]
    (op,) = [op for op in sg.operators if tflite_io.op_name(m, op) == "CONV_2D"]
    qp = sg.tensors[int(op.inputs[1])].quantization
    for key, value in change.items():
        if key == "scale0":
            scale = np.array(qp.scale, np.float32)
            scale[0] = value
            qp.scale = scale
        elif key == "zero_point0":
            zp = np.array(qp.zeroPoint, np.int64)
            zp[0] = value
            qp.zeroPoint = zp
        elif key == "nscales":
            qp.scale = np.array(qp.scale, np.float32)[:value]
            qp.zeroPoint = np.array(qp.zeroPoint, np.int64)[:value]
        else:
            setattr(qp, key, value)
    return tflite_io.save_model(m)


@pytest.mark.parametrize("change, why", [
    (dict(scale0=np.nan), "is not finite and positive"),
    (dict(scale0=0.0), "is not finite and positive"),
    (dict(scale0=-1.0), "is not finite and positive"),
    (dict(zero_point0=3), "not symmetric"),
    (dict(quantizedDimension=3), "quantized along axis 3"),
    (dict(nscales=2), "2 scales"),
])
def test_untrusted_quantization_stays_with_litert(change, why, capfd):
    _, shape, kwargs = CASES[1]
    data = _with_quantization(convert(_model(shape, kwargs, 0), float_layers="int8"), **change)
    try:
        interp = litert(data, {"int8_conv": "true", "verbosity": "2"})
    except (RuntimeError, ValueError):
        # LiteRT checks a per-channel quantization's axis and length when it
        # loads the model: the delegate never sees those.
        assert "scales" in why or "axis" in why
        return
    try:
        run_all(interp, np.ones((1,) + shape, np.float32))
    except (RuntimeError, ValueError):
        pass  # LiteRT's own kernel may refuse the tensor; the delegate did not claim it
    err = capfd.readouterr().err
    assert "(CONV_2D, int8" not in err
    assert "not claiming CONV_2D" in err and why in err


def test_int8_conv_option(capfd):
    _, shape, kwargs = CASES[0]
    data = convert(_model(shape, kwargs, 0), float_layers="int8")
    x = np.ones((1,) + shape, np.float32)
    run_all(litert(data, {"int8_conv": "false", "verbosity": "1"}), x)
    assert "(CONV_2D, int8" not in capfd.readouterr().err
    run_all(litert(data, {"int8_conv": "auto", "force_reference": "true", "verbosity": "1"}), x)
    assert "(CONV_2D, int8" not in capfd.readouterr().err  # auto: only where a fast int8 path exists
    with pytest.raises((RuntimeError, ValueError)):
        litert(data, {"int8_conv": "sometimes"})


def test_float_conv_is_not_claimed(capfd):
    _, shape, kwargs = CASES[0]
    data = convert(_model(shape, kwargs, 0))  # float_layers="float": a float32 filter
    run_all(litert(data, {"int8_conv": "true", "verbosity": "2"}), np.ones((1,) + shape, np.float32))
    err = capfd.readouterr().err
    assert "(CONV_2D, int8" not in err and "not a constant int8 tensor" in err
