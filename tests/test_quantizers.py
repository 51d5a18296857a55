"""Weight sets and projections: optimality against brute force, masks, axes, graph mode."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from tfq import quantizers as Q

SCHEMES = ["binary", "ternary", "pow2_3bit", "pow2_4bit"]


def objective(w, q, m=None):
    m = np.ones_like(w) if m is None else m
    return float(np.sum(((w - q) * m) ** 2))


def brute_force(w, levels, m=None):
    """Best objective over all code vectors of one channel (scale by least squares)."""
    m = np.ones_like(w) if m is None else m
    best = np.inf
    for codes in itertools.product(levels, repeat=w.size):
        c = np.array(codes, dtype=np.float64) * m
        den = np.sum(c * c)
        s = max(np.sum(w * c) / den, 0.0) if den > 0 else 0.0
        best = min(best, np.sum(((w - s * c) * m) ** 2))
    return best


def test_levels_and_bits():
    assert Q.Binary().levels.tolist() == [-1, 1] and Q.Binary().bits == 1
    assert Q.Ternary().levels.tolist() == [-1, 0, 1] and Q.Ternary().bits == 2
    assert Q.PowerOfTwo(3).levels.tolist() == [-4, -2, -1, 0, 1, 2, 4]
    assert Q.PowerOfTwo(3).name == "pow2_3bit" and Q.PowerOfTwo(4).name == "pow2_4bit"
    lv = Q.PowerOfTwo(4).levels
    assert lv.tolist() == [-64, -32, -16, -8, -4, -2, -1, 0, 1, 2, 4, 8, 16, 32, 64]
    assert lv.dtype.kind == "i"


@pytest.mark.parametrize("name", SCHEMES)
def test_get_identifiers(name):
    q = Q.get(name)
    assert q.name == name and q.per_channel
    assert Q.get(q) is q
    assert Q.get({"name": name, "per_channel": False}).per_channel is False
    import keras

    assert Q.get(keras.saving.serialize_keras_object(q)) == q
    assert Q.get(None) is None


def test_get_rejects_unknown():
    with pytest.raises(ValueError, match="valid"):
        Q.get("quaternary")
    with pytest.raises(ValueError, match="valid"):
        Q.get(3.5)
    with pytest.raises(ValueError):
        Q.PowerOfTwo(bits=5)


@pytest.mark.parametrize("name", SCHEMES)
def test_projection_matches_brute_force(name):
    q = Q.get(name)
    n = 5 if name != "pow2_4bit" else 4
    rng = np.random.default_rng(sum(map(ord, name)))
    for trial in range(4):
        w = rng.normal(size=(n, 3)).astype(np.float64) * rng.uniform(0.1, 3.0)
        if trial == 3:
            w[:, 0] *= np.array([1e-3, 1, 1e-2, 5, 0.3][:n])  # uneven magnitudes
        got, scale = q.project(w)
        assert got.shape == w.shape and scale.shape == (3,)
        for c in range(3):
            bf = brute_force(w[:, c], q.levels)
            assert objective(w[:, c], got[:, c]) <= bf * (1 + 1e-5) + 1e-9, (name, trial, c)


@pytest.mark.parametrize("name", SCHEMES)
def test_values_are_scale_times_level(name):
    q = Q.get(name)
    w = np.random.default_rng(0).normal(size=(7, 6, 5)).astype(np.float32)
    got, scale = q.project(w, channel_axis=1)
    assert scale.shape == (6,)
    lv = got / scale[None, :, None]
    assert np.allclose(lv, np.round(lv), atol=1e-5)
    assert set(np.round(lv).astype(int).ravel()) <= set(q.levels.tolist())
    again, s2 = q.project(got, channel_axis=1)  # idempotent
    np.testing.assert_allclose(again, got, rtol=1e-6, atol=1e-7)


def test_mask_entries_zero_and_not_in_fit():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 4)).astype(np.float32)
    m = (rng.uniform(size=w.shape) > 0.4).astype(np.float32)
    m[:, 0] = 1
    m[0, 0] = 0
    w[0, 0] = 100.0  # a huge masked weight must not move the scale
    got, scale = Q.Ternary().project(w, mask=m)
    assert np.all(got[m == 0] == 0)
    for c in range(4):
        keep = m[:, c] > 0
        ref, s = Q.Ternary().project(w[keep, c][:, None])
        np.testing.assert_allclose(got[keep, c], ref[:, 0], rtol=1e-6)
        np.testing.assert_allclose(scale[c], s[0], rtol=1e-6)


def test_binary_with_mask_and_empty_channel():
    w = np.array([[1.0, 0.0], [-2.0, 0.0]], np.float32)
    got, scale = Q.Binary().project(w)
    np.testing.assert_allclose(got[:, 0], [1.5, -1.5])
    assert scale[1] == 0 and np.all(got[:, 1] == 0)
    got, _ = Q.Binary().project(w, mask=np.array([[1, 1], [0, 1]], np.float32))
    assert got[1, 0] == 0 and got[0, 0] == 1.0


def test_tuple_channel_axis_depthwise():
    w = np.random.default_rng(4).normal(size=(3, 3, 4, 2)).astype(np.float32)
    got, scale = Q.Ternary().project(w, channel_axis=(2, 3))
    assert scale.shape == (8,)
    flat = got.reshape(9, 8)
    for c in range(8):
        ref, s = Q.Ternary().project(w.reshape(9, 8)[:, c : c + 1])
        np.testing.assert_allclose(flat[:, c], ref[:, 0], rtol=1e-6)


def test_per_tensor_scale():
    w = np.random.default_rng(5).normal(size=(5, 3)).astype(np.float32)
    got, scale = Q.Ternary(per_channel=False).project(w)
    assert scale.shape == (1,)
    assert len(np.unique(np.abs(got[got != 0]))) == 1


def test_in_graph_and_tensor_inputs():
    w = tf.random.stateless_normal((10, 4), seed=(1, 2))

    @tf.function
    def f(x):
        return Q.PowerOfTwo(3).project(x)

    q_graph, s_graph = f(w)
    q_eager, s_eager = Q.PowerOfTwo(3).project(w)
    assert isinstance(q_eager, tf.Tensor)
    np.testing.assert_allclose(q_graph.numpy(), q_eager.numpy(), rtol=1e-6)
    q_np, _ = Q.PowerOfTwo(3).project(w.numpy())
    assert isinstance(q_np, np.ndarray)
    np.testing.assert_allclose(q_np, q_eager.numpy(), rtol=1e-6)


def test_pure_functions_match_classes():
    w = np.random.default_rng(6).normal(size=(8, 3)).astype(np.float32)
    np.testing.assert_array_equal(Q.project_ternary(w)[0], Q.Ternary().project(w)[0])
    np.testing.assert_array_equal(Q.project_binary(w)[0], Q.Binary().project(w)[0])
    np.testing.assert_array_equal(Q.project_pow2(w, bits=4)[0], Q.PowerOfTwo(4).project(w)[0])


def test_fit_scale_keeps_codes():
    w = np.random.default_rng(7).normal(size=(8, 3)).astype(np.float32)
    q, s = Q.Ternary().project(w)
    codes = np.round(q / s)
    w2 = w + 0.1
    new, s2 = Q.fit_scale(w2, codes)
    np.testing.assert_allclose(np.asarray(new), codes * np.asarray(s2)[None], rtol=1e-6)


def test_bad_shapes():
    with pytest.raises(ValueError, match="mask shape"):
        Q.Ternary().project(np.ones((3, 2)), mask=np.ones((2, 3)))
    with pytest.raises(ValueError, match="out of range"):
        Q.Ternary().project(np.ones((3, 2)), channel_axis=2)


@pytest.mark.parametrize("name", SCHEMES)
def test_warm_start_from_previous_scale(name):
    q = Q.get(name)
    rng = np.random.default_rng(8)
    w = rng.normal(size=(40, 6)).astype(np.float32)
    full, scale = q.project(w)
    moved = w + 0.01 * rng.normal(size=w.shape).astype(np.float32)
    warm, s2 = q.project(moved, init_scale=scale)
    cold, _ = q.project(moved)
    # Values in the set, and the warm start is (near) as good as the full search.
    lv = warm / np.where(s2 > 0, s2, 1)[None]
    assert np.allclose(lv, np.round(lv), atol=1e-4)
    assert objective(moved, warm) <= objective(moved, cold) * 1.02 + 1e-9
    zero_start, _ = q.project(moved, init_scale=np.zeros(6, np.float32))
    assert objective(moved, zero_start) < objective(moved, np.zeros_like(moved))


def test_pow2_nearest_level_exact_at_boundaries():
    # The float32 path reads the exponent from the bits: check it against the
    # definition on the boundaries 1.5 * 2^j (ties go up, like the old
    # log formula), just around them, 0.5, denormals, huge values and NaN.
    levels = Q._levels_for("pow2_4bit")
    b = np.array([0.5] + [1.5 * 2.0**j for j in range(-1, 8)], np.float32)
    t = np.concatenate([b, np.nextafter(b, 0), np.nextafter(b, np.inf), [0.0, 1e-45, 1e-38, 3e38, 0.75, 200.0]])
    t = np.concatenate([t, -t]).astype(np.float32)
    got = Q._nearest_level(tf.constant(t), levels).numpy()
    d = np.abs(t[:, None].astype(np.float64) - levels[None, :])
    best = d.min(axis=1)
    assert np.all(np.abs(t - got) <= best + 1e-12)  # always a nearest level
    # Exact ties 1.5 * 2^j go up to 2^(j+1) (clipped to 64); 0.5 goes to 0.
    ties = np.array([1.5 * 2.0**j for j in range(-1, 8)], np.float32)
    want = np.minimum(2.0 ** np.arange(0, 9), 64.0)
    np.testing.assert_array_equal(Q._nearest_level(tf.constant(ties), levels).numpy(), want)
    np.testing.assert_array_equal(Q._nearest_level(tf.constant(-ties), levels).numpy(), -want)
    assert Q._nearest_level(tf.constant([0.5, -0.5], tf.float32), levels).numpy().tolist() == [0.0, 0.0]
    assert Q._nearest_level(tf.constant([np.nan], tf.float32), levels).numpy()[0] == 0.0
    # float64 keeps the log formula; same answers on the same values.
    got64 = Q._nearest_level(tf.constant(t.astype(np.float64)), levels).numpy()
    np.testing.assert_array_equal(got64, got)


@pytest.mark.parametrize("name", ["ternary", "pow2_4bit"])
def test_compiled_projection_matches_plain_ops(name):
    # Big kernels are projected XLA-compiled (jit=None); same optimum as the plain ops.
    q = Q.get(name)
    rng = np.random.default_rng(11)
    w = rng.normal(0, 0.05, size=(300, 230)).astype(np.float32)
    m = (rng.random(w.shape) > 0.3).astype(np.float32)
    for kw in ({}, {"mask": m}):
        a, sa = q.project(w, jit=False, **kw)
        b, sb = q.project(w, jit=True, **kw)
        np.testing.assert_allclose(sb, sa, rtol=1e-4)
        assert abs(objective(w, b, kw.get("mask")) - objective(w, a, kw.get("mask"))) <= 1e-5 * objective(w, a, kw.get("mask"))
        moved = w + 1e-3 * rng.normal(size=w.shape).astype(np.float32)
        c, sc = q.project(moved, init_scale=sa, jit=False, **kw)
        d, sd = q.project(moved, init_scale=sa, jit=True, **kw)
        np.testing.assert_allclose(sd, sc, rtol=1e-4)
        assert abs(objective(moved, d, kw.get("mask")) - objective(moved, c, kw.get("mask"))) <= 1e-5 * objective(moved, c, kw.get("mask"))
