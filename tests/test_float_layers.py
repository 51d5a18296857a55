"""`tfq.convert(float_layers="int8")`: the layers in no tfq set get 8-bit weights.

The first and last layers of a compressed network usually stay float. With
float_layers="int8" the converter stores their weights as per-channel int8
(symmetric, max |w| / 127) for LiteRT's dynamic-range kernels: the file
shrinks, the tfq ops are untouched, and the outputs move by no more than the
int8 rounding of those layers. Bad values are refused with a clear error.
"""

import subprocess
import sys

import numpy as np
import pytest

import tfq
from tfq.converter import convert, tflite_io
from tfq.testing import set_in_set_weights


def _model(seed=0):
    """Float stem and head around ternary layers, with a float depthwise convolution too."""
    import keras

    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="stem")(inp)
    x = keras.layers.Conv2D(16, 3, activation="relu", name="mid")(x)
    x = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inp, x)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            w.assign(rng.normal(0, 0.3, w.shape).astype(np.float32))
    set_in_set_weights(model, {"mid": "ternary", "pw": "ternary"}, seed=seed)
    return model


@pytest.fixture(scope="module")
def converted():
    model = _model()
    return model, convert(model), convert(model, float_layers="int8")


def _weight_types(data):
    m, _, _ = tflite_io.load_model(bytes(data))
    sg = m.subgraphs[0]
    out = {}
    for op in sg.operators:
        name = tflite_io.op_name(m, op)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "DEQUANTIZE"):
            t = sg.tensors[int(op.inputs[1 if name != "DEQUANTIZE" else 0])]
            out.setdefault(name, []).append(int(t.type))
    return out


def _run(data, x, **kw):
    interp = tfq.Interpreter(model_content=bytes(data), **kw)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    out = []
    for row in x:
        interp.set_tensor(d["index"], row[None])
        interp.invoke()
        out.append(interp.get_tensor(interp.get_output_details()[0]["index"])[0].copy())
    return np.stack(out)


def test_float_layers_int8_report_types_and_size(converted):
    from ai_edge_litert import schema_py_generated as schema

    _, plain, small = converted
    by_layer = {r.layer: r for r in small.report}
    assert by_layer["stem"].scheme == by_layer["head"].scheme == by_layer["dw"].scheme == "int8"
    assert not by_layer["stem"].packed and by_layer["stem"].layout == "int8 (dynamic range)"
    assert "float_layers='int8'" in by_layer["head"].reason
    assert 0 < by_layer["stem"].max_rel_error <= 0.5 / 127 + 1e-6
    assert by_layer["mid"].packed and by_layer["mid"].scheme == "ternary"
    types = _weight_types(small)
    assert types["CONV_2D"].count(schema.TensorType.INT8) == 1      # the stem (mid, pw are tfq ops)
    assert types["FULLY_CONNECTED"] == [schema.TensorType.INT8]
    assert types["DEQUANTIZE"] == [schema.TensorType.INT8]          # depthwise: int8 + DEQUANTIZE
    assert len(small) < len(plain)
    # The tfq ops are the same bytes.
    plain_ops = [r.packed_bytes for r in plain.report if r.packed]
    assert plain_ops == [r.packed_bytes for r in small.report if r.packed]


def test_float_layers_int8_outputs_within_int8_rounding(converted):
    model, plain, small = converted
    x = np.random.default_rng(1).standard_normal((8, 12, 12, 3)).astype(np.float32)
    want = _run(plain, x)
    np.testing.assert_allclose(want, model.predict(x, verbose=0), rtol=0, atol=0.05 * np.abs(want).max())
    got = _run(small, x)
    err = np.abs(got - want).max() / np.abs(want).max()
    assert 0 < err < 0.05, err
    assert (got.argmax(1) == want.argmax(1)).mean() >= 0.75


def test_float_layers_int8_portable_runs_in_plain_litert(converted):
    from ai_edge_litert.interpreter import Interpreter

    model = converted[0]
    data = convert(model, portable=True, float_layers="int8")
    interp = Interpreter(model_content=bytes(data))
    interp.allocate_tensors()
    x = np.random.default_rng(2).standard_normal((1, 12, 12, 3)).astype(np.float32)
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = interp.get_tensor(interp.get_output_details()[0]["index"])
    want = _run(converted[1], x)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_float_layers_bad_input(converted):
    model = converted[0]
    with pytest.raises(ValueError, match="float_layers='int4' is not one of 'float', 'int8'"):
        convert(model, float_layers="int4")
    with pytest.raises(ValueError, match="float_layers"):
        convert(bytes(converted[1]), float_layers=None)
    bad = _model(seed=3)
    k = bad.get_layer("head").kernel
    w = k.numpy()
    w[2, 3] = np.nan
    k.assign(w)
    with pytest.raises(ValueError, match=r"FULLY_CONNECTED .*head.*non-finite"):
        convert(bad, float_layers="int8")


def test_cli_float_layers(converted, tmp_path):
    src = tmp_path / "m.tflite"
    # A float .tflite of the model (convert rewrites float files too).
    from tfq.converter.rewrite import _keras_to_tflite

    src.write_bytes(_keras_to_tflite(converted[0]))
    out = tmp_path / "m8.tflite"
    r = subprocess.run([sys.executable, "-m", "tfq", "convert", "--model", str(src), "--out", str(out),
                        "--float_layers", "int8"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "int8: " in r.stdout and out.stat().st_size < len(converted[1]) + 1
    r = subprocess.run([sys.executable, "-m", "tfq", "convert", "--model", str(src), "--out", str(out),
                        "--float_layers", "int2"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "float_layers" in r.stderr
