"""Kernel tier tests: AVX2 vs the scalar reference vs NumPy, through the
library's test-only C entry points (no interpreter involved).

Shapes step through primes and odd tails around the block sizes (32, 64, 128,
256 weights), every scheme, every activation, 1-4 threads; outputs are
poisoned before each call and every element is compared. Seeds are fixed and
printed in the test ids so any case can be replayed.
"""

import numpy as np
import pytest

from helpers import native

SCHEMES = native.SCHEMES
ACTS = native.ACTIVATIONS


@pytest.fixture(scope="module")
def lib():
    return native.library()


SIMD_ISAS = ("avx2", "avx512vnni")


@pytest.fixture(params=SIMD_ISAS)
def simd(request, lib):
    """Runs the test once per SIMD instruction set this CPU and build support."""
    got = native.set_isa(request.param, lib)
    try:
        if got != request.param:
            pytest.skip(f"no {request.param} kernels on this CPU/build (dispatcher picked {got})")
        yield request.param
    finally:
        native.set_isa(None, lib)


def test_dispatch_names(lib):
    assert native.selected_isa(True, lib) == "reference"
    assert native.selected_isa(False, lib) in native.ISA_NAMES


def _fc_case(rng, scheme, m, rows, k, per_channel=True, with_bias=True):
    levels = native.random_levels(rng, (rows, k), scheme)
    packed = native.pack_levels(levels, scheme)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    scale = rng.uniform(0.01, 0.5, rows if per_channel else 1).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32) if with_bias else None
    return levels, packed, x, scale, bias


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fully_connected_simd_equals_reference_and_numpy(lib, simd, scheme, seed):
    rng = np.random.default_rng(seed)
    shapes = [(1, 1, 1), (1, 5, 31), (1, 13, 127), (1, 7, 128), (1, 9, 129), (2, 3, 257),
              (3, 37, 383), (5, 4, 511), (1, 61, 1031), (7, 11, 67), (4, 8, 2053), (6, 45, 300),
              (9, 64, 129), (13, 33, 777)]
    for i, (m, rows, k) in enumerate(shapes):
        act = ACTS[(i + seed) % 3]
        per_channel = (i + seed) % 4 != 3
        levels, packed, x, scale, bias = _fc_case(rng, scheme, m, rows, k, per_channel, i % 3 != 2)
        threads = 1 + (i % 4)
        y_ref = native.fully_connected(x, packed, scheme, rows, k, scale, bias, act,
                                       force_reference=True, lib=lib)
        y_avx = native.fully_connected(x, packed, scheme, rows, k, scale, bias, act,
                                       threads=threads, lib=lib)
        y_np = native.numpy_fully_connected(x, levels, scale, bias, act)
        ctx = f"isa={simd} scheme={scheme} seed={seed} m={m} rows={rows} k={k} act={act} threads={threads}"
        np.testing.assert_array_equal(y_avx, y_ref, err_msg=ctx)
        np.testing.assert_array_equal(y_ref, y_np, err_msg=ctx)


@pytest.mark.parametrize("threads", [1, 2, 3, 4])
def test_fully_connected_threads_identical(lib, simd, threads):
    rng = np.random.default_rng(10 + threads)
    for scheme in SCHEMES:
        levels, packed, x, scale, bias = _fc_case(rng, scheme, 3, 97, 389)
        y1 = native.fully_connected(x, packed, scheme, 97, 389, scale, bias, "RELU6", lib=lib)
        yt = native.fully_connected(x, packed, scheme, 97, 389, scale, bias, "RELU6",
                                    threads=threads, lib=lib)
        np.testing.assert_array_equal(yt, y1)


def _worst_case_fc(scheme, k, sign_x, level):
    """All weights at one level, all activations at +-127 after quantization."""
    x = np.full((1, k), sign_x, dtype=np.float32)
    levels = np.full((3, k), level, dtype=np.int64)
    return x, levels


@pytest.mark.parametrize("scheme,level", [("binary", 1), ("binary", -1), ("ternary", 1),
                                          ("ternary", -1), ("pow2_3bit", 4), ("pow2_3bit", -4),
                                          ("pow2_4bit", 64), ("pow2_4bit", -64)])
@pytest.mark.parametrize("sign_x", [1.0, -1.0])
def test_int16_overflow_worst_case(lib, simd, scheme, level, sign_x):
    """vpmaddubsw lanes at their extreme over long rows (docs/delegate.md, "Arithmetic and kernels")."""
    k = {"binary": 65536 + 256 * 3 + 5, "ternary": 65536 + 128 * 3 + 7,
         "pow2_3bit": 65536 + 77, "pow2_4bit": 65536 + 63}[scheme]
    x, levels = _worst_case_fc(scheme, k, sign_x, level)
    packed = native.pack_levels(levels, scheme)
    scale = np.ones(3, np.float32)
    want = np.full((1, 3), np.float32(level * sign_x * 127 * k) / np.float32(127.0), np.float32)
    for force in (True, False):
        y = native.fully_connected(x, packed, scheme, 3, k, scale, None, "NONE",
                                   force_reference=force, threads=2, lib=lib)
        # acc = level * sign * 127 * k exactly; y = acc * (1 / s) with s = 127.
        np.testing.assert_array_equal(y, native.numpy_fully_connected(x, levels, scale, None, "NONE"))
        np.testing.assert_allclose(y, want, rtol=1e-6)


def test_alternating_extremes_do_not_overflow(lib, simd):
    """Largest codes against alternating-sign activations: partial sums swing."""
    rng = np.random.default_rng(3)
    for scheme, lv in (("ternary", (1, -1)), ("pow2_4bit", (64, -64)), ("binary", (1, -1))):
        k = 40000
        levels = np.where(rng.random((5, k)) < 0.5, lv[0], lv[1]).astype(np.int64)
        levels[0] = lv[0]
        x = np.where(np.arange(k) % 2 == 0, 1.0, -1.0).astype(np.float32)[None, :]
        x = np.repeat(x, 2, axis=0)
        x[1] = np.abs(x[1])
        packed = native.pack_levels(levels, scheme)
        scale = np.ones(5, np.float32)
        y_ref = native.fully_connected(x, packed, scheme, 5, k, scale, force_reference=True, lib=lib)
        y = native.fully_connected(x, packed, scheme, 5, k, scale, lib=lib)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_array_equal(y, native.numpy_fully_connected(x, levels, scale, None, "NONE"))


def test_zero_and_nonfinite_rows(lib):
    rng = np.random.default_rng(4)
    for scheme in SCHEMES:
        levels, packed, x, scale, bias = _fc_case(rng, scheme, 4, 19, 300)
        x[0] = 0.0
        x[1, 17] = np.nan
        x[2, 5] = -np.inf
        for force in (True, False):
            y = native.fully_connected(x, packed, scheme, 19, 300, scale, bias, "RELU",
                                       force_reference=force, lib=lib)
            np.testing.assert_array_equal(y[0], np.maximum(bias, 0))
            assert np.all(np.isnan(y[1])) and np.all(np.isnan(y[2]))
            np.testing.assert_array_equal(y[3], native.numpy_fully_connected(
                x[3:], levels, scale, bias, "RELU")[0])


def test_tiny_activations_count_as_zero(lib):
    """A denormal absmax would give s = inf: treated like an all-zero row."""
    levels, packed = np.ones((2, 10), np.int64), native.pack_levels(np.ones((2, 10)), "ternary")
    x = np.full((1, 10), 1e-45, np.float32)
    bias = np.array([0.5, -0.5], np.float32)
    for force in (True, False):
        y = native.fully_connected(x, packed, "ternary", 2, 10, np.ones(2, np.float32), bias,
                                   force_reference=force, lib=lib)
        np.testing.assert_array_equal(y[0], bias)


# ---------------------------------------------------------------- convolutions


def _numpy_conv(x, levels, kernel, out_c, scale, bias, act, stride, dilation, padding,
                depthwise=False, dm=1):
    """Delegate arithmetic in NumPy: per-image int8 activations, exact int sums."""
    n, h, w, c = x.shape
    kh, kw = kernel
    outs = []
    for b in range(n):
        q, s, state = native.quantize_rows(x[b].reshape(1, -1))
        qimg = q.reshape(h, w, c)

        def out_size(size, k, st, dl):
            eff = (k - 1) * dl + 1
            if padding == "SAME":
                o = -(-size // st)
                return o, max((o - 1) * st + eff - size, 0) // 2
            return (size - eff) // st + 1, 0

        oh, pt = out_size(h, kh, stride[0], dilation[0])
        ow, pl = out_size(w, kw, stride[1], dilation[1])
        acc = np.zeros((oh * ow, out_c), np.int64)
        for i in range(kh):
            for j in range(kw):
                ys = np.arange(oh) * stride[0] - pt + i * dilation[0]
                xs = np.arange(ow) * stride[1] - pl + j * dilation[1]
                vy = (ys >= 0) & (ys < h)
                vx = (xs >= 0) & (xs < w)
                patch = np.zeros((oh, ow, c), np.int64)
                patch[np.ix_(vy, vx)] = qimg[np.ix_(ys[vy], xs[vx])]
                patch = patch.reshape(oh * ow, c)
                if depthwise:
                    acc += patch[:, np.arange(out_c) // dm] * levels[i * kw + j][None, :]
                else:
                    acc += patch @ levels[:, i, j, :].T
        y = native.epilogue(acc, np.repeat(s, oh * ow), np.repeat(state, oh * ow), scale, bias, act)
        outs.append(y.reshape(oh, ow, out_c))
    return np.stack(outs)


CONV_CASES = [
    # (n, h, w, c, kh, kw, out_c, stride, dilation, padding)
    (1, 7, 9, 3, 3, 3, 5, (1, 1), (1, 1), "SAME"),
    (1, 11, 6, 16, 1, 1, 13, (1, 1), (1, 1), "VALID"),
    (1, 5, 5, 128, 1, 1, 7, (1, 1), (1, 1), "SAME"),  # direct 1x1 path (c == padded k)
    (2, 9, 8, 7, 3, 3, 11, (2, 2), (1, 1), "SAME"),
    (1, 13, 11, 5, 3, 2, 9, (2, 1), (2, 1), "VALID"),
    (1, 8, 8, 33, 5, 5, 3, (1, 3), (1, 1), "SAME"),
    (1, 6, 7, 64, 3, 3, 17, (1, 1), (2, 2), "SAME"),
    (3, 4, 4, 2, 1, 3, 19, (1, 1), (1, 1), "VALID"),
    # channel-interleaved GEMM: 3 groups of 16 (a 2-group panel and a 1-group
    # tail), odd pixel counts, and 1x1 inputs read in place (C % 4 == 0, C <
    # padded k) or through im2col (C % 4 != 0)
    (1, 7, 5, 20, 1, 1, 37, (1, 1), (1, 1), "SAME"),
    (2, 5, 3, 18, 1, 1, 33, (1, 1), (1, 1), "VALID"),
    (1, 9, 7, 24, 3, 3, 48, (1, 1), (1, 1), "SAME"),
    (1, 6, 6, 260, 1, 1, 21, (2, 2), (1, 1), "SAME"),
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conv2d_simd_equals_reference_and_numpy(lib, simd, scheme):
    rng = np.random.default_rng(100 + SCHEMES.index(scheme))
    for i, (n, h, w, c, kh, kw, oc, stride, dil, pad) in enumerate(CONV_CASES):
        act = ACTS[i % 3]
        levels = native.random_levels(rng, (oc, kh, kw, c), scheme)
        packed = native.pack_levels(levels.reshape(oc, -1), scheme)
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        scale = rng.uniform(0.01, 0.3, oc if i % 4 != 1 else 1).astype(np.float32)
        bias = rng.standard_normal(oc).astype(np.float32) if i % 3 else None
        kw_args = dict(activation=act, stride=stride, dilation=dil, padding=pad, lib=lib)
        y_ref = native.conv(x, packed, scheme, (kh, kw), oc, scale, bias, force_reference=True,
                            **kw_args)
        y_np = _numpy_conv(x, levels, (kh, kw), oc, scale, bias, act, stride, dil, pad)
        ctx = f"scheme={scheme} case={i}"
        np.testing.assert_array_equal(y_ref, y_np, err_msg=ctx)
        for threads in (1, 2, 3, 4):
            y = native.conv(x, packed, scheme, (kh, kw), oc, scale, bias, threads=threads, **kw_args)
            np.testing.assert_array_equal(y, y_ref, err_msg=f"{ctx} threads={threads}")


DW_CASES = [
    # (n, h, w, c, kh, kw, dm, stride, dilation, padding)
    (1, 7, 9, 1, 3, 3, 1, (1, 1), (1, 1), "SAME"),
    (1, 9, 8, 32, 3, 3, 1, (2, 2), (1, 1), "SAME"),
    (2, 6, 7, 37, 3, 3, 1, (1, 1), (1, 1), "VALID"),
    (1, 10, 5, 67, 5, 3, 1, (1, 2), (2, 1), "SAME"),
    (1, 5, 5, 130, 3, 3, 1, (1, 1), (1, 1), "SAME"),
    (1, 8, 8, 5, 3, 3, 2, (2, 2), (1, 1), "VALID"),
    (1, 6, 6, 7, 3, 3, 3, (1, 1), (1, 1), "SAME"),
    (1, 4, 4, 16, 1, 1, 1, (1, 1), (1, 1), "SAME"),
]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_depthwise_simd_equals_reference_and_numpy(lib, simd, scheme):
    rng = np.random.default_rng(200 + SCHEMES.index(scheme))
    for i, (n, h, w, c, kh, kw, dm, stride, dil, pad) in enumerate(DW_CASES):
        act = ACTS[(i + 1) % 3]
        oc = c * dm
        levels = native.random_levels(rng, (kh * kw, oc), scheme)
        packed = native.pack_levels(levels, scheme)
        x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        scale = rng.uniform(0.01, 0.3, oc if i % 4 != 2 else 1).astype(np.float32)
        bias = rng.standard_normal(oc).astype(np.float32) if i % 3 else None
        kw_args = dict(activation=act, stride=stride, dilation=dil, padding=pad, depthwise=True,
                       depth_multiplier=dm, lib=lib)
        y_ref = native.conv(x, packed, scheme, (kh, kw), oc, scale, bias, force_reference=True,
                            **kw_args)
        y_np = _numpy_conv(x, levels, (kh, kw), oc, scale, bias, act, stride, dil, pad,
                           depthwise=True, dm=dm)
        ctx = f"scheme={scheme} case={i}"
        np.testing.assert_array_equal(y_ref, y_np, err_msg=ctx)
        for threads in (1, 2, 3, 4):
            y = native.conv(x, packed, scheme, (kh, kw), oc, scale, bias, threads=threads, **kw_args)
            np.testing.assert_array_equal(y, y_ref, err_msg=f"{ctx} threads={threads}")


def test_depthwise_worst_case_pow2(lib, simd):
    """Many taps at level +-64 against +-127: int16 partial sums must widen."""
    c, kh, kw = 40, 7, 7
    for level, sign in ((64, 1.0), (-64, 1.0), (64, -1.0)):
        levels = np.full((kh * kw, c), level, np.int64)
        packed = native.pack_levels(levels, "pow2_4bit")
        x = np.full((1, 9, 9, c), sign, np.float32)
        scale = np.ones(c, np.float32)
        y_ref = native.conv(x, packed, "pow2_4bit", (kh, kw), c, scale, depthwise=True,
                            padding="VALID", force_reference=True, lib=lib)
        y = native.conv(x, packed, "pow2_4bit", (kh, kw), c, scale, depthwise=True,
                        padding="VALID", lib=lib)
        np.testing.assert_array_equal(y, y_ref)
        np.testing.assert_allclose(y, level * sign * kh * kw, rtol=1e-6)


def test_conv_nonfinite_image_gives_nan(lib):
    rng = np.random.default_rng(5)
    levels = native.random_levels(rng, (4, 3, 3, 3), "ternary")
    packed = native.pack_levels(levels.reshape(4, -1), "ternary")
    x = rng.standard_normal((2, 5, 5, 3)).astype(np.float32)
    x[1, 2, 2, 1] = np.inf
    y = native.conv(x, packed, "ternary", (3, 3), 4, np.ones(4, np.float32), lib=lib)
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1]))


# ---------------------------------------------------------------- format


@pytest.mark.parametrize("scheme", SCHEMES)
def test_validate_codes(lib, scheme):
    rng = np.random.default_rng(6)
    levels = native.random_levels(rng, (3, 200), scheme)
    packed = native.pack_levels(levels, scheme)
    assert native.validate_codes(packed, scheme, 3, 200, lib=lib) is None
    invalid = {"binary": None, "ternary": 3, "pow2_3bit": 5, "pow2_4bit": 8}[scheme]
    if invalid is None:
        return  # every binary code is valid
    bad = packed.copy()
    bad[1 * (packed.size // 3) + 5] = invalid  # row 1, byte 5: field 0 -> position 5
    msg = native.validate_codes(bad, scheme, 3, 200, lib=lib)
    assert msg is not None and "row 1" in msg and "position 5" in msg, msg


def test_packer_matches_converter():
    """The test packer and the converter's packer agree byte for byte."""
    fmt = pytest.importorskip("tfq.converter.format")
    rng = np.random.default_rng(7)
    for scheme in SCHEMES:
        levels = native.random_levels(rng, (5, 301), scheme)
        codes = fmt.levels_to_codes(levels, scheme)
        ours = native.pack_levels(levels, scheme)
        theirs = np.asarray(fmt.pack_codes(codes, native.BITS[scheme],
                                           zero_code=native.zero_code(scheme))).reshape(-1)
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kind", ["conv3x3", "conv1x1", "depthwise"])
def test_large_image_parallel_quantization(lib, simd, kind):
    """Images of 2^15+ values are quantized in parallel pixel chunks (the small
    cases above stay on one thread): every thread count must give the reference
    output, also with a NaN or an all-zero image."""
    rng = np.random.default_rng(300)
    h, w, c = 37, 33, 29  # 35409 values, chunks of 564 pixels, a ragged last chunk
    k = (1, 1) if kind == "conv1x1" else (3, 3)
    depthwise = kind == "depthwise"
    oc = c if depthwise else 23
    shape = (k[0] * k[1], oc) if depthwise else (oc, k[0], k[1], c)
    levels = native.random_levels(rng, shape, "ternary")
    packed = native.pack_levels(levels if depthwise else levels.reshape(oc, -1), "ternary")
    scale = rng.uniform(0.01, 0.3, oc).astype(np.float32)
    bias = rng.standard_normal(oc).astype(np.float32)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    bad = x.copy()
    bad[0, h - 1, w - 1, c - 1] = np.nan  # in the last chunk
    for image in (x, bad, np.zeros_like(x)):
        kw_args = dict(activation=ACTS[1], padding="SAME", depthwise=depthwise, lib=lib)
        y_ref = native.conv(image, packed, "ternary", k, oc, scale, bias, force_reference=True, **kw_args)
        for threads in (1, 2, 3, 4):
            y = native.conv(image, packed, "ternary", k, oc, scale, bias, threads=threads, **kw_args)
            np.testing.assert_array_equal(y, y_ref, err_msg=f"{kind} threads={threads}")
        assert np.all(np.isnan(y_ref)) == (image is bad)


@pytest.mark.parametrize("extra_blocks", [0, 400])
def test_masked_ternary_gemv_at_its_bound(lib, simd, extra_blocks):
    """The shift-free ternary GEMV (AVX-512) keeps codes shifted by up to 6 bits
    in int32 lanes: at the extreme a lane gains 4 * 128 * 127 per block of 128
    weights and would overflow after 33025 blocks. It is used up to 32768
    blocks, the shifted kernel beyond; with all codes 2 (level +1) and all
    activations 127, both sides (33168 blocks would overflow the masked
    kernel) must give the exact sum."""
    k = (32768 + extra_blocks) * 128
    x = np.ones((1, k), np.float32)
    levels = np.ones((1, k), np.int64)
    packed = native.pack_levels(levels, "ternary")
    y = native.fully_connected(x, packed, "ternary", 1, k, np.ones(1, np.float32), None, "NONE",
                               lib=lib)
    # acc = 127 * k exactly; y = acc / 127.
    assert y[0, 0] == np.float32(np.float32(127 * k) / np.float32(127.0))
