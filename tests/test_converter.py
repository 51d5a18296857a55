"""tfq.convert: packing format, set detection, flatbuffer rewriting (golden op lists)."""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest

from tfq.converter import convert, format as fmt, sets, tflite_io
from tfq.converter.reference import ReferenceInterpreter
from tfq import quantizers, record, schemes, testing

SCHEMES = schemes.NAMES


# ---------------------------------------------------------------- packing

@pytest.mark.parametrize("bits", [1, 2, 4])
def test_pack_roundtrip_random_shapes(bits):
    rng = np.random.default_rng(bits)
    for rows, k in [(1, 1), (3, 31), (2, 32), (5, 127), (7, 257), (2, 1031), (11, 64)]:
        codes = rng.integers(0, 1 << bits, size=(rows, k)).astype(np.uint8)
        packed = fmt.pack_codes(codes, bits)
        assert packed.size == fmt.packed_size(rows, k, bits)
        assert packed.size % 32 == 0 and packed.size == rows * fmt.row_bytes(k, bits)
        np.testing.assert_array_equal(fmt.unpack_codes(packed, rows, k, bits), codes)


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_pack_layout_matches_format_doc(bits):
    """Weight k of row r sits in block b=k//wpb, byte j=k%32, field t=(k%wpb)//32."""
    wpb = 256 // bits
    rows, k = 2, wpb + 37
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << bits, size=(rows, k)).astype(np.uint8)
    packed = fmt.pack_codes(codes, bits, zero_code=0)
    row_bytes = fmt.row_bytes(k, bits)
    for r in range(rows):
        for pos in range(k):
            b, t, j = pos // wpb, (pos % wpb) // 32, pos % 32
            byte = packed[r * row_bytes + b * 32 + j]
            assert (byte >> (t * bits)) & ((1 << bits) - 1) == codes[r, pos]
    # padding holds the zero code
    ternary = fmt.pack_codes(np.ones((1, 5), np.uint8), 2, zero_code=schemes.get("ternary").zero_code)
    np.testing.assert_array_equal(fmt.unpack_codes(ternary, 1, 128, 2), np.ones((1, 128)))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_code_tables(scheme):
    table = schemes.get(scheme).code_table()
    valid = np.flatnonzero(~np.isnan(table))
    levels = table[valid]
    np.testing.assert_array_equal(fmt.levels_to_codes(levels, scheme), valid)
    np.testing.assert_array_equal(fmt.codes_to_levels(valid, scheme), levels)
    invalid = np.flatnonzero(np.isnan(table))
    invalid = invalid[invalid < (1 << schemes.get(scheme).storage_bits)]
    if invalid.size:
        with pytest.raises(ValueError, match="invalid"):
            fmt.codes_to_levels(invalid[:1], scheme)
    assert fmt.codes_to_levels([schemes.get(scheme).zero_code], scheme)[0] == (-1 if scheme == "binary" else 0)


def test_options_roundtrip_and_validation():
    opts = {"version": 1, "scheme": "ternary", "bits": 2, "rows": 8, "k": 27,
            "weight_shape": [8, 3, 3, 3], "activation": "RELU", "stride_h": 1, "stride_w": 2,
            "dilation_h": 1, "dilation_w": 1, "padding": "SAME"}
    decoded = fmt.decode_options(fmt.encode_options(opts))
    assert decoded == opts
    assert fmt.validate_options(decoded, "TFQ_CONV_2D")["k"] == 27
    with pytest.raises(ValueError, match=r"version 7 is not supported \(supported: 1, 2\)"):
        fmt.validate_options({**opts, "version": 7}, "TFQ_CONV_2D")
    with pytest.raises(ValueError, match="bits=4 does not match"):
        fmt.validate_options({**opts, "bits": 4}, "TFQ_CONV_2D")
    with pytest.raises(ValueError, match="do not match weight_shape"):
        fmt.validate_options({**opts, "k": 26}, "TFQ_CONV_2D")
    with pytest.raises(ValueError, match="lack padding"):
        fmt.validate_options({k: v for k, v in opts.items() if k != "padding"}, "TFQ_CONV_2D")
    with pytest.raises(ValueError, match="not a valid FlexBuffer|not a FlexBuffer"):
        fmt.decode_options(b"\x01\x02\x03", "node 3")


# ---------------------------------------------------------------- set detection

@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("per_channel", [True, False])
def test_detect_each_scheme(scheme, per_channel):
    rng = np.random.default_rng(1)
    w = testing.in_set_kernel((40, 16), scheme, rng, per_channel=per_channel, channel_axes=(0,))
    det, why = sets.detect(w)
    assert why is None
    # narrowest exact: pow2_4bit random levels use 64, pow2_3bit 4
    assert det.scheme == scheme
    np.testing.assert_array_equal(sets.dequantize(det.levels, det.scales), w)
    assert det.scales.shape == ((40,) if per_channel else (1,))


def test_detect_absorbs_folded_channel_factors():
    """Batch-norm folding multiplies each channel by its own float32 factor."""
    rng = np.random.default_rng(2)
    w = testing.in_set_kernel((8, 50), "pow2_3bit", rng, channel_axes=(0,))
    folded = (w * rng.uniform(0.3, 3.0, size=(8, 1)).astype(np.float32)).astype(np.float32)
    det, _ = sets.detect(folded)
    assert det.scheme == "pow2_3bit"
    assert np.abs(sets.dequantize(det.levels, det.scales) - folded).max() <= 1e-6 * np.abs(folded).max()


def test_detect_refuses_near_misses_and_floats():
    rng = np.random.default_rng(3)
    w = testing.in_set_kernel((4, 30), "ternary", rng, channel_axes=(0,))
    bumped = w.copy()
    nz = np.flatnonzero(bumped)[0]
    bumped.flat[nz] *= 1.0 + 1e-4
    det, why = sets.detect(bumped)
    assert det is None and "not in any set" in why
    det, why = sets.detect(rng.normal(size=(4, 30)))
    assert det is None
    det, why = sets.detect(w * np.float32(128.0) ** (np.arange(4)[:, None] == 0))
    assert det is not None           # a per-channel factor is fine
    wide = w.copy()
    wide[0, :2] = [w[0][w[0] != 0][0], 128 * abs(w[0][w[0] != 0][0])]
    det, why = sets.detect(wide)
    assert det is None and ("exceed" in why or "not in any set" in why)
    det, _ = sets.detect(np.zeros((3, 5), np.float32))
    assert det.scheme == "ternary" and det.sparsity == 1.0


# ---------------------------------------------------------------- conversion

def _ops(data):
    fb, _, _ = tflite_io.load_model(data)
    return [tflite_io.op_name(fb, op) for sg in fb.subgraphs for op in sg.operators]


def _float_weight_elements(data):
    fb, raw, _ = tflite_io.load_model(data)
    total = 0
    for sg in fb.subgraphs:
        for t in sg.tensors:
            if t.type == tflite_io.schema.TensorType.FLOAT32:
                arr = tflite_io.constant_array(fb, raw, t)
                if arr is not None and arr.ndim >= 2:
                    total += arr.size
    return total


@pytest.mark.parametrize("scheme", SCHEMES)
def test_convert_each_layer_type_and_scheme(scheme):
    model = testing.random_compressed_model(scheme, "cnn", seed=4)
    data = convert(model)
    assert _ops(data) == ["TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D", "TFQ_CONV_2D", "SHAPE",
                          "STRIDED_SLICE", "PACK", "RESHAPE", "TFQ_FULLY_CONNECTED"]
    assert _float_weight_elements(data) == 0, "float kernels must be dropped"
    assert all(r.packed and r.scheme == scheme for r in data.report)
    fb, raw, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    for op in sg.operators:
        name = tflite_io.op_name(fb, op)
        if not name.startswith("TFQ_"):
            continue
        opts = fmt.validate_options(fmt.decode_options(bytes(op.customOptions)), name)
        assert opts["scheme"] == scheme and opts["bits"] == schemes.get(scheme).storage_bits
        packed = sg.tensors[op.inputs[1]]
        assert packed.type == tflite_io.schema.TensorType.UINT8
        assert list(packed.shape) == [fmt.weight_bytes_expected(opts)]
        if name == "TFQ_DEPTHWISE_CONV_2D":
            assert opts["depth_multiplier"] == 2 and opts["stride_h"] == 2
            assert opts["padding"] == "VALID" and opts["activation"] == "RELU"
    x = np.random.default_rng(5).normal(size=(4, 12, 12, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    got = ReferenceInterpreter(data, "float").predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("per_channel", [True, False])
def test_convert_mlp_scales(per_channel):
    model = testing.random_compressed_model("ternary", "mlp", seed=6, per_channel=per_channel)
    data = convert(model)
    assert _ops(data) == ["TFQ_FULLY_CONNECTED"] * 3
    fb, raw, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    for op in sg.operators:
        scales = tflite_io.constant_array(fb, raw, sg.tensors[op.inputs[2]])
        assert scales.size == (1 if not per_channel else sg.tensors[op.outputs[0]].shape[-1])
    x = np.random.default_rng(7).normal(size=(8, 784)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_convert_folds_batch_norm():
    model = testing.random_compressed_model("ternary", "cnn", seed=8, batch_norm=True)
    data = convert(model)
    assert _ops(data)[0] == "TFQ_CONV_2D" and "MUL" not in _ops(data)
    conv = data.report[0]
    assert conv.packed and conv.scheme == "ternary"
    x = np.random.default_rng(9).normal(size=(3, 12, 12, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())


def test_partial_model_reports_left_layers_and_cross_check():
    model = testing.random_compressed_model({"conv": "binary", "dwconv": "ternary",
                                            "pwconv": "pow2_3bit"}, "cnn", seed=10)
    record.mark(model.get_layer("fc"), "kernel", quantizers.Ternary(), -1)
    record.mark(model.get_layer("conv"), "kernel", quantizers.Ternary(), -1)
    with pytest.warns(UserWarning, match="trained for ternary but left builtin"):
        data = convert(model)
    assert _ops(data)[-1] == "FULLY_CONNECTED"
    by_layer = {r.layer: r for r in data.report}
    assert by_layer["fc"].trained == "ternary" and not by_layer["fc"].packed
    assert "not in any set" in by_layer["fc"].reason
    assert by_layer["conv"].scheme == "binary" and by_layer["conv"].trained == "ternary"
    assert by_layer["pwconv"].scheme == "pow2_3bit"


def test_float_model_converts_to_plain_float_with_warning():
    inputs = keras.Input((20,))
    model = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Dense(16)(inputs)))
    with pytest.warns(UserWarning, match="plain float model"):
        data = convert(model)
    assert _ops(data) == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    x = np.random.default_rng(0).normal(size=(2, 20)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-6)


def test_lstm_lowered_to_packed_fully_connected():
    rng = np.random.default_rng(11)
    inputs = keras.Input((6, 5))
    x = keras.layers.LSTM(8, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))
    for v in model.get_layer("lstm").weights:
        if "kernel" in v.path:
            v.assign(testing.in_set_kernel(tuple(v.shape), "ternary", rng))
    for name in ("kernel", "recurrent_kernel"):
        record.mark(model.get_layer("lstm"), name, quantizers.Ternary(), -1)
    data = convert(model)
    packed = [r for r in data.report if r.packed]
    assert len(packed) == 2 and all(r.layer == "lstm" for r in packed)
    assert "WHILE" in _ops(data) and _ops(data).count("TFQ_FULLY_CONNECTED") == 2
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_convert_float_tflite_bytes_and_refuses_bad_input():
    import tensorflow as tf
    model = testing.random_compressed_model("binary", "mlp", seed=12)
    float_bytes = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    data = convert(float_bytes)
    assert _ops(data) == ["TFQ_FULLY_CONNECTED"] * 3
    with pytest.raises(ValueError, match="already contains tfq custom ops"):
        convert(bytes(data))
    with pytest.raises(TypeError, match="keras.Model"):
        convert(42)


def test_size_ratio_ternary_and_binary_mlp():
    import tensorflow as tf
    for scheme, limit in (("ternary", 12), ("binary", 20)):
        model = testing.random_compressed_model(scheme, "mlp", seed=13)
        float_size = len(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        assert float_size / len(convert(model)) >= limit


def test_admm_trained_model_converts_with_cross_check():
    """A model trained with tfq.ADMMCallback: every compressed layer packs in its trained set."""
    import tfq
    from tfq import datasets, models
    (xtr, ytr), _ = datasets.mnist()
    keras.utils.set_random_seed(0)
    model = models.lenet300_100()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfq.ADMMCallback(layers={"fc1": "ternary", "fc2": "pow2_3bit", "fc3": "binary"},
                                finetune_epochs=1)
    model.fit(xtr[:4096], ytr[:4096], batch_size=256, epochs=2, verbose=0, callbacks=[callback])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = convert(model)
    by_layer = {r.layer: r for r in data.report}
    for layer, scheme in (("fc1", "ternary"), ("fc2", "pow2_3bit"), ("fc3", "binary")):
        assert by_layer[layer].trained == scheme and by_layer[layer].packed
        # detection may find a narrower set than trained (never a wider one)
        assert schemes.NAMES.index(by_layer[layer].scheme) <= schemes.NAMES.index(scheme)
    x = xtr[:64]
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("builder", ["small_bn_cnn"])
def test_quantize_model_layers_are_materialized(builder):
    from tfq import layers, models
    keras.utils.set_random_seed(1)
    qmodel = layers.quantize_model(getattr(models, builder)(), "ternary", skip_first_last=False)
    data = convert(qmodel)
    assert data.report and all(r.packed and r.trained == "ternary" and r.scheme in ("binary", "ternary")
                               for r in data.report)
    x = np.random.default_rng(2).random((4, 28, 28, 1)).astype(np.float32)
    want = qmodel.predict(x, verbose=0)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("adj_y", [False, True])
def test_batch_matmul_with_constant_right_side(adj_y):
    import tensorflow as tf
    rng = np.random.default_rng(14)
    w = testing.in_set_kernel((1, 5, 8) if adj_y else (1, 8, 5), "ternary", rng,
                              channel_axes=(-2,) if adj_y else (-1,))

    @tf.function(input_signature=[tf.TensorSpec([2, 6, 8], tf.float32)])
    def matmul(x):
        return tf.matmul(x, tf.constant(w), adjoint_b=adj_y)

    float_bytes = tf.lite.TFLiteConverter.from_concrete_functions(
        [matmul.get_concrete_function()]).convert()
    assert _ops(float_bytes) == ["BATCH_MATMUL"]
    data = convert(float_bytes)
    assert _ops(data) == ["TFQ_FULLY_CONNECTED"] and data.report[0].scheme == "ternary"
    x = rng.normal(size=(2, 6, 8)).astype(np.float32)
    got = ReferenceInterpreter(data).run(x)[0]
    assert got.shape == (2, 6, 5)
    np.testing.assert_allclose(got, matmul(x).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rnn", ["LSTM", "GRU"])
def test_quantize_model_recurrent_layers_are_materialized(rnn):
    from tfq import layers
    keras.utils.set_random_seed(3)
    inputs = keras.Input((6, 5))
    x = getattr(keras.layers, rnn)(8, name="rnn")(inputs)
    qmodel = layers.quantize_model(keras.Model(inputs, keras.layers.Dense(3, name="fc")(x)),
                                   "ternary", skip_first_last=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = convert(qmodel)
    assert sorted(r.layer for r in data.report if r.packed) == ["fc", "rnn", "rnn"]
    x = np.random.default_rng(4).normal(size=(2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data).predict(x), qmodel.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_corrupted_custom_options_give_value_errors():
    """Fuzzed option bytes fail with ValueError naming the node, never another exception."""
    good = fmt.encode_options({"version": 1, "scheme": "ternary", "bits": 2, "rows": 4, "k": 9,
                               "weight_shape": [4, 9], "activation": "RELU"})
    rng = np.random.default_rng(15)
    for trial in range(1500):
        data = bytearray(good)
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(0, len(data))] = rng.integers(0, 256)
        if trial % 3 == 0:
            data = data[:rng.integers(0, len(data))]
        try:
            fmt.validate_options(fmt.decode_options(bytes(data), "node 7"), "TFQ_FULLY_CONNECTED",
                                 "node 7")
        except ValueError as err:
            assert "node 7" in str(err)
