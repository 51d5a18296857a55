"""Format version 2, layout `dense`: rows ending in 32-weight mini-blocks (docs/format.md).

Version 1 pads every row to whole 32-byte blocks (ternary: 128 weights), so
k = 784 is stored as 896 and k = 27 as 128. Version 2 `dense` keeps the whole
blocks and ends a row in mini-blocks of 32 weights (4 * bits bytes). The
converter writes it only where it is smaller. Checked here: the packing rule
and sizes, which layout the converter writes, that the delegate's output on
a version-2 image equals its output on the same weights written as version 1
bit for bit (FC and conv, every scheme, k from 1 to 784, threads 1 and 2,
batches 1 and 5, every kernel table the machine has, the int8 hand-over
between ReLU6 convolutions), the reference executor, and refusals of crafted
ops naming the problem.
"""

import pathlib
import sys

import numpy as np
import pytest

from tfq import schemes
from tfq.converter import convert
from tfq.converter import format as fmt
from tfq.converter import sparse as sparse_layout
from tfq.converter import tflite_io
from tfq.converter.reference import ReferenceExecutorError, ReferenceInterpreter
from tfq.testing import set_in_set_weights

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "helpers"))
import sparse_models  # noqa: E402
from test_delegate_safety import available_isas  # noqa: E402
from test_delegate_sparse import inputs_for, run  # noqa: E402

K_VALUES = (1, 27, 31, 32, 33, 100, 127, 129, 300, 784)
SCHEMES = ("binary", "ternary", "pow2_3bit", "pow2_4bit")


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("k", K_VALUES + (64, 128, 256, 385))
def test_mini_block_rule_and_size(bits, k):
    rng = np.random.default_rng(k * 10 + bits)
    codes = rng.integers(0, 1 << bits, (3, k)).astype(np.uint8)
    packed = fmt.pack_codes(codes, bits, compact=True)
    wpb = fmt.weights_per_block(bits)
    nb, ntail = fmt.row_geometry(k, bits)
    assert (nb, ntail) == (k // wpb, -(-(k % wpb) // 32))
    row_bytes = nb * 32 + ntail * 4 * bits
    assert packed.size == 3 * row_bytes == fmt.compact_size(3, k, bits)
    assert row_bytes <= fmt.row_bytes(k, bits)
    np.testing.assert_array_equal(fmt.unpack_codes(packed, 3, k, bits, compact=True), codes)
    # The rule of docs/format.md, position by position.
    row = packed[row_bytes:2 * row_bytes]
    for pos in range(k):
        if pos < nb * wpb:
            b, rem = divmod(pos, wpb)
            t, j = divmod(rem, 32)
            byte = row[b * 32 + j]
        else:
            m, rem = divmod(pos - nb * wpb, 32)
            t, j = divmod(rem, 4 * bits)
            byte = row[nb * 32 + m * 4 * bits + j]
        assert (byte >> (t * bits)) & ((1 << bits) - 1) == codes[1, pos]
    with pytest.raises(ValueError, match="version 2 dense"):
        fmt.unpack_codes(packed[:-1], 3, k, bits, compact=True)


@pytest.mark.parametrize("scheme,op,k,version", [
    ("ternary", "TFQ_FULLY_CONNECTED", 784, 2), ("ternary", "TFQ_FULLY_CONNECTED", 128, 1),
    ("ternary", "TFQ_FULLY_CONNECTED", 96, 2), ("ternary", "TFQ_CONV_2D", 27, 2),
    ("binary", "TFQ_FULLY_CONNECTED", 256, 1), ("binary", "TFQ_FULLY_CONNECTED", 300, 2),
    ("pow2_4bit", "TFQ_CONV_2D", 64, 1), ("pow2_4bit", "TFQ_CONV_2D", 27, 2),
    ("pow2_3bit", "TFQ_FULLY_CONNECTED", 90, 2), ("pow2_3bit", "TFQ_FULLY_CONNECTED", 100, 1),  # a tie
    ("ternary", "TFQ_DEPTHWISE_CONV_2D", 27, 1),
])
def test_converter_writes_v2_dense_only_when_smaller(scheme, op, k, version):
    s = schemes.get(scheme)
    table = s.code_table()
    nonzero = np.flatnonzero(np.isfinite(table) & (table != 0))
    codes = np.random.default_rng(k).choice(nonzero, (5, k)).astype(np.uint8)  # no zero block
    for mode in (False, "auto"):
        data, extra = sparse_layout.choose(codes, scheme, op, mode)
        assert extra.get("version", 1) == version and not fmt.is_sparse(extra)
        assert fmt.is_compact(extra) == (version == 2)
        assert data.size == min(fmt.packed_size(5, k, s.storage_bits),
                                fmt.compact_size(5, k, s.storage_bits)) or op.startswith("TFQ_DEPTH")


def _options(**change):
    opts = {"version": 2, "layout": "dense", "scheme": "ternary", "bits": 2, "rows": 4, "k": 27,
            "weight_shape": [4, 3, 3, 3], "activation": "NONE", "stride_h": 1, "stride_w": 1,
            "dilation_h": 1, "dilation_w": 1, "padding": "SAME"}
    opts.update(change)
    return {k: v for k, v in opts.items() if v is not None}


def test_v2_dense_options():
    assert fmt.is_compact(fmt.validate_options(_options(), "TFQ_CONV_2D"))
    assert fmt.weight_bytes_expected(_options()) == 4 * 8
    for change, match in (({"layout": "diagonal"}, "layout"), ({"layout": None}, "layout"),
                          ({"version": 1}, "needs format version 2")):
        with pytest.raises(ValueError, match=match):
            fmt.validate_options(_options(**change), "TFQ_CONV_2D")
    dw = _options(weight_shape=[1, 3, 3, 4], rows=9, k=4, depth_multiplier=1)
    with pytest.raises(ValueError, match="DEPTHWISE_CONV_2D is always version 1"):
        fmt.validate_options(dw, "TFQ_DEPTHWISE_CONV_2D")


def fc_chain(scheme, seed=0):
    """Dense layers whose row lengths k are 784, 300, 129, 127, 100, 33, 32, 31, 27 and 1."""
    import keras
    inputs = keras.Input((784,))
    x = inputs
    for i, units in enumerate((300, 129, 127, 100, 33, 32, 31, 27, 1, 10)):
        x = keras.layers.Dense(units, activation="relu" if i % 2 else None, name=f"fc{i}")(x)
    return set_in_set_weights(keras.Model(inputs, x), scheme, seed)


def conv_chain(scheme, seed=0):
    """ReLU6 convolutions (int8 hand-over) with k = 27, 8, 99, 45, 11 and 63, then a Dense layer."""
    import keras
    inputs = keras.Input((9, 9, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu6", name="c27")(inputs)
    x = keras.layers.Conv2D(33, 1, activation="relu6", name="c8")(x)
    x = keras.layers.Conv2D(5, (1, 3), padding="same", activation="relu6", name="c99")(x)
    x = keras.layers.Conv2D(11, 3, strides=2, padding="valid", activation="relu6", name="c45")(x)
    x = keras.layers.Conv2D(7, 1, activation="relu6", name="c11")(x)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="c63")(x)
    x = keras.layers.Flatten()(x)
    return set_in_set_weights(keras.Model(inputs, keras.layers.Dense(10, name="fc")(x)), scheme, seed)


def tfq_ops(image):
    model, data, _ = tflite_io.load_model(bytes(image))
    out = []
    for g, sg in enumerate(model.subgraphs):
        for i, op in enumerate(sg.operators or []):
            name = tflite_io.op_name(model, op)
            if name.startswith("TFQ_"):
                codes, opts = sparse_models.op_codes(model, data, sg, op)
                out.append((g, i, name, opts, codes))
    return out


_CACHE = {}


def images(kind, scheme):
    """(version-2 image as converted, the same weights as version 1)."""
    key = (kind, scheme)
    if key not in _CACHE:
        v2 = bytes(convert((fc_chain if kind == "fc" else conv_chain)(scheme)))
        _CACHE[key] = (v2, sparse_models.dense_v1(v2))
    return _CACHE[key]


@pytest.mark.parametrize("kind", ["fc", "conv"])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_v2_dense_equals_v1_bit_for_bit(kind, scheme):
    v2, v1 = images(kind, scheme)
    ops = tfq_ops(v2)
    bits = schemes.get(scheme).storage_bits
    for _, _, name, opts, _ in ops:
        smaller = fmt.compact_size(opts["rows"], opts["k"], bits) < fmt.packed_size(opts["rows"], opts["k"], bits)
        assert fmt.is_compact(opts) == (smaller and name != "TFQ_DEPTHWISE_CONV_2D"), (name, opts["k"])
    assert sum(fmt.is_compact(o) for _, _, _, o, _ in ops) >= (5 if kind == "fc" else 4)
    assert not any(fmt.is_compact(o) for _, _, _, o, _ in tfq_ops(v1))
    assert len(v2) < len(v1)
    for batch in (1, 5):
        x = inputs_for(v1, batch=batch, seed=batch)
        want = None
        for isa in available_isas():
            for threads in (1, 2):
                a, b = run(v1, x, threads, isa), run(v2, x, threads, isa)
                for da, db in zip(a, b):
                    assert np.array_equal(da, db), (isa, threads, batch)
                if isa == "reference" and threads == 1:
                    want = a
                # every table computes the same int32 accumulators
                for da, dw in zip(a, want):
                    assert np.array_equal(da, dw), (isa, threads, batch)
        ref = ReferenceInterpreter(v2, "delegate")
        np.testing.assert_array_equal(ref.run(x)[0], ReferenceInterpreter(v1, "delegate").run(x)[0])
        np.testing.assert_allclose(ref.run(x)[0], want[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------ crafted ops


def _k300():
    """The FC chain's op with k = 300 (129 rows, ternary: 2 whole blocks, 2 mini-blocks = 80 bytes a row)."""
    v2, _ = images("fc", "ternary")
    for g, i, name, opts, codes in tfq_ops(v2):
        if opts["k"] == 300:
            packed = fmt.pack_codes(codes, 2, 1, compact=True)
            return v2, g, i, opts, packed


def _with_code(packed, byte, field, code):
    out = packed.copy()
    out[byte] = (out[byte] & ~np.uint8(3 << (2 * field))) | np.uint8(code << (2 * field))
    return out


BAD = {
    # row 0: bytes 64..71 hold positions 256..287, bytes 72..79 positions 288..319 (300.. padding)
    "invalid_code_in_mini_block": (lambda o, p: (o, _with_code(p, 68, 0, 3)),
                                   "invalid ternary code 3 in packed row 0 at position 260"),
    "invalid_code_in_padding": (lambda o, p: (o, _with_code(p, 76, 1, 3)),
                                "invalid ternary code 3 in packed row 0 at position 300 (row padding)"),
    "one_byte_more": (lambda o, p: (o, np.concatenate([p, np.ones(1, np.uint8)])),
                      "packed codes have 10321 bytes, expected rows * (whole blocks * 32 + "
                      "mini-blocks * 4 * bits) = 10320"),
    "version_1_size": (lambda o, p: (o, np.full(129 * 96, 0x55, np.uint8)), "expected rows * (whole"),
    "version_1_with_v2_rows": (lambda o, p: ({**o, "version": 1}, p), "expected rows * row_bytes = 12384"),
    "unknown_layout": (lambda o, p: ({**o, "layout": "padded"}, p),
                       "unknown layout 'padded' (format version 2 knows: block_sparse, dense)"),
    "missing_layout": (lambda o, p: ({k: v for k, v in o.items() if k != "layout"}, p),
                       "custom option 'layout' is missing"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_crafted_v2_dense_op_is_refused(case):
    v2, g, i, opts, packed = _k300()
    new_opts, new_packed = BAD[case][0](dict(opts), packed)
    image = sparse_models.edit_op(v2, g, i, options=new_opts, weights=new_packed)
    with pytest.raises((RuntimeError, ValueError)) as info:
        run(image, inputs_for(image), 2)
    text = str(info.value)
    assert "tfq delegate: refusing node" in text and "TFQ_FULLY_CONNECTED" in text, text
    assert BAD[case][1] in text, text
    if case != "invalid_code_in_padding":  # the reference executor never decodes the padding
        with pytest.raises(ReferenceExecutorError):
            ReferenceInterpreter(image)


def test_depthwise_cannot_be_v2_dense():
    import keras
    inputs = keras.Input((6, 6, 4))
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(inputs)
    dw_model = set_in_set_weights(keras.Model(inputs, x), "ternary", 0)
    image = bytes(convert(dw_model))
    (g, i, name, opts, _), = tfq_ops(image)
    assert name == "TFQ_DEPTHWISE_CONV_2D" and opts["version"] == 1
    opts = dict(opts, version=2, layout="dense")
    bad = sparse_models.edit_op(image, g, i, options=opts)
    with pytest.raises((RuntimeError, ValueError)) as info:
        run(bad, inputs_for(bad), 1)
    assert "TFQ_DEPTHWISE_CONV_2D cannot have layout 'dense'" in str(info.value), str(info.value)
    with pytest.raises(ReferenceExecutorError, match="always version 1"):
        ReferenceInterpreter(bad)
