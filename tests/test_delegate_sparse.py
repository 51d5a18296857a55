"""Format version 2 (block-sparse) ops in the delegate: exact, and validated before use.

Each converted model is rewritten (tests/helpers/sparse_models.py) into a
pair with the same zeroed weight blocks: every TFQ_FULLY_CONNECTED /
TFQ_CONV_2D written densely (version 1) and block-sparse (version 2). The
delegate's scalar block-sparse path computes the same int32 accumulators
and runs the same epilogue, so the two outputs must be equal bit for bit,
for every block shape, sparsity (0% to an all-zero layer), scheme with a
zero, thread count and kernel table, with odd sizes and partial edge
blocks, batches, every padding/stride/dilation kind the models hold, and
the int8 hand-over between ReLU6 convolutions (a v2 convolution as producer
and as reader). Crafted v2 ops are refused with a message naming the
problem (docs/format.md, "Validation").
"""

import pathlib
import sys

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter, load_delegate

import tfq
from tfq.converter import convert
from tfq.converter import format as fmt
from tfq.converter import tflite_io
from tfq.testing import random_compressed_tflite, set_in_set_weights

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "helpers"))
import sparse_models  # noqa: E402
from test_delegate_safety import available_isas  # noqa: E402

BLOCKS = ((32, 4), (16, 4), (4, 4), (1, 4), (8, 1))
SPARSITIES = (0.0, 0.5, 0.9, 1.0)
SCHEMES = ("ternary", "pow2_3bit", "pow2_4bit")


def odd_fc_model(scheme, seed=0):
    """Dense layers on a [5, 45] input (5 rows per invoke), 45 -> 37 -> 10: odd sizes, partial blocks."""
    import keras
    inputs = keras.Input((5, 45))
    x = keras.layers.Dense(37, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(19, activation="relu6", name="fc2")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="fc3")(x)
    return set_in_set_weights(keras.Model(inputs, outputs), scheme, seed)


def odd_conv_model(scheme, seed=0):
    """ReLU6 convolutions handing over to each other (stride 2 SAME, 3x3 SAME, 1x1), then a dilated one.

    TFLite writes the dilated convolution as SPACE_TO_BATCH_ND, a VALID
    convolution and BATCH_TO_SPACE_ND; test_strides_dilations_paddings edits
    the options to give TFQ_CONV_2D itself strides and dilations.
    """
    import keras
    inputs = keras.Input((13, 11, 5))
    x = keras.layers.Conv2D(7, 3, strides=2, padding="same", activation="relu6", name="c1")(inputs)
    x = keras.layers.Conv2D(13, 3, padding="same", activation="relu6", name="c2")(x)
    x = keras.layers.Conv2D(6, 1, activation="relu6", name="c3")(x)
    x = keras.layers.Conv2D(5, (3, 2), dilation_rate=2, padding="valid", activation="relu",
                            name="c4")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    return set_in_set_weights(keras.Model(inputs, outputs), scheme, seed)


def single_conv_model(scheme, seed=0):
    """One 3x3 VALID convolution (45 x 7 weights) whose output is the model output."""
    import keras
    inputs = keras.Input((13, 11, 5))
    outputs = keras.layers.Conv2D(7, 3, padding="valid", name="c")(inputs)
    return set_in_set_weights(keras.Model(inputs, outputs), scheme, seed)


_CACHE = {}


def converted(kind, scheme):
    """Converted v1 image of a test model (cached per module run)."""
    key = (kind, scheme)
    if key not in _CACHE:
        if kind == "fc":
            _CACHE[key] = bytes(convert(odd_fc_model(scheme)))
        elif kind == "conv":
            _CACHE[key] = bytes(convert(odd_conv_model(scheme)))
        elif kind == "single_conv":
            _CACHE[key] = bytes(convert(single_conv_model(scheme)))
        else:
            _CACHE[key] = bytes(random_compressed_tflite(scheme, kind, seed=0)[0])
    return _CACHE[key]


def run(image, x, threads=1, isa=None, verbosity=None):
    options = {"num_threads": str(threads)}
    if isa is not None:
        options["isa"] = isa
    if verbosity is not None:
        options["verbosity"] = str(verbosity)
    interp = Interpreter(model_content=image,
                         experimental_delegates=[load_delegate(tfq.delegate_path(), options)])
    detail = interp.get_input_details()[0]
    if tuple(detail["shape"]) != x.shape:
        interp.resize_tensor_input(detail["index"], x.shape)
    interp.allocate_tensors()
    interp.set_tensor(detail["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def inputs_for(image, batch=1, seed=0):
    interp = Interpreter(model_content=image)
    shape = list(interp.get_input_details()[0]["shape"])
    shape[0] = batch
    return np.random.default_rng(seed).normal(0, 1, size=shape).astype(np.float32)


def assert_pair_equal(v1, v2, x, threads, isa=None, what=""):
    a = run(v1, x, threads, isa)
    b = run(v2, x, threads, isa)
    for da, db in zip(a, b):
        assert np.array_equal(da, db), (what, threads, isa, np.nanmax(np.abs(da - db)))
    return a


@pytest.mark.parametrize("kind,scheme", [(k, s) for k in ("fc", "conv") for s in SCHEMES]
                         + [("chain", "ternary"), ("cnn", "pow2_4bit")])
def test_sparse_equals_dense(kind, scheme):
    """v2 == v1 exactly: block shapes x sparsities x threads 1, 2 (conv models also at batch 2)."""
    base = converted(kind, scheme)
    batches = (1, 2) if kind in ("conv", "cnn") else (1,)
    nontrivial = False
    for bi, block in enumerate(BLOCKS):
        for si, sparsity in enumerate(SPARSITIES):
            v1, v2 = sparse_models.sparse_pair(base, block, sparsity, seed=bi * 10 + si)
            assert sparse_models.sparse_ops(v2), "no op was made block-sparse"
            for batch in batches:
                x = inputs_for(base, batch, seed=si)
                for threads in (1, 2):
                    out = assert_pair_equal(v1, v2, x, threads, what=(block, sparsity, batch))
                    nontrivial = nontrivial or (sparsity < 1 and np.ptp(out[0]) > 0)
    assert nontrivial


@pytest.mark.parametrize("kind", ["fc", "conv"])
def test_converter_sparse_output_equals_dense(kind):
    """tfq.convert(sparse=True) (the converter's own v2 encoding and block choice) == sparse=False."""
    import keras

    builder = odd_fc_model if kind == "fc" else odd_conv_model
    model = builder("pow2_3bit", seed=4)
    rng = np.random.default_rng(4)
    for layer in model.layers:  # whole zero blocks of 8 output channels x 4 positions
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D)):
            w = np.array(layer.kernel)
            flat = w.reshape(-1, w.shape[-1])  # [k, O] in the converter's (kh, kw, i) order
            for c0 in range(0, flat.shape[1], 8):
                for p0 in range(0, flat.shape[0], 4):
                    if rng.random() < 0.7:
                        flat[p0:p0 + 4, c0:c0 + 8] = 0
            layer.kernel.assign(flat.reshape(w.shape))
    dense, sparse = bytes(convert(model)), bytes(convert(model, sparse=True))
    assert not sparse_models.sparse_ops(dense) and sparse_models.sparse_ops(sparse)
    x = inputs_for(dense, seed=4)
    for threads in (1, 2):
        assert_pair_equal(dense, sparse, x, threads, what=kind)


def test_sparse_equals_dense_on_every_kernel_table():
    """The quantization and epilogue come from the pinned table; the sparse GEMM is the same."""
    for kind in ("conv", "fc"):
        v1, v2 = sparse_models.sparse_pair(converted(kind, "ternary"), (4, 4), 0.5, seed=3)
        x = inputs_for(v1)
        ref = None
        for isa in available_isas():
            for threads in (1, 2):
                out = assert_pair_equal(v1, v2, x, threads, isa, what=kind)
                ref = out if ref is None else ref
                for a, b in zip(ref, out):
                    assert np.array_equal(a, b), (kind, isa)


def test_handover_chain_with_sparse_convolutions(capfd):
    """v2 ReLU6 convolutions still form one int8 hand-over partition (producer and reader)."""
    v1, v2 = sparse_models.sparse_pair(converted("conv", "ternary"), (4, 4), 0.5, seed=1)
    x = inputs_for(v1)
    run(v2, x, verbosity=2)
    err = capfd.readouterr().err
    assert "block-sparse" in err and "chained 3 nodes" in err, err
    assert err.count("int8 out") >= 2, err
    assert_pair_equal(v1, v2, x, 1)


@pytest.mark.parametrize("stride,dilation,padding", [(2, 1, "SAME"), (1, 2, "VALID"), (2, 2, "SAME"),
                                                      (3, 1, "VALID")])
def test_strides_dilations_paddings(stride, dilation, padding):
    """TFQ_CONV_2D options edited in both images: the delegate sizes the output from them."""
    v1, v2 = sparse_models.sparse_pair(converted("single_conv", "pow2_3bit"), (4, 4), 0.5, seed=2)
    edited = []
    for image in (v1, v2):
        i, opts = _first_op(image, "TFQ_CONV_2D")
        opts.update(stride_h=stride, stride_w=stride, dilation_h=dilation, dilation_w=dilation,
                    padding=padding)
        edited.append(sparse_models.edit_op(image, 0, i, options=opts))
    x = inputs_for(v1, batch=2)
    for threads in (1, 2):
        assert_pair_equal(edited[0], edited[1], x, threads, what=(stride, dilation, padding))


def test_partial_block_padding_is_not_read():
    """Codes at positions outside the matrix (a partial edge block) are never validated nor read."""
    v1, v2 = sparse_models.sparse_pair(converted("fc", "ternary"), (1, 4), 0.0, seed=0)
    g, i, name, opts, data = sparse_models.sparse_ops(v2)[0]
    assert opts["k"] % 4 == 1  # k = 45: the last block column holds 1 real position of 4
    nbr, nbc = fmt.block_counts(opts)
    counts = data[:2 * nbr].view("<u2")
    indices = data[2 * nbr:2 * nbr + opts["nnz_blocks"]]
    codes = data[2 * nbr + opts["nnz_blocks"]:]  # 1 byte per 1x4 ternary block
    edge = np.nonzero(indices == nbc - 1)[0]
    assert edge.size and counts.sum() == opts["nnz_blocks"]
    bad = data.copy()
    codes_bad = bad[2 * nbr + opts["nnz_blocks"]:]
    codes_bad[edge] |= 0b11111100  # fields 1-3 (outside the matrix) = 3, invalid for ternary
    assert not np.array_equal(codes, codes_bad)
    v2_bad = sparse_models.edit_op(v2, g, i, weights=bad)
    assert_pair_equal(v1, v2_bad, inputs_for(v1), 1)


def _first_op(image, name):
    """(subgraph 0 op index, decoded options) of the first op called `name`."""
    fb, _, _ = tflite_io.load_model(image)
    for i, op in enumerate(fb.subgraphs[0].operators):
        if tflite_io.op_name(fb, op) == name:
            return i, fmt.decode_options(np.asarray(op.customOptions, np.uint8).tobytes())
    raise AssertionError(f"no {name} in the model")


def test_version1_ignores_a_layout_key():
    """Version 1 keeps ignoring keys it does not know (docs/format.md), 'layout' included."""
    v1, _ = sparse_models.sparse_pair(converted("fc", "ternary"), (1, 4), 0.5)
    i, opts = _first_op(v1, "TFQ_FULLY_CONNECTED")
    assert opts["version"] == 1
    opts["layout"] = "block_sparse"
    edited = sparse_models.edit_op(v1, 0, i, options=opts)
    x = inputs_for(v1)
    for a, b in zip(run(v1, x), run(edited, x)):
        assert np.array_equal(a, b)


# ----------------------------------------------------------- crafted v2 ops

def _first_row_with(counts, n):
    return int(np.nonzero(counts >= n)[0][0])


def _edit_counts(fn):
    def edit(opts, data, nbr, nbc):
        counts = data[:2 * nbr].view("<u2")
        fn(counts, nbc)
        return opts, data
    return edit


def _edit_indices(fn):
    def edit(opts, data, nbr, nbc):
        counts = data[:2 * nbr].view("<u2").astype(np.int64)
        indices = data[2 * nbr:2 * nbr + opts["nnz_blocks"]]
        fn(counts, indices, nbc)
        return opts, data
    return edit


def _row_start(counts, row):
    return int(counts[:row].sum())


def _swap_first_two(counts, indices, nbc):
    b = _row_start(counts, _first_row_with(counts, 2))
    indices[b], indices[b + 1] = indices[b + 1], indices[b]


def _duplicate(counts, indices, nbc):
    b = _row_start(counts, _first_row_with(counts, 2))
    indices[b + 1] = indices[b]


def _options(**changes):
    def edit(opts, data, nbr, nbc):
        opts = dict(opts)
        for key, value in changes.items():
            if value is None:
                opts.pop(key, None)
            else:
                opts[key] = value(opts, nbr, nbc) if callable(value) else value
        return opts, data
    return edit


def _invalid_code(opts, data, nbr, nbc):
    start = 2 * nbr + opts["nnz_blocks"]
    data[start] = (data[start] & 0b11111100) | 3  # first code of stored block 0: ternary 3
    return opts, data


def _grow(opts, data, nbr, nbc):
    return opts, np.concatenate([data, np.zeros(1, np.uint8)])


# name: (edit(opts, data, nbr, nbc) -> (opts, data), expected message). The
# op is fc1 of the odd FC model (37 x 45, ternary, 1x4 blocks: 37 block rows,
# 12 block columns, 8-bit indices), half of its blocks zeroed.
BAD_OPS = {
    "counts_do_not_sum": (_edit_counts(lambda c, nbc: c.__setitem__(_first_row_with(c, 1), c[_first_row_with(c, 1)] - 1)),
                          "block counts sum to"),
    "count_above_block_columns": (_edit_counts(lambda c, nbc: c.__setitem__(0, nbc + 1)),
                                  "counts 13 blocks, there are 12 block columns"),
    "index_out_of_range": (_edit_indices(lambda c, idx, nbc: idx.__setitem__(0, nbc)),
                           "block column index 12 out of range 0..11"),
    "indices_not_increasing": (_edit_indices(_swap_first_two), "not strictly increasing"),
    "duplicated_index": (_edit_indices(_duplicate), "not strictly increasing"),
    "wrong_index_bits": (_options(index_bits=16), "index_bits = 16, expected 8"),
    "size_mismatch": (_grow, "packed codes have"),
    "binary_scheme": (_options(scheme="binary", bits=1), "a binary op cannot be block-sparse"),
    "nnz_too_large": (_options(nnz_blocks=lambda o, nbr, nbc: nbr * nbc + 1),
                      "nnz_blocks = 445 exceeds the 37 x 12 blocks"),
    "invalid_code_in_stored_block": (_invalid_code, "invalid ternary code 3 in stored block 0"),
    "total_overflows": (_options(nnz_blocks=1 << 62), "the packed size overflows 64 bits"),
    "missing_layout": (_options(layout=None), "custom option 'layout' is missing"),
    "unknown_layout": (_options(layout="csr"), "unknown layout 'csr'"),
    "bad_block_shape": (_options(block_rows=3), "block shape 3x4 is not supported"),
    "missing_nnz_blocks": (_options(nnz_blocks=None), "custom option 'nnz_blocks' is missing"),
    "unknown_version": (_options(version=3), "unsupported format version 3 (supported: 1, 2)"),
}


def _refusal(image, threads=1):
    with pytest.raises((RuntimeError, ValueError)) as info:
        run(image, inputs_for(image), threads)
    return str(info.value)


@pytest.fixture(scope="module")
def bad_base():
    _, v2 = sparse_models.sparse_pair(converted("fc", "ternary"), (1, 4), 0.5, seed=7)
    g, i, name, opts, data = sparse_models.sparse_ops(v2)[0]
    assert name == "TFQ_FULLY_CONNECTED" and (opts["rows"], opts["k"]) == (37, 45)
    return v2, g, i, opts, data


@pytest.mark.parametrize("case", sorted(BAD_OPS))
def test_crafted_sparse_op_is_refused(bad_base, case):
    v2, g, i, opts, data = bad_base
    nbr, nbc = fmt.block_counts(opts)
    edit, message = BAD_OPS[case]
    new_opts, new_data = edit(dict(opts), data.copy(), nbr, nbc)
    image = sparse_models.edit_op(v2, g, i, options=new_opts, weights=new_data)
    text = _refusal(image, threads=2)
    assert "tfq delegate: refusing node" in text and "TFQ_FULLY_CONNECTED" in text, text
    assert message in text, text


def test_depthwise_cannot_be_block_sparse():
    base = converted("cnn", "ternary")
    i, opts = _first_op(base, "TFQ_DEPTHWISE_CONV_2D")
    opts.update(version=2, layout="block_sparse", block_rows=1, block_cols=4, nnz_blocks=0, index_bits=8)
    text = _refusal(sparse_models.edit_op(base, 0, i, options=opts))
    assert "TFQ_DEPTHWISE_CONV_2D" in text and "cannot be block-sparse" in text, text


def test_large_dense_layer_auto_blocks_end_to_end():
    """A Dense kernel of 2**20 weights: block="auto" prunes it in 16x4 blocks, the converter stores it
    block-sparse, and LiteRT + delegate runs it exactly as the dense encoding, at 1 and 2 threads
    (the 256-bit or 512-bit GEMV, whichever this CPU takes, and the block-sparse GEMV)."""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((48,))
    h = keras.layers.Dense(1024, activation="relu", name="first")(inputs)
    h = keras.layers.Dense(1024, activation="relu", name="large")(h)
    model = keras.Model(inputs, keras.layers.Dense(10, name="last")(h))
    compressed = tfq.compress(model, "ternary", sparsity=0.9, block="auto")
    w = np.asarray(compressed.get_layer("large").kernel)  # [in, out]
    # Zeros in whole 16x4 blocks: the four 4-output quads of every 16-output block row agree.
    quads = (w.reshape(256, 4, 256, 4) != 0).any(axis=(1, 3)).reshape(256, 64, 4)
    assert (quads == quads[..., :1]).all()
    assert 0.85 <= 1 - quads.mean() <= 0.95
    dense, sparse = bytes(convert(compressed)), bytes(convert(compressed, sparse="auto"))
    ops = [opts for _, _, _, opts, _ in sparse_models.sparse_ops(sparse)]
    assert len(ops) == 1 and (ops[0]["block_rows"], ops[0]["block_cols"]) == (16, 4)
    x = inputs_for(dense, seed=3)
    for threads in (1, 2):
        out = assert_pair_equal(dense, sparse, x, threads, what="large dense")
    want = compressed.predict(x, verbose=0)  # the delegate quantizes activations to 8 bits
    assert np.max(np.abs(out[0] - want)) <= 0.05 * np.max(np.abs(want)), (out[0], want)
