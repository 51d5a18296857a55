"""Block-sparse kernels (format version 2): every kernel table against the scalar reference.

Through the test library's entry points (no interpreter): the weights are
packed block-sparse with the converter's own packer, prepared as the
delegate prepares a node (validation, SparsePrepared), and run on every
instruction set this CPU and build offer, including the 512- and 256-bit
AVX-512 paths (TFQ_SPARSE_WIDTH, in a subprocess). Every element is compared
exactly with the scalar reference and with the dense version-1 kernels on
the same weights (the format promises bit-identical outputs), at sparsities
0/50/90/99/100%, with empty block rows, partial edge blocks, prime and odd
sizes, 1-4 threads, every scheme with a zero level, the fast block shapes
(R 4..32, C a multiple of 4), the others (scalar fallback), 8- and 16-bit
block indices, level sums dropped (the over-budget path) and accumulators at
their int16/int32 limits.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import native

SCHEMES = ("ternary", "pow2_3bit", "pow2_4bit")
FAST_BLOCKS = ((32, 4), (16, 4), (8, 4), (4, 4), (32, 8), (8, 16), (4, 32))
OTHER_BLOCKS = ((1, 4), (2, 2), (32, 1), (16, 2))


@pytest.fixture(scope="module")
def lib():
    return native.library()


@pytest.fixture(scope="module")
def isas(lib):
    return [i for i in native.available_isas(lib) if i != "reference"]


def block_sparse_levels(rng, rows, k, block, sparsity, scheme, empty_rows=()):
    """Random levels with round(sparsity * blocks) R x C blocks zeroed (and whole block rows)."""
    R, C = block
    nbr, nbc = -(-rows // R), -(-k // C)
    levels = native.random_levels(rng, (rows, k), scheme)
    levels[levels == 0] = 1  # every stored block holds non-zeros: the sparsity is exact
    zero = np.zeros(nbr * nbc, bool)
    zero[rng.permutation(nbr * nbc)[:int(round(sparsity * nbr * nbc))]] = True
    zero = zero.reshape(nbr, nbc)
    for br in empty_rows:
        zero[br % nbr] = True
    mask = np.repeat(np.repeat(~zero, R, 0), C, 1)[:rows, :k]
    return levels * mask


def check_fc(lib, isas, rng, scheme, block, m, rows, k, sparsity, threads=(1,), empty_rows=(),
             x=None, drop=(False, True)):
    levels = block_sparse_levels(rng, rows, k, block, sparsity, scheme, empty_rows)
    data, opts = native.pack_sparse_levels(levels, scheme, block)
    if x is None:
        x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    scale = rng.uniform(0.01, 0.5, rows).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    act = native.ACTIVATIONS[rng.integers(3)]
    ref = native.sparse_fully_connected(x, data, opts, scheme, rows, k, scale, bias, act,
                                        force_reference=True, lib=lib)
    dense = native.fully_connected(x, native.pack_levels(levels, scheme), scheme, rows, k, scale,
                                   bias, act, force_reference=True, lib=lib)
    np.testing.assert_array_equal(ref, dense)
    np.testing.assert_array_equal(ref, native.numpy_fully_connected(x, levels, scale, bias, act))
    for isa in isas:
        native.set_isa(isa, lib)
        try:
            for t in threads:
                for d in drop:
                    y = native.sparse_fully_connected(x, data, opts, scheme, rows, k, scale, bias,
                                                      act, threads=t, drop_level_sums=d, lib=lib)
                    assert np.array_equal(y, ref), (isa, scheme, block, m, rows, k, sparsity, t, d)
        finally:
            native.set_isa(None, lib)
    return opts


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fc_every_table_equals_reference(lib, isas, scheme):
    rng = np.random.default_rng(SCHEMES.index(scheme))
    shapes = [(1, 37, 131), (2, 64, 96), (5, 70, 333), (9, 33, 67), (1, 128, 1100), (17, 61, 257)]
    for block in FAST_BLOCKS + OTHER_BLOCKS:
        for i, (m, rows, k) in enumerate(shapes):
            sparsity = (0.0, 0.5, 0.9, 0.99, 1.0)[(i + len(block)) % 5]
            check_fc(lib, isas, rng, scheme, block, m, rows, k, sparsity, empty_rows=(i,))


def test_fc_sparsities_threads_and_wide_indices(lib, isas):
    rng = np.random.default_rng(7)
    for sparsity in (0.0, 0.5, 0.9, 0.99, 1.0):
        for block in ((32, 4), (4, 4)):
            # k = 1100 with C = 4: 275 block columns, 16-bit indices.
            opts = check_fc(lib, isas, rng, "ternary", block, 6, 97, 1100, sparsity,
                            threads=(1, 2, 3, 4), empty_rows=(0, 2))
            assert opts["index_bits"] == 16


@pytest.mark.parametrize("scheme", SCHEMES)
def test_fc_batch1_4x4_gemv(lib, isas, scheme):
    """Batch 1 with 4x4 blocks (the blocks-in-lanes GEMV, eight blocks per step): block rows
    of 0-41 stored blocks (two-step runs, one step, tails of 1-7 lanes), 8- and 16-bit
    indices, partial last block row and block column, 1 and 3 threads."""
    rng = np.random.default_rng(13)
    for rows, k in ((4 * 41 + 3, 4 * 40 + 2), (37, 1100)):
        for sparsity in (0.0, 0.3, 0.8, 0.95):
            check_fc(lib, isas, rng, scheme, (4, 4), 1, rows, k, sparsity, threads=(1, 3),
                     empty_rows=(1,))


def test_fc_partial_blocks_at_both_edges(lib, isas):
    rng = np.random.default_rng(11)
    for rows, k in ((1, 1), (3, 5), (31, 7), (33, 129), (47, 3)):
        for block in ((32, 4), (16, 8), (4, 32)):
            check_fc(lib, isas, rng, "pow2_4bit", block, 3, rows, k, 0.3)


@pytest.mark.parametrize("scheme,level", [("ternary", 1), ("ternary", -1), ("pow2_3bit", 4),
                                          ("pow2_3bit", -4), ("pow2_4bit", 64), ("pow2_4bit", -64)])
def test_int16_and_int32_worst_cases(lib, isas, scheme, level):
    """Extreme levels against +-127 activations: vpmaddubsw pairs at 2 x 255 x 64, and the
    int32 accumulator at its bound (sum(level * (q + 128)) wraps, the corrected sum does not)."""
    k = 33000 if scheme != "pow2_4bit" else 262000  # 64 * 127 * 262000 < 2^31
    for sign in (1.0, -1.0):
        x = np.full((2, k), sign, np.float32)
        x[1, ::2] = -sign  # alternating signs: partial sums swing
        levels = np.full((8, k), level, np.int64)
        data, opts = native.pack_sparse_levels(levels, scheme, (4, 8))
        scale = np.ones(8, np.float32)
        want = native.numpy_fully_connected(x, levels, scale, None, "NONE")
        ref = native.sparse_fully_connected(x, data, opts, scheme, 8, k, scale, force_reference=True,
                                            lib=lib)
        np.testing.assert_array_equal(ref, want)
        for isa in isas:
            native.set_isa(isa, lib)
            try:
                for d in (False, True):
                    y = native.sparse_fully_connected(x, data, opts, scheme, 8, k, scale, threads=2,
                                                      drop_level_sums=d, lib=lib)
                    np.testing.assert_array_equal(y, want)
            finally:
                native.set_isa(None, lib)


CONV_GEOMETRIES = [
    # (h, w, in_c, out_c, kernel, stride, dilation, padding)
    (9, 7, 8, 37, (3, 3), (1, 1), (1, 1), "SAME"),
    (8, 8, 12, 32, (1, 1), (1, 1), (1, 1), "VALID"),
    (11, 6, 5, 16, (3, 2), (2, 1), (1, 2), "SAME"),
    (7, 7, 16, 64, (3, 3), (2, 2), (1, 1), "VALID"),
    (13, 5, 4, 9, (1, 1), (2, 2), (1, 1), "SAME"),
    (10, 10, 32, 40, (3, 3), (1, 1), (2, 2), "SAME"),
    (6, 9, 3, 33, (5, 3), (1, 2), (1, 1), "VALID"),
]


def check_conv(lib, isas, rng, scheme, block, gi, sparsity, threads=(1, 2, 4)):
    h, w, cin, cout, kern, st, dil, pad = CONV_GEOMETRIES[gi]
    k = kern[0] * kern[1] * cin
    levels = block_sparse_levels(rng, cout, k, block, sparsity, scheme, empty_rows=(gi,))
    data, opts = native.pack_sparse_levels(levels, scheme, block)
    x = rng.standard_normal((1 + gi % 2, h, w, cin)).astype(np.float32)
    scale = rng.uniform(0.01, 0.5, cout).astype(np.float32)
    bias = rng.standard_normal(cout).astype(np.float32)
    act = native.ACTIVATIONS[rng.integers(3)]
    kw = dict(stride=st, dilation=dil, padding=pad)
    ref = native.conv(x, native.pack_levels(levels, scheme), scheme, kern, cout, scale, bias, act,
                      force_reference=True, lib=lib, **kw)
    got = native.sparse_conv(x, data, opts, scheme, kern, cout, scale, bias, act,
                             force_reference=True, lib=lib, **kw)
    np.testing.assert_array_equal(got, ref)
    for isa in isas:
        native.set_isa(isa, lib)
        try:
            for t in threads:
                y = native.sparse_conv(x, data, opts, scheme, kern, cout, scale, bias, act, threads=t,
                                       drop_level_sums=t == 4, lib=lib, **kw)
                assert np.array_equal(y, ref), (isa, scheme, block, gi, sparsity, t)
        finally:
            native.set_isa(None, lib)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_conv_every_table_equals_reference(lib, isas, scheme):
    """Implicit im2col (in_c a multiple of C, padded or not) and im2col (blocks straddling taps)."""
    rng = np.random.default_rng(20 + SCHEMES.index(scheme))
    blocks = FAST_BLOCKS[:4] + ((16, 8), (1, 4), (4, 2))
    for gi in range(len(CONV_GEOMETRIES)):
        for bi, block in enumerate(blocks):
            check_conv(lib, isas, rng, scheme, block, gi, (0.0, 0.5, 0.9, 0.99, 1.0)[(gi + bi) % 5])


def test_sparse_path_names(lib):
    assert native.sparse_path(True, lib) == "scalar"
    want = {"avx2": "avx2-256", "avx512vnni": ("vnni-512", "vnni-256"), "neon": "neon-128",
            "neon_dotprod": "sdot-128"}.get(native.selected_isa(False, lib), "scalar")
    assert native.sparse_path(False, lib) in want


@pytest.mark.parametrize("width", ["256", "512"])
def test_avx512_widths_in_a_subprocess(lib, width):
    """The AVX-512 table's sparse width is chosen once per process: run the other one too."""
    if "avx512vnni" not in native.available_isas(lib):
        pytest.skip("no AVX-512 VNNI on this CPU/build: the 256/512-bit choice does not apply")
    code = (
        "import sys, numpy as np; sys.path.insert(0, %r); import test_sparse_kernels as t; "
        "from helpers import native; lib = native.library(); "
        "assert native.sparse_path(False, lib) == 'vnni-%s', native.sparse_path(False, lib); "
        "rng = np.random.default_rng(5); "
        "[t.check_fc(lib, ['avx512vnni'], rng, s, b, 5, 70, 333, sp, threads=(1, 3)) "
        " for s in t.SCHEMES for b in t.FAST_BLOCKS for sp in (0.0, 0.5, 0.99)]; "
        "[t.check_conv(lib, ['avx512vnni'], rng, s, b, g, 0.5, threads=(1, 2)) "
        " for s in t.SCHEMES for b in t.FAST_BLOCKS[:4] for g in range(len(t.CONV_GEOMETRIES))]; "
        "print('ok')") % (os.path.dirname(__file__), width)
    env = dict(os.environ, TFQ_SPARSE_WIDTH=width)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
