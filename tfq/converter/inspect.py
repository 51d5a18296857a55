"""Per-op inspection of any .tflite file: op type, set, bits, sparsity, bytes.

`inspect_model(path)` returns a dict (what `python -m tfq inspect --json`
prints); `format_table` renders it. Weight bytes count the stored weight
tensor of each op (for tfq ops: packed codes plus scales; for quantized
builtins: the integer tensor plus its scales), not biases; the compression
ratio compares them with the same weights stored as float32.
"""

import numpy as np
from ai_edge_litert import schema_py_generated as schema

from tfq.converter import format as fmt
from tfq.converter import sets
from tfq.converter import tflite_io
from tfq import schemes

# builtin op -> index of its weight input
_WEIGHT_INPUT = {
    "FULLY_CONNECTED": 1, "CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "TRANSPOSE_CONV": 1,
    "BATCH_MATMUL": 1, "CONV_3D": 1, "EMBEDDING_LOOKUP": 1,
}
_TYPE_BITS = {
    schema.TensorType.FLOAT32: 32, schema.TensorType.FLOAT16: 16, schema.TensorType.BFLOAT16: 16,
    schema.TensorType.INT8: 8, schema.TensorType.UINT8: 8, schema.TensorType.INT16: 16,
    schema.TensorType.INT4: 4, schema.TensorType.INT2: 2, schema.TensorType.UINT4: 4,
    schema.TensorType.FLOAT64: 64, schema.TensorType.INT32: 32,
}


def _channels_matrix(op_name, w):
    """Arranges a weight tensor as [output channels, n] for set detection."""
    if op_name == "DEPTHWISE_CONV_2D" and w.ndim == 4:
        return w.reshape(-1, w.shape[3]).T
    if op_name == "BATCH_MATMUL" and w.ndim >= 2:
        return w.reshape(-1, w.shape[-1]).T
    if w.ndim >= 2:
        return w.reshape(w.shape[0], -1)
    return w.reshape(1, -1)


def _quant_bytes(tensor):
    q = tensor.quantization
    if q is None or q.scale is None:
        return 0
    n = len(q.scale)
    zp = len(q.zeroPoint) if q.zeroPoint is not None else 0
    return 4 * n + 8 * zp


# Rows of a weight matrix checked for a set at once: bounds the temporaries
# of set detection (about ten float64 copies of a chunk) for any layer size.
_DETECT_CHUNK = 1 << 20


def _float_values(tensor, raw):
    """Dequantized float32 values (float tensors: the array itself, no copy)."""
    q = tensor.quantization
    if raw.dtype.kind == "f":
        return raw
    if q is None or q.scale is None or len(q.scale) == 0:
        return raw.astype(np.float32)
    scale = np.asarray(q.scale, np.float32)
    zp = np.asarray(q.zeroPoint if q.zeroPoint is not None and len(q.zeroPoint) else [0], np.float32)
    if scale.size > 1:
        shape = [1] * raw.ndim
        shape[q.quantizedDimension] = -1
        scale = scale.reshape(shape)
        zp = zp.reshape(shape) if zp.size > 1 else zp
    return (raw.astype(np.float32) - zp) * scale


def _detect_scheme(matrix):
    """The narrowest tfq scheme holding a [channels, n] matrix, or None.

    Detection is per channel, so it runs on chunks of channels and the
    widest scheme any chunk needs is the tensor's: the same answer as
    sets.detect on the whole matrix, in bounded memory.
    """
    rows = max(1, _DETECT_CHUNK // max(1, matrix.shape[1]))
    widest = -1
    for start in range(0, matrix.shape[0], rows):
        det, _ = sets.detect(matrix[start:start + rows])
        if det is None:
            return None
        widest = max(widest, schemes.NAMES.index(det.scheme))
    return schemes.NAMES[widest] if widest >= 0 else None


def inspect_model(source, detect_sets=True):
    """Describes every weighted op of a .tflite model.

    Args:
      source: path or bytes.
      detect_sets: also check builtin weights for tfq sets (exact values).

    Returns:
      A dict: file, file_bytes, ops (list of dicts with subgraph, index, name,
      op, kind, set, bits, params, sparsity, bytes, float_bytes), totals.

    Raises:
      TFLiteFileError: unreadable, truncated or non-TFLite file.
      ValueError: a tfq op with an unsupported format version or bad options.
    """
    # A file is mapped, not read: inspecting a model of hundreds of MB needs
    # little more memory than its largest weight tensor's chunks.
    fb, data, name = tflite_io.load_model(source, mapped=True)
    rows = []
    other_ops = 0
    for g, sg in enumerate(fb.subgraphs):
        for i, op in enumerate(sg.operators or []):
            op_name = tflite_io.op_name(fb, op)
            inputs = [int(x) for x in op.inputs] if op.inputs is not None else []
            if op_name in fmt.CUSTOM_CODES:
                rows.append(_tfq_row(fb, data, name, g, i, sg, op, op_name, inputs))
                continue
            widx = _WEIGHT_INPUT.get(op_name)
            if widx is None or len(inputs) <= widx or inputs[widx] < 0:
                other_ops += 1
                continue
            tensor = sg.tensors[inputs[widx]]
            try:
                raw = tflite_io.constant_array(fb, data, tensor, copy=False)
            except ValueError as err:
                raise tflite_io.TFLiteFileError(f"{name}: node {i} ({op_name}): {err}") from None
            if raw is None:
                other_ops += 1
                continue
            bits = _TYPE_BITS.get(tensor.type, 32)
            stored = tflite_io.buffer_view(fb, data, tensor)
            values = _float_values(tensor, raw)
            scheme = "float" if tensor.type in (schema.TensorType.FLOAT32, schema.TensorType.FLOAT16) \
                else tflite_io.TENSOR_TYPE_NAMES.get(tensor.type, "?").lower()
            if detect_sets and values.size:
                scheme = _detect_scheme(_channels_matrix(op_name, values)) or scheme
            rows.append({
                "subgraph": g, "index": i, "name": tflite_io.tensor_name(tensor), "op": op_name,
                "kind": "builtin", "set": scheme, "bits": bits, "params": int(raw.size),
                "sparsity": 1.0 - np.count_nonzero(values) / values.size if values.size else 0.0,
                "bytes": len(stored) + _quant_bytes(tensor), "float_bytes": int(raw.size) * 4,
                "type": tflite_io.TENSOR_TYPE_NAMES.get(tensor.type, "?"), "layout": "dense",
                "code_bytes": len(stored), "index_bytes": 0, "scale_bytes": _quant_bytes(tensor),
            })
    weight_bytes = sum(r["bytes"] for r in rows)
    float_bytes = sum(r["float_bytes"] for r in rows)
    return {
        "file": name, "file_bytes": len(data), "ops": rows, "other_ops": other_ops,
        "weight_bytes": weight_bytes, "float_weight_bytes": float_bytes,
        "compression": (float_bytes / weight_bytes) if weight_bytes else 1.0,
        "tfq_ops": sum(1 for r in rows if r["kind"] == "tfq"),
    }


def _tfq_row(fb, data, name, g, i, sg, op, op_name, inputs):
    where = f"{name}: node {i} ({op_name}) of subgraph {g}"
    opts = fmt.decode_options(np.asarray(op.customOptions if op.customOptions is not None else [],
                                         dtype=np.uint8).tobytes(), where)
    opts = fmt.validate_options(opts, op_name, where)
    if len(inputs) < 3 or inputs[1] < 0 or inputs[2] < 0:
        raise ValueError(f"{where}: expected inputs (x, packed, scales, bias)")
    packed = tflite_io.buffer_view(fb, data, sg.tensors[inputs[1]])
    scales = tflite_io.buffer_view(fb, data, sg.tensors[inputs[2]])
    if packed is None or scales is None:
        raise ValueError(f"{where}: packed weights and scales must be constant")
    expected = fmt.weight_bytes_expected(opts)
    if len(packed) != expected:
        raise ValueError(f"{where}: packed weights have {len(packed)} bytes, expected {expected}")
    params = int(opts["rows"] * opts["k"])
    row = {
        "subgraph": g, "index": i, "name": tflite_io.tensor_name(sg.tensors[inputs[1]]).replace(
            "/tfq_packed", ""),
        "op": op_name, "kind": "tfq", "set": opts["scheme"], "bits": opts["bits"], "params": params,
        "bytes": len(packed) + len(scales), "float_bytes": params * 4, "type": f"v{opts['version']}",
        "layout": "dense v2" if fmt.is_compact(opts) else "dense", "code_bytes": len(packed),
        "index_bytes": 0, "scale_bytes": len(scales),
    }
    if fmt.is_sparse(opts):
        codes = fmt.unpack_sparse(packed, opts, where)
        zeros = int(np.count_nonzero(fmt.codes_to_levels(codes, opts["scheme"]) == 0))
        nbr, _ = fmt.block_counts(opts)
        index_bytes = 2 * nbr + opts["nnz_blocks"] * opts["index_bits"] // 8
        row.update(layout=f"{opts['block_rows']}x{opts['block_cols']}", index_bytes=index_bytes,
                   code_bytes=len(packed) - index_bytes, sparsity=zeros / params)
        return row
    # Row chunks: the unpacked codes and levels of a large layer never exist at once.
    row_bytes = len(packed) // opts["rows"]
    step = max(1, _DETECT_CHUNK // max(1, opts["k"]))
    zeros = 0
    for r0 in range(0, opts["rows"], step):
        r1 = min(opts["rows"], r0 + step)
        codes = fmt.unpack_codes(packed[r0 * row_bytes:r1 * row_bytes], r1 - r0, opts["k"],
                                 opts["bits"], compact=fmt.is_compact(opts))
        zeros += int(np.count_nonzero(fmt.codes_to_levels(codes, opts["scheme"]) == 0))
    row["sparsity"] = zeros / params
    return row


def _fmt_bytes(n):
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KB"
    return f"{n} B"


def format_table(info):
    """Renders inspect_model's dict as a text table."""
    header = ("#", "name", "op", "kind", "set", "bits", "params", "sparsity", "layout", "weights", "index",
              "scales", "bytes", "ratio")
    lines = []
    for r in info["ops"]:
        idx = f"{r['index']}" if r["subgraph"] == 0 else f"{r['subgraph']}:{r['index']}"
        nm = r["name"] if len(r["name"]) <= 40 else "..." + r["name"][-37:]
        ratio = r["float_bytes"] / r["bytes"] if r["bytes"] else float("nan")
        lines.append((idx, nm, r["op"], r["kind"], r["set"], str(r["bits"]), str(r["params"]),
                      f"{r['sparsity']:.1%}", r["layout"] if r["layout"].startswith("dense") else f"block {r['layout']}",
                      _fmt_bytes(r["code_bytes"]), _fmt_bytes(r["index_bytes"]) if r["index_bytes"] else "-",
                      _fmt_bytes(r["scale_bytes"]), _fmt_bytes(r["bytes"]), f"{ratio:.1f}x"))
    widths = [max(len(h), *(len(row[c]) for row in lines)) if lines else len(h)
              for c, h in enumerate(header)]
    out = [f"{info['file']}: {_fmt_bytes(info['file_bytes'])}, {len(info['ops'])} weighted ops "
           f"({info['tfq_ops']} tfq), {info['other_ops']} other ops"]
    out.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    out.append("  ".join("-" * w for w in widths))
    for row in lines:
        out.append("  ".join(v.ljust(w) for v, w in zip(row, widths)))
    out.append(f"weights: {_fmt_bytes(info['weight_bytes'])} stored, "
               f"{_fmt_bytes(info['float_weight_bytes'])} as float32: "
               f"compression {info['compression']:.1f}x")
    return "\n".join(out)
