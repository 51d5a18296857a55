"""Block-sparse (format version 2) test models made from converted models.

`sparse_pair` takes a converted .tflite image, zeroes a chosen fraction of
the weight blocks of its TFQ_FULLY_CONNECTED / TFQ_CONV_2D ops, and returns
two images with exactly the same weights: every such op written densely
(version 1) and written block-sparse (version 2, docs/format.md). A reader
must give bit-identical outputs on the two. The flatbuffer is rewritten with
tfq.converter.tflite_io; the bytes and options come from
tfq.converter.format (pack_codes / pack_sparse / encode_options), so the
images are what a writer following the format produces.

`sparse_ops` lists the rewritten ops with their options and tensor-1 layout,
for tests that then corrupt one field. `dense_v1` rewrites the version-2
dense ops of an image (rows ending in 32-weight mini-blocks) as version 1.
"""

import numpy as np

from tfq import schemes
from tfq.converter import format as fmt
from tfq.converter import tflite_io

SPARSE_OPS = ("TFQ_FULLY_CONNECTED", "TFQ_CONV_2D")


def _options(op):
    return fmt.decode_options(np.asarray(op.customOptions, dtype=np.uint8).tobytes())


def _set_options(op, opts):
    op.customOptions = np.frombuffer(fmt.encode_options(opts), dtype=np.uint8)


def set_tensor_bytes(model, sg, tensor_index, data):
    """Replaces a constant tensor's bytes (and its 1-D shape) by `data` in a new buffer."""
    data = np.ascontiguousarray(np.asarray(data, dtype=np.uint8).reshape(-1))
    buf = type(model.buffers[0])()
    buf.data = data
    model.buffers.append(buf)
    tensor = sg.tensors[tensor_index]
    tensor.buffer = len(model.buffers) - 1
    tensor.shape = np.array([data.size], dtype=np.int32)
    if getattr(tensor, "shapeSignature", None) is not None:
        tensor.shapeSignature = np.array([data.size], dtype=np.int32)


def op_codes(model, data, sg, op):
    """The [rows, k] uint8 code matrix of a tfq op (either layout) and its options."""
    opts = fmt.validate_options(_options(op), tflite_io.op_name(model, op))
    raw = tflite_io.buffer_view(model, data, sg.tensors[int(op.inputs[1])])
    if fmt.is_sparse(opts):
        return fmt.unpack_sparse(raw, opts), opts
    return fmt.unpack_dense(raw, opts), opts


def zero_blocks(codes, block, sparsity, zero_code, rng):
    """Sets round(sparsity * blocks) randomly chosen R x C blocks of `codes` to the zero code."""
    rows, k = codes.shape
    R, C = block
    nbr, nbc = -(-rows // R), -(-k // C)
    total = nbr * nbc
    chosen = rng.permutation(total)[: int(round(sparsity * total))]
    out = codes.copy()
    for b in chosen:
        br, bc = divmod(int(b), nbc)
        out[br * R:(br + 1) * R, bc * C:(bc + 1) * C] = zero_code
    return out


def sparse_pair(tflite_bytes, block, sparsity, seed=0):
    """Returns (dense v1 image, block-sparse v2 image) with the same zeroed weights.

    Every TFQ_FULLY_CONNECTED / TFQ_CONV_2D op (whose scheme has a zero) of
    every subgraph gets `sparsity` of its `block`-shaped blocks zeroed
    (1.0: an all-zero layer); TFQ_DEPTHWISE_CONV_2D and binary ops stay dense.
    """
    rng = np.random.default_rng(seed)
    model, data, _ = tflite_io.load_model(bytes(tflite_bytes))
    chosen = []  # (subgraph, op index, zeroed codes, options, scheme), in model order
    for g, sg in enumerate(model.subgraphs):
        for i, op in enumerate(sg.operators or []):
            if tflite_io.op_name(model, op) not in SPARSE_OPS:
                continue
            codes, opts = op_codes(model, data, sg, op)
            scheme = schemes.get(opts["scheme"])
            if scheme.has_zero:
                chosen.append((g, i, zero_blocks(codes, block, sparsity, scheme.zero_code, rng),
                               opts, scheme))
    out = []
    for sparse in (False, True):
        model, _, _ = tflite_io.load_model(bytes(tflite_bytes))
        for g, i, codes, opts, scheme in chosen:
            sg = model.subgraphs[g]
            _write(model, sg, sg.operators[i], codes, opts, scheme, block, sparse)
        out.append(tflite_io.save_model(model))
    return tuple(out)


def _write(model, sg, op, codes, opts, scheme, block, sparse):
    """Writes `codes` into op (tensor 1 and options) as version 1 or block-sparse version 2."""
    opts = {k: v for k, v in opts.items()
            if k not in ("layout", "block_rows", "block_cols", "nnz_blocks", "index_bits")}
    if sparse:
        packed, extra = fmt.pack_sparse(codes, opts["bits"], block, scheme.zero_code)
        opts.update(extra, version=fmt.SPARSE_VERSION, layout="block_sparse")
    else:
        packed = fmt.pack_codes(codes, opts["bits"], scheme.zero_code)
        opts["version"] = fmt.FORMAT_VERSION
    set_tensor_bytes(model, sg, int(op.inputs[1]), packed)
    _set_options(op, opts)


def dense_v1(tflite_bytes):
    """The image with every version-2 dense op (rows ending in mini-blocks) rewritten as version 1."""
    from tfq.converter import sparse
    return sparse.as_version_1(bytes(tflite_bytes))


def dense_v2_ops(tflite_bytes):
    """[(subgraph, op index, op name, options, tensor-1 bytes)] of the version-2 dense ops of an image."""
    model, data, _ = tflite_io.load_model(bytes(tflite_bytes))
    found = []
    for g, sg in enumerate(model.subgraphs):
        for i, op in enumerate(sg.operators or []):
            name = tflite_io.op_name(model, op)
            if name.startswith("TFQ_") and fmt.is_compact(_options(op)):
                raw = tflite_io.buffer_bytes(model, data, sg.tensors[int(op.inputs[1])])
                found.append((g, i, name, _options(op), np.frombuffer(raw, dtype=np.uint8).copy()))
    return found


def sparse_ops(tflite_bytes):
    """[(subgraph, op index, op name, options, tensor-1 bytes)] of the block-sparse ops of an image."""
    model, data, _ = tflite_io.load_model(bytes(tflite_bytes))
    found = []
    for g, sg in enumerate(model.subgraphs):
        for i, op in enumerate(sg.operators or []):
            name = tflite_io.op_name(model, op)
            if not name.startswith("TFQ_"):
                continue
            opts = _options(op)
            if fmt.is_sparse(opts):
                raw = tflite_io.buffer_bytes(model, data, sg.tensors[int(op.inputs[1])])
                found.append((g, i, name, opts, np.frombuffer(raw, dtype=np.uint8).copy()))
    return found


def edit_op(tflite_bytes, subgraph, op_index, options=None, weights=None):
    """Returns the image with one op's custom options and/or tensor-1 bytes replaced (no checks)."""
    model, _, _ = tflite_io.load_model(bytes(tflite_bytes))
    sg = model.subgraphs[subgraph]
    op = sg.operators[op_index]
    if options is not None:
        _set_options(op, options)
    if weights is not None:
        set_tensor_bytes(model, sg, int(op.inputs[1]), weights)
    return tflite_io.save_model(model)
