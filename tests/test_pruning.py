"""PruningCallback: schedules, exact zeros every step, importance, regrowth, with ADMM."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfq
from tfq import models, pruning, quantizers
from tfq import state as tfq_state

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def compiled(seed=0):
    keras.utils.set_random_seed(seed)
    model = models.lenet300_100()
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    return model


def test_schedules():
    s = pruning.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    ok, sp = s(0)
    assert bool(ok) and float(sp) == pytest.approx(0.0)
    ok, sp = s(100)
    assert bool(ok) and float(sp) == pytest.approx(0.8)
    ok, _ = s(15)
    assert not bool(ok)
    ok, sp = pruning.ConstantSparsity(0.5, begin_step=10, frequency=5)(15)
    assert bool(ok) and float(sp) == pytest.approx(0.5)
    assert not bool(pruning.ConstantSparsity(0.5, begin_step=10)(5)[0])


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_sparsity_out_of_range(bad):
    with pytest.raises(ValueError, match="sparsity"):
        tfq.PruningCallback(target_sparsity=bad)
    with pytest.raises(ValueError, match="sparsity"):
        pruning.ConstantSparsity(bad)


def test_prune_mask_exact_count_and_no_regrowth():
    score = tf.constant(np.arange(10, dtype=np.float32)[::-1].copy())
    m = pruning.prune_mask(score, 0.3)
    np.testing.assert_array_equal(m.numpy(), [1, 1, 1, 1, 1, 1, 1, 0, 0, 0])
    # Without regrowth a pruned entry stays pruned even with a high score.
    prev = np.ones(10, np.float32)
    prev[0] = 0
    m = pruning.prune_mask(score, 0.3, mask=tf.constant(prev))
    assert m.numpy()[0] == 0 and m.numpy().sum() == 7
    m = pruning.prune_mask(score, 0.3, mask=tf.constant(prev), regrowth=True)
    assert m.numpy()[0] == 1 and m.numpy().sum() == 7


def test_importance_needs_both_small():
    w = tf.constant([0.01, 0.01, 1.0, 1.0])
    slope = tf.constant([0.01, 1.0, 0.01, 1.0])
    s = pruning.importance(w, slope).numpy()
    assert np.argmin(s) == 0 and s[1] > s[0] and s[2] > s[0]
    np.testing.assert_allclose(pruning.importance(w).numpy(), w.numpy() / np.mean(w.numpy()), rtol=1e-6)
    np.testing.assert_allclose(s, w.numpy() / 0.505 * (1 + slope.numpy() / 0.505), rtol=1e-5)


class ZerosEveryStep(keras.callbacks.Callback):
    """Checks before each step that pruned weights are exactly zero."""

    def on_train_batch_begin(self, batch, logs=None):
        state = tfq_state.get(self.model, tfq_state.PRUNING)
        for spec_mask, key in zip(state.mask, state.keys):
            layer = self.model.get_layer(key.split("/")[0])
            w = layer.kernel.numpy()
            assert np.all(w[spec_mask.numpy() == 0] == 0), key
        self.checked = getattr(self, "checked", 0) + 1


@pytest.mark.parametrize("importance", ["gradient", "magnitude"])
def test_reaches_target_and_zeros_stay(mnist_small, importance):
    (x, y), _ = mnist_small
    model = compiled()
    check = ZerosEveryStep()
    hist = model.fit(
        x, y, epochs=2, batch_size=64, verbose=0,
        callbacks=[tfq.PruningCallback(0.8, importance=importance, frequency=2, skip_first_last=False), check],
    )
    assert check.checked == 16
    for name in ("fc1", "fc2", "fc3"):
        w = model.get_layer(name).kernel.numpy()
        assert abs((w == 0).mean() - 0.8) < 0.01, name
    assert hist.history["sparsity"][-1] == pytest.approx(0.8, abs=0.01)
    assert "sparsity/fc1/kernel" in hist.history


def test_tfmot_schedule_accepted(mnist_small):
    from tensorflow_model_optimization.sparsity.keras import ConstantSparsity

    (x, y), _ = mnist_small
    model = compiled()
    model.fit(
        x[:256], y[:256], epochs=1, batch_size=64, verbose=0,
        callbacks=[tfq.PruningCallback(0.6, schedule=ConstantSparsity(0.6, begin_step=0, frequency=1))],
    )
    w = model.get_layer("fc2").kernel.numpy()
    assert abs((w == 0).mean() - 0.6) < 0.01


def test_regrowth_changes_mask(mnist_small):
    (x, y), _ = mnist_small
    model = compiled()
    model.compile(keras.optimizers.Adam(1e-2), LOSS)
    cb = tfq.PruningCallback(0.7, schedule=pruning.ConstantSparsity(0.7, frequency=2), regrowth=True,
                             skip_first_last=False)
    seen = []

    class Snap(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(tfq_state.get(self.model, tfq_state.PRUNING).mask[1].numpy().copy())

    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb, Snap()])
    came_back = np.any((seen[2] == 0) & (seen[-1] == 1))
    assert came_back
    assert abs((seen[-1] == 0).mean() - 0.7) < 0.01


def test_with_admm_in_one_fit(mnist_small, tmp_path):
    (x, y), _ = mnist_small
    model = compiled()
    model.fit(
        x, y, epochs=3, batch_size=64, verbose=0,
        callbacks=[tfq.PruningCallback(0.9, frequency=4), tfq.ADMMCallback("ternary", update_every=4)],
    )
    w = model.get_layer("fc2").kernel.numpy()
    assert (w == 0).mean() >= 0.9
    # Same default layers for both callbacks: the first and the last stay float and unpruned.
    assert tfq_state.get(model, tfq_state.PRUNING).keys == tfq_state.get(model, tfq_state.ADMM).keys == ["fc2/kernel"]
    for name in ("fc1", "fc3"):
        assert np.all(model.get_layer(name).kernel.numpy() != 0), name
    mask = tfq_state.get(model, tfq_state.PRUNING).mask_for("fc2/kernel").numpy()
    q, _ = quantizers.Ternary().project(w, mask=mask)
    np.testing.assert_allclose(q, w, rtol=1e-5, atol=1e-7)
    assert np.all(w[mask == 0] == 0)
    # A pruned + ternary model converts into tfq layers with its masks.
    qmodel = tfq.quantize_model(model)
    np.testing.assert_array_equal(qmodel.get_layer("fc2").weights[-1].numpy(), mask)


def test_callback_defaults_agree():
    import inspect

    defaults = [{k: p.default for k, p in inspect.signature(cb).parameters.items()}
                for cb in (tfq.PruningCallback, tfq.ADMMCallback, tfq.compress)]
    for key in ("layers", "skip_first_last"):
        assert len({d[key] for d in defaults}) == 1, key
    assert defaults[0]["skip_first_last"] is True


def test_model_without_supported_layers():
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="nothing to compress"):
        model.fit(np.ones((4, 4)), np.ones((4, 4)), verbose=0, callbacks=[tfq.PruningCallback(0.5)])


def test_slope_is_windowed_mean_step(mnist_small):
    """Without regrowth the slope is refreshed at mask updates from a snapshot taken 1/(1-beta) steps before."""
    (x, y), _ = mnist_small
    model = compiled()
    model.compile(keras.optimizers.SGD(0.05), LOSS)
    seen = {}

    class Record(keras.callbacks.Callback):  # runs before the pruning callback's mask update
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (10, 20):
                seen[batch + 1] = self.model.get_layer("fc2").kernel.numpy().copy()

    cb = tfq.PruningCallback(0.5, schedule=pruning.ConstantSparsity(0.5, begin_step=20, frequency=20), beta=0.9)
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Record(), cb])  # 32 steps
    state = tfq_state.get(model, tfq_state.PRUNING)
    i = state.keys.index("fc2/kernel")
    want = (1 - 0.9**10) * (seen[20] - seen[10]) / 10
    np.testing.assert_allclose(state.slope[i].numpy(), want, rtol=1e-4, atol=1e-9)
    assert np.abs(want).max() > 0
    # The next window (for the update at step 40) started at step 30.
    assert int(state.step.numpy()) == 30


@pytest.mark.parametrize("with_admm", [False, True])
def test_nan_during_training_raises_naming_layer(mnist_small, with_admm):
    # Not per step (that cost 5% of a step): at the next mask update or epoch end.
    (x, y), _ = mnist_small
    model = compiled()
    bad = x[:128].copy()
    bad[0, 0, 0, 0] = np.inf
    callbacks = [tfq.PruningCallback(0.5, frequency=1000)]
    if with_admm:
        callbacks.append(tfq.ADMMCallback("ternary", update_every=1000))
    with pytest.raises(Exception, match="NaN or Inf in layer 'fc2'"):  # the first compressed layer (fc1 stays float)
        model.fit(bad, y[:128], epochs=1, batch_size=64, verbose=0, callbacks=callbacks)


@pytest.mark.parametrize("opt", ["adam", "sgd_momentum", "sgd"])
def test_slope_is_the_optimizers_gradient_average(mnist_small, opt):
    """With Adam (and the others that keep one) the slope is the optimizer's running average of the gradient."""
    (x, y), _ = mnist_small
    model = compiled()
    optimizer = {"adam": keras.optimizers.Adam(1e-3), "sgd_momentum": keras.optimizers.SGD(0.01, momentum=0.9),
                 "sgd": keras.optimizers.SGD(0.01)}[opt]
    model.compile(optimizer, LOSS)
    kernel = model.get_layer("fc2").kernel
    seen = {}

    class Record(keras.callbacks.Callback):  # runs before the pruning callback's mask update
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == 20:
                slots = {v.name: v for v in self.model.optimizer.variables}
                m = slots.get(kernel.path.replace("/", "_") + "_momentum")
                seen["m"] = None if m is None else m.numpy().copy()
                seen["w"] = kernel.numpy().copy()

    cb = tfq.PruningCallback(0.5, schedule=pruning.ConstantSparsity(0.5, begin_step=20, frequency=100))
    model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[Record(), cb])  # 32 steps
    state = tfq_state.get(model, tfq_state.PRUNING)
    i = state.keys.index("fc2/kernel")
    if opt == "sgd":  # keeps no average: the windowed mean step (test above)
        assert seen["m"] is None and cb.run._moments is None
        return
    np.testing.assert_allclose(state.slope[i].numpy(), np.abs(seen["m"]), rtol=1e-6)
    want = pruning.prune_mask(pruning.importance(tf.constant(seen["w"]), tf.constant(np.abs(seen["m"]))), 0.5)
    np.testing.assert_array_equal(state.mask[i].numpy(), want.numpy())


def test_strategy_of_falls_back_to_the_current_strategy():
    from tfq import training

    assert training.strategy_of(None) is tf.distribute.get_strategy()
