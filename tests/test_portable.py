"""Portable path: exact INT2/INT4/INT8 builtin weights, run in the stock LiteRT interpreter."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tfq.converter import convert, format as fmt, portable, sets, tflite_io
from tfq.converter.reference import ReferenceInterpreter
from tfq import schemes, testing

TT = tflite_io.schema.TensorType


def _run_litert(data, x):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=bytes(data))
    it.allocate_tensors()
    outs = []
    for row in x:
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        outs.append(it.get_tensor(it.get_output_details()[0]["index"])[0].copy())
    return np.stack(outs)


def _weighted_ops(data):
    """[(op name, weight type name, dequantized weights)] in graph order."""
    fb, raw, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    producers = {int(o): op for op in sg.operators for o in op.outputs}
    out = []
    for op in sg.operators:
        name = tflite_io.op_name(fb, op)
        if name not in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D"):
            continue
        w_idx = int(op.inputs[1])
        via = ""
        if w_idx in producers:                         # DEQUANTIZE feeding the op
            assert tflite_io.op_name(fb, producers[w_idx]) == "DEQUANTIZE"
            w_idx = int(producers[w_idx].inputs[0])
            via = "+DEQUANTIZE"
        t = sg.tensors[w_idx]
        ints = tflite_io.constant_array(fb, raw, t).astype(np.float64)
        q = t.quantization
        shape = [1] * ints.ndim
        shape[q.quantizedDimension] = -1
        deq = ints * np.asarray(q.scale, np.float64).reshape(shape)
        assert not np.any(q.zeroPoint)
        out.append((name + via, tflite_io.TENSOR_TYPE_NAMES[t.type], deq))
    return out


@pytest.mark.parametrize("scheme", schemes.NAMES)
def test_portable_cnn_types_exact_weights_and_litert(scheme):
    model = testing.random_compressed_model(scheme, "cnn", seed=1, batch_norm=True)
    data = convert(model, portable=True)
    fc_type = {"binary": "INT2", "ternary": "INT2", "pow2_3bit": "INT4", "pow2_4bit": "INT8"}[scheme]
    ops = _weighted_ops(data)
    assert [(n, t) for n, t, _ in ops] == [
        ("CONV_2D", "INT8"), ("DEPTHWISE_CONV_2D+DEQUANTIZE", "INT8"), ("CONV_2D", "INT8"),
        ("FULLY_CONNECTED", fc_type)]
    fb, _, _ = tflite_io.load_model(data)
    assert not any(tflite_io.is_custom(fb, op) for op in fb.subgraphs[0].operators)
    # weights are exactly the (batch-norm folded) float weights of the float conversion
    import tensorflow as tf
    float_data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    ffb, fraw, _ = tflite_io.load_model(float_data)
    fsg = ffb.subgraphs[0]
    float_ws = [tflite_io.constant_array(ffb, fraw, fsg.tensors[op.inputs[1]]) for op in fsg.operators
                if tflite_io.op_name(ffb, op) in ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")]
    for (_, _, deq), fw in zip(ops, float_ws):
        np.testing.assert_allclose(deq, fw, rtol=2e-6, atol=0)
    # runs in the stock interpreter; outputs equal the exact model up to activation rounding
    x = np.random.default_rng(2).normal(size=(4, 12, 12, 3)).astype(np.float32)
    got = _run_litert(data, x)
    exact = ReferenceInterpreter(data).predict(x)
    np.testing.assert_allclose(exact, model.predict(x, verbose=0), rtol=1e-4,
                               atol=1e-5 * np.abs(exact).max())
    # int8 activation rounding compounds over 4 layers; random pow2_4bit weights (levels up
    # to 64 with random signs) make sum|level*x| >> |sum level*x|, hence the wider tolerance
    tol = {"binary": 0.03, "ternary": 0.03, "pow2_3bit": 0.05, "pow2_4bit": 0.2}[scheme]
    assert np.abs(got - exact).max() <= tol * np.abs(exact).max()


@pytest.mark.parametrize("scheme", ["binary", "ternary", "pow2_3bit"])
def test_portable_fully_connected_within_activation_rounding(scheme):
    inputs = keras.Input((131,))
    model = keras.Model(inputs, keras.layers.Dense(17, name="fc")(inputs))
    testing.set_in_set_weights(model, scheme, seed=3)
    data = convert(model, portable=True)
    x = np.random.default_rng(4).normal(size=(20, 131)).astype(np.float32)
    got = _run_litert(data, x)
    exact = model.predict(x, verbose=0)
    det, _ = sets.detect(model.get_layer("fc").kernel.numpy().T)
    amax = np.abs(x).max(axis=1, keepdims=True)
    bound = np.abs(det.levels).sum(axis=1)[None] * np.broadcast_to(det.scales, (17,)) * amax / 254
    assert np.all(np.abs(got - exact) <= bound * 1.01 + 1e-5)


def test_pack_subbyte_matches_litert_layout():
    values = np.array([-2, -1, 0, 1, 1, 0, -1, -2, 0, 1], np.int8)
    packed = portable.pack_subbyte(values, 2)
    assert packed.tolist() == [0b01001110, 0b10110001, 0b00000100]
    t = tflite_io.schema.TensorT()
    t.type, t.shape, t.buffer, t.name = TT.INT2, np.array([10], np.int32), 1, b"w"
    fb = tflite_io.schema.ModelT()
    buf = tflite_io.schema.BufferT()
    buf.data = packed
    fb.buffers = [tflite_io.schema.BufferT(), buf]
    np.testing.assert_array_equal(tflite_io.constant_array(fb, b"", t), values)


@pytest.mark.parametrize("scheme,bits", [("pow2_3bit", 4), ("pow2_4bit", 4), ("ternary", 2)])
def test_exact_where_ai_edge_quantizer_rounds(scheme, bits):
    """ai-edge-quantizer's min-max INT4/INT2 weights vs ours, from the same float model."""
    import tensorflow as tf
    from ai_edge_quantizer import qtyping, quantizer
    inputs = keras.Input((64,))
    model = keras.Model(inputs, keras.layers.Dense(32, name="fc")(inputs))
    testing.set_in_set_weights(model, scheme, seed=5)
    float_data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    q = quantizer.Quantizer(float_data)
    q.add_dynamic_config(".*", qtyping.TFLOperationName.FULLY_CONNECTED, bits)
    theirs = bytes(q.quantize(enable_progress_report=False).quantized_model)
    ours = convert(model, portable=True)
    want = model.get_layer("fc").kernel.numpy().T.astype(np.float64)
    err_ours = np.abs(_weighted_ops(ours)[0][2] - want).max() / np.abs(want).max()
    err_theirs = np.abs(_weighted_ops(theirs)[0][2] - want).max() / np.abs(want).max()
    print(f"{scheme} at {bits} bits: max relative weight error ours {err_ours:.2e}, "
          f"ai-edge-quantizer {err_theirs:.2e}")
    assert err_ours < 1e-6
    if scheme.startswith("pow2"):
        assert err_theirs > 1e-2
