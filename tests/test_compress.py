"""tfq.compress: data-free projection with corrections, the data path and the report."""

import math
import statistics

import keras
import numpy as np
import pytest

import tfq
from tfq import compression
from tfq.kernels import supported_kernels
from tfq import record


def _in_set(var, quantizer, axis):
    """True when a kernel is exactly scale[c] * level (projecting it again changes nothing)."""
    w = np.asarray(var)
    q, _ = quantizer.project(w, channel_axis=axis)
    return np.allclose(q, w, rtol=1e-5, atol=1e-7)


def _set_bn(bn, gamma, beta):
    c = len(gamma)
    bn.set_weights([np.asarray(gamma, "float32"), np.asarray(beta, "float32"), np.zeros(c, "float32"),
                    np.ones(c, "float32")])


def test_relu_expectation_matches_clipped_normal():
    mu = np.array([-1.0, 0.0, 0.5, 2.0])
    sigma = np.array([1.0, 2.0, 0.3, 1.5])
    dist = compression.bn_stats.ChannelDist.gaussian(mu, sigma).map(lambda v: np.maximum(v, 0))
    nd = statistics.NormalDist()
    expected = [s * nd.pdf(m / s) + m * nd.cdf(m / s) for m, s in zip(mu, sigma)]
    np.testing.assert_allclose(dist.mean(), expected, rtol=2e-3, atol=2e-3)


def _bias_model(conv_then_bn):
    rng = np.random.default_rng(0)
    c = 16
    inp = keras.Input((6, 6, c))
    bn0 = keras.layers.BatchNormalization(name="bn0", epsilon=1e-6)
    x = keras.layers.ReLU(name="relu0")(bn0(inp))
    if conv_then_bn:
        x = keras.layers.Conv2D(24, 3, use_bias=False, name="target")(x)
        out = keras.layers.BatchNormalization(name="bn1", epsilon=1e-6)(x)
    else:
        x = keras.layers.Flatten(name="flat")(x)
        out = keras.layers.Dense(24, name="target")(x)
    model = keras.Model(inp, out)
    _set_bn(bn0, rng.uniform(0.5, 2.0, c), rng.uniform(-1.0, 1.5, c))
    if conv_then_bn:
        _set_bn(model.get_layer("bn1"), np.ones(24), np.zeros(24))
    k = model.get_layer("target").kernel
    k.assign(rng.normal(0.05, 0.1, k.shape).astype("float32"))  # a mean-biased kernel: quantization shifts outputs
    return model


@pytest.mark.parametrize("conv_then_bn", [False, True], ids=["dense_bias", "conv_bn_mean"])
def test_bias_correction_cancels_the_mean_shift(conv_then_bn):
    model = _bias_model(conv_then_bn)
    x = np.random.default_rng(1).normal(size=(400, 6, 6, 16)).astype("float32")  # BN0 sees N(0, 1) inputs
    ref = np.asarray(model(x)).reshape(-1, 24).mean(0)
    shifts = {}
    for corr in (False, "bias"):
        small = tfq.compress(model, "ternary", layers={"target": True}, corrections=corr, verbose=0)
        shifts[corr] = np.abs(np.asarray(small(x)).reshape(-1, 24).mean(0) - ref).mean()
    # Not exactly zero: padding at the borders and the finite sample.
    assert shifts["bias"] < 0.25 * shifts[False], shifts


def _bn_separable_stack(seed):
    """stem conv -> BN -> ReLU -> depthwise -> BN (gammas over three decades) -> ReLU -> pointwise -> head.

    BN statistics are calibrated on the inputs, as after training.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10, 10, 8))
    x = keras.layers.Conv2D(16, 1, use_bias=False, name="stem")(inp)
    x = keras.layers.BatchNormalization(name="bn_stem")(x)
    x = keras.layers.ReLU(name="relu_stem")(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn_dw")(x)
    x = keras.layers.ReLU(name="relu_dw")(x)
    x = keras.layers.Conv2D(32, 1, use_bias=False, name="pw")(x)
    x = keras.layers.BatchNormalization(name="bn_pw")(x)
    out = keras.layers.Conv2D(4, 1, name="head")(x)
    model = keras.Model(inp, out)
    bn = model.get_layer("bn_dw")
    rng = np.random.default_rng(seed)
    bn.gamma.assign((10.0 ** rng.uniform(-1.5, 1.5, 16)).astype("float32"))
    bn.beta.assign(rng.uniform(-0.5, 0.5, 16).astype("float32") * np.asarray(bn.gamma))
    x = rng.normal(size=(256, 10, 10, 8)).astype("float32")
    tfq.reestimate_batch_norm(model, x, 64)
    return model, x[:32]


def _unbalanced_stack(seed):
    """stem -> depthwise -> ReLU -> pointwise -> head, then unbalanced by a positive channel scaling.

    Depthwise channel c is multiplied by S_c (three decades) and the pointwise
    input channel c divided by it: the same function, the ranges that
    MobileNet-style depthwise layers show. Equalization should undo it.
    """
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10, 10, 8))
    x = keras.layers.Conv2D(16, 1, name="stem")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.ReLU(name="relu")(x)
    x = keras.layers.Conv2D(32, 1, name="pw")(x)
    out = keras.layers.Conv2D(4, 1, name="head")(x)
    model = keras.Model(inp, out)
    balanced = compression.graph.clone_model(model)
    s = (10.0 ** np.random.default_rng(seed).uniform(-1.5, 1.5, 16)).astype("float32")
    dw, pw = model.get_layer("dw"), model.get_layer("pw")
    dw.kernel.assign(np.asarray(dw.kernel) * s.reshape(16, 1))
    dw.bias.assign(np.asarray(dw.bias) * s)
    pw.kernel.assign(np.asarray(pw.kernel) / s.reshape(1, 1, 16, 1))
    x = np.random.default_rng(seed + 10).normal(size=(16, 10, 10, 8)).astype("float32")
    np.testing.assert_allclose(np.asarray(model(x)), np.asarray(balanced(x)), rtol=1e-3, atol=1e-3)
    return model, balanced, x


def test_equalization_preserves_the_float_function():
    model, balanced, x = _unbalanced_stack(0)
    clone = compression.graph.clone_model(model)
    chosen, specs = compression.graph.select_layers(clone, "ternary", None, True)
    notes = compression.corrections.equalize(compression.graph.Graph(clone), chosen, specs)
    assert "pw" in notes and "dw" in notes, notes
    np.testing.assert_allclose(np.asarray(clone(x)), np.asarray(model(x)), rtol=1e-3, atol=1e-3)
    ranges = lambda m: np.abs(np.asarray(m.get_layer("pw").kernel)).reshape(16, -1).max(1)  # noqa: E731
    spread = lambda r: r.max() / r.min()  # noqa: E731
    assert spread(ranges(clone)) < spread(ranges(model)) / 10


@pytest.mark.parametrize("scheme", ["ternary", "pow2_4bit"])
@pytest.mark.parametrize("seed", [0, 1])
def test_equalization_undoes_unbalanced_channel_ranges(seed, scheme):
    model, balanced, x = _unbalanced_stack(seed)
    ref = np.asarray(model(x))

    def err(m, corr):
        small, report = tfq.compress(m, scheme, corrections=corr, verbose=0, return_report=True)
        return float(np.mean((np.asarray(small(x)) - ref) ** 2)), {r.name: r.corrections for r in report.layers}

    plain, _ = err(model, False)
    equalized, notes = err(model, "equalization")
    reference, _ = err(balanced, False)
    assert any("equalized" in c for c in notes["pw"]), notes
    assert equalized < 0.5 * plain, (equalized, plain)
    assert equalized < 2.0 * reference, (equalized, reference)


def _stack_errors(seed, scheme):
    model, x = _bn_separable_stack(seed)
    ref = np.asarray(model(x))
    err, notes = {}, {}
    for corr in ("bias", True):
        small, report = tfq.compress(model, scheme, corrections=corr, verbose=0, return_report=True)
        err[corr] = float(np.mean((np.asarray(small(x)) - ref) ** 2))
        notes[corr] = {r.name: r.corrections for r in report.layers}
    return err, notes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equalization_is_kept_only_where_it_helps_with_per_channel_scales(seed):
    err, notes = _stack_errors(seed, "ternary")
    # Per-channel scales already absorb most range differences; equalization is
    # applied only when the modelled error drops, so it never costs much.
    assert err[True] < 1.1 * err["bias"], (err, notes)


def test_data_free_keeps_original_and_puts_kernels_in_the_set():
    model = tfq.models.small_bn_cnn()
    before = [w.copy() for w in model.get_weights()]
    for scheme in ("binary", "ternary", "pow2_3bit", "pow2_4bit"):
        small, report = tfq.compress(model, scheme, verbose=0, return_report=True)
        q = tfq.quantizers.get(scheme)
        for layer in small.layers:
            for name, var, axis in [(k.name, k.variable, k.channel_axis) for k in (supported_kernels(layer) or [])]:
                float_kept = layer.name in ("conv1", "fc2")  # first and last stay float by default
                assert _in_set(var, q, axis) != float_kept, (scheme, layer.name, name)
        assert report.mode == "data-free" and report.scheme == scheme
        assert report.compressed_bytes < report.float_bytes
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_data_free_sparsity_and_report():
    model = tfq.models.lenet5()
    small, report = tfq.compress(model, "ternary", sparsity=0.8, verbose=0, return_report=True)
    fc1 = np.asarray(small.get_layer("fc1").kernel)
    assert (fc1 == 0).mean() >= 0.8
    rows = {r.name: r for r in report.layers}
    assert rows["fc1"].scheme == "ternary" and rows["fc1"].bits == 2 and rows["fc1"].sparsity >= 0.8
    assert rows["conv1"].scheme == "float" and rows["fc2"].scheme == "float"
    md = report.to_markdown()
    for name in ("conv1", "conv2", "fc1", "fc2"):
        assert f"| {name} |" in md
    assert report.ratio > 5  # fc1 dominates LeNet-5 and goes from 32 to 2 bits


def test_compressed_model_saves_loads_and_converts(tmp_path):
    model = tfq.models.small_bn_cnn()
    small = tfq.compress(model, "pow2_4bit", verbose=0)
    path = str(tmp_path / "m.keras")
    small.save(path)
    loaded = keras.models.load_model(path)
    for a, b in zip(small.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    blob = tfq.convert(loaded)
    packed = [r for r in blob.report if r.packed]
    # conv2, dw3 (with bn3 folded in) and fc1; conv1 and fc2 stay float.
    assert len(packed) == 3 and {r.scheme for r in packed} == {"pow2_4bit"}, blob.summary()
    assert {r.op for r in packed} == {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}, blob.summary()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheme": "quaternary"}, "quaternary"),
        ({"scheme": "ternary", "sparsity": 1.0}, "sparsity"),
        ({"scheme": "ternary", "sparsity": -0.1}, "sparsity"),
        ({"scheme": "ternary", "layers": {"pool1": True}}, "pool1"),
        ({"scheme": "ternary", "layers": {"nope": True}}, "nope"),
        ({"scheme": "ternary", "corrections": "maybe"}, "corrections"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tfq.compress(tfq.models.lenet5(), verbose=0, **kwargs)


def test_nothing_to_compress_and_nan():
    plain = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="nothing to compress"):
        tfq.compress(plain, "ternary", verbose=0)
    model = tfq.models.lenet5()
    k = model.get_layer("conv2").kernel
    k.assign(np.where(np.arange(k.shape[-1]) == 3, np.nan, np.asarray(k)).astype("float32"))
    with pytest.raises(ValueError, match="conv2"):
        tfq.compress(model, "ternary", verbose=0)
    with pytest.raises(TypeError, match="keras.Model"):
        tfq.compress(np.zeros(3), "ternary")


def test_subclassed_model_without_config_is_a_clear_error():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = keras.layers.Dense(8), keras.layers.Dense(8), keras.layers.Dense(2)

        def call(self, x):
            return self.c(self.b(self.a(x)))

    model = Sub()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="cannot copy model"):
        tfq.compress(model, "ternary", verbose=0)


def test_data_path_accepts_datasets(mnist_small):
    import tensorflow as tf

    (x, y), (xt, yt) = mnist_small
    model = tfq.models.small_bn_cnn()
    model.build((None, 28, 28, 1))
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    val = tf.data.Dataset.from_tensor_slices((xt, yt)).batch(64)
    small, report = tfq.compress(model, "pow2_3bit", data=ds, validation_data=val, epochs=1, verbose=0,
                                 return_report=True)
    assert report.settings["steps_per_epoch"] == 8 and report.settings["batch_norm_reestimated_on"] == 8
    assert report.accuracy_after is not None
    assert _in_set(small.get_layer("conv2").kernel, tfq.quantizers.get("pow2_3bit"), -1)


def test_derived_schedule():
    hp = compression.derive_schedule(469)  # MNIST at batch 128
    assert hp["epochs"] == 6 and hp["finetune_epochs"] == 1 and hp["learning_rate"] == 1e-3
    # The pull per epoch goes from gentle to firm over the ADMM epochs.
    first = 469 * hp["learning_rate"] * hp["rho"]
    last = first * hp["rho_growth"] ** (hp["epochs"] - 2)
    assert math.isclose(first, 0.5) and math.isclose(last, 20.0)
    assert compression.derive_schedule(10)["epochs"] == 30
    assert compression.derive_schedule(10_000)["epochs"] == 3


def test_data_path_trains_into_the_set(mnist_small):
    (x, y), (xt, yt) = mnist_small
    keras.utils.set_random_seed(0)
    model = tfq.models.lenet300_100()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    small, report = tfq.compress(model, "ternary", sparsity=0.5, data=(x, y), validation_data=(xt, yt), epochs=2,
                                 verbose=0, return_report=True)
    assert _in_set(small.get_layer("fc2").kernel, tfq.quantizers.get("ternary"), -1)
    assert (np.asarray(small.get_layer("fc2").kernel) == 0).mean() >= 0.5
    assert report.mode == "admm + pruning"
    assert report.accuracy_before is not None and report.accuracy_after > 0.5
    assert report.settings["epochs"] == 2 and report.settings["rho"] > 0


def test_data_free_on_a_mobilenet():
    """The data-free path on a deep BN network (its time: benchmarks/data_free.py, not a test)."""
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)
    small, report = tfq.compress(model, "ternary", verbose=0, return_report=True)
    corrected = [r for r in report.layers if any("bias corrected" in c for c in r.corrections)]
    assert len(corrected) > 20


def test_data_path_returns_a_stripped_model_no_larger_than_its_float_parent(mnist_small, tmp_path):
    """ADMM/pruning state and the optimizer are dropped by default; keep_training_state keeps them."""
    (x, y), _ = mnist_small
    keras.utils.set_random_seed(0)
    model = tfq.models.lenet300_100()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    model.save(tmp_path / "float.keras")
    small = tfq.compress(model, "ternary", sparsity=0.5, data=(x, y), epochs=2, verbose=0)
    kept = tfq.compress(model, "ternary", sparsity=0.5, data=(x, y), epochs=2, verbose=0, keep_training_state=True)
    assert kept.compiled and kept.optimizer.built  # ready to resume
    assert not small.compiled and record.read(small.get_layer("fc2"))["kernel"]["scheme"] == "ternary"
    small.save(tmp_path / "small.keras")
    kept.save(tmp_path / "kept.keras")
    float_size = (tmp_path / "float.keras").stat().st_size
    assert (tmp_path / "small.keras").stat().st_size <= float_size
    assert (tmp_path / "kept.keras").stat().st_size > float_size  # ADMM state + optimizer
    reloaded = keras.saving.load_model(tmp_path / "small.keras")
    for a, b in zip(reloaded.get_weights(), small.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert _in_set(reloaded.get_layer("fc2").kernel, tfq.quantizers.get("ternary"), -1)
    assert tfq.convert(small).report  # still converts (packed ops checked in tests/test_converter_e2e.py)
