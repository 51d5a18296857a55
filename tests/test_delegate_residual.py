"""Residual additions fused into the convolution before them (docs/delegate.md,
"Fused residual addition").

The delegate claims a float ADD whose input is the output of a claimed
TFQ_CONV_2D read by nothing else, and adds the other input in that
convolution's epilogue. The outputs must be bit-identical to the same model
with `fuse_add=0` (the ADD run by LiteRT), with every kernel table, 1 and 2
threads, batches, NaN and zero inputs, dense and block-sparse weights; and
close to the converter's reference executor. ADDs it must leave alone (a
constant input) stay with LiteRT; a convolution output that is also a model
output is written and the ADD runs on its own inside the delegate.
"""

import sys
import pathlib

import numpy as np
import pytest

import tfq
from tfq.converter.reference import ReferenceInterpreter
from tfq.testing import random_compressed_tflite

sys.path.insert(0, str(pathlib.Path(__file__).parent / "helpers"))
import native  # noqa: E402
from delegated import litert as _litert, run_all as _run_all  # noqa: E402
import sparse_models  # noqa: E402

SHAPES = ((9, 7, 8), (12, 12, 8), (5, 11, 16))


def _isas():
    available = native.available_isas(native.library())
    return ["reference"] + [i for i in ("avx2", "avx512vnni") if i in available]


@pytest.fixture(scope="module")
def residual_models():
    """{(shape, layout): tflite bytes}: the residual CNN dense and with 4x4 / 8x4 blocks zeroed."""
    models = {}
    for i, shape in enumerate(SHAPES):
        data, _ = random_compressed_tflite("ternary", "residual", seed=20 + i, input_shape=shape)
        models[shape, "dense"] = bytes(data)
        block = (4, 4) if i % 2 == 0 else (8, 4)
        _, sparse = sparse_models.sparse_pair(data, block, 0.6, seed=i)
        models[shape, "sparse"] = bytes(sparse)
    return models


def _input(shape, seed, batch=1, scale=1.0):
    return (scale * np.random.default_rng(seed).standard_normal((batch,) + shape)).astype(np.float32)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("layout", ("dense", "sparse"))
def test_fused_add_equals_litert_add(residual_models, shape, layout, capfd):
    data = residual_models[shape, layout]
    x = _input(shape, 1)
    want = _run_all(_litert(data, {"fuse_add": "0"}), x)
    ref = ReferenceInterpreter(data, mode="delegate").run(x)[0]
    big = np.max(np.abs(ref))
    np.testing.assert_allclose(want[0], ref, rtol=1e-4, atol=1e-5 * big)
    for isa in _isas():
        for threads in ("1", "2"):
            got = _run_all(_litert(data, {"isa": isa, "num_threads": threads, "verbosity": "1"}), x)
            np.testing.assert_array_equal(got[0], want[0], err_msg=f"{isa}, {threads} threads")
    err = capfd.readouterr().err
    # Three ADDs fused (skip = model input; end of an int8 chain; two convolutions), the one
    # with a constant input left to LiteRT.
    assert err.count("fused ADD node") == 3 * 2 * len(_isas()), err
    assert "chained 3 nodes" in err


def test_fused_add_batches_nan_zero_and_reinvoke(residual_models):
    data = residual_models[SHAPES[0], "sparse"]
    fused, plain = _litert(data, {"num_threads": "2"}), _litert(data, {"fuse_add": "0", "num_threads": "2"})
    xs = [_input(SHAPES[0], 2, batch=3), _input(SHAPES[0], 3), np.zeros((1,) + SHAPES[0], np.float32),
          _input(SHAPES[0], 4, scale=50.0), _input(SHAPES[0], 3)]
    xs[1] = xs[1].copy()
    xs[1][0, 2, 3, 1] = np.nan
    outs = []
    for x in xs:
        got, want = _run_all(fused, x), _run_all(plain, x)
        np.testing.assert_array_equal(got[0], want[0])
        outs.append(got[0])
    assert np.all(np.isnan(outs[1]))
    np.testing.assert_array_equal(outs[4], _run_all(_litert(data, {}), xs[4])[0])


def test_convolution_output_that_is_a_model_output_is_written(capfd):
    """The first residual convolution's output is also a model output: it must be
    written as the convolution computes it, and the sum still be exact."""
    data, _ = random_compressed_tflite("ternary", "residual_extra_output", seed=30)
    x = _input(SHAPES[0], 5)
    want = _run_all(_litert(data, {"fuse_add": "0"}), x)
    got = _run_all(_litert(data, {"verbosity": "3"}), x)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    ref = ReferenceInterpreter(bytes(data), mode="delegate").run(x)
    for r in ref:
        match = [g for g in got if g.shape == r.shape]
        np.testing.assert_allclose(match[0], r, rtol=1e-4, atol=1e-5 * np.max(np.abs(r)))
    err = capfd.readouterr().err
    # Run on its own inside the delegate (its profile line), the other two fused.
    assert err.count("profile ADD ") == 1, err
    assert err.count("(+ADD)") == 2, err


def test_fuse_add_option_is_validated_and_off_with_two_passes(residual_models, capfd):
    from ai_edge_litert.interpreter import load_delegate

    with pytest.raises(ValueError):
        load_delegate(tfq.delegate_path(), {"fuse_add": "maybe"})
    data = residual_models[SHAPES[0], "dense"]
    x = _input(SHAPES[0], 9)
    got = _run_all(_litert(data, {"activation_passes": "2", "verbosity": "1"}), x)
    assert "fused ADD" not in capfd.readouterr().err
    want = _run_all(_litert(data, {"activation_passes": "2", "fuse_add": "0"}), x)
    np.testing.assert_array_equal(got[0], want[0])


def test_broadcasting_and_unfusable_adds_stay_with_litert(capfd):
    """A convolution output plus a per-channel tensor (broadcast) and plus itself
    (both inputs the same tensor) are left to LiteRT and give its results."""
    import keras

    from tfq.converter import convert
    from tfq.testing import set_in_set_weights

    inputs = keras.Input((6, 5, 8))
    a = keras.layers.Conv2D(8, 3, padding="same", name="a")(inputs)
    pooled = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
    x = keras.layers.ReLU()(a + pooled)
    b = keras.layers.Conv2D(8, 1, name="b")(x)
    x = keras.layers.Add()([b, b])
    outputs = keras.layers.Dense(4, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    model = set_in_set_weights(keras.Model(inputs, outputs), "ternary", seed=3)
    data = bytes(convert(model))
    x = _input((6, 5, 8), 7)
    got = _run_all(_litert(data, {"verbosity": "2"}), x)
    err = capfd.readouterr().err
    assert "fused ADD" not in err, err
    assert "different shapes" in err, err
    want = _run_all(_litert(data, {"fuse_add": "0"}), x)
    np.testing.assert_array_equal(got[0], want[0])
    ref = ReferenceInterpreter(data, mode="delegate").run(x)[0]
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-5 * np.max(np.abs(ref)))
