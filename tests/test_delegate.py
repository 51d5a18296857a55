"""The tfq delegate inside the stock LiteRT interpreters.

Converted models (tfq.convert) run with the delegate in ai_edge_litert's
Interpreter (and once in TensorFlow's deprecated tf.lite.Interpreter) and are compared with the converter's NumPy reference
executor (delegate arithmetic), with Keras, and across thread counts, forced
reference kernels and batch sizes. Also: refusal of invalid nodes, options,
and the explanation when the delegate is not loaded.
"""

import pathlib

import numpy as np
import pytest

import tfq
from tfq.converter import format as fmt
from tfq.converter import tflite_io
from tfq.converter.reference import ReferenceInterpreter
from tfq.testing import random_compressed_tflite
from helpers.delegated import litert as _litert

SCHEMES = ("binary", "ternary", "pow2_3bit", "pow2_4bit")


@pytest.fixture(scope="module")
def cnn_models():
    """{scheme: (tflite bytes, keras model)} of the small CNN with every tfq op."""
    return {s: random_compressed_tflite(s, "cnn", seed=i) for i, s in enumerate(SCHEMES)}


def _run(interp, x):
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    if list(d["shape"]) != list(x.shape):
        interp.resize_tensor_input(d["index"], list(x.shape))
        interp.allocate_tensors()
    interp.set_tensor(d["index"], x)
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"]).copy()


def _tf_lite(data, options=None):
    import tensorflow as tf

    delegate = tf.lite.experimental.load_delegate(tfq.delegate_path(), options or {})
    return tf.lite.Interpreter(model_content=bytes(data), experimental_delegates=[delegate])


def _op_names(data):
    fb, _, _ = tflite_io.load_model(bytes(data))
    return [tflite_io.op_name(fb, op) for op in fb.subgraphs[0].operators]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_matches_reference_executor_and_keras(cnn_models, scheme):
    data, model = cnn_models[scheme]
    assert {"TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D", "TFQ_FULLY_CONNECTED"} <= set(_op_names(data))
    x = np.random.default_rng(0).standard_normal((1, 12, 12, 3)).astype(np.float32)
    ref = ReferenceInterpreter(bytes(data), mode="delegate").run(x)[0]
    y_litert = _run(_litert(data), x)
    y_tfq = _run(tfq.Interpreter(model_content=bytes(data)), x)
    scale = np.max(np.abs(ref))
    # The reference computes the epilogue in float64: tiny rounding differences.
    np.testing.assert_allclose(y_litert, ref, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_array_equal(y_tfq, y_litert)
    y_keras = model(x).numpy()
    # int8 activations: error bounded by half a quantization step per input.
    assert np.max(np.abs(y_litert - y_keras)) <= 0.05 * np.max(np.abs(y_keras)) + 1e-3


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_tf_lite_interpreter_compatibility(cnn_models):
    """The one check of TensorFlow's deprecated tf.lite.Interpreter (users of older code):
    the same library loads there and gives LiteRT's outputs."""
    data, _ = cnn_models["ternary"]
    x = np.random.default_rng(0).standard_normal((1, 12, 12, 3)).astype(np.float32)
    np.testing.assert_array_equal(_run(_tf_lite(data), x), _run(_litert(data), x))


def test_options_threads_reference_and_batch(cnn_models):
    data, _ = cnn_models["ternary"]
    x = np.random.default_rng(1).standard_normal((1, 12, 12, 3)).astype(np.float32)
    base = _run(_litert(data), x)
    for opts in ({"num_threads": "2"}, {"num_threads": "3"}, {"force_reference": "1"},
                 {"force_reference": "true", "num_threads": "4"}):
        np.testing.assert_array_equal(_run(_litert(data, opts), x), base, err_msg=str(opts))
    np.testing.assert_array_equal(_run(_litert(data, threads=2), x), base)
    # Batched input (resized): the batched GEMM path must agree row by row.
    xb = np.random.default_rng(2).standard_normal((5, 12, 12, 3)).astype(np.float32)
    yb = _run(_litert(data), xb)
    for i in range(5):
        np.testing.assert_array_equal(yb[i:i + 1], _run(_litert(data), xb[i:i + 1]))


def test_statistics_handed_between_nodes_are_never_stale(cnn_models):
    """Convolutions pass the absmax of their outputs to the next convolution
    (batch 1 only): repeated invokes of one interpreter with inputs of very
    different ranges, zeros and a NaN must give what the batched path (which
    measures every image itself) gives."""
    data, _ = cnn_models["pow2_4bit"]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 12, 12, 3)).astype(np.float32)
    xs = [x, 1000.0 * x, np.zeros_like(x), x.copy(), 1e-3 * x, x]
    xs[3][0, 5, 5, 1] = np.nan
    batched = _run(_litert(data), np.concatenate(xs))
    interp = _litert(data, {"num_threads": "2"})
    for i, xi in enumerate(xs):
        np.testing.assert_array_equal(_run(interp, xi), batched[i:i + 1], err_msg=f"input {i}")


def test_without_delegate_explains(cnn_models):
    data, _ = cnn_models["ternary"]
    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises((RuntimeError, ValueError), match="(?i)unresolved custom op"):
        Interpreter(model_content=bytes(data)).allocate_tensors()
    with pytest.raises(RuntimeError, match="tfq.delegate_path"):
        tfq.Interpreter(model_content=bytes(data), use_delegate=False).allocate_tensors()


def test_unknown_or_bad_option_is_refused():
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"bogus": "1"})
    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"num_threads": "many"})


@pytest.mark.parametrize("scheme", SCHEMES)
def test_two_activation_passes_match_reference_and_float(cnn_models, chain_model, scheme):
    """activation_passes=2 (docs/delegate.md, "Activation precision"): every
    tfq op runs once more on its input's int8 rounding residual. The delegate
    must match the reference executor's two-pass rule (batches: per-row and
    per-image residuals; every ISA table bit for bit), and come far closer to
    the float weights' outputs than one pass; zeros give the bias path, NaN
    stays NaN."""
    from helpers import native

    models = [cnn_models[scheme]] + ([chain_model] if scheme == "ternary" else [])
    for data, _ in models:
        shape = tuple(int(d) for d in ReferenceInterpreter(bytes(data)).input_details[0]["shape"][1:])
        x = np.random.default_rng(4).standard_normal((3,) + shape).astype(np.float32)
        x[1] *= 30.0
        exact = ReferenceInterpreter(bytes(data), mode="float").run(x)[0]
        ref1 = ReferenceInterpreter(bytes(data), mode="delegate").run(x)[0]
        ref2 = ReferenceInterpreter(bytes(data), mode="delegate", activation_passes=2).run(x)[0]
        big = float(np.max(np.abs(exact)))
        y2 = _run(_litert(data, {"activation_passes": "2"}), x)
        np.testing.assert_allclose(y2, ref2, rtol=1e-4, atol=1e-5 * big)
        for i in range(3):  # row by row (batch 1: no statistics or codes handed between nodes)
            np.testing.assert_array_equal(_run(_litert(data, {"activation_passes": "2"}), x[i:i + 1]),
                                          y2[i:i + 1])
        err1 = np.max(np.abs(ref1 - exact))
        err2 = np.max(np.abs(y2 - exact))
        assert err1 > 1e-4 * big, (err1, big)
        assert err2 <= 0.05 * err1, (err1, err2)
        want = _run(_litert(data, {"activation_passes": "2", "force_reference": "1"}), x)
        for isa in native.available_isas(native.library()):
            if isa in ("avx2", "avx512vnni", "neon", "neon_dotprod"):
                got = _run(_litert(data, {"activation_passes": "2", "isa": isa, "num_threads": "2"}), x)
                np.testing.assert_array_equal(got, want, err_msg=isa)
        special = np.stack([np.zeros(shape, np.float32), x[0]])
        special[1, 2, 2, 1] = np.nan
        y = _run(_litert(data, {"activation_passes": "2"}), special)
        ref_zero = ReferenceInterpreter(bytes(data), mode="delegate", activation_passes=2).run(special[:1])[0]
        np.testing.assert_allclose(y[:1], ref_zero, rtol=1e-4, atol=1e-5 * max(np.max(np.abs(ref_zero)), 1e-3))
        assert np.all(np.isnan(y[1]))


def test_activation_passes_option_is_validated():
    from ai_edge_litert.interpreter import load_delegate

    for bad in ("0", "3", "two"):
        with pytest.raises(ValueError):
            load_delegate(tfq.delegate_path(), {"activation_passes": bad})


def test_verbosity_logs_claimed_nodes(cnn_models, capfd):
    data, _ = cnn_models["ternary"]
    _run(_litert(data, {"verbosity": "1"}), np.ones((1, 12, 12, 3), np.float32))
    err = capfd.readouterr().err
    assert "claimed node" in err and "TFQ_CONV_2D" in err and "3 node(s) claimed" in err or \
        "node(s) claimed" in err, err


def _with_options(data, mutate):
    """Returns model bytes with every tfq node's custom options rewritten by mutate(dict)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(bytes(data), 0))
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        name = code.customCode.decode() if isinstance(code.customCode, bytes) else code.customCode
        if name in fmt.CUSTOM_CODES:
            opts = fmt.decode_options(bytes(op.customOptions))
            mutate(opts)
            op.customOptions = list(fmt.encode_options(opts))
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


@pytest.mark.parametrize("mutation,message", [
    (lambda o: o.update(version=3), "unsupported format version 3 (supported: 1, 2)"),
    (lambda o: o.update(scheme="quaternary"), "unknown scheme"),
    (lambda o: o.update(bits=3), "does not match scheme"),
    (lambda o: o.update(k=o["k"] + 1000), "disagrees"),
    (lambda o: o.update(activation="GELU"), "unknown activation"),
])
def test_invalid_node_is_refused_with_message(cnn_models, mutation, message):
    data, _ = cnn_models["ternary"]
    bad = _with_options(data, mutation)
    with pytest.raises((RuntimeError, ValueError), match="(?i)unresolved custom op") as info:
        _run(_litert(bad), np.ones((1, 12, 12, 3), np.float32))
    assert "tfq delegate: refusing node" in str(info.value) and message in str(info.value)
    with pytest.raises(RuntimeError, match="^The tfq delegate refused node"):
        tfq.Interpreter(model_content=bad).allocate_tensors()


def test_mnist_top1_agreement():
    """Trained MLP and CNN, ternary: delegate vs Keras and vs the reference, 10k test images."""
    import keras

    from tfq import datasets

    (x, y), (xt, yt) = datasets.mnist()
    keras.utils.set_random_seed(0)
    inp = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(inp)
    h = keras.layers.DepthwiseConv2D(3, activation="relu", name="dw")(h)
    h = keras.layers.Conv2D(16, 1, activation="relu6", name="pw")(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(64, activation="relu", name="fc1")(h)
    out = keras.layers.Dense(10, name="fc2")(h)
    model = keras.Model(inp, out)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:20000], y[:20000], batch_size=128, epochs=1, verbose=0)
    # Quantization-aware fine-tuning of every layer (straight-through estimator).
    model = tfq.quantize_model(model, "ternary", skip_first_last=False)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[20000:40000], y[20000:40000], batch_size=128, epochs=1, verbose=0)
    data = tfq.convert(model)
    names = _op_names(data)
    assert names.count("TFQ_FULLY_CONNECTED") == 2 and "TFQ_CONV_2D" in names, names

    n = len(xt)
    interp = tfq.Interpreter(model_content=bytes(data), num_threads=2)
    d = interp.get_input_details()[0]
    interp.resize_tensor_input(d["index"], [500, 28, 28, 1])
    interp.allocate_tensors()
    logits = []
    for i in range(0, n, 500):
        interp.set_tensor(d["index"], xt[i:i + 500])
        interp.invoke()
        logits.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    y_del = np.concatenate(logits)
    y_keras = model.predict(xt, batch_size=1000, verbose=0)
    ref = ReferenceInterpreter(bytes(data), mode="delegate")
    y_ref = ref.predict(xt[:2000], batch_size=500)
    agree_keras = np.mean(np.argmax(y_del, 1) == np.argmax(y_keras, 1))
    agree_ref = np.mean(np.argmax(y_del[:2000], 1) == np.argmax(y_ref, 1))
    acc = np.mean(np.argmax(y_del, 1) == yt)
    rel = np.max(np.abs(y_del - y_keras)) / np.max(np.abs(y_keras))
    print(f"MNIST: delegate accuracy {acc:.4f}, top-1 agreement with Keras {agree_keras:.4f}, "
          f"with the reference {agree_ref:.4f}, max relative error vs Keras {rel:.4f}")
    assert acc > 0.85
    assert agree_keras >= 0.995
    assert agree_ref >= 0.999
    # The reference's epilogue runs in float64, the delegate's in float32 (the
    # format's arithmetic): a 1-ulp difference can flip one int8 rounding in
    # the next layer. Nearly all logits agree to 1e-4 (99.85% in a
    # single-core run, where training takes another path); none by more than 5%.
    big = np.max(np.abs(y_ref))
    close = np.isclose(y_del[:2000], y_ref, rtol=1e-4, atol=1e-4 * big)
    assert close.mean() >= 0.995, close.mean()
    assert np.max(np.abs(y_del[:2000] - y_ref)) <= 0.05 * big


@pytest.fixture(scope="module")
def chain_model():
    """The ReLU6 chain (conv -> dw -> 1x1 -> dw/2 -> 1x1) with every conv ternary."""
    return random_compressed_tflite("ternary", "chain", seed=11)


def _chain_input(seed, batch=1, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((batch, 10, 10, 4))).astype(np.float32)


def test_int8_handover_chain_matches_reference(chain_model, capfd):
    """ReLU6 convolutions that feed one convolution hand it int8 codes with the
    fixed scale 127/6 (docs/delegate.md): the delegate must match the
    reference executor's hand-over rule, and without hand-over the per-image
    rule, at 1 and 2 threads and with the scalar kernels."""
    data, model = chain_model
    for i, scale in enumerate((1.0, 0.05, 20.0)):
        x = _chain_input(i, scale=scale)
        ref = ReferenceInterpreter(bytes(data), mode="delegate").run(x)[0]
        ref_off = ReferenceInterpreter(bytes(data), mode="delegate", int8_handover=False).run(x)[0]
        big = max(np.max(np.abs(ref)), 1e-3)
        for opts in ({"verbosity": "1"}, {"num_threads": "2"}, {"force_reference": "1"}):
            y = _run(_litert(data, opts), x)
            np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5 * big, err_msg=str(opts))
        y_off = _run(_litert(data, {"int8_handover": "0"}), x)
        np.testing.assert_allclose(y_off, ref_off, rtol=1e-4, atol=1e-5 * big)
        if scale == 0.05:
            # Small activations: the fixed [0, 6] scale is coarser than absmax, so
            # the rule is visibly exercised (and the error stays that of int8).
            assert not np.allclose(ref, ref_off, rtol=1e-4, atol=1e-5 * big)
        y_keras = model(x).numpy()
        assert np.max(np.abs(y_off - y_keras)) <= 0.05 * np.max(np.abs(y_keras)) + 1e-3
    err = capfd.readouterr().err
    assert "chained 5 nodes" in err, err


def test_int8_handover_edge_cases(chain_model):
    """Batches (the chain then stays float), NaN (every output NaN, as the float
    path gives), repeated invokes of one interpreter, and a chain tensor that is
    also a model output (it must be written, as float)."""
    data, _ = chain_model
    xb = _chain_input(5, batch=3)
    ref_b = ReferenceInterpreter(bytes(data), mode="delegate").run(xb)[0]
    yb = _run(_litert(data), xb)
    np.testing.assert_allclose(yb, ref_b, rtol=1e-4, atol=1e-5 * np.max(np.abs(ref_b)))
    interp = _litert(data, {"num_threads": "2"})
    xs = [_chain_input(6), np.zeros((1, 10, 10, 4), np.float32), _chain_input(7), _chain_input(6)]
    xs[2][0, 3, 3, 2] = np.nan
    outs = [_run(interp, x) for x in xs]
    assert np.all(np.isnan(outs[2]))
    np.testing.assert_array_equal(outs[3], outs[0])
    np.testing.assert_array_equal(outs[1], _run(_litert(data), xs[1]))

    data2, _ = random_compressed_tflite("ternary", "chain_extra_output", seed=12)
    x = _chain_input(8)
    ref = ReferenceInterpreter(bytes(data2), mode="delegate").run(x)
    interp = _litert(data2, {"verbosity": "1"})
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    got = {tuple(d["shape"]): interp.get_tensor(d["index"]) for d in interp.get_output_details()}
    for r in ref:
        y = got[tuple(r.shape)]
        np.testing.assert_allclose(y, r, rtol=1e-4, atol=1e-5 * max(np.max(np.abs(r)), 1e-3))


def test_shipped_library_has_no_test_entry_points():
    """The test entry points (testing_api.cc) live in libtfq_testing.so only:
    the delegate users load exports the external-delegate interface and
    tfq_delegate_isa, and the test library is a separate file."""
    import ctypes

    from helpers import native

    delegate = ctypes.CDLL(tfq.delegate_path())
    for name in ("tfq_testing_set_isa", "tfq_testing_isa", "tfq_testing_fully_connected",
                 "tfq_testing_conv", "tfq_testing_validate_codes", "tfq_testing_parse_options"):
        assert not hasattr(delegate, name), name
        assert hasattr(native.library(), name), name
    assert hasattr(delegate, "tflite_plugin_create_delegate")
    delegate.tfq_delegate_isa.restype = ctypes.c_char_p
    assert delegate.tfq_delegate_isa(0).decode() == native.selected_isa()
    assert delegate.tfq_delegate_isa(1).decode() == "reference"
    assert native.testing_library_path().resolve() != pathlib.Path(tfq.delegate_path()).resolve()


def test_int8_handover_simd_equals_reference_kernels(chain_model):
    """The SIMD hand-over epilogues (8 and 16 lanes, with tails: 6, 8 and 12
    channels) give the scalar HandoverCode's codes exactly."""
    from helpers import native

    data, _ = chain_model
    lib = native.library()  # the test library: which tables this CPU can run
    x = _chain_input(9)
    want = _run(_litert(data, {"force_reference": "1"}), x)
    tried = []
    available = native.available_isas(lib)
    for isa in ("avx2", "avx512vnni"):
        if isa not in available:
            continue
        tried.append(isa)
        # The delegate's `isa` option pins the table in the delegate itself.
        np.testing.assert_array_equal(_run(_litert(data, {"isa": isa}), x), want, err_msg=isa)
    assert tried or native.selected_isa(False, lib) == "reference"
