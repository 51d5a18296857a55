"""ctypes bindings of the test library libtfq_testing.so (tfq/delegates/testing_api.cc).

Its C entry points run the kernel tier directly (no interpreter), so every
kernel can be checked against the scalar reference and against NumPy. The
test library is built from the same kernel library as libtfq_delegate.so by
the same install step (`pip install --no-build-isolation -e .`, which copies
it here, next to this file); the shipped delegate does not contain these
entry points. Also holds a small NumPy packer for the format of
docs/format.md, written independently of the converter so that the two can
be cross-checked.
"""

import ctypes
import os
import pathlib

import numpy as np

SCHEMES = ("binary", "ternary", "pow2_3bit", "pow2_4bit")
ACTIVATIONS = ("NONE", "RELU", "RELU6")
BITS = {"binary": 1, "ternary": 2, "pow2_3bit": 4, "pow2_4bit": 4}
ISA_NAMES = ("reference", "avx2", "neon", "neon_dotprod", "avx512vnni")

_LIB = None


def testing_library_path():
    """Path of libtfq_testing.so.

    Looks at `$TFQ_TESTING_LIB`, next to this file (where the editable
    install copies it), then next to the delegate `tfq.delegate_path()` finds
    (a build directory: CMake, Bazel's bazel-bin).

    Raises:
        FileNotFoundError: not built; the message says how to build it.
    """
    candidates = []
    if os.environ.get("TFQ_TESTING_LIB"):
        candidates.append(pathlib.Path(os.environ["TFQ_TESTING_LIB"]))
    candidates.append(pathlib.Path(__file__).resolve().parent / "libtfq_testing.so")
    try:
        from tfq.runtime import delegate_path

        candidates.append(pathlib.Path(delegate_path()).parent / "libtfq_testing.so")
    except FileNotFoundError:
        pass
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        "libtfq_testing.so not found (looked in: " + ", ".join(map(str, candidates)) + "). Build "
        "it with `pip install --no-build-isolation --no-deps -e .` from the repository, or set "
        "TFQ_TESTING_LIB to the library.")


def library(path=None):
    """Loads (once) and returns the test library with typed entry points.

    Args:
        path: a libtfq_testing.so to load (default: testing_library_path()).
    """
    global _LIB
    default = path is None
    if _LIB is not None and default:
        return _LIB
    if default:
        path = testing_library_path()
    lib = ctypes.CDLL(str(path))
    f32p = ctypes.POINTER(ctypes.c_float)
    u8p = ctypes.POINTER(ctypes.c_uint8)
    i32p = ctypes.POINTER(ctypes.c_int)
    i64 = ctypes.c_int64
    c_int = ctypes.c_int
    lib.tfq_testing_set_isa.argtypes = [c_int]
    lib.tfq_testing_set_isa.restype = c_int
    lib.tfq_testing_isa.argtypes = [c_int]
    lib.tfq_testing_isa.restype = c_int
    lib.tfq_testing_validate_codes.argtypes = [c_int, u8p, i64, i64, ctypes.c_char_p, c_int]
    lib.tfq_testing_validate_codes.restype = c_int
    lib.tfq_testing_fully_connected.argtypes = [
        f32p, i64, c_int, u8p, i64, i64, f32p, c_int, f32p, c_int, f32p, c_int, c_int]
    lib.tfq_testing_fully_connected.restype = c_int
    lib.tfq_testing_conv.argtypes = [
        c_int, f32p, i32p, c_int, u8p, f32p, c_int, f32p, c_int, f32p, i64, c_int, c_int, i32p]
    lib.tfq_testing_conv.restype = c_int
    i64p = ctypes.POINTER(ctypes.c_int64)
    lib.tfq_testing_sparse_fully_connected.argtypes = [
        f32p, i64, c_int, u8p, i64, i64, i64, i64p, f32p, c_int, f32p, c_int, f32p, c_int, c_int]
    lib.tfq_testing_sparse_fully_connected.restype = c_int
    lib.tfq_testing_sparse_conv.argtypes = [
        f32p, i32p, c_int, u8p, i64, i64p, f32p, c_int, f32p, c_int, f32p, i64, c_int, c_int, i32p]
    lib.tfq_testing_sparse_conv.restype = c_int
    lib.tfq_testing_sparse_path.argtypes = [c_int]
    lib.tfq_testing_sparse_path.restype = ctypes.c_char_p
    lib.tfq_testing_parse_options.argtypes = [u8p, ctypes.c_size_t, ctypes.c_char_p, c_int]
    lib.tfq_testing_parse_options.restype = c_int
    if default:
        _LIB = lib
    return lib


def _ptr(a, ctype):
    return a.ctypes.data_as(ctypes.POINTER(ctype)) if a is not None else None


def set_isa(name, lib=None):
    """Caps the kernel dispatcher at ISA `name` (None: best available); returns the ISA now used."""
    lib = lib or library()
    return ISA_NAMES[lib.tfq_testing_set_isa(-1 if name is None else ISA_NAMES.index(name))]


def selected_isa(force_reference=False, lib=None):
    """The kernels the dispatcher selects on this CPU (the delegate's choice too)."""
    return ISA_NAMES[(lib or library()).tfq_testing_isa(int(force_reference))]


def available_isas(lib=None):
    """The instruction sets this build and CPU can run (the delegate's `isa` option values)."""
    lib = lib or library()
    try:
        return [name for name in ISA_NAMES if set_isa(name, lib) == name]
    finally:
        set_isa(None, lib)


# ----------------------------------------------------------------------------
# The packed format, in NumPy (docs/format.md)


def levels_to_codes(levels, scheme):
    """Maps integer levels to codes; raises ValueError for levels off the scheme."""
    lv = np.asarray(levels, dtype=np.int64)
    if scheme == "binary":
        ok = np.isin(lv, (-1, 1))
        codes = (lv > 0).astype(np.uint8)
    elif scheme == "ternary":
        ok = np.isin(lv, (-1, 0, 1))
        codes = (lv + 1).astype(np.uint8)
    elif scheme in ("pow2_3bit", "pow2_4bit"):
        emax = 2 if scheme == "pow2_3bit" else 6
        mags = np.abs(lv)
        e = np.zeros_like(lv)
        nz = mags > 0
        e[nz] = np.log2(mags[nz]).astype(np.int64)
        ok = (~nz) | ((2 ** e == mags) & (e <= emax))
        codes = np.where(nz, np.where(lv > 0, e + 1, e + 9), 0).astype(np.uint8)
    else:
        raise ValueError(f"unknown scheme {scheme!r}; known: {SCHEMES}")
    if not ok.all():
        raise ValueError(f"levels not representable in scheme {scheme!r}")
    return codes


def zero_code(scheme):
    return {"binary": 0, "ternary": 1, "pow2_3bit": 0, "pow2_4bit": 0}[scheme]


def pack_codes(codes, scheme):
    """Packs codes [rows, k] into the block layout; returns uint8 [rows * row_bytes]."""
    codes = np.asarray(codes, dtype=np.uint8)
    rows, k = codes.shape
    bits = BITS[scheme]
    wpb = 256 // bits
    fields = 8 // bits
    kp = -(-k // wpb) * wpb
    full = np.full((rows, kp), zero_code(scheme), dtype=np.uint8)
    full[:, :k] = codes
    blocks = full.reshape(rows, kp // wpb, fields, 32).astype(np.uint16)
    packed = np.zeros((rows, kp // wpb, 32), dtype=np.uint16)
    for t in range(fields):
        packed |= blocks[:, :, t, :] << (t * bits)
    return packed.astype(np.uint8).reshape(-1)


def pack_levels(levels, scheme):
    return pack_codes(levels_to_codes(levels, scheme), scheme)


def random_levels(rng, shape, scheme):
    if scheme == "binary":
        return rng.choice([-1, 1], size=shape)
    if scheme == "ternary":
        return rng.choice([-1, 0, 1], size=shape)
    emax = 2 if scheme == "pow2_3bit" else 6
    mags = np.concatenate([[0], 2 ** np.arange(emax + 1)])
    return rng.choice(mags, size=shape) * rng.choice([-1, 1], size=shape)


# ----------------------------------------------------------------------------
# NumPy model of the delegate arithmetic (docs/format.md, "Arithmetic")


def quantize_rows(x):
    """Per-row absmax int8 quantization. Returns (q int64, s float32, state)."""
    x = np.asarray(x, dtype=np.float32)
    amax = np.max(np.abs(x), axis=-1)
    finite = np.all(np.isfinite(x), axis=-1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        s = (np.float32(127.0) / amax).astype(np.float32)
        ok = finite & (amax > 0) & np.isfinite(s)
        q = np.clip(np.rint(x * np.where(ok, s, 0)[..., None]), -127, 127)
    q = np.where(ok[..., None], q, 0).astype(np.int64)
    state = np.where(~finite, 2, np.where(ok, 0, 1))
    return q, s, state


def epilogue(acc, s, state, scale, bias, activation):
    """acc [m, o] int64, s [m] -> float32 outputs, per docs/format.md."""
    scale = np.asarray(scale, dtype=np.float32)
    o = acc.shape[-1]
    scale_o = np.broadcast_to(scale, (o,)) if scale.size == 1 else scale
    bias_o = np.zeros(o, np.float32) if bias is None else np.asarray(bias, np.float32)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        f = (scale_o[None, :] / s[:, None]).astype(np.float32)
        y = acc.astype(np.float32) * f + bias_o[None, :]
    y = np.where((state == 1)[:, None], bias_o[None, :], y).astype(np.float32)
    if activation == "RELU":
        y = np.maximum(y, np.float32(0))
    elif activation == "RELU6":
        y = np.minimum(np.maximum(y, np.float32(0)), np.float32(6))
    y = np.where((state == 2)[:, None], np.float32(np.nan), y)
    return y.astype(np.float32)


def numpy_fully_connected(x, levels, scale, bias, activation):
    q, s, state = quantize_rows(x)
    acc = q @ np.asarray(levels, np.int64).T
    return epilogue(acc, s, state, scale, bias, activation)


# ----------------------------------------------------------------------------
# Calls into the library


def fully_connected(x, packed, scheme, rows, k, scale, bias=None, activation="NONE",
                    force_reference=False, threads=1, poison=np.float32(-7.25e30), lib=None):
    lib = lib or library()
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, k)
    m = x.shape[0]
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    y = np.full((m, rows), poison, dtype=np.float32)
    rc = lib.tfq_testing_fully_connected(
        _ptr(x, ctypes.c_float), m, SCHEMES.index(scheme), _ptr(packed, ctypes.c_uint8), rows, k,
        _ptr(scale, ctypes.c_float), int(scale.size != 1), _ptr(bias, ctypes.c_float),
        ACTIVATIONS.index(activation), _ptr(y, ctypes.c_float), int(force_reference), threads)
    if rc != 0:
        raise ValueError(f"tfq_testing_fully_connected failed with {rc}")
    return y


def conv(x, packed, scheme, kernel, out_c, scale, bias=None, activation="NONE", stride=(1, 1),
         dilation=(1, 1), padding="SAME", depthwise=False, depth_multiplier=1,
         force_reference=False, threads=1, poison=np.float32(-7.25e30), lib=None):
    """NHWC conv / depthwise conv through the kernel tier."""
    lib = lib or library()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, h, w, c = x.shape
    geo = np.array([n, h, w, c, kernel[0], kernel[1], stride[0], stride[1], dilation[0],
                    dilation[1], int(padding == "SAME"), out_c, depth_multiplier], dtype=np.int32)
    out_hw = np.zeros(2, dtype=np.int32)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    cap = n * (h + 2) * (w + 2) * out_c * 4 + 64
    y = np.full(cap, poison, dtype=np.float32)
    rc = lib.tfq_testing_conv(
        int(depthwise), _ptr(x, ctypes.c_float), _ptr(geo, ctypes.c_int), SCHEMES.index(scheme),
        _ptr(packed, ctypes.c_uint8), _ptr(scale, ctypes.c_float), int(scale.size != 1),
        _ptr(bias, ctypes.c_float), ACTIVATIONS.index(activation), _ptr(y, ctypes.c_float),
        y.size, int(force_reference), threads, _ptr(out_hw, ctypes.c_int))
    if rc != 0:
        raise ValueError(f"tfq_testing_conv failed with {rc}")
    used = n * int(out_hw[0]) * int(out_hw[1]) * out_c
    # Everything past the output must still hold the poison value.
    if not np.all(y[used:] == poison):
        raise AssertionError("kernel wrote past the end of its output")
    return y[:used].reshape(n, int(out_hw[0]), int(out_hw[1]), out_c)


def sparse_path(force_reference=False, lib=None):
    """The block-sparse kernels the dispatcher selects ("scalar", "avx2-256", "vnni-512", "vnni-256")."""
    return (lib or library()).tfq_testing_sparse_path(int(force_reference)).decode()


def pack_sparse_levels(levels, scheme, block):
    """Format-v2 tensor 1 of a [rows, k] level matrix: (uint8 data, options dict)."""
    from tfq.converter.format import pack_sparse

    return pack_sparse(levels_to_codes(levels, scheme), BITS[scheme], block, zero_code(scheme))


def _sparse_opts(opts, drop_level_sums):
    return np.array([opts["block_rows"], opts["block_cols"], opts["nnz_blocks"], opts["index_bits"],
                     int(drop_level_sums)], dtype=np.int64)


def sparse_fully_connected(x, data, opts, scheme, rows, k, scale, bias=None, activation="NONE",
                           force_reference=False, threads=1, drop_level_sums=False,
                           poison=np.float32(-7.25e30), lib=None):
    """Block-sparse FullyConnected through the kernel tier (weights from pack_sparse_levels)."""
    lib = lib or library()
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, k)
    m = x.shape[0]
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    so = _sparse_opts(opts, drop_level_sums)
    y = np.full((m, rows), poison, dtype=np.float32)
    rc = lib.tfq_testing_sparse_fully_connected(
        _ptr(x, ctypes.c_float), m, SCHEMES.index(scheme), _ptr(data, ctypes.c_uint8), data.size, rows,
        k, _ptr(so, ctypes.c_int64), _ptr(scale, ctypes.c_float), int(scale.size != 1),
        _ptr(bias, ctypes.c_float), ACTIVATIONS.index(activation), _ptr(y, ctypes.c_float),
        int(force_reference), threads)
    if rc != 0:
        raise ValueError(f"tfq_testing_sparse_fully_connected failed with {rc}")
    return y


def sparse_conv(x, data, opts, scheme, kernel, out_c, scale, bias=None, activation="NONE",
                stride=(1, 1), dilation=(1, 1), padding="SAME", force_reference=False, threads=1,
                drop_level_sums=False, poison=np.float32(-7.25e30), lib=None):
    """Block-sparse NHWC Conv2D through the kernel tier (weights [out_c, kh*kw*in_c])."""
    lib = lib or library()
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, h, w, c = x.shape
    geo = np.array([n, h, w, c, kernel[0], kernel[1], stride[0], stride[1], dilation[0],
                    dilation[1], int(padding == "SAME"), out_c, 1], dtype=np.int32)
    out_hw = np.zeros(2, dtype=np.int32)
    scale = np.ascontiguousarray(scale, dtype=np.float32)
    bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    so = _sparse_opts(opts, drop_level_sums)
    cap = n * (h + 2) * (w + 2) * out_c * 4 + 64
    y = np.full(cap, poison, dtype=np.float32)
    rc = lib.tfq_testing_sparse_conv(
        _ptr(x, ctypes.c_float), _ptr(geo, ctypes.c_int), SCHEMES.index(scheme),
        _ptr(data, ctypes.c_uint8), data.size, _ptr(so, ctypes.c_int64), _ptr(scale, ctypes.c_float),
        int(scale.size != 1), _ptr(bias, ctypes.c_float), ACTIVATIONS.index(activation),
        _ptr(y, ctypes.c_float), y.size, int(force_reference), threads, _ptr(out_hw, ctypes.c_int))
    if rc != 0:
        raise ValueError(f"tfq_testing_sparse_conv failed with {rc}")
    used = n * int(out_hw[0]) * int(out_hw[1]) * out_c
    if not np.all(y[used:] == poison):
        raise AssertionError("kernel wrote past the end of its output")
    return y[:used].reshape(n, int(out_hw[0]), int(out_hw[1]), out_c)


def validate_codes(packed, scheme, rows, k, lib=None):
    """Returns None when valid, else the library's error message."""
    lib = lib or library()
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    buf = ctypes.create_string_buffer(256)
    rc = lib.tfq_testing_validate_codes(SCHEMES.index(scheme), _ptr(packed, ctypes.c_uint8),
                                        rows, k, buf, 256)
    return None if rc == 0 else buf.value.decode()


def parse_options(data, lib=None):
    """Parses FlexBuffer options with the delegate's reader: (ok, text)."""
    lib = lib or library()
    arr = np.frombuffer(bytes(data), dtype=np.uint8).copy()
    buf = ctypes.create_string_buffer(4096)
    ptr = _ptr(arr, ctypes.c_uint8) if arr.size else None
    rc = lib.tfq_testing_parse_options(ptr, arr.size, buf, 4096)
    return rc == 0, buf.value.decode(errors="replace")
