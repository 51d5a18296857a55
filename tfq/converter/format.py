"""The tfq packed weight format, version 1 (see docs/format.md).

Pure NumPy: code tables, packing and unpacking of weight rows, and the custom
options of the tfq custom ops (encoding, decoding and validation). Both the
converter and the reference executor go through this module, so the format
has exactly one Python implementation.
"""

import struct

import numpy as np
from flatbuffers import flexbuffers

from tfq import schemes

FORMAT_VERSION = 1
SUPPORTED_VERSIONS = (1,)
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


def pack_codes(codes, bits, zero_code=0):
    """Packs a [rows, k] array of codes into the block layout of docs/format.md.

    Args:
      codes: uint8 array [rows, k], each value < 2**bits.
      bits: 1, 2 or 4.
      zero_code: code written into the padding positions.

    Returns:
      A flat uint8 array of `packed_size(rows, k, bits)` bytes.
    """
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"codes must be 2-D [rows, k], got shape {codes.shape}")
    if bits not in (1, 2, 4):
        raise ValueError(f"bits must be 1, 2 or 4, got {bits}")
    rows, k = codes.shape
    wpb = weights_per_block(bits)
    nblocks = -(-k // wpb)
    padded = np.full((rows, nblocks * wpb), zero_code, dtype=np.uint8)
    padded[:, :k] = codes
    # position k = b*wpb + t*32 + j  ->  [rows, b, t, j]
    fields = padded.reshape(rows, nblocks, 8 // bits, BLOCK_BYTES).astype(np.uint16)
    shifts = (np.arange(8 // bits, dtype=np.uint16) * bits)[None, None, :, None]
    packed = np.bitwise_or.reduce(fields << shifts, axis=2).astype(np.uint8)
    return packed.reshape(-1)


def unpack_codes(packed, rows, k, bits):
    """Inverse of pack_codes: returns uint8 codes [rows, k] (padding dropped)."""
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    expected = packed_size(rows, k, bits)
    if packed.size != expected:
        raise ValueError(
            f"packed weights have {packed.size} bytes, expected {expected} "
            f"for rows={rows}, k={k}, bits={bits}")
    wpb = weights_per_block(bits)
    nblocks = -(-k // wpb)
    blocks = packed.reshape(rows, nblocks, 1, BLOCK_BYTES)
    shifts = (np.arange(8 // bits, dtype=np.uint8) * bits)[None, None, :, None]
    fields = (blocks >> shifts) & np.uint8((1 << bits) - 1)
    return fields.reshape(rows, nblocks * wpb)[:, :k]


# ---------------------------------------------------------------- options

_INT_KEYS = ("version", "bits", "rows", "k", "stride_h", "stride_w", "dilation_h",
             "dilation_w", "depth_multiplier")


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
    return out
