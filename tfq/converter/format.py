"""The tfq packed weight format, versions 1 and 2 (see docs/format.md).

Pure NumPy: code tables, packing and unpacking of weight rows, and the custom
options of the tfq custom ops (encoding, decoding and validation). Both the
converter and the reference executor go through this module, so the format
has exactly one Python implementation.
"""

import struct

import numpy as np
from flatbuffers import flexbuffers

from tfq import schemes

FORMAT_VERSION = 1  # dense ops padded to whole blocks; block-sparse and compact dense ops are version 2
SPARSE_VERSION = 2
# Version 2 layouts (option `layout`): block-sparse, and dense rows whose
# last block may be a run of 32-weight mini-blocks.
LAYOUTS = ("block_sparse", "dense")
# Weights per mini-block (the tail of a version-2 dense row): one field of a
# 32-byte block, one 32-byte register of int8 activations.
MINI_WEIGHTS = 32
# Block columns per block row at most: counts and column indices are uint16.
MAX_BLOCK_COLUMNS = 65535
SUPPORTED_VERSIONS = (1, 2)
BLOCK_BYTES = 32

# custom code -> builtin op it replaces (documentation and inspection)
CUSTOM_CODES = {
    "TFQ_FULLY_CONNECTED": "FULLY_CONNECTED",
    "TFQ_CONV_2D": "CONV_2D",
    "TFQ_DEPTHWISE_CONV_2D": "DEPTHWISE_CONV_2D",
}

ACTIVATIONS = ("NONE", "RELU", "RELU6")
PADDINGS = ("SAME", "VALID")


def weights_per_block(bits):
    return BLOCK_BYTES * 8 // bits


def row_bytes(k, bits):
    """Bytes of one packed row of logical length k (a multiple of 32)."""
    wpb = weights_per_block(bits)
    return -(-k // wpb) * BLOCK_BYTES


def packed_size(rows, k, bits):
    return rows * row_bytes(k, bits)


def row_geometry(k, bits):
    """(whole blocks, mini-blocks) of a version-2 dense row of length k.

    A row holds floor(k / wpb) whole 32-byte blocks, then
    ceil((k mod wpb) / 32) mini-blocks of 32 weights (4*bits bytes each).
    """
    wpb = weights_per_block(bits)
    return k // wpb, -(-(k % wpb) // MINI_WEIGHTS)


def compact_row_bytes(k, bits):
    """Bytes of one version-2 dense row of length k (docs/format.md)."""
    nb, ntail = row_geometry(k, bits)
    return nb * BLOCK_BYTES + ntail * MINI_WEIGHTS * bits // 8


def compact_size(rows, k, bits):
    return rows * compact_row_bytes(k, bits)


def levels_to_codes(levels, scheme):
    """Maps integer-valued levels to codes; raises ValueError on a level outside the scheme."""
    table = schemes.get(scheme).code_table()
    levels = np.asarray(levels)
    codes = np.full(levels.shape, 255, dtype=np.uint8)
    for code, level in enumerate(table):
        if not np.isnan(level):
            codes[levels == level] = code
    if (codes == 255).any():
        bad = np.unique(levels[codes == 255])[:5]
        raise ValueError(f"levels {bad.tolist()} are not in the {scheme} set")
    return codes


def codes_to_levels(codes, scheme):
    """Maps codes to float32 levels; raises ValueError on an invalid code."""
    table = schemes.get(scheme).code_table()
    codes = np.asarray(codes)
    if codes.size and codes.max() > 15:
        raise ValueError(f"invalid {scheme} code {int(codes.max())}")
    levels = table[codes]
    if np.isnan(levels).any():
        bad = np.unique(codes[np.isnan(levels)])[:5]
        raise ValueError(f"invalid {scheme} codes {bad.tolist()}")
    return levels


def _pack_fields(fields, bits, axis):
    """ORs the 8/bits codes along `axis` into one byte each: code t at bits [t*bits, (t+1)*bits)."""
    shape = [1] * fields.ndim
    shape[axis] = 8 // bits
    shifts = (np.arange(8 // bits, dtype=np.uint16) * bits).reshape(shape)
    return np.bitwise_or.reduce(fields.astype(np.uint16) << shifts, axis=axis).astype(np.uint8)


def _unpack_fields(data, bits, axis):
    """Inverse of `_pack_fields`: the 8/bits codes of each byte, on a new axis at `axis`."""
    expanded = np.expand_dims(np.asarray(data, dtype=np.uint8), axis)
    shape = [1] * expanded.ndim
    shape[axis] = 8 // bits
    shifts = (np.arange(8 // bits, dtype=np.uint8) * bits).reshape(shape)
    return (expanded >> shifts) & np.uint8((1 << bits) - 1)


def pack_codes(codes, bits, zero_code=0, compact=False):
    """Packs a [rows, k] array of codes into a dense layout of docs/format.md.

    Args:
      codes: uint8 array [rows, k], each value < 2**bits.
      bits: 1, 2 or 4.
      zero_code: code written into the padding positions.
      compact: False: version 1, rows padded to whole 32-byte blocks; True:
        version 2 `dense`, the end of a row in 32-weight mini-blocks.

    Returns:
      A flat uint8 array of `packed_size` (or `compact_size`) bytes.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [rows, k], got shape {codes.shape}")
    if bits not in (1, 2, 4):
        raise ValueError(f"bits must be 1, 2 or 4, got {bits}")
    rows, k = codes.shape
    wpb = weights_per_block(bits)
    if compact:
        nblocks, ntail = row_geometry(k, bits)
    else:
        nblocks, ntail = -(-k // wpb), 0
    full = nblocks * wpb
    padded = np.full((rows, full + ntail * MINI_WEIGHTS), zero_code, dtype=np.uint8)
    padded[:, :k] = codes
    # position k = b*wpb + t*32 + j  ->  [rows, b, t, j]
    blocks = _pack_fields(padded[:, :full].reshape(rows, nblocks, 8 // bits, BLOCK_BYTES), bits, axis=2)
    # mini-block m: position full + m*32 + t*(4*bits) + j  ->  [rows, m, t, j]
    mini = _pack_fields(padded[:, full:].reshape(rows, ntail, 8 // bits, MINI_WEIGHTS * bits // 8),
                        bits, axis=2)
    return np.concatenate([blocks.reshape(rows, -1), mini.reshape(rows, -1)], axis=1).reshape(-1)


def unpack_codes(packed, rows, k, bits, compact=False):
    """Inverse of pack_codes: returns uint8 codes [rows, k] (padding dropped)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    expected = compact_size(rows, k, bits) if compact else packed_size(rows, k, bits)
    if packed.size != expected:
        raise ValueError(
            f"packed weights have {packed.size} bytes, expected {expected} "
            f"for rows={rows}, k={k}, bits={bits}{' (version 2 dense)' if compact else ''}")
    wpb = weights_per_block(bits)
    if compact:
        nblocks, ntail = row_geometry(k, bits)
    else:
        nblocks, ntail = -(-k // wpb), 0
    data = packed.reshape(rows, -1)
    split = nblocks * BLOCK_BYTES
    blocks = _unpack_fields(data[:, :split].reshape(rows, nblocks, BLOCK_BYTES), bits, axis=2)
    mini = _unpack_fields(data[:, split:].reshape(rows, ntail, MINI_WEIGHTS * bits // 8), bits, axis=2)
    return np.concatenate([blocks.reshape(rows, -1), mini.reshape(rows, -1)], axis=1)[:, :k]


# ---------------------------------------------------------------- options

_INT_KEYS = ("version", "bits", "rows", "k", "stride_h", "stride_w", "dilation_h",
             "dilation_w", "depth_multiplier", "block_rows", "block_cols", "nnz_blocks", "index_bits")


def encode_options(options):
    """Encodes a custom-options dict as a FlexBuffer map.

    Integers become FlexBuffer ints, strings strings, and `weight_shape` a
    typed vector of ints (FlexBuffers type VECTOR_INT).
    """
    builder = flexbuffers.Builder()
    with builder.Map():
        for key in sorted(options):
            value = options[key]
            builder.Key(key)
            if key == "weight_shape":
                builder.TypedVectorFromElements([int(v) for v in value],
                                                element_type=flexbuffers.Type.INT)
            elif isinstance(value, str):
                builder.String(value)
            else:
                builder.Int(int(value))
    return bytes(builder.Finish())


def decode_options(data, where="custom op"):
    """Decodes custom options written by encode_options into a dict.

    Raises:
      ValueError: naming `where` when the bytes are not a FlexBuffer map.
    """
    try:
        value = flexbuffers.Loads(bytes(data))
    except (IndexError, ValueError, TypeError, KeyError, UnicodeDecodeError, struct.error,
            AssertionError, OverflowError, RecursionError, AttributeError) as err:
        raise ValueError(f"{where}: custom options are not a valid FlexBuffer map ({err})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: custom options are not a FlexBuffer map")
    return value


def validate_options(opts, op_name, where="custom op"):
    """Checks custom options against docs/format.md; returns them normalized.

    Raises:
      ValueError: naming `where` and the offending key or value.
    """
    if "version" not in opts:
        raise ValueError(f"{where}: custom options lack 'version'")
    version = opts["version"]
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(
            f"{where}: tfq format version {version} is not supported "
            f"(supported: {', '.join(map(str, SUPPORTED_VERSIONS))})")
    required = ["scheme", "bits", "rows", "k", "weight_shape", "activation"]
    if op_name in ("TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D"):
        required += ["stride_h", "stride_w", "dilation_h", "dilation_w", "padding"]
    if op_name == "TFQ_DEPTHWISE_CONV_2D":
        required.append("depth_multiplier")
    missing = [key for key in required if key not in opts]
    if missing:
        raise ValueError(f"{where}: custom options lack {', '.join(missing)}")
    out = dict(opts)
    for key in _INT_KEYS:
        if key in out and not isinstance(out[key], (int, np.integer)):
            raise ValueError(f"{where}: option {key!r} must be an int, got {out[key]!r}")
    if out["scheme"] not in schemes.SCHEMES:
        raise ValueError(f"{where}: unknown scheme {out['scheme']!r} (valid: {', '.join(schemes.NAMES)})")
    if out["bits"] != schemes.SCHEMES[out["scheme"]].storage_bits:
        raise ValueError(f"{where}: bits={out['bits']} does not match scheme "
                         f"{out['scheme']} ({schemes.SCHEMES[out['scheme']].storage_bits} bits)")
    if out["activation"] not in ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {out['activation']!r} "
                         f"(valid: {', '.join(ACTIVATIONS)})")
    raw_shape = out["weight_shape"]
    if not isinstance(raw_shape, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in raw_shape):
        raise ValueError(f"{where}: weight_shape must be a vector of ints, got {raw_shape!r}")
    for key in ("scheme", "activation", "padding"):
        if key in out and not isinstance(out[key], str):
            raise ValueError(f"{where}: option {key!r} must be a string, got {out[key]!r}")
    shape = [int(v) for v in raw_shape]
    out["weight_shape"] = shape
    rank = {"TFQ_FULLY_CONNECTED": 2}.get(op_name, 4)
    if len(shape) != rank:
        raise ValueError(f"{where}: weight_shape {shape} must have rank {rank} for {op_name}")
    if any(v < 1 for v in shape):
        raise ValueError(f"{where}: weight_shape {shape} has non-positive sizes")
    if op_name == "TFQ_FULLY_CONNECTED":
        expect = (2, shape[0], shape[1] if len(shape) == 2 else None)
    elif op_name == "TFQ_CONV_2D":
        expect = (4, shape[0], int(np.prod(shape[1:])) if len(shape) == 4 else None)
    elif op_name == "TFQ_DEPTHWISE_CONV_2D":
        expect = (4, shape[1] * shape[2] if len(shape) == 4 else None,
                  shape[3] if len(shape) == 4 else None)
    else:
        raise ValueError(f"{where}: unknown tfq custom op {op_name!r} "
                         f"(known: {', '.join(CUSTOM_CODES)})")
    if len(shape) != expect[0] or (out["rows"], out["k"]) != expect[1:]:
        raise ValueError(f"{where}: rows={out['rows']}, k={out['k']} do not match "
                         f"weight_shape {shape} for {op_name}")
    if op_name != "TFQ_FULLY_CONNECTED":
        for key in ("stride_h", "stride_w", "dilation_h", "dilation_w"):
            if out[key] < 1:
                raise ValueError(f"{where}: {key}={out[key]} must be >= 1")
        if out["padding"] not in PADDINGS:
            raise ValueError(f"{where}: unknown padding {out['padding']!r} "
                             f"(valid: {', '.join(PADDINGS)})")
    if op_name == "TFQ_DEPTHWISE_CONV_2D" and out["depth_multiplier"] < 1:
        raise ValueError(f"{where}: depth_multiplier must be >= 1")
    if shape[0] and op_name == "TFQ_DEPTHWISE_CONV_2D" and shape[0] != 1:
        raise ValueError(f"{where}: depthwise weight_shape must start with 1, got {shape}")
    if out["k"] * schemes.SCHEMES[out["scheme"]].max_level * 127 >= 2 ** 31:
        raise ValueError(f"{where}: k={out['k']} could overflow the int32 accumulator")
    if version >= 2:
        if out.get("layout") not in LAYOUTS:
            raise ValueError(f"{where}: format version 2 needs layout "
                             f"{' or '.join(map(repr, LAYOUTS))}, got {out.get('layout')!r}")
        if op_name == "TFQ_DEPTHWISE_CONV_2D":
            raise ValueError(f"{where}: a TFQ_DEPTHWISE_CONV_2D is always version 1 "
                             f"(layout {out['layout']!r} covers TFQ_FULLY_CONNECTED and TFQ_CONV_2D)")
        if out["layout"] == "block_sparse":
            _validate_sparse_options(out, op_name, where)
    elif "layout" in out:
        raise ValueError(f"{where}: option 'layout' needs format version 2, found version {version}")
    return out


def is_sparse(opts):
    """True for a block-sparse op (version 2, layout block_sparse)."""
    return opts.get("version", 1) >= 2 and opts.get("layout") == "block_sparse"


def is_compact(opts):
    """True for a version-2 dense op (rows ending in 32-weight mini-blocks)."""
    return opts.get("version", 1) >= 2 and opts.get("layout") == "dense"


def _validate_sparse_options(out, op_name, where):
    missing = [key for key in ("block_rows", "block_cols", "nnz_blocks", "index_bits") if key not in out]
    if missing:
        raise ValueError(f"{where}: custom options lack {', '.join(missing)}")
    if not schemes.get(out["scheme"]).has_zero:
        raise ValueError(f"{where}: a {out['scheme']} op cannot be block-sparse (the scheme has no zero)")
    for key in ("block_rows", "block_cols"):
        if out[key] not in schemes.BLOCK_SIDES:
            raise ValueError(f"{where}: {key}={out[key]} (valid: {', '.join(map(str, schemes.BLOCK_SIDES))})")
    nbr, nbc = block_counts(out)
    if not 0 <= out["nnz_blocks"] <= nbr * nbc:
        raise ValueError(f"{where}: nnz_blocks={out['nnz_blocks']} outside 0..{nbr * nbc}")
    if nbc > MAX_BLOCK_COLUMNS:
        raise ValueError(f"{where}: {nbc} block columns; a block-sparse op holds at most {MAX_BLOCK_COLUMNS}")
    want = 8 if nbc <= 256 else 16
    if out["index_bits"] != want:
        raise ValueError(f"{where}: index_bits={out['index_bits']}, expected {want} for {nbc} block columns")


def block_counts(opts):
    """(block rows, blocks per block row) of a block-sparse op."""
    return -(-opts["rows"] // opts["block_rows"]), -(-opts["k"] // opts["block_cols"])


def block_bytes(opts):
    return -(-opts["block_rows"] * opts["block_cols"] * opts["bits"] // 8)


def sparse_size(opts):
    """Bytes of tensor 1 of a block-sparse op (docs/format.md, version 2)."""
    nbr, _ = block_counts(opts)
    return 2 * nbr + opts["nnz_blocks"] * (opts["index_bits"] // 8 + block_bytes(opts))


def weight_bytes_expected(opts):
    """The exact size tensor 1 must have, for either layout."""
    if is_sparse(opts):
        return sparse_size(opts)
    size = compact_size if is_compact(opts) else packed_size
    return size(opts["rows"], opts["k"], opts["bits"])


def unpack_dense(packed, opts):
    """Codes [rows, k] of a dense op of either version (version 1, or version 2 `dense`)."""
    return unpack_codes(packed, opts["rows"], opts["k"], opts["bits"], compact=is_compact(opts))


def pack_sparse(codes, bits, block, zero_code):
    """Block-sparse encoding of a [rows, k] code matrix (docs/format.md, version 2).

    A block is stored when any of its codes is not `zero_code`.

    Returns:
      (tensor bytes as a flat uint8 array, {block_rows, block_cols, nnz_blocks, index_bits}).
    """
    codes = np.asarray(codes, dtype=np.uint8)
    rows, k = codes.shape
    R, C = block
    nbr, nbc = -(-rows // R), -(-k // C)
    if nbc > MAX_BLOCK_COLUMNS:
        raise ValueError(f"{nbc} block columns of {C}: a block-sparse op holds at most {MAX_BLOCK_COLUMNS}")
    padded = np.full((nbr * R, nbc * C), zero_code, dtype=np.uint8)
    padded[:rows, :k] = codes
    blocks = padded.reshape(nbr, R, nbc, C).transpose(0, 2, 1, 3).reshape(nbr, nbc, R * C)
    keep = np.any(blocks != zero_code, axis=2)
    counts = keep.sum(axis=1).astype("<u2")
    index_bits = 8 if nbc <= 256 else 16
    br, bc = np.nonzero(keep)  # row-major: block rows in order, columns increasing
    indices = bc.astype(np.uint8 if index_bits == 8 else "<u2")
    per_byte = 8 // bits
    flat = blocks[br, bc]  # [nnz, R*C]
    pad = (-flat.shape[1]) % per_byte
    if pad:
        flat = np.concatenate([flat, np.full((flat.shape[0], pad), zero_code, np.uint8)], axis=1)
    fields = flat.reshape(flat.shape[0], flat.shape[1] // per_byte, per_byte)
    packed = _pack_fields(fields, bits, axis=2).reshape(-1)
    data = np.concatenate([counts.view(np.uint8), indices.view(np.uint8), packed])
    return data, {"block_rows": R, "block_cols": C, "nnz_blocks": int(keep.sum()), "index_bits": index_bits}


def unpack_sparse(data, opts, where="custom op"):
    """Inverse of pack_sparse, validating the arrays: codes [rows, k] (zero code outside stored blocks).

    Raises:
      ValueError: naming `where`: a size, count, index or order that disagrees with docs/format.md.
    """
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    expected = sparse_size(opts)
    if data.size != expected:
        raise ValueError(f"{where}: block-sparse weights have {data.size} bytes, expected {expected}")
    rows, k, R, C, bits = opts["rows"], opts["k"], opts["block_rows"], opts["block_cols"], opts["bits"]
    nbr, nbc = block_counts(opts)
    nnz = opts["nnz_blocks"]
    counts = data[: 2 * nbr].view("<u2").astype(np.int64)
    ib = opts["index_bits"] // 8
    idx_end = 2 * nbr + nnz * ib
    indices = data[2 * nbr:idx_end].view(np.uint8 if ib == 1 else "<u2").astype(np.int64)
    if counts.sum() != nnz:
        raise ValueError(f"{where}: block counts sum to {int(counts.sum())}, nnz_blocks is {nnz}")
    if counts.size and counts.max() > nbc:
        raise ValueError(f"{where}: a block row counts {int(counts.max())} blocks, there are {nbc} block columns")
    if indices.size and indices.max() >= nbc:
        raise ValueError(f"{where}: block column index {int(indices.max())} out of range 0..{nbc - 1}")
    block_row = np.repeat(np.arange(nbr), counts)
    if nnz > 1:
        same = block_row[1:] == block_row[:-1]
        if np.any(same & (indices[1:] <= indices[:-1])):
            raise ValueError(f"{where}: block column indices of a block row are not strictly increasing")
    per_byte = 8 // bits
    nb = block_bytes(opts)
    raw = data[idx_end:].reshape(nnz, nb)
    fields = _unpack_fields(raw, bits, axis=2).reshape(nnz, nb * per_byte)[:, : R * C]
    zero = schemes.get(opts["scheme"]).zero_code
    dense = np.full((nbr, nbc, R * C), zero, dtype=np.uint8)
    dense[block_row, indices] = fields
    out = dense.reshape(nbr, nbc, R, C).transpose(0, 2, 1, 3).reshape(nbr * R, nbc * C)
    return out[:rows, :k]
