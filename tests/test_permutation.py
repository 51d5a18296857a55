"""`tfq.permute_channels`: the model computes the same function, and block rows join similar channels."""

import keras
import numpy as np
import pytest

import tfq
from tfq import models
from tfq.permutation import group_rows, permute_channels

L = keras.layers


def randomize(model, seed=1):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            value = rng.normal(size=w.shape) * 0.3
            if "variance" in w.path:
                value = np.abs(value) + 0.5
            w.assign(value.astype("float32"))
    return model


def residual_model():
    i = keras.Input((12, 12, 3))
    a = L.Conv2D(16, 3, padding="same", name="a")(i)
    c = L.ReLU(name="r")(L.BatchNormalization(name="bn")(a))
    d = L.Conv2D(16, 3, padding="same", name="d")(c)
    f = L.Conv2D(8, 1, name="f")(L.Add(name="add")([c, d]))
    h = L.Dense(32, name="h")(L.GlobalAveragePooling2D(name="gap")(f))
    shared = L.Dense(16, name="shared")
    s = L.Dense(4, name="s")(shared(L.PReLU(name="prelu")(h)))
    t = shared(L.Dense(32, name="t")(h))
    return keras.Model(i, [s, t, L.Dense(3, name="o")(h)])


CASES = [
    (models.lenet300_100, (28, 28, 1), {"fc1", "fc2"}),
    (models.lenet5, (28, 28, 1), {"conv1", "conv2", "fc1"}),  # conv2 -> pool -> flatten -> fc1
    (models.small_bn_cnn, (28, 28, 1), {"conv1", "conv2", "fc1"}),  # BN, depthwise, global pooling between
    # a: fans out (Add and d); d: into Add; h: read by o and t and prelu; shared: called twice; s, o: outputs.
    (residual_model, (12, 12, 3), {"f"}),
]


@pytest.mark.parametrize("build,shape,expected", CASES, ids=[c[0].__name__ for c in CASES])
def test_same_function(build, shape, expected):
    model = randomize(build())
    x = np.random.default_rng(0).normal(size=(3,) + shape).astype("float32")
    before = [np.asarray(y) for y in keras.tree.flatten(model(x, training=False))]
    done = permute_channels(model, block="4x4")
    assert set(done) == expected
    for name, perm in done.items():
        assert sorted(perm) == list(range(len(perm))) and (perm != np.arange(len(perm))).any(), name
    after = [np.asarray(y) for y in keras.tree.flatten(model(x, training=False))]
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())


def test_group_rows_finds_planted_groups():
    # Channels 0, 2, 4, 6 read strips 0-1, the odd ones strips 2-3: the
    # permutation must put each family in one block row of 4.
    strips = np.zeros((8, 4))
    strips[0::2, :2] = 1.0
    strips[1::2, 2:] = 1.0
    strips += np.random.default_rng(0).uniform(0, 0.05, strips.shape)
    order = group_rows(strips, 4)
    assert sorted(order) == list(range(8))
    assert {tuple(sorted(order[:4] % 2)), tuple(sorted(order[4:] % 2))} == {(0,) * 4, (1,) * 4}


def test_group_rows_partial_last_group():
    order = group_rows(np.random.default_rng(1).uniform(size=(10, 6)), 4)
    assert sorted(order) == list(range(10))


def test_block_pruning_keeps_more_after_permutation():
    """Magnitude kept by 4x4 blocks at 75% on a layer whose similar channels are scattered."""
    rng = np.random.default_rng(0)
    model = keras.Sequential([keras.Input((64,)), L.Dense(32, name="h"), L.Dense(8, name="out")])
    support = rng.permutation(np.repeat(np.arange(8), 4))  # 8 families of 4 channels, scattered
    kernel = np.zeros((64, 32), "float32")
    for c in range(32):
        kernel[support[c] * 8: support[c] * 8 + 8, c] = rng.uniform(0.5, 1.0, 8)
    model.get_layer("h").kernel.assign(kernel + rng.uniform(0, 0.01, kernel.shape).astype("float32"))

    def kept_by_blocks(k):
        blocks = np.abs(k).T.reshape(8, 4, 16, 4).sum((1, 3))  # [block rows, block cols]
        return np.sort(blocks.ravel())[-blocks.size // 4:].sum() / np.abs(k).sum()

    before = kept_by_blocks(np.asarray(model.get_layer("h").kernel))
    permute_channels(model, block=(4, 4))
    after = kept_by_blocks(np.asarray(model.get_layer("h").kernel))
    assert before < 0.8 and after > 0.95, (before, after)  # 0.96: every family block, plus the largest noise blocks


def test_grouped_and_channels_first_convolutions_keep_their_order():
    model = keras.Sequential([keras.Input((8, 8, 8)), L.Conv2D(16, 3, groups=2, name="grouped"), L.ReLU(),
                              L.Conv2D(16, 3, name="plain"), L.Conv2D(8, 1, data_format="channels_first", name="cf"),
                              L.Flatten(), L.Dense(3)])
    assert permute_channels(randomize(model), block="4x4") == {}


def test_one_row_blocks_and_layer_selection():
    model = randomize(models.lenet300_100())
    assert permute_channels(model, block=(1, 4)) == {}
    assert set(permute_channels(model, block="auto", layers=["fc2"])) == {"fc2"}


@pytest.mark.parametrize("kwargs,match", [
    ({"block": None}, "block=None"),
    ({"block": "3x4"}, "block"),
    ({"block": "4x4", "layers": ["nope"]}, "nope"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        permute_channels(models.lenet300_100(), **kwargs)


def test_refuses_a_model_with_training_state():
    model = models.lenet300_100()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.zeros((8, 28, 28, 1), "float32")
    model.fit(x, np.zeros(8, "int32"), epochs=1, verbose=0, callbacks=[tfq.PruningCallback(0.5, block="4x4")])
    with pytest.raises(ValueError, match="training state"):
        permute_channels(model, block="4x4")


@pytest.mark.parametrize("permute", [True, False, None])
def test_compress_permutes_hidden_channels(permute):
    """Data-free compression permutes only when asked (None: with data only)."""
    model = randomize(models.lenet300_100())
    x = np.random.default_rng(0).uniform(size=(16, 28, 28, 1)).astype("float32")
    small = tfq.compress(model, "ternary", sparsity=0.5, block="4x4", skip_first_last=False, verbose=0,
                         permute=permute)
    # Projection and equalization keep each kept weight's sign: the signs of
    # fc1 agree with the float model's at the same places only when its
    # columns stayed in place.
    new, old = np.asarray(small.get_layer("fc1").kernel), np.asarray(model.get_layer("fc1").kernel)
    agree = np.mean(np.sign(new[new != 0]) == np.sign(old[new != 0]))
    assert agree < 0.8 if permute else agree == 1.0
    assert small(x).shape == (16, 10)


def test_compress_with_data_permutes_by_default():
    model = randomize(models.lenet300_100())
    x = np.random.default_rng(0).uniform(size=(64, 28, 28, 1)).astype("float32")
    y = np.random.default_rng(1).integers(0, 10, 64)
    small = tfq.compress(model, "ternary", sparsity=0.5, block="4x4", data=(x, y), epochs=1, verbose=0)
    new, old = np.asarray(small.get_layer("fc2").kernel), np.asarray(model.get_layer("fc2").kernel)
    agree = np.mean(np.sign(new[new != 0]) == np.sign(old[new != 0]))
    assert agree < 0.8  # fc2's rows and columns moved (one epoch of training flips few signs)


@pytest.mark.parametrize("app,permuted", [("ResNet50", 32), ("MobileNetV2", 20)])
def test_keras_applications(app, permuted):
    """Functional graphs with residual adds: the bottlenecks' inner convolutions / the expand convolutions move."""
    model = getattr(keras.applications, app)(weights=None, input_shape=(32, 32, 3))
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):  # non-trivial statistics, so a misplaced channel shows
            for w in layer.weights:
                positive = "gamma" in w.path or "variance" in w.path
                value = rng.uniform(0.5, 1.5, w.shape) if positive else rng.normal(0, 0.1, w.shape)
                w.assign(value.astype("float32"))
    x = rng.normal(size=(2, 32, 32, 3)).astype("float32")
    before = np.asarray(model(x, training=False))
    assert len(permute_channels(model, block="auto")) == permuted
    np.testing.assert_allclose(np.asarray(model(x, training=False)), before, atol=1e-5 * np.abs(before).max())
