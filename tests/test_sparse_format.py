"""Format version 2 (block-sparse ops): encoding, validation, conversion, reference executor, inspect, portable."""

import numpy as np
import pytest
import keras
import tensorflow as tf

from tfq import kernels, pruning, schemes, testing
from tfq.converter import convert, format as fmt, inspect, sparse, tflite_io
from tfq.converter.reference import ReferenceInterpreter


def block_prune(model, block, sparsity, seed=0):
    """Zeroes whole random blocks of every Dense / Conv2D kernel (values stay in their sets)."""
    rng = np.random.default_rng(seed)
    for layer in kernels.iter_layers(model):
        for spec in kernels.supported_kernels(layer) or []:
            if pruning.is_depthwise(spec) or not isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
                continue
            w = spec.variable.numpy()
            grid = pruning.block_grid(spec, block)
            score = tf.constant(rng.random(w.shape), tf.float32)
            mask = pruning.block_prune_mask(score, sparsity, None, False, grid).numpy()
            spec.variable.assign(w * mask)
    return model


def _tfq_ops(data):
    fb, raw, _ = tflite_io.load_model(bytes(data))
    out = []
    for sg in fb.subgraphs:
        for op in sg.operators or []:
            name = tflite_io.op_name(fb, op)
            if name in fmt.CUSTOM_CODES:
                out.append((name, fmt.decode_options(np.asarray(op.customOptions, np.uint8).tobytes())))
    return out


@pytest.mark.parametrize("scheme", ["ternary", "pow2_3bit", "pow2_4bit"])
@pytest.mark.parametrize("block", [(32, 4), (8, 4), (4, 1)])
def test_pack_unpack_round_trip(scheme, block):
    s = schemes.get(scheme)
    rng = np.random.default_rng(1)
    table = s.code_table()
    codes = rng.choice(np.flatnonzero(np.isfinite(table)), size=(37, 101)).astype(np.uint8)
    codes[:, 40:80] = s.zero_code  # whole empty blocks
    data, opts = fmt.pack_sparse(codes, s.storage_bits, block, s.zero_code)
    opts.update(rows=37, k=101, bits=s.storage_bits, scheme=scheme, version=2, layout="block_sparse")
    assert data.size == fmt.sparse_size(opts)
    np.testing.assert_array_equal(fmt.unpack_sparse(data, opts), codes)


def _sparse_op(rows=10, k=9, block=(4, 4)):
    s = schemes.get("ternary")
    codes = np.full((rows, k), s.zero_code, np.uint8)
    codes[0, 0] = codes[5, 8] = codes[9, 4] = 2
    data, opts = fmt.pack_sparse(codes, 2, block, s.zero_code)
    opts.update(rows=rows, k=k, bits=2, scheme="ternary", version=2, layout="block_sparse",
                weight_shape=[rows, k], activation="NONE")
    return data, opts


@pytest.mark.parametrize("damage,match", [
    ("count", "sum to"), ("index_range", "out of range"), ("order", "strictly increasing"),
    ("size", "bytes, expected"),
])
def test_bad_block_arrays_are_refused(damage, match):
    data, opts = _sparse_op()
    data = data.copy()
    nbr, nbc = fmt.block_counts(opts)
    if damage == "count":
        data[0] += 1
    elif damage == "index_range":
        data[2 * nbr] = nbc
    elif damage == "order":
        # Block row 1 holds two blocks (columns 0 and 2 of row 5 -> block columns 0 and 2); swap them.
        data, opts = _sparse_op(rows=10, k=9)
        codes = np.full((10, 9), 1, np.uint8)
        codes[4, 0] = codes[4, 8] = 2
        data, o = fmt.pack_sparse(codes, 2, (4, 4), 1)
        opts.update(o)
        data = data.copy()
        i = 2 * nbr
        data[i], data[i + 1] = data[i + 1], data[i]
    else:
        data = data[:-1]
    with pytest.raises(ValueError, match=match):
        fmt.unpack_sparse(data, opts)


@pytest.mark.parametrize("change,match", [
    ({"index_bits": 16}, "index_bits"), ({"block_rows": 3}, "block_rows"), ({"nnz_blocks": 10 ** 6}, "nnz_blocks"),
    ({"scheme": "binary", "bits": 1}, "no zero"), ({"layout": "diagonal"}, "block_sparse"),
])
def test_bad_v2_options_are_refused(change, match):
    _, opts = _sparse_op()
    opts.update(change)
    with pytest.raises(ValueError, match=match):
        fmt.validate_options(opts, "TFQ_FULLY_CONNECTED", "test op")


def test_depthwise_cannot_be_sparse():
    _, opts = _sparse_op()
    opts.update(weight_shape=[1, 3, 3, 9], rows=9, k=9, stride_h=1, stride_w=1, dilation_h=1, dilation_w=1,
                padding="SAME", depth_multiplier=1)
    with pytest.raises(ValueError, match="DEPTHWISE"):
        fmt.validate_options(opts, "TFQ_DEPTHWISE_CONV_2D", "test op")


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("scheme", ["ternary", "pow2_3bit"])
def test_pruned_model_converts_block_sparse_and_runs_exactly(kind, scheme):
    model = testing.random_compressed_model(scheme, kind, seed=3)
    block_prune(model, (8, 4), 0.75, seed=4)
    dense = convert(model)
    data = convert(model, sparse="auto")
    ops = _tfq_ops(data)
    sparse_ops = [o for _, o in ops if fmt.is_sparse(o)]
    assert sparse_ops and all(o["version"] == 2 for o in sparse_ops)
    assert all((o["block_rows"], o["block_cols"]) in sparse.CANDIDATE_BLOCKS for o in sparse_ops)
    assert len(data) < len(dense)
    assert any(r.layout.startswith("block_sparse") for r in data.report)
    x = np.random.default_rng(5).normal(size=(2,) + tuple(model.input_shape[1:])).astype(np.float32)
    # The same weights, the same arithmetic: v2 equals v1 exactly in both reference modes.
    for mode in ("float", "delegate"):
        np.testing.assert_array_equal(ReferenceInterpreter(data, mode).predict(x),
                                      ReferenceInterpreter(dense, mode).predict(x))
    np.testing.assert_allclose(ReferenceInterpreter(data, "float").predict(x), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_dense_model_stays_dense_by_default():
    model = testing.random_compressed_model("ternary", "mlp", seed=3)
    # dense: version 1, or version 2 `dense` where it is smaller; never block-sparse
    assert not any(fmt.is_sparse(o) for _, o in _tfq_ops(convert(model, sparse="auto")))
    forced = convert(model, sparse=True)
    assert all(fmt.is_sparse(o) for _, o in _tfq_ops(forced))
    with pytest.raises(ValueError, match="sparse must be"):
        convert(model, sparse="yes")


def test_inspect_shows_blocks_and_index_bytes():
    model = testing.random_compressed_model("ternary", "mlp", seed=3)
    block_prune(model, (32, 4), 0.9, seed=1)
    info = inspect.inspect_model(bytes(convert(model, sparse="auto")))
    rows = [r for r in info["ops"] if r["kind"] == "tfq" and not r["layout"].startswith("dense")]
    assert rows and all(r["index_bytes"] > 0 and r["code_bytes"] > 0 for r in rows)
    assert all(r["sparsity"] >= 0.85 for r in rows)
    table = inspect.format_table(info)
    assert "layout" in table.splitlines()[1] and any(f"block {r['layout']}" in table for r in rows)


def test_portable_path_on_block_sparse_weights():
    model = testing.random_compressed_model("ternary", "mlp", seed=6)
    block_prune(model, (32, 4), 0.9, seed=2)
    data = convert(model, portable=True)
    x = np.random.default_rng(7).normal(size=(3,) + tuple(model.input_shape[1:])).astype(np.float32)
    np.testing.assert_allclose(ReferenceInterpreter(data, "float").predict(x), model.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_rows_too_long_for_16_bit_indices_are_refused_or_kept_dense():
    _, opts = _sparse_op()
    opts.update(k=4 * 65536, weight_shape=[10, 4 * 65536], block_cols=4, index_bits=16)
    with pytest.raises(ValueError, match="at most 65535"):
        fmt.validate_options(opts, "TFQ_FULLY_CONNECTED", "test op")
    codes = np.ones((1, 65536 + 1), np.uint8)  # ternary zeros except the last position
    codes[0, -1] = 2
    with pytest.raises(ValueError, match="at most 65535"):
        fmt.pack_sparse(codes, 2, (1, 1), 1)
    data, layout = sparse.choose(codes, "ternary", "TFQ_FULLY_CONNECTED", True)
    assert layout["block_cols"] > 1  # the 1-column shapes are skipped for this row length
