"""Dense or block-sparse: the layout the converter writes for one op (docs/format.md, version 2).

A block-sparse op stores only the blocks of its code matrix that hold a
non-zero weight, plus a count per block row and a column index per stored
block. The converter tries the block shapes below on the codes it is about
to pack and keeps the smallest encoding. `sparse="auto"` writes it instead
of the dense version-1 rows when it is smaller AND not slower: the shape is
one the delegate's SIMD kernels run (`FAST_BLOCKS`; the others run on its
scalar path, several times slower than dense) and at least
`MIN_SPARSITY[op]` of its blocks are zero, the break-even measured with
benchmarks/sparse_breakeven.py (docs/converter.md).
"""

from tfq import schemes
from tfq.converter import format as fmt

__all__ = ["CANDIDATE_BLOCKS", "FAST_BLOCKS", "MIN_SPARSITY", "choose", "MODES"]

# Rows x columns, the kernels' preferred shapes first (docs/compression.md,
# "Choosing the block shape"); the 1-column shapes catch blocks pruned with
# block=(R, 1).
CANDIDATE_BLOCKS = ((32, 4), (16, 4), (8, 4), (4, 4), (2, 4), (1, 4), (32, 1), (16, 1), (8, 1), (4, 1))
# The shapes with SIMD block-sparse kernels (rows 4..32, a multiple of 4 columns).
FAST_BLOCKS = tuple(b for b in CANDIDATE_BLOCKS if b[0] >= 4 and b[1] % 4 == 0)
# Zero-block fraction from which a block-sparse op of a FAST_BLOCKS shape is
# at least as fast as the dense one (break-even of benchmarks/sparse_breakeven.py
# on x86 with AVX-512 VNNI, rounded up; docs/converter.md has the numbers).
MIN_SPARSITY = {"TFQ_FULLY_CONNECTED": 0.5, "TFQ_CONV_2D": 0.4}
MODES = (False, True, "auto")


def choose(codes, scheme, op_name, mode="auto"):
    """The layout of one op's codes.

    Args:
      codes: uint8 [rows, k] code matrix (docs/format.md).
      scheme: the op's scheme name.
      op_name: the tfq custom op ("TFQ_FULLY_CONNECTED", ...).
      mode: False (always dense), True (the smallest block-sparse encoding
        whenever the op and the scheme allow it), or "auto" (the smallest
        `FAST_BLOCKS` encoding when it is smaller than the dense bytes and at
        least `MIN_SPARSITY[op_name]` of its blocks are zero).

    Returns:
      `(tensor bytes, extra options)`: the extra options are {} for a dense
      version-1 op, else version 2's (version, layout, block shape, counts).
    """
    if mode not in MODES:
        raise ValueError(f"sparse must be False, True or 'auto', got {mode!r}")
    s = schemes.get(scheme)
    dense = fmt.pack_codes(codes, s.storage_bits, s.zero_code)
    if mode is False or not s.has_zero or op_name == "TFQ_DEPTHWISE_CONV_2D":
        return dense, {}
    best = None
    for block in CANDIDATE_BLOCKS if mode is True else FAST_BLOCKS:
        if -(-codes.shape[1] // block[1]) > fmt.MAX_BLOCK_COLUMNS:
            continue  # too long a row for 16-bit column indices
        data, opts = fmt.pack_sparse(codes, s.storage_bits, block, s.zero_code)
        if best is None or data.size < best[0].size:
            best = (data, opts)
    if best is None:
        return dense, {}
    if mode == "auto":
        R, C = best[1]["block_rows"], best[1]["block_cols"]
        blocks = -(-codes.shape[0] // R) * -(-codes.shape[1] // C)
        zero = 1.0 - best[1]["nnz_blocks"] / blocks
        if best[0].size >= dense.size or zero < MIN_SPARSITY.get(op_name, 1.0):
            return dense, {}
    data, opts = best
    return data, dict(opts, version=fmt.SPARSE_VERSION, layout="block_sparse")
