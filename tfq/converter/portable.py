"""The portable path: exact low-bit weights in builtin ops, no custom ops.

Each packed-able op keeps its builtin type and gets integer weights with the
trained per-channel scales as TFLite quantization parameters (zero point 0),
so `scale * level` is stored exactly. Which integer type, per op, was chosen
by measuring the stock LiteRT 2.3 runtime (XNNPACK on, x86-64 AVX2; see
docs/converter.md for the numbers):

* FULLY_CONNECTED: dynamic-range op (float activations quantized on the fly,
  integer weights). INT2 and INT4 weights run 4-9x faster than fp32 and
  faster than INT8, so binary/ternary -> INT2, pow2_3bit -> INT4,
  pow2_4bit -> INT8.
* CONV_2D: dynamic-range INT8 is as fast as fp32 or faster, while INT4 and
  INT2 convolutions fall back to reference kernels (2-6x slower than fp32):
  INT8 for every scheme.
* DEPTHWISE_CONV_2D: the dynamic-range depthwise kernel is ~7x slower than
  fp32 and INT4/INT2 are not accepted, so the weights are stored INT8 and a
  DEQUANTIZE op feeds the float kernel (same speed as fp32, float outputs).
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfq import schemes

TT = schema.TensorType

_BITS = {TT.INT2: 2, TT.INT4: 4, TT.INT8: 8}


def _narrowest_type(scheme):
    """The narrowest signed integer type holding every level of the scheme."""
    top = schemes.get(scheme).max_level
    return next(t for t, bits in _BITS.items() if top <= 2 ** (bits - 1) - 1)


# (op, scheme) -> tensor type. Only FULLY_CONNECTED has INT2/INT4 kernels.
CHOICE = {
    "FULLY_CONNECTED": {s: _narrowest_type(s) for s in schemes.NAMES},
    "CONV_2D": {s: TT.INT8 for s in schemes.NAMES},
    "DEPTHWISE_CONV_2D": {s: TT.INT8 for s in schemes.NAMES},
    # only with a constant output_shape (static batch); else lowered to CONV_2D (rewrite.py)
    "TRANSPOSE_CONV": {s: TT.INT8 for s in schemes.NAMES},
}
DEQUANTIZED_OPS = ("DEPTHWISE_CONV_2D",)


def pack_subbyte(values, bits):
    """Packs signed integers into TFLite's INT4/INT2 layout (flat order, low bits first)."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(f"values outside the INT{bits} range [{lo}, {hi}]")
    per = 8 // bits
    u = (v & ((1 << bits) - 1)).astype(np.uint8)
    u = np.concatenate([u, np.zeros((-len(u)) % per, np.uint8)]).reshape(-1, per)
    shifts = (np.arange(per, dtype=np.uint8) * bits)[None, :]
    return np.bitwise_or.reduce(u << shifts, axis=1).astype(np.uint8)


def rewrite_op(rw, sg, op, name, info, det, report):
    """Replaces the float weights of `op` by exact integer weights (see module doc)."""
    if name not in CHOICE:
        report.reason = f"no portable form for {name}"
        return
    write_integer_weights(rw, sg, op, name, info, det.levels, det.scales, CHOICE[name][det.scheme], report)
    report.packed = True


def write_integer_weights(rw, sg, op, name, info, rows, scales, ttype, report):
    """Gives `op` integer weights `rows` ([channels, n] levels) with per-channel `scales`.

    The builtin op then runs in LiteRT's dynamic-range (hybrid) kernels;
    DEQUANTIZED_OPS get a DEQUANTIZE feeding their float kernel instead.
    Sets the report's bytes and reason (`packed` is the caller's).
    """
    bits = _BITS[ttype]
    shape = info["weight_shape"]
    if name == "DEPTHWISE_CONV_2D":
        levels = rows.T.reshape(shape)                # [1, KH, KW, O]
        qdim = 3
        channels = shape[3]
    else:
        levels = rows.reshape(shape)                  # [O, ...]
        qdim = 0
        channels = shape[0]
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float32), (channels,)).copy()
    ints = levels.astype(np.int8)
    data = ints.view(np.uint8).reshape(-1) if bits == 8 else pack_subbyte(ints, bits)
    quant = schema.QuantizationParametersT()
    quant.scale = scales
    quant.zeroPoint = np.zeros(channels, dtype=np.int64)
    quant.quantizedDimension = qdim
    base = report.weight or f"tfq_weights_{len(sg.tensors)}"
    w_idx = rw.add_tensor(sg, base + f"/tfq_int{bits}", data, ttype, shape=shape, quantization=quant)
    inputs = [int(x) for x in op.inputs]
    if name in DEQUANTIZED_OPS:
        f = schema.TensorT()
        f.name = (base + "/tfq_dequantized").encode()
        f.shape = np.asarray(shape, dtype=np.int32)
        f.type = TT.FLOAT32
        f.buffer = 0
        sg.tensors.append(f)
        f_idx = len(sg.tensors) - 1
        deq = schema.OperatorT()
        deq.opcodeIndex = rw.opcode_index(builtin=schema.BuiltinOperator.DEQUANTIZE)
        deq.inputs = np.array([w_idx], dtype=np.int32)
        deq.outputs = np.array([f_idx], dtype=np.int32)
        position = next(i for i, o in enumerate(sg.operators) if o is op)
        sg.operators.insert(position, deq)
        inputs[1] = f_idx
    else:
        inputs[1] = w_idx
    op.inputs = np.array(inputs, dtype=np.int32)
    report.packed_bytes = data.size + scales.size * 4
    report.reason = f"portable INT{bits}" + (" + DEQUANTIZE" if name in DEQUANTIZED_OPS else "")
