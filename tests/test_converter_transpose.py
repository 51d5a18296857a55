"""TRANSPOSE_CONV lowered to zero insertion + padding + TFQ_CONV_2D (docs/converter.md).

Keras is the reference for the float semantics (through the NumPy reference
executor), the reference executor's delegate mode for the delegate (through
LiteRT with the tfq delegate, `tfq.Interpreter`).
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tfq.converter import convert, format as fmt, sets, tflite_io
from tfq.converter.reference import ReferenceInterpreter
from tfq import schemes, testing

# (strides, padding, use_bias, kernel size)
CASES = [(1, "same", True, 3), (1, "valid", False, 3), (2, "same", False, 3), (2, "valid", True, 3),
         (2, "same", True, 4), (3, "valid", False, 2)]


def _model(strides, padding, use_bias, kernel, activation="relu", shape=(5, 6, 3)):
    inputs = keras.Input(shape)
    y = keras.layers.Conv2DTranspose(4, kernel, strides=strides, padding=padding, use_bias=use_bias,
                                     activation=activation, name="tconv")(inputs)
    return keras.Model(inputs, y)


def _ops(data):
    fb, _, _ = tflite_io.load_model(data)
    return [tflite_io.op_name(fb, op) for op in fb.subgraphs[0].operators]


def _golden(strides, padding, use_bias, kernel):
    """The op list: zero insertion only for stride > 1; a border PAD (kernel > 1) always."""
    ops = ["RESHAPE", "PAD", "RESHAPE"] if strides > 1 else []
    ops += ["PAD", "TFQ_CONV_2D"]
    # The TFLite converter fuses bias and ReLU into TRANSPOSE_CONV only when there is a bias.
    return ops if use_bias else ops + ["RELU"]


@pytest.mark.parametrize("scheme", schemes.NAMES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "s{}-{}-{}-k{}".format(
    c[0], c[1], "bias" if c[2] else "nobias", c[3]))
def test_transpose_conv_matches_keras_and_delegate(scheme, case):
    strides, padding, use_bias, kernel = case
    model = _model(*case)
    testing.set_in_set_weights(model, scheme, seed=strides * 7 + kernel)
    data = convert(model)
    assert _ops(data) == _golden(*case)
    (report,) = data.report
    assert report.op == "TRANSPOSE_CONV" and report.packed and report.scheme in schemes.NAMES
    assert schemes.NAMES.index(report.scheme) <= schemes.NAMES.index(scheme)
    assert "lowered to TFQ_CONV_2D" in report.reason

    rng = np.random.default_rng(11)
    x = rng.normal(size=(3, 5, 6, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    exact = ReferenceInterpreter(data, "float").predict(x)
    assert exact.shape == want.shape
    np.testing.assert_allclose(exact, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())

    # Delegate arithmetic: per-image int8 activations; inserted zeros keep amax, so the
    # documented bound of the stride-1 convolution holds against Keras.
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    kern = model.get_layer("tconv").kernel.numpy()                  # [KH, KW, O, I]
    det, _ = sets.detect(np.transpose(kern, (2, 0, 1, 3)).reshape(kern.shape[2], -1))
    scales = np.broadcast_to(det.scales, (kern.shape[2],))
    amax = np.abs(x).reshape(3, -1).max(axis=1)
    bound = (np.abs(det.levels).sum(axis=1) * scales)[None, :] * amax[:, None] / 254.0
    err = np.abs(approx - exact).reshape(3, -1, kern.shape[2]).max(axis=1)
    assert np.all(err <= bound * (1 + 1e-5) + 1e-6)

    got = testing.run_with_delegate(data, x)
    np.testing.assert_allclose(got, approx, rtol=1e-5, atol=1e-6 * np.abs(approx).max())


def test_transpose_conv_detection_on_flipped_kernel_and_report():
    """Per-channel detection sees the transformed kernel; a kernel off the set stays builtin."""
    model = _model(2, "same", True, 3)
    testing.set_in_set_weights(model, "ternary", seed=1)
    kernel = model.get_layer("tconv").kernel
    data = convert(model)
    fb, buf, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    (op,) = [o for o in sg.operators if tflite_io.op_name(fb, o) == "TFQ_CONV_2D"]
    opts = fmt.decode_options(bytes(op.customOptions))
    k = kernel.numpy()                                         # [KH, KW, O, I]
    assert opts["weight_shape"] == [4, 3, 3, 3] and opts["padding"] == "VALID"
    assert (opts["stride_h"], opts["stride_w"]) == (1, 1) and opts["activation"] == "RELU"
    packed = tflite_io.constant_array(fb, buf, sg.tensors[int(op.inputs[1])])
    codes = fmt.unpack_dense(packed, opts)
    levels = fmt.codes_to_levels(codes, opts["scheme"]).reshape(4, 3, 3, 3)
    scales = tflite_io.constant_array(fb, buf, sg.tensors[int(op.inputs[2])])
    flipped = np.transpose(k, (2, 0, 1, 3))[:, ::-1, ::-1, :]
    np.testing.assert_allclose(levels * np.broadcast_to(scales, (4,))[:, None, None, None], flipped,
                               rtol=1e-6)

    kernel.assign(kernel.numpy() * (1 + 0.01 * np.arange(kernel.numpy().size).reshape(kernel.shape)))
    with pytest.warns(UserWarning, match="plain float model"):
        data = convert(model)
    assert _ops(data)[-1] == "TRANSPOSE_CONV"
    (report,) = data.report
    assert not report.packed and report.reason.startswith("not in any set")


def test_transpose_conv_from_quant_layer_is_cross_checked():
    from tfq import layers
    keras.utils.set_random_seed(3)
    model = layers.quantize_model(_model(2, "same", True, 3), "ternary", skip_first_last=False)
    data = convert(model)
    (report,) = data.report
    assert report.packed and report.trained == "ternary" and report.layer == "tconv"
    x = np.random.default_rng(2).normal(size=(2, 5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)


def test_transpose_conv_output_shape_cropped_with_slice():
    """An output_shape smaller than the dilated input (tf.nn.conv2d_transpose) needs a SLICE."""
    import tensorflow as tf
    rng = np.random.default_rng(0)
    w = testing.in_set_kernel((1, 1, 4, 3), "ternary", rng, channel_axes=(-2,))

    @tf.function(input_signature=[tf.TensorSpec([1, 5, 6, 3], tf.float32)])
    def f(x):
        return tf.nn.conv2d_transpose(x, w, output_shape=[1, 9, 11, 4], strides=2, padding="SAME")

    float_bytes = tf.lite.TFLiteConverter.from_concrete_functions(
        [f.get_concrete_function()], f).convert()
    data = convert(float_bytes)
    assert _ops(data) == ["RESHAPE", "PAD", "RESHAPE", "SLICE", "TFQ_CONV_2D"]
    x = rng.normal(size=(1, 5, 6, 3)).astype(np.float32)
    want = f(x).numpy()
    np.testing.assert_allclose(ReferenceInterpreter(float_bytes).predict(x), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), want, rtol=1e-5, atol=1e-6)
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    np.testing.assert_allclose(testing.run_with_delegate(data, x), approx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scheme", ["ternary", "pow2_4bit"])
def test_transpose_conv_portable_lowered_to_int8_conv_in_litert(scheme):
    """Portable: the same lowering with an INT8 dynamic-range CONV_2D; exact weights, stock LiteRT
    agrees with Keras up to activation rounding (the documented int8 bound)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert import schema_py_generated as schema
    model = _model(2, "same", True, 3)
    testing.set_in_set_weights(model, scheme, seed=1)
    data = convert(model, portable=True)
    assert _ops(data) == ["RESHAPE", "PAD", "RESHAPE", "PAD", "CONV_2D"]
    (report,) = data.report
    assert report.packed and report.reason == "portable INT8 (lowered TRANSPOSE_CONV)"
    fb, buf, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    w = sg.tensors[int(sg.operators[-1].inputs[1])]
    assert w.type == schema.TensorType.INT8 and list(w.shape) == [4, 3, 3, 3]

    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 5, 6, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), want, rtol=1e-5,
                               atol=1e-5 * np.abs(want).max())       # weights exact
    it = Interpreter(model_content=bytes(data))
    it.allocate_tensors()
    got = []
    for row in x:
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        got.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    kern = model.get_layer("tconv").kernel.numpy()
    det, _ = sets.detect(np.transpose(kern, (2, 0, 1, 3)).reshape(4, -1))
    amax = np.abs(x).reshape(2, -1).max(axis=1)
    bound = (np.abs(det.levels).sum(axis=1) * np.broadcast_to(det.scales, (4,)))[None] * amax[:, None] / 254
    err = np.abs(np.stack(got) - want).reshape(2, -1, 4).max(axis=1)
    assert np.all(err <= bound * (1 + 1e-4) + 1e-5)


def test_reference_runs_float_transpose_conv():
    """A TRANSPOSE_CONV left float (kernel off the sets) runs in the reference executor."""
    for strides, padding in ((2, "same"), (3, "valid"), (1, "same")):
        model = _model(strides, padding, True, 3)
        model.get_layer("tconv").bias.assign(np.linspace(-0.3, 0.3, 4))
        with pytest.warns(UserWarning, match="plain float model"):
            data = convert(model)
        assert _ops(data)[-1] == "TRANSPOSE_CONV"
        x = np.random.default_rng(1).normal(size=(2, 5, 6, 3)).astype(np.float32)
        np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-5)


def test_decoder_with_folded_batch_norm_runs_in_delegate():
    """Two stacked Conv2DTranspose (batch norm folded into the first, ReLU fused): both packed."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((7, 7, 8))
    y = keras.layers.Conv2DTranspose(6, 3, strides=2, padding="same", use_bias=False, name="up1")(inputs)
    y = keras.layers.BatchNormalization(name="bn")(y)
    y = keras.layers.ReLU()(y)
    y = keras.layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid",
                                     name="up2")(y)
    model = keras.Model(inputs, y)
    testing.set_in_set_weights(model, "ternary", seed=1)
    rng = np.random.default_rng(0)
    model.get_layer("bn").set_weights([rng.uniform(0.5, 2, 6), rng.normal(0, 0.1, 6),
                                       rng.normal(0, 0.1, 6), rng.uniform(0.5, 2, 6)])
    data = convert(model)
    assert _ops(data) == ["RESHAPE", "PAD", "RESHAPE", "PAD", "TFQ_CONV_2D"] * 2 + ["LOGISTIC"]
    assert [r.scheme for r in data.report if r.packed] == ["ternary", "ternary"]
    x = rng.normal(size=(2, 7, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    np.testing.assert_allclose(testing.run_with_delegate(data, x), approx, rtol=1e-5, atol=1e-6)


def test_transpose_conv_portable_static_batch_keeps_int8_transpose_conv():
    """A constant output_shape (static batch): INT8 per-channel TRANSPOSE_CONV, run by stock LiteRT."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert import schema_py_generated as schema
    inputs = keras.Input((5, 6, 3), batch_size=1)
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(4, 3, strides=2, padding="same",
                                                             name="tconv")(inputs))
    testing.set_in_set_weights(model, "pow2_3bit", seed=4)
    data = convert(model, portable=True)
    assert _ops(data) == ["TRANSPOSE_CONV"]
    (report,) = data.report
    assert report.packed and report.reason == "portable INT8"
    fb, _, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    w = sg.tensors[int(sg.operators[0].inputs[1])]
    assert w.type == schema.TensorType.INT8 and len(w.quantization.scale) == 4
    x = np.random.default_rng(6).normal(size=(1, 5, 6, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), want, rtol=1e-5, atol=1e-5)
    it = Interpreter(model_content=bytes(data))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    got = it.get_tensor(it.get_output_details()[0]["index"])
    kern = model.get_layer("tconv").kernel.numpy()
    det, _ = sets.detect(np.transpose(kern, (2, 0, 1, 3)).reshape(4, -1))
    bound = np.abs(det.levels).sum(axis=1) * np.broadcast_to(det.scales, (4,)) * np.abs(x).max() / 254
    assert np.all(np.abs(got - want).reshape(-1, 4).max(axis=0) <= bound * (1 + 1e-4) + 1e-5)


def test_conv1d_transpose_is_lowered_too():
    """Conv1DTranspose converts to EXPAND_DIMS + TRANSPOSE_CONV (height 1): stride 1x2."""
    inputs = keras.Input((9, 3))
    model = keras.Model(inputs, keras.layers.Conv1DTranspose(4, 3, strides=2, padding="same",
                                                             name="tconv")(inputs))
    kernel = model.get_layer("tconv").kernel
    kernel.assign(testing.in_set_kernel(tuple(kernel.shape), "ternary", np.random.default_rng(0),
                                        channel_axes=(-2,)))
    data = convert(model)
    (report,) = data.report
    assert report.packed and "stride 1x2" in report.reason
    assert "TFQ_CONV_2D" in _ops(data) and "TRANSPOSE_CONV" not in _ops(data)
    x = np.random.default_rng(1).normal(size=(2, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    np.testing.assert_allclose(testing.run_with_delegate(data, x), approx, rtol=1e-5, atol=1e-6)
