"""Block-structured pruning: block shapes, the block grid of each layer kind, whole blocks pruned in fit."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import tfq
from tfq import kernels, pruning, quantizers, record

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def block_view(mask, grid):
    """The mask as [groups, block rows, rows, block cols, cols], padding marked -1."""
    pad = grid.to_blocks(tf.ones(grid.shape)) == 0
    return np.where(pad.numpy(), -1.0, grid.to_blocks(tf.convert_to_tensor(mask, tf.float32)).numpy())


def assert_whole_blocks(mask, grid):
    """Every block of the mask is all ones or all zeros (padding ignored)."""
    v = block_view(mask, grid)
    for g in range(v.shape[0]):
        for br in range(v.shape[1]):
            for bc in range(v.shape[3]):
                vals = set(np.unique(v[g, br, :, bc, :]).tolist()) - {-1.0}
                assert len(vals) == 1, (g, br, bc, vals)


@pytest.mark.parametrize("block,want", [(None, None), ("auto", "auto"), ("4x1", (4, 1)),
                                        ((16, 4), (16, 4)), ("1X16", (1, 16))])
def test_block_shapes_accepted(block, want):
    assert pruning.check_block(block) == want


@pytest.mark.parametrize("bad", [(3, 4), (4, 5), (64, 1), (0, 4), "4x", "big", (4,), 4, (True, 4)])
def test_bad_block_shape_is_refused(bad):
    with pytest.raises(ValueError, match="block"):
        tfq.PruningCallback(0.5, block=bad)


def _spec(layer, name="kernel"):
    return next(s for s in kernels.supported_kernels(layer) if s.name == name)


@pytest.mark.parametrize("kind", ["dense", "conv", "conv_transpose", "lstm", "gru", "separable"])
def test_block_mask_prunes_whole_blocks(kind):
    keras.utils.set_random_seed(0)
    if kind == "dense":
        layer, shape, name = keras.layers.Dense(10), (None, 37), "kernel"
    elif kind == "conv":
        layer, shape, name = keras.layers.Conv2D(12, 3), (None, 8, 8, 5), "kernel"
    elif kind == "conv_transpose":
        layer, shape, name = keras.layers.Conv2DTranspose(6, 3), (None, 5, 5, 7), "kernel"
    elif kind == "lstm":
        layer, shape, name = keras.layers.LSTM(6), (None, 4, 9), "recurrent_kernel"
    elif kind == "gru":
        layer, shape, name = keras.layers.GRU(5), (None, 4, 9), "kernel"
    else:
        layer, shape, name = keras.layers.SeparableConv2D(12, 3), (None, 8, 8, 6), "pointwise_kernel"
    layer.build(shape)
    spec = _spec(layer, name)
    grid = pruning.block_grid(spec, (4, 4))
    w = tf.convert_to_tensor(spec.variable)
    mask = pruning.block_prune_mask(tf.abs(w), 0.5, None, False, grid).numpy()
    assert mask.shape == tuple(spec.variable.shape)
    assert_whole_blocks(mask, grid)
    g, nbr, nbc = grid.counts
    pruned_blocks = int(np.sum(block_view(mask, grid).max(axis=(2, 4)) == 0))
    assert pruned_blocks == round(0.5 * g * nbr * nbc)
    if kind in ("lstm", "gru"):
        # Cut per gate: no block holds rows of two gates.
        units = layer.units
        assert grid.groups == (4 if kind == "lstm" else 3) and grid.out == grid.groups * units
    # The blocks pruned are the ones with the smallest mean |w|.
    rows, _ = quantizers.to_rows(tf.abs(w), grid.axes)
    assert rows.shape == (grid.out, grid.k)


def test_auto_block_by_layer_kind_and_narrow_kernels():
    def shape(spec):
        g = pruning.block_grid(spec, "auto")
        return g.rows, g.cols

    wide, narrow, lstm = keras.layers.Dense(64), keras.layers.Dense(3), keras.layers.LSTM(12)
    wide.build((None, 9)), narrow.build((None, 9)), lstm.build((None, 3, 9))
    assert pruning.AUTO_BLOCKS == {"conv": (16, 4), "dense": (4, 4), "large_dense": (16, 4)}
    assert shape(_spec(wide)) == (4, 4)
    assert shape(_spec(narrow)) == (2, 4)
    assert shape(_spec(lstm)) == (4, 4)
    assert shape(_spec(lstm, "recurrent_kernel")) == (4, 4)
    conv, conv8, tconv = keras.layers.Conv2D(64, 3), keras.layers.Conv2D(8, 3), keras.layers.Conv2DTranspose(32, 3)
    conv.build((None, 8, 8, 3)), conv8.build((None, 8, 8, 3)), tconv.build((None, 8, 8, 3))
    assert shape(_spec(conv)) == (16, 4)
    assert shape(_spec(conv8)) == (4, 4)  # at least AUTO_MIN_BLOCK_ROWS block rows, rows not below 4
    assert shape(_spec(tconv)) == (8, 4)
    conv2, conv50 = keras.layers.Conv2D(2, 3), keras.layers.Conv2D(50, 3)
    conv2.build((None, 8, 8, 3)), conv50.build((None, 8, 8, 3))
    assert shape(_spec(conv2)) == (2, 4)
    assert shape(_spec(conv50)) == (8, 4)
    sep = keras.layers.SeparableConv2D(64, 3)
    sep.build((None, 8, 8, 3))
    assert shape(_spec(sep, "pointwise_kernel")) == (16, 4)


def test_auto_block_of_large_dense_kernels():
    def shape(layer, input_shape, name="kernel"):
        layer.build(input_shape)
        g = pruning.block_grid(_spec(layer, name), "auto")
        return g.rows, g.cols

    assert pruning.AUTO_LARGE_DENSE_WEIGHTS == 1 << 20
    assert shape(keras.layers.Dense(1024), (None, 1024)) == (16, 4)  # 2**20 weights: large
    assert shape(keras.layers.Dense(1024), (None, 1023)) == (4, 4)
    assert shape(keras.layers.Dense(32), (None, 1 << 15)) == (8, 4)  # large, but 4 block rows at least
    assert shape(keras.layers.Dense(10), (None, 1 << 17)) == (4, 4)
    # Per gate: an LSTM kernel of 4 gates x 512 units x 512 inputs is 2**18 weights per gate.
    assert shape(keras.layers.LSTM(512), (None, 3, 512)) == (4, 4)
    assert shape(keras.layers.LSTM(1024), (None, 3, 1024)) == (16, 4)
    assert shape(keras.layers.LSTM(1024), (None, 3, 8), "recurrent_kernel") == (16, 4)
    # Convolutions are not Dense kernels: a large one keeps the convolution shape.
    assert shape(keras.layers.Conv2D(512, 3), (None, 8, 8, 512)) == (16, 4)
    assert pruning.auto_shape("dense", 4096, 4096) == (16, 4)
    assert pruning.auto_shape("dense", 300, 784) == (4, 4)
    with pytest.raises(ValueError, match="kind"):
        pruning.auto_shape("lstm", 4, 4)


def test_block_mask_keeps_pruned_blocks_without_regrowth():
    layer = keras.layers.Dense(8)
    layer.build((None, 16))
    spec = _spec(layer)
    grid = pruning.block_grid(spec, (2, 4))
    w = tf.convert_to_tensor(spec.variable)
    first = pruning.block_prune_mask(tf.abs(w), 0.25, None, False, grid)
    # Scores turned around: the pruned blocks would now win, but stay pruned.
    second = pruning.block_prune_mask(1.0 / (tf.abs(w) + 1e-3), 0.5, first, False, grid).numpy()
    assert np.all(second[first.numpy() == 0] == 0)
    assert_whole_blocks(second, grid)


def test_depthwise_is_left_dense_or_refused_when_named():
    inp = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, name="c1")(inp)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = keras.layers.Conv2D(8, 1, name="pw")(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inp, keras.layers.Dense(3, name="fc")(x))
    model.compile("adam", "mse")
    cb = tfq.PruningCallback(0.5, block=(4, 4))
    cb.set_model(model)
    assert [s.key for s in cb.specs] == ["pw/kernel"]  # default policy: first/last float, depthwise dense
    with pytest.raises(ValueError, match="'dw'.*cannot be block-pruned"):
        tfq.PruningCallback(0.5, block=(4, 4), layers={"dw": True, "pw": True}).set_model(model)


def test_fit_prunes_blocks_with_admm(mnist_small):
    (x, y), (xt, yt) = mnist_small
    keras.utils.set_random_seed(0)
    model = tfq.models.lenet300_100()
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    cb = tfq.PruningCallback(0.8, block="4x4", frequency=4)
    model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[cb, tfq.ADMMCallback("ternary", update_every=4)])
    spec = cb.specs[0]
    assert spec.key == "fc2/kernel"
    w = spec.variable.numpy()
    grid = pruning.block_grid(spec, (4, 4))
    mask = cb.state.mask[0].numpy()
    assert_whole_blocks(mask, grid)
    assert float(np.mean(mask == 0)) == pytest.approx(0.8, abs=0.01)
    # Pruned blocks are zero; ternary zeros inside live blocks come on top.
    assert np.all(w[mask == 0] == 0) and float(np.mean(w == 0)) >= 0.8
    assert record.read(model.get_layer("fc2"))["kernel"]["scheme"] == "ternary"
    # Converts and runs as the Keras model does.
    data = tfq.convert(model)
    from tfq.converter.reference import ReferenceInterpreter

    np.testing.assert_allclose(ReferenceInterpreter(data, "float").predict(xt[:8]), model.predict(xt[:8], verbose=0),
                               rtol=1e-4, atol=1e-4)


def test_compress_block_without_and_with_data(mnist_small):
    (x, y), (xt, yt) = mnist_small
    keras.utils.set_random_seed(1)
    model = tfq.models.lenet5()
    small = tfq.compress(model, "ternary", sparsity=0.9, block="4x4", verbose=0)
    spec = _spec(small.get_layer("conv2"))
    grid = pruning.block_grid(spec, (4, 4))
    live = (spec.variable.numpy() != 0).astype(np.float32)
    blocks_alive = block_view(live, grid).max(axis=(2, 4))
    assert float(np.mean(blocks_alive == 0)) == pytest.approx(0.9, abs=0.01)
    with pytest.raises(ValueError, match="needs a sparsity"):
        tfq.compress(model, "ternary", block="4x4", verbose=0)
    with pytest.raises(ValueError, match="does not divide"):
        tfq.compress(model, "ternary", sparsity=0.5, block=(3, 3), verbose=0)
    small, rep = tfq.compress(model, "ternary", sparsity=0.5, block=(4, 1), data=(x, y), epochs=2, verbose=0,
                              return_report=True)
    assert rep.settings["block"] == (4, 1)
    assert record.read(small.get_layer("conv2"))["kernel"]["scheme"] == "ternary"


def test_every_block_row_keeps_a_block():
    layer = keras.layers.Dense(10)
    layer.build((None, 100))
    spec = _spec(layer)
    grid = pruning.block_grid(spec, (8, 4))
    # Scores that put every block of the second block row (classes 8, 9) last.
    score = np.ones((100, 10), np.float32)
    score[:, 8:] = 1e-3
    mask = pruning.block_prune_mask(tf.constant(score), 0.6, None, False, grid).numpy()
    assert mask[:, 8:].any() and mask[:, :8].any()
    assert_whole_blocks(mask, grid)
    # Still exactly round(0.6 * 50) blocks pruned.
    assert int(np.sum(block_view(mask, grid).max(axis=(2, 4)) == 0)) == 30


# --------------------------------------------------------------------------
# How the target is spread over the kernels (distribution=)
# --------------------------------------------------------------------------

def test_erk_sparsities_meet_the_overall_target():
    shapes = [(784, 300), (300, 100), (100, 10)]
    s = pruning.layer_sparsities(shapes, 0.95, "erk")
    sizes = np.array([np.prod(t) for t in shapes])
    assert float(np.sum(np.array(s) * sizes) / sizes.sum()) == pytest.approx(0.95, abs=1e-9)
    # Densities in proportion to sum(shape) / prod(shape): large kernels pruned harder.
    dens = 1.0 - np.array(s)
    ratio = np.array([sum(t) / np.prod(t) for t in shapes])
    np.testing.assert_allclose(dens / ratio, dens[0] / ratio[0])
    assert s[0] > 0.95 > s[1] > s[2]
    assert pruning.layer_sparsities(shapes, 0.95, "uniform") == [0.95] * 3
    assert pruning.layer_sparsities(shapes, 0.0, "erk") == [0.0] * 3


def test_erk_leaves_kernels_dense_that_would_exceed_density_one():
    # LeNet-5 at 90%: the first convolution (500 weights) and the output layer
    # (5,000) would get a density above 1; they stay dense, the others share the rest.
    shapes = [(5, 5, 1, 20), (5, 5, 20, 50), (800, 500), (500, 10)]
    s = pruning.layer_sparsities(shapes, 0.9, "erk")
    sizes = np.array([np.prod(t) for t in shapes])
    assert s[0] == 0.0 and s[3] == 0.0 and 0.9 < s[1] < 1 and 0.9 < s[2] < 1
    assert float(np.sum(np.array(s) * sizes) / sizes.sum()) == pytest.approx(0.9, abs=1e-9)


def test_unknown_distribution_is_refused():
    with pytest.raises(ValueError, match="distribution must be one of 'uniform', 'erk'; got 'global'"):
        tfq.PruningCallback(0.5, distribution="global")
    with pytest.raises(ValueError, match="distribution"):
        tfq.compress(tfq.models.lenet300_100(), "ternary", sparsity=0.5, distribution="ERK", verbose=0)


@pytest.mark.parametrize("block", [None, "4x4"])
def test_fit_with_erk_reaches_the_overall_target(mnist_small, block):
    (x, y), _ = mnist_small
    keras.utils.set_random_seed(0)
    model = tfq.models.lenet300_100()
    model.compile(keras.optimizers.Adam(1e-3), LOSS)
    cb = tfq.PruningCallback(0.9, block=block, frequency=4, skip_first_last=False, distribution="erk")
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    want = pruning.layer_sparsities([tuple(s.variable.shape) for s in cb.specs], 0.9, "erk")
    for spec, target, mask in zip(cb.specs, want, cb.state.mask):
        m = mask.numpy()
        if block is None:
            assert float(np.mean(m == 0)) == pytest.approx(target, abs=0.01), spec.key
        else:
            grid = pruning.block_grid(spec, (4, 4))
            assert_whole_blocks(m, grid)
            alive = block_view(m, grid).max(axis=(2, 4))
            assert float(np.mean(alive == 0)) == pytest.approx(target, abs=0.01), spec.key
    zeros = sum(int(np.sum(s.variable.numpy() == 0)) for s in cb.specs)
    total = sum(int(np.prod(s.variable.shape)) for s in cb.specs)
    assert zeros / total == pytest.approx(0.9, abs=0.01)


def test_compress_data_free_with_erk():
    keras.utils.set_random_seed(2)
    model = tfq.models.lenet300_100()
    small, rep = tfq.compress(model, "ternary", sparsity=0.95, distribution="erk", skip_first_last=False,
                              corrections=False, verbose=0, return_report=True)
    sp = {name: float(np.mean(small.get_layer(name).kernel.numpy() == 0)) for name in ("fc1", "fc2", "fc3")}
    want = pruning.layer_sparsities([(784, 300), (300, 100), (100, 10)], 0.95, "erk")
    # The ternary projection zeros some more weights on top of the pruned ones
    # (a third of fc3's random weights fall below its threshold).
    for (name, got), target in zip(sp.items(), want):
        assert got >= target - 0.002, name
    assert sp["fc1"] < 0.97 and sp["fc3"] < 0.5
    assert rep.settings["distribution"] == "erk"
