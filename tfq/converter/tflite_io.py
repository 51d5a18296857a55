"""Reading and writing .tflite flatbuffers with clear errors.

Uses the schema module shipped in ai_edge_litert (object API). Every parse
error is turned into a `TFLiteFileError` naming the file and the problem.
"""

import mmap
import os
import struct

import numpy as np
from ai_edge_litert import schema_py_generated as schema

SCHEMA_VERSION = 3
FILE_IDENTIFIER = b"TFL3"

BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
TENSOR_TYPE_NAMES = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
NUMPY_TYPES = {
    schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
    schema.TensorType.FLOAT64: np.float64, schema.TensorType.INT32: np.int32,
    schema.TensorType.INT64: np.int64, schema.TensorType.INT8: np.int8,
    schema.TensorType.UINT8: np.uint8, schema.TensorType.INT16: np.int16,
    schema.TensorType.BOOL: np.bool_, schema.TensorType.UINT16: np.uint16,
    schema.TensorType.UINT32: np.uint32, schema.TensorType.UINT64: np.uint64,
}
# bits per element of the types stored packed below a byte
SUBBYTE_BITS = {schema.TensorType.INT4: 4, schema.TensorType.INT2: 2,
                schema.TensorType.UINT4: 4}
ACTIVATION_NAMES = {v: k for k, v in vars(schema.ActivationFunctionType).items()
                    if not k.startswith("_")}
PADDING_NAMES = {v: k for k, v in vars(schema.Padding).items() if not k.startswith("_")}


class _StrictBytes(bytes):
    """bytes whose slices refuse to run past the end (flatbuffers slices strings silently)."""

    def __getitem__(self, key):
        if isinstance(key, slice) and key.stop is not None and key.stop > len(self):
            raise IndexError(f"read of bytes [{key.start}, {key.stop}) past the end ({len(self)})")
        return bytes.__getitem__(self, key)


class _StrictMap(mmap.mmap):
    """A read-only file mapping whose slices refuse to run past the end, like _StrictBytes.

    Lets a reader parse a large model without a copy of the file in memory:
    the pages it touches are read from the page cache.
    """

    def __getitem__(self, key):
        if isinstance(key, slice) and key.stop is not None and key.stop > len(self):
            raise IndexError(f"read of bytes [{key.start}, {key.stop}) past the end ({len(self)})")
        return mmap.mmap.__getitem__(self, key)


class TFLiteFileError(ValueError):
    """A file that is not a readable .tflite model (names the file and the problem)."""


def read_bytes(source, name=None, mapped=False):
    """Returns (bytes, display name) for a path or a bytes-like object.

    With mapped=True a non-empty file is mapped read-only instead of read
    (a bytes-like, bounds-checked object): memory stays near what the
    caller touches.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), name or "<bytes>"
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            if mapped and os.fstat(f.fileno()).st_size > 0:
                return _StrictMap(f.fileno(), 0, access=mmap.ACCESS_READ), name or path
            return f.read(), name or path
    except OSError as err:
        raise TFLiteFileError(f"{path}: cannot read file ({err.strerror})") from None


def load_model(source, name=None, mapped=False):
    """Parses a .tflite file or buffer into a schema ModelT.

    Args:
      source: path, or bytes of a .tflite flatbuffer.
      name: display name used in errors (defaults to the path).
      mapped: map a file instead of reading it; the returned data is then
        a bytes-like mapping, and the ModelT's buffer arrays are views of it.

    Returns:
      (ModelT, bytes, name).

    Raises:
      TFLiteFileError: the file is missing, empty, truncated, not a TFLite
        flatbuffer, or of an unsupported schema version.
    """
    data, name = read_bytes(source, name, mapped)
    if len(data) < 8:
        raise TFLiteFileError(f"{name}: not a TFLite model (only {len(data)} bytes)")
    if data[4:8] != FILE_IDENTIFIER:
        raise TFLiteFileError(
            f"{name}: not a TFLite model (file identifier {data[4:8]!r}, expected {FILE_IDENTIFIER!r})")
    root = struct.unpack_from("<I", data, 0)[0]
    if root + 4 > len(data):
        raise TFLiteFileError(f"{name}: truncated or corrupted TFLite file "
                              f"(root table at offset {root} of a {len(data)}-byte file)")
    try:
        model = schema.ModelT.InitFromPackedBuf(
            data if isinstance(data, _StrictMap) else _StrictBytes(data), 0)
    except (IndexError, struct.error, ValueError, TypeError, AttributeError, OverflowError,
            UnicodeDecodeError, RecursionError, MemoryError) as err:
        raise TFLiteFileError(f"{name}: truncated or corrupted TFLite file "
                              f"({type(err).__name__}: {err})") from None
    if model.version != SCHEMA_VERSION:
        raise TFLiteFileError(f"{name}: TFLite schema version {model.version} is not supported "
                              f"(supported: {SCHEMA_VERSION})")
    _validate_structure(model, data, name)
    return model, data, name


def _validate_structure(model, data, name):
    """Checks every index the readers follow, so later code cannot go out of range."""
    nbuf = len(model.buffers or [])
    ncodes = len(model.operatorCodes or [])
    if not model.subgraphs:
        raise TFLiteFileError(f"{name}: corrupted TFLite file (no subgraphs)")
    for b, buf in enumerate(model.buffers or []):
        if buf.offset and buf.offset + buf.size > len(data):
            raise TFLiteFileError(f"{name}: truncated TFLite file (buffer {b} ends at "
                                  f"{buf.offset + buf.size}, file has {len(data)} bytes)")
    for g, sg in enumerate(model.subgraphs):
        ntens = len(sg.tensors or [])
        for t, tensor in enumerate(sg.tensors or []):
            if not 0 <= tensor.buffer < max(nbuf, 1):
                raise TFLiteFileError(f"{name}: corrupted TFLite file (subgraph {g} tensor {t} "
                                      f"refers to buffer {tensor.buffer} of {nbuf})")
        for i, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < ncodes:
                raise TFLiteFileError(f"{name}: corrupted TFLite file (subgraph {g} op {i} "
                                      f"has opcode index {op.opcodeIndex} of {ncodes})")
            for idx in list(_ints(op.inputs)) + list(_ints(op.outputs)):
                if idx >= ntens or idx < -1:
                    raise TFLiteFileError(f"{name}: corrupted TFLite file (subgraph {g} op {i} "
                                          f"refers to tensor {idx} of {ntens})")
        for idx in list(_ints(sg.inputs)) + list(_ints(sg.outputs)):
            if not 0 <= idx < ntens:
                raise TFLiteFileError(f"{name}: corrupted TFLite file (subgraph {g} input/output "
                                      f"tensor {idx} of {ntens})")


def _ints(values):
    return [] if values is None else [int(v) for v in values]


def save_model(model):
    """Serializes a ModelT to bytes with the TFLite file identifier."""
    import flatbuffers
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def op_name(model, op):
    """Returns the builtin name (e.g. 'CONV_2D') or the custom code of an operator."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode("utf-8", "replace") if isinstance(custom, bytes) else str(custom)
    return BUILTIN_NAMES.get(builtin, f"BUILTIN_{builtin}")


def is_custom(model, op):
    code = model.operatorCodes[op.opcodeIndex]
    return max(int(code.builtinCode), int(code.deprecatedBuiltinCode)) == schema.BuiltinOperator.CUSTOM


def buffer_view(model, data, tensor):
    """Returns a tensor's buffer as a uint8 array, without a copy where possible (or None)."""
    buf = model.buffers[tensor.buffer]
    if buf.data is not None and len(buf.data):
        return np.asarray(buf.data, dtype=np.uint8).reshape(-1)
    if buf.offset and buf.size:
        return np.frombuffer(data, dtype=np.uint8, count=buf.size, offset=buf.offset)
    return None


def buffer_bytes(model, data, tensor):
    """Returns the raw bytes of a tensor's buffer (or None when it has none)."""
    view = buffer_view(model, data, tensor)
    return None if view is None else view.tobytes()


def tensor_name(tensor):
    n = tensor.name
    return n.decode("utf-8", "replace") if isinstance(n, bytes) else str(n or "")


def constant_array(model, data, tensor, copy=True):
    """Returns a constant tensor's value as a NumPy array (None for non-constant tensors).

    INT4/INT2 tensors are unpacked (low bits first) to int8. With copy=False
    other types come back as a read-only view of the model's buffer.
    """
    raw = buffer_view(model, data, tensor)
    if raw is None:
        return None
    shape = [int(s) for s in (tensor.shape if tensor.shape is not None else [])]
    count = int(np.prod(shape)) if shape else 1
    if tensor.type in SUBBYTE_BITS:
        bits = SUBBYTE_BITS[tensor.type]
        u = np.frombuffer(raw, dtype=np.uint8)
        per = 8 // bits
        fields = ((u[:, None] >> (np.arange(per, dtype=np.uint8) * bits)[None, :])
                  & ((1 << bits) - 1)).reshape(-1)[:count]
        if len(fields) < count:
            raise ValueError(f"tensor {tensor_name(tensor)!r}: buffer too small for shape {shape}")
        values = fields.astype(np.int8)
        if tensor.type != schema.TensorType.UINT4:
            values = np.where(values >= (1 << (bits - 1)), values - (1 << bits), values).astype(np.int8)
        return values.reshape(shape)
    dtype = NUMPY_TYPES.get(tensor.type)
    if dtype is None:
        raise ValueError(f"tensor {tensor_name(tensor)!r}: type "
                         f"{TENSOR_TYPE_NAMES.get(tensor.type, tensor.type)} is not supported here")
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise ValueError(f"tensor {tensor_name(tensor)!r}: buffer has {len(raw)} bytes, "
                         f"shape {shape} of {TENSOR_TYPE_NAMES[tensor.type]} needs {count * itemsize}")
    values = np.frombuffer(raw, dtype=dtype).reshape(shape)
    return values.copy() if copy else values
