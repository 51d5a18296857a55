"""The NumPy reference executor: builtins vs LiteRT, tfq ops vs Keras, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfq.converter import convert, format as fmt, rewrite, tflite_io
from tfq.converter.reference import ReferenceExecutorError, ReferenceInterpreter
from tfq.converter.tflite_io import TFLiteFileError
from tfq import schemes, testing


def _litert(data, x):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_content=bytes(data))
    out = []
    for row in x:
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], row[None])
        it.invoke()
        out.append(it.get_tensor(it.get_output_details()[0]["index"])[0])
    return np.stack(out)


@pytest.mark.parametrize("builder", ["lenet5", "lenet300_100", "small_bn_cnn"])
def test_builtins_match_litert(builder):
    from tfq import models
    keras.utils.set_random_seed(0)
    model = getattr(models, builder)()
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    want = _litert(data, x)
    got = ReferenceInterpreter(data).predict(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def _delegate_bound(x2, levels, scales):
    """docs/format.md: |y - y_float| <= scale[o] * sum_k |level| * amax / 254 (per row)."""
    amax = np.abs(x2).max(axis=1, keepdims=True)
    return np.abs(levels).sum(axis=1)[None, :] * scales.reshape(1, -1) * amax / 254.0


@pytest.mark.parametrize("scheme", schemes.NAMES)
def test_delegate_mode_within_documented_bound(scheme):
    rng = np.random.default_rng(1)
    inputs = keras.Input((97,))
    model = keras.Model(inputs, keras.layers.Dense(13, name="fc")(inputs))
    testing.set_in_set_weights(model, scheme, seed=2)
    data = convert(model)
    x = rng.normal(size=(50, 97)).astype(np.float32) * rng.uniform(0.01, 10, size=(50, 1))
    exact = ReferenceInterpreter(data, "float").predict(x)
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    kernel = model.get_layer("fc").kernel.numpy().T
    from tfq.converter import sets
    det, _ = sets.detect(kernel)
    bound = _delegate_bound(x, det.levels, np.broadcast_to(det.scales, (13,)))
    assert np.all(np.abs(approx - exact) <= bound * (1 + 1e-5) + 1e-6)
    assert np.abs(approx - exact).max() > 0          # int8 rounding is visible
    # all-zero rows give the bias; a non-finite row gives non-finite outputs, others unaffected
    x[3] = 0.0
    x[5, 7] = np.nan
    # format.md: a denormal amax (127 / amax overflows float32) counts as an all-zero row
    x[4] = 0.0
    x[4, :3] = [1e-40, -2.5e-39, 3e-45]
    approx = ReferenceInterpreter(data, "delegate").predict(x)
    bias = model.get_layer("fc").bias.numpy()
    np.testing.assert_allclose(approx[3], bias, rtol=1e-6)
    np.testing.assert_allclose(approx[4], bias, rtol=1e-6)
    assert not np.isfinite(approx[5]).any() and np.isfinite(np.delete(approx, 5, axis=0)).all()


def test_quantize_activations_denormal_amax_is_zero():
    from tfq.converter.reference import quantize_activations
    x = np.array([[1e-40, -3e-39, 0.0], [0.0, 0.0, 0.0], [1.0, -0.5, 0.25],
                  [np.inf, 1.0, 0.0], [1e-36, -2.5e-37, 0.0], [2e-37, 0.0, 0.0]], np.float32)
    q, s = quantize_activations(x, axes=1)
    assert s[0, 0] == 0 and s[1, 0] == 0 and s[2, 0] == 127
    np.testing.assert_array_equal(q[:3], [[0, 0, 0], [0, 0, 0], [127, -64, 32]])
    # the threshold is where 127 / amax overflows (3.7e-37), not the denormal boundary
    assert np.isfinite(s[4, 0]) and s[4, 0] > 0
    np.testing.assert_array_equal(q[4], [127, -32, 0])
    assert s[5, 0] == 0 and not q[5].any()      # normal, but 127 / 2e-37 overflows
    assert np.isnan(q[3]).any()                # a NaN code makes every output of the group NaN


def test_delegate_mode_denormal_image_gives_bias():
    """Per-image quantization (conv): a denormal image gives the bias (then the activation)."""
    model = testing.random_compressed_model("ternary", "cnn", seed=3)
    data = convert(model)
    x = np.zeros((2, 12, 12, 3), np.float32)
    x[0, 3, 4, 1] = 2e-39
    x[1] = 0.5
    dl = ReferenceInterpreter(data, "delegate")
    node = dl._tfq[(0, 0)]
    y = dl._run_tfq("TFQ_CONV_2D", node, x, 4)
    bias = node["bias"] if node["bias"] is not None else 0.0
    from tfq.converter.reference import _act
    expected = _act(np.broadcast_to(np.asarray(bias, np.float64), y[0].shape),
                    node["opts"]["activation"])
    np.testing.assert_allclose(y[0], expected, rtol=1e-6, atol=0)
    assert np.abs(y[1] - expected).max() > 0


def test_delegate_mode_conv_zero_padding_exact():
    """A constant image quantizes exactly, so SAME-padded convolutions agree up to float rounding."""
    model = testing.random_compressed_model("ternary", "cnn", seed=3)
    data = convert(model)
    x = np.full((2, 12, 12, 3), 0.5, np.float32)
    ref = ReferenceInterpreter(data, "float")
    dl = ReferenceInterpreter(data, "delegate")
    first = lambda r: r._run_tfq("TFQ_CONV_2D", r._tfq[(0, 0)], x, 4)
    np.testing.assert_allclose(first(dl), first(ref), rtol=1e-6, atol=1e-7)


def _train_ternary(builder, x, y, epochs):
    """ADMM training of every layer to ternary (the converter's real input)."""
    import tfq
    from tfq import models
    keras.utils.set_random_seed(0)
    model = getattr(models, builder)()
    model.compile(keras.optimizers.Adam(1e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = tfq.ADMMCallback("ternary", skip_first_last=False, finetune_epochs=1)
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[callback])
    return model


@pytest.mark.parametrize("builder,train,epochs", [("lenet300_100", 60000, 3), ("lenet5", 20000, 2)])
def test_mnist_top1_agreement_with_keras(builder, train, epochs):
    from tfq import datasets
    (xtr, ytr), (xte, yte) = datasets.mnist()
    model = _train_ternary(builder, xtr[:train], ytr[:train], epochs)
    data = convert(model)
    assert all(r.packed and r.trained == "ternary" for r in data.report)
    want = model.predict(xte, batch_size=1000, verbose=0)
    # float mode on a subset (it is the slow float64 path); delegate mode on all 10000
    exact = ReferenceInterpreter(data, "float").predict(xte[:2000], batch_size=500)
    approx = ReferenceInterpreter(data, "delegate").predict(xte, batch_size=500)
    scale = np.abs(want).max()
    assert np.abs(exact - want[:2000]).max() <= 1e-5 * scale
    agree = np.mean(approx.argmax(1) == want.argmax(1))
    acc = np.mean(want.argmax(1) == yte)
    print(f"{builder}: keras acc {acc:.4f}, delegate-mode agreement {agree:.5f}, "
          f"max |err| {np.abs(approx - want).max():.4g} (logit scale {scale:.3g})")
    assert agree >= 0.999
    assert acc > 0.9
    # documented bound for the delegate arithmetic: 2% of the largest logit on MNIST
    assert np.abs(approx - want).max() <= 0.02 * scale


# ---------------------------------------------------------------- bad input

@pytest.fixture(scope="module")
def tfq_file(tmp_path_factory):
    data, _ = testing.random_compressed_tflite("ternary", "mlp", seed=4)
    path = tmp_path_factory.mktemp("ref") / "mlp_t.tflite"
    path.write_bytes(data)
    return path


def test_truncated_corrupted_and_foreign_files(tfq_file, tmp_path):
    data = tfq_file.read_bytes()
    for cut in (0, 3, 7, 100, len(data) // 2, len(data) - 9):
        bad = tmp_path / f"cut{cut}.tflite"
        bad.write_bytes(data[:cut])
        with pytest.raises(TFLiteFileError, match=f"cut{cut}.tflite: (not a TFLite|truncated)"):
            ReferenceInterpreter(bad)
    text = tmp_path / "notes.tflite"
    text.write_text("hello, this is not a model at all")
    with pytest.raises(TFLiteFileError, match="notes.tflite: not a TFLite model"):
        ReferenceInterpreter(text)
    rng = np.random.default_rng(5)
    for trial in range(20):
        garbage = bytearray(data)
        pos = rng.integers(8, len(data), size=16)
        for p in pos:
            garbage[p] = rng.integers(0, 256)
        try:
            ReferenceInterpreter(bytes(garbage), "delegate").predict(np.ones((1, 784), np.float32))
        except (TFLiteFileError, ReferenceExecutorError, NotImplementedError, ValueError) as err:
            assert "<bytes>" in str(err) or "node" in str(err) or "tensor" in str(err), err
    with pytest.raises(TFLiteFileError, match="missing.tflite: cannot read"):
        ReferenceInterpreter(tmp_path / "missing.tflite")


def _edit_first_tfq_op(data, edit):
    fb, raw, _ = tflite_io.load_model(data)
    sg = fb.subgraphs[0]
    op = next(o for o in sg.operators if tflite_io.op_name(fb, o).startswith("TFQ_"))
    edit(fb, sg, op)
    return tflite_io.save_model(fb)


def test_wrong_version_invalid_codes_and_sizes_refused(tfq_file):
    data = tfq_file.read_bytes()
    assert issubclass(ReferenceExecutorError, ValueError)  # `except ValueError` handlers keep working

    def set_version(fb, sg, op):
        opts = fmt.decode_options(bytes(op.customOptions))
        opts["version"] = 3
        op.customOptions = np.frombuffer(fmt.encode_options(opts), np.uint8)
    with pytest.raises(ReferenceExecutorError, match=r"format version 3 is not supported \(supported: 1, 2\)"):
        ReferenceInterpreter(_edit_first_tfq_op(data, set_version))

    def v2_without_layout(fb, sg, op):
        opts = fmt.decode_options(bytes(op.customOptions))
        opts["version"] = 2
        opts.pop("layout", None)
        op.customOptions = np.frombuffer(fmt.encode_options(opts), np.uint8)
    with pytest.raises(ReferenceExecutorError, match=r"version 2 needs layout 'block_sparse'"):
        ReferenceInterpreter(_edit_first_tfq_op(data, v2_without_layout))

    def bad_code(fb, sg, op):
        buf = fb.buffers[sg.tensors[op.inputs[1]].buffer]
        buf.data = buf.data.copy()
        buf.data[0] = 0xFF                 # ternary code 3 is invalid
    with pytest.raises(ReferenceExecutorError, match="invalid ternary codes"):
        ReferenceInterpreter(_edit_first_tfq_op(data, bad_code))

    def short(fb, sg, op):
        t = sg.tensors[op.inputs[1]]
        fb.buffers[t.buffer].data = fb.buffers[t.buffer].data[:-32]
        t.shape = np.array([t.shape[0] - 32], np.int32)
    with pytest.raises(ReferenceExecutorError, match="packed weights have .* bytes, format v[12].* needs"):
        ReferenceInterpreter(_edit_first_tfq_op(data, short))

    def bad_scales(fb, sg, op):
        t = sg.tensors[op.inputs[2]]
        fb.buffers[t.buffer].data = np.zeros(4 * 7, np.uint8)
        t.shape = np.array([7], np.int32)
    with pytest.raises(ReferenceExecutorError, match="scales of size 1 or 300"):
        ReferenceInterpreter(_edit_first_tfq_op(data, bad_scales))
