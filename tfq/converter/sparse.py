"""Dense or block-sparse: the layout the converter writes for one op (docs/format.md, version 2).

Dense rows come in two layouts: version 1 pads every row to whole 32-byte
blocks; version 2 `dense` ends a row in 32-weight mini-blocks instead. The
converter writes version 2 `dense` only when it is smaller (k not a
multiple of 32 weights short of a whole block), so files that gain nothing
stay readable by delegates that know version 1 only.

A block-sparse op stores only the blocks of its code matrix that hold a
non-zero weight, plus a count per block row and a column index per stored
block. The converter tries the block shapes below on the codes it is about
to pack and keeps the smallest encoding. `sparse="auto"` writes it instead
of the dense rows when it is smaller AND not slower: the shape is
one the delegate's SIMD kernels run (`FAST_BLOCKS`; the others run on its
scalar path, several times slower than dense) and at least
`min_sparsity(op, block)` of its blocks are zero, the break-even measured with
benchmarks/sparse_breakeven.py (docs/converter.md).
"""

import numpy as np

from tfq import schemes
from tfq.converter import format as fmt
from tfq.converter import tflite_io

__all__ = ["CANDIDATE_BLOCKS", "FAST_BLOCKS", "MIN_SPARSITY", "MIN_SPARSITY_FC_4_ROWS", "min_sparsity", "choose", "dense_layout", "as_version_1", "MODES"]

# Rows x columns, the kernels' preferred shapes first (docs/compression.md,
# "Choosing the block shape"); the 1-column shapes catch blocks pruned with
# block=(R, 1).
CANDIDATE_BLOCKS = ((32, 4), (16, 4), (8, 4), (4, 4), (2, 4), (1, 4), (32, 1), (16, 1), (8, 1), (4, 1))
# The shapes with SIMD block-sparse kernels (rows 4..32, a multiple of 4 columns).
FAST_BLOCKS = tuple(b for b in CANDIDATE_BLOCKS if b[0] >= 4 and b[1] % 4 == 0)
# Zero-block fraction from which a block-sparse op of a FAST_BLOCKS shape is
# at least as fast as the dense one (break-even of benchmarks/sparse_breakeven.py
# on x86 with AVX-512 VNNI, rounded up; docs/converter.md has the numbers).
MIN_SPARSITY = {"TFQ_FULLY_CONNECTED": 0.6, "TFQ_CONV_2D": 0.4}
# A fully connected op in 4-row blocks (block="auto"'s Dense shape) runs the
# batch-1 gather GEMV, whose break-even is higher (docs/converter.md).
MIN_SPARSITY_FC_4_ROWS = 0.8


def min_sparsity(op_name, block):
    """The zero-block fraction from which `sparse="auto"` writes an op block-sparse in this block shape."""
    if op_name == "TFQ_FULLY_CONNECTED" and block[0] == 4:
        return MIN_SPARSITY_FC_4_ROWS
    return MIN_SPARSITY.get(op_name, 1.0)
MODES = (False, True, "auto")


def choose(codes, scheme, op_name, mode="auto"):
    """The layout of one op's codes.

    Args:
      codes: uint8 [rows, k] code matrix (docs/format.md).
      scheme: the op's scheme name.
      op_name: the tfq custom op ("TFQ_FULLY_CONNECTED", ...).
      mode: False (always dense), True (the smallest block-sparse encoding
        whenever the op and the scheme allow it), or "auto" (the smallest
        `FAST_BLOCKS` encoding among those with at least
        `min_sparsity(op_name, block shape)` zero blocks, when it is smaller
        than the dense bytes).

    Returns:
      `(tensor bytes, extra options)`: the extra options are {} for a dense
      version-1 op, else version 2's (version, layout, and for block-sparse
      the block shape and counts).
    """
    if mode not in MODES:
        raise ValueError(f"sparse must be False, True or 'auto', got {mode!r}")
    s = schemes.get(scheme)
    dense, dense_opts = dense_layout(codes, s, op_name)
    if mode is False or not s.has_zero or op_name == "TFQ_DEPTHWISE_CONV_2D":
        return dense, dense_opts
    best = None
    for block in CANDIDATE_BLOCKS if mode is True else FAST_BLOCKS:
        if -(-codes.shape[1] // block[1]) > fmt.MAX_BLOCK_COLUMNS:
            continue  # too long a row for 16-bit column indices
        data, opts = fmt.pack_sparse(codes, s.storage_bits, block, s.zero_code)
        if mode == "auto":
            # Only shapes whose kernels beat dense at this zero-block fraction.
            blocks = -(-codes.shape[0] // block[0]) * -(-codes.shape[1] // block[1])
            if 1.0 - opts["nnz_blocks"] / blocks < min_sparsity(op_name, block):
                continue
        if best is None or data.size < best[0].size:
            best = (data, opts)
    if best is None or (mode == "auto" and best[0].size >= dense.size):
        return dense, dense_opts
    data, opts = best
    return data, dict(opts, version=fmt.SPARSE_VERSION, layout="block_sparse")


def dense_layout(codes, scheme, op_name):
    """The smaller dense encoding of one op's codes: version 1, or version 2 `dense`.

    Args:
      codes: uint8 [rows, k] code matrix.
      scheme: a `tfq.schemes` scheme object.
      op_name: the tfq custom op; a TFQ_DEPTHWISE_CONV_2D is always version 1.

    Returns:
      `(tensor bytes, extra options)`: {} for version 1, else
      {"version": 2, "layout": "dense"}. Version 1 when the sizes tie.
    """
    v1 = fmt.pack_codes(codes, scheme.storage_bits, scheme.zero_code)
    rows, k = np.asarray(codes).shape
    if op_name == "TFQ_DEPTHWISE_CONV_2D" or \
            fmt.compact_size(rows, k, scheme.storage_bits) >= v1.size:
        return v1, {}
    v2 = fmt.pack_codes(codes, scheme.storage_bits, scheme.zero_code, compact=True)
    return v2, {"version": fmt.SPARSE_VERSION, "layout": "dense"}


def as_version_1(model):
    """A converted model with every version-2 dense op rewritten as version 1 (same weights).

    For a delegate or reader that predates version 2's `dense` layout: the
    rows are padded to whole 32-byte blocks again (a larger file, the same
    outputs). Block-sparse ops are left as they are.

    Args:
      model: path or bytes of a .tflite file.

    Returns:
      The .tflite bytes.
    """
    fb, data, name = tflite_io.load_model(model)
    for g, sg in enumerate(fb.subgraphs):
        for i, op in enumerate(sg.operators or []):
            op_name = tflite_io.op_name(fb, op)
            if op_name not in fmt.CUSTOM_CODES:
                continue
            where = f"{name}: node {i} ({op_name}) of subgraph {g}"
            raw = np.asarray(op.customOptions if op.customOptions is not None else [], np.uint8)
            opts = fmt.decode_options(raw.tobytes(), where)
            if not fmt.is_compact(opts):
                continue
            opts = fmt.validate_options(opts, op_name, where)
            tensor = sg.tensors[int(op.inputs[1])]
            codes = fmt.unpack_dense(tflite_io.buffer_view(fb, data, tensor), opts)
            packed = fmt.pack_codes(codes, opts["bits"], schemes.get(opts["scheme"]).zero_code)
            # The op's own buffer, replaced in place: the old rows leave the file.
            buf = fb.buffers[tensor.buffer]
            buf.data, buf.offset, buf.size = packed, 0, 0
            tensor.shape = np.array([packed.size], np.int32)
            if tensor.shapeSignature is not None:
                tensor.shapeSignature = np.array([packed.size], np.int32)
            del opts["layout"]
            opts["version"] = fmt.FORMAT_VERSION
            op.customOptions = np.frombuffer(fmt.encode_options(opts), np.uint8)
    return tflite_io.save_model(fb)
