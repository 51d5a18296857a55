"""Bounded fuzzing of the delegate with crafted models, under ASan + UBSan.

The delegate reads shapes, custom options and packed buffers from model files
that may be crafted. This test builds the library with AddressSanitizer and
UndefinedBehaviorSanitizer (cmake into build-asan/), converts a few models,
then runs in subprocesses (LD_PRELOAD=libasan) a few thousand mutations:

  * the FlexBuffer custom options alone, through the delegate's reader;
  * the custom options inside converted models (bytes flipped, truncated,
    grown, values replaced) run through LiteRT with the delegate;
  * bytes of the packed weights / scales / bias buffers and of the tfq tensors'
    shapes, and random bytes anywhere in the file;
  * the graph's structure: an operator's output or input replaced by another
    operator's output, a graph output or any tensor index, operators
    duplicated or swapped, graph outputs changed (two writers of one tensor
    once made a node write past a buffer that another node's Prepare shrank);
  * block-sparse (format version 2) models: their counts and index arrays
    (counts changed, indices set to any value, swapped or duplicated, a
    block inserted with nnz_blocks and the size kept consistent, so the
    mutation reaches the index and code checks), the codes of stored blocks,
    and the v2 options (block shape, nnz_blocks, index_bits);
  * the paddings of zero PADs the delegate runs (values, shapes), in a
    model with two of them, one feeding a MAX_POOL_2D (run as one pass);
  * builtin dynamic-range CONV_2Ds the delegate runs in int8 (option
    int8_conv, on for every table here): their int8 filters, shapes and
    quantization scales and zero points;
  * version-2 dense ops (rows ending in 32-weight mini-blocks, which the
    converter writes wherever they are smaller): bytes of the mini-blocks
    and their padding, sizes off by a byte, a mini-block or a row (or
    version 1's size), and the options version, layout, k, rows, bits.

The model fuzz runs once per kernel table the machine has, pinned with the
delegate's `isa` option: the reference kernels first, whose plain stores ASan
sees, then each SIMD table (AVX-512 masked stores are not instrumented, so a
run with the default table alone would miss small overflows). The hand-made
aliasing models of test_delegate_safety.py also run under ASan here.

It requires no signal and no sanitizer report. Failures print the case id
(seed and mutation) so it can be replayed with `python tests/test_fuzz.py
--lib build-asan/libtfq_delegate.so --mode models --isa ISA --only RUN MODELS...`
(the model paths are printed too). The whole test is bounded in time (about
50 s, plus the build).
"""

import os
import pathlib
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
ASAN_DIR = ROOT / "build-asan"
TIME_BUDGET = {"options": 4.0, "models": 15.0}
ISAS = ("reference", "avx2", "avx512vnni", "neon", "neon_dotprod")


def _libasan():
    out = subprocess.run(["g++", "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def _libstdcxx():
    out = subprocess.run(["g++", "-print-file-name=libstdc++.so.6"], capture_output=True, text=True)
    path = out.stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(scope="module")
def asan_lib():
    if _libasan() is None:
        pytest.fail("libasan.so not found (g++ -print-file-name=libasan.so): install g++")
    subprocess.run(["cmake", "-S", str(ROOT / "tfq" / "delegates"), "-B", str(ASAN_DIR),
                    "-DTFQ_SANITIZE=ON", "-DTFQ_COPY_TO_SOURCE=OFF", "-DCMAKE_BUILD_TYPE=Debug"],
                   check=True, capture_output=True)
    build = subprocess.run(["cmake", "--build", str(ASAN_DIR), "-j2"], capture_output=True,
                           text=True)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    lib = ASAN_DIR / "libtfq_delegate.so"
    assert lib.exists()
    # The option fuzz calls the delegate's FlexBuffer reader through the test
    # library, built next to it from the same sanitized sources.
    assert lib.with_name("libtfq_testing.so").exists()
    return lib


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from tfq.testing import random_compressed_tflite

    d = tmp_path_factory.mktemp("fuzz_models")
    paths = []
    # The ReLU6 chain: one partition of five nodes with int8 hand-over buffers.
    # The residual CNN: float ADDs the delegate fuses into a convolution.
    for i, (scheme, kind) in enumerate([("ternary", "cnn"), ("pow2_4bit", "cnn"),
                                        ("binary", "mlp"), ("pow2_3bit", "cnn"),
                                        ("ternary", "chain"), ("pow2_3bit", "residual")]):
        data, _ = random_compressed_tflite(scheme, kind, seed=i)
        p = d / f"{kind}_{scheme}.tflite"
        p.write_bytes(bytes(data))
        paths.append(str(p))
    # Block-sparse versions (format version 2): every FC / conv op of the cnn,
    # the MLP and the hand-over chain, blocks of several shapes zeroed.
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    import sparse_models
    # (4, 4) and (8, 4) take the SIMD kernels (the chain: implicit im2col on
    # int8 hand-over images), (1, 4) and (8, 1) their scalar fallback.
    for i, (scheme, kind, block, sparsity) in enumerate([("ternary", "cnn", (4, 4), 0.5),
                                                          ("pow2_3bit", "mlp", (1, 4), 0.9),
                                                          ("pow2_4bit", "chain", (8, 1), 0.5),
                                                          ("pow2_4bit", "chain", (8, 4), 0.5),
                                                          ("ternary", "residual", (8, 4), 0.6)]):
        data, _ = random_compressed_tflite(scheme, kind, seed=10 + i)
        _, sparse = sparse_models.sparse_pair(data, block, sparsity, seed=i)
        p = d / f"{kind}_{scheme}_{block[0]}x{block[1]}_sparse.tflite"
        p.write_bytes(sparse)
        paths.append(str(p))
    # Zero PADs the delegate runs (the ResNet stem pattern): their paddings
    # tensors are mutated like the tfq buffers (_tfq_regions).
    import keras
    from tfq.converter import convert
    from tfq.testing import set_in_set_weights

    inp = keras.Input((9, 11, 3))
    x = keras.layers.ZeroPadding2D(((1, 2), (3, 0)))(inp)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(x)
    x = keras.layers.ZeroPadding2D(1)(x)
    x = keras.layers.MaxPooling2D(2, strides=1)(x)  # run with the PAD before it (MaxPoolPadded)
    x = keras.layers.Conv2D(4, 3, name="conv2")(x)
    pad_model = keras.Model(inp, x)
    set_in_set_weights(pad_model, {"conv": "ternary", "conv2": "ternary"}, seed=3)
    p = d / "pad_ternary.tflite"
    p.write_bytes(bytes(convert(pad_model)))
    paths.append(str(p))
    # Dynamic-range CONV_2Ds (float_layers="int8"): a 3-channel stem (kernel
    # rows as runs) and an 8-channel one around a ternary convolution.
    inp = keras.Input((13, 12, 3))
    x = keras.layers.Conv2D(16, 5, strides=2, activation="relu", name="stem")(inp)
    x = keras.layers.Conv2D(8, 3, padding="same", name="mid")(x)
    x = keras.layers.Conv2D(20, 3, activation="relu6", name="head")(x)
    i8_model = keras.Model(inp, x)
    set_in_set_weights(i8_model, {"mid": "ternary"}, seed=4)
    p = d / "int8_conv.tflite"
    p.write_bytes(bytes(convert(i8_model, float_layers="int8")))
    paths.append(str(p))
    return paths


def _run_sanitized(lib, args, timeout=120):
    env = dict(os.environ)
    # libstdc++ preloaded too: ASan resolves its __cxa_throw interceptor at start
    # and Python itself does not link libstdc++ (pybind11 exceptions would trip it).
    env["LD_PRELOAD"] = " ".join(p for p in (_libasan(), _libstdcxx()) if p)
    env["ASAN_OPTIONS"] = "detect_leaks=0:exitcode=86:abort_on_error=0:allocator_may_return_null=1"
    env["UBSAN_OPTIONS"] = "halt_on_error=1:print_stacktrace=1:exitcode=87"
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["TFQ_DELEGATE_PATH"] = str(lib)
    cmd = [sys.executable, __file__, "--lib", str(lib)] + args
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def _check(proc, what):
    tail = (proc.stdout[-2000:] + "\n" + proc.stderr[-6000:])
    assert proc.returncode == 0, f"{what}: exit {proc.returncode} (negative: signal)\n{tail}"
    for marker in ("ERROR: AddressSanitizer", "runtime error:", "ERROR: LeakSanitizer"):
        assert marker not in proc.stderr, f"{what}: sanitizer report\n{tail}"
    assert "FUZZ DONE" in proc.stdout, tail


def test_fuzz_custom_options(asan_lib, models):
    proc = _run_sanitized(asan_lib, ["--mode", "options", "--seconds",
                                     str(TIME_BUDGET["options"])] + models)
    _check(proc, "options fuzz")
    runs = int(proc.stdout.split("FUZZ DONE")[1].split()[0])
    assert runs >= 1000, proc.stdout[-500:]


def _isas(lib):
    """The kernel tables the sanitized delegate can pin on this CPU, reference first."""
    proc = _run_sanitized(lib, ["--mode", "isas", "unused"])
    _check(proc, "isa query")
    return proc.stdout.split("FUZZ DONE")[1].split()[1:]


def _crash_outside_tfq(proc):
    """The run index of a sanitizer report whose stack has no tfq frame, else None.

    Structural mutations can also give LiteRT's own builtin ops graphs they do
    not check (e.g. STRIDED_SLICE's Prepare dereferences an input set to -1):
    LiteRT's bugs, not the delegate's. Any report with a frame in
    libtfq_delegate.so is ours and fails the test.
    """
    err = proc.stderr
    report = err[err.find("ERROR: AddressSanitizer"):] if "ERROR: AddressSanitizer" in err else ""
    if not report or "libtfq_delegate" in report or "tfq/delegates" in report:
        return None
    stack = [line for line in report.splitlines() if line.strip().startswith("#")
             and "libsanitizer" not in line and "sanitizer_common" not in line]
    if not stack or "libpywrap_litert" not in stack[0]:
        return None
    runs = [line for line in proc.stdout.splitlines() if line.startswith("run ")]
    return int(runs[-1].split()[1]) if runs else None


def test_fuzz_models(asan_lib, models):
    isas = _isas(asan_lib)
    assert isas[0] == "reference" and len(isas) >= 2, isas  # every build has a SIMD table
    for i, isa in enumerate(isas):
        start, runs, structural, litert_crashes = 0, 0, 0, []
        deadline = time.time() + TIME_BUDGET["models"]
        while True:
            seconds = max(1.0, deadline - time.time())
            proc = _run_sanitized(asan_lib, ["--mode", "models", "--isa", isa, "--seed", str(1234 + i),
                                             "--start", str(start), "--seconds", str(seconds)] + models)
            crashed_at = _crash_outside_tfq(proc)
            if crashed_at is None or len(litert_crashes) >= 5:
                break
            litert_crashes.append(crashed_at)
            runs += crashed_at + 1 - start
            start = crashed_at + 1
        _check(proc, f"model fuzz ({isa} kernels, from run {start})")
        done = proc.stdout.split("FUZZ DONE")[1].split()
        runs += int(done[0])
        structural += int(done[3])
        print(f"model fuzz ({isa}): {runs} mutated models run, {structural} structural in the "
              f"last process; crashes inside LiteRT's builtin ops (not tfq) at runs {litert_crashes}")
        assert runs >= 150, proc.stdout[-500:]


def test_aliasing_models_under_asan(asan_lib, tmp_path):
    """The hand-made aliasing graphs (test_delegate_safety.py) with every table and 1-4 threads."""
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from test_delegate_safety import crafted_models

    paths = []
    for name, blob in crafted_models().items():
        p = tmp_path / f"{name}.tflite"
        p.write_bytes(blob)
        paths.append(str(p))
    for isa in _isas(asan_lib):
        for threads in (1, 2, 4):
            proc = _run_sanitized(asan_lib, ["--mode", "run", "--isa", isa, "--threads",
                                             str(threads)] + paths)
            _check(proc, f"aliasing models ({isa}, {threads} threads)")
            assert f"FUZZ DONE {len(paths)} refused {len(paths)}" in proc.stdout, proc.stdout


def test_sparse_models_under_asan(asan_lib, tmp_path):
    """Valid block-sparse models (block shapes, odd edges, an all-zero layer) and version-2 dense ones run clean."""
    from tfq.testing import random_compressed_tflite

    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    import sparse_models

    paths = []
    for scheme, kind in (("ternary", "cnn"), ("pow2_3bit", "mlp"), ("pow2_4bit", "chain"), ("binary", "mlp")):
        data, _ = random_compressed_tflite(scheme, kind, seed=3)
        # as converted: version-2 dense rows (mini-blocks) wherever they are smaller
        p = tmp_path / f"{kind}_{scheme}_dense2.tflite"
        p.write_bytes(bytes(data))
        paths.append(str(p))
        if scheme == "binary":
            continue
        for block in ((32, 4), (16, 8), (4, 4), (1, 4), (8, 1)):
            for sparsity in (0.5, 1.0):
                _, sparse = sparse_models.sparse_pair(data, block, sparsity, seed=1)
                p = tmp_path / f"{kind}_{block[0]}x{block[1]}_{sparsity}.tflite"
                p.write_bytes(sparse)
                paths.append(str(p))
    for isa in _isas(asan_lib):
        for passes in (1, 2) if isa == "reference" else (1,):
            proc = _run_sanitized(asan_lib, ["--mode", "run", "--isa", isa, "--threads", "2",
                                             "--passes", str(passes)] + paths)
            _check(proc, f"block-sparse models ({isa}, {passes} activation passes)")
            assert f"FUZZ DONE {len(paths)} refused 0 failed 0" in proc.stdout, proc.stdout[-2000:]


# ---------------------------------------------------------------------------
# The runner (executed in the sanitized subprocess; imports no TensorFlow).


def _tfq_regions(data):
    """Byte ranges (start, end, kind) of tfq custom options, buffers and shapes (and of the inputs of PADs and CONV_2Ds)."""
    from ai_edge_litert import schema_py_generated as schema

    model = schema.Model.GetRootAsModel(data, 0)
    regions = []
    sg = model.Subgraphs(0)
    codes = [model.OperatorCodes(i) for i in range(model.OperatorCodesLength())]
    for i in range(sg.OperatorsLength()):
        op = sg.Operators(i)
        code = codes[op.OpcodeIndex()].CustomCode()
        builtin = max(codes[op.OpcodeIndex()].BuiltinCode(), codes[op.OpcodeIndex()].DeprecatedBuiltinCode())
        builtin_op = builtin in (3, 34)  # CONV_2D, PAD: builtin options, tensors mutated like tfq's
        if builtin == 3:  # CONV_2D: an int8 filter's quantization too
            q = sg.Tensors(op.Inputs(1)).Quantization()
            for arr in ((q.ScaleAsNumpy(), q.ZeroPointAsNumpy()) if q is not None else ()):
                if not isinstance(arr, int) and arr.size:
                    s = data.find(arr.tobytes())
                    if s >= 0:
                        regions.append((s, s + arr.nbytes, "quantization"))
        if not builtin_op and (not code or not code.startswith(b"TFQ_")):
            continue
        opts = op.CustomOptionsAsNumpy()
        if not builtin_op and not isinstance(opts, int):
            start = data.find(opts.tobytes())
            if start >= 0:
                regions.append((start, start + opts.size, "options"))
        for j in range(op.InputsLength()):
            t = op.Inputs(j)
            if t < 0:
                continue
            tensor = sg.Tensors(t)
            shape = tensor.ShapeAsNumpy()
            if not isinstance(shape, int) and shape.size:
                s = data.find(shape.astype("<i4").tobytes())
                if s >= 0:
                    regions.append((s, s + 4 * shape.size, "shape"))
            buf = model.Buffers(tensor.Buffer())
            raw = buf.DataAsNumpy() if buf is not None else 0
            if not isinstance(raw, int) and raw.size:
                s = data.find(raw.tobytes())
                if s >= 0:
                    regions.append((s, min(s + raw.size, s + 4096), "buffer"))
    return regions


def _mutate_bytes(rng, blob, start, end):
    b = bytearray(blob)
    n = int(rng.integers(1, 9))
    for _ in range(n):
        pos = int(rng.integers(start, end))
        choice = rng.random()
        if choice < 0.5:
            b[pos] = int(rng.integers(0, 256))
        elif choice < 0.8:
            b[pos] ^= 1 << int(rng.integers(0, 8))
        else:
            b[pos] = (0, 1, 0x7F, 0x80, 0xFF)[int(rng.integers(0, 5))]
    return bytes(b)


def _options_fuzz(args, lib_path):
    import ctypes

    from tfq.converter import format as fmt  # noqa: F401 - imported for encode_options below

    lib = ctypes.CDLL(str(pathlib.Path(lib_path).with_name("libtfq_testing.so")))
    lib.tfq_testing_parse_options.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                                              ctypes.c_int]
    seeds = []
    for path in args.models:
        data = pathlib.Path(path).read_bytes()
        for start, end, kind in _tfq_regions(data):
            if kind == "options":
                seeds.append(data[start:end])
    rng = np.random.default_rng(args.seed)
    out = ctypes.create_string_buffer(4096)
    runs = 0
    deadline = time.time() + args.seconds
    while time.time() < deadline:
        base = seeds[runs % len(seeds)]
        r = rng.random()
        if r < 0.7:
            blob = _mutate_bytes(rng, base, 0, len(base))
        elif r < 0.85:
            blob = base[: int(rng.integers(0, len(base)))]
        else:
            blob = bytes(rng.integers(0, 256, int(rng.integers(0, 64)), dtype=np.uint8))
        lib.tfq_testing_parse_options(blob, len(blob), out, 4096)
        runs += 1
    print(f"FUZZ DONE {runs} option blobs", flush=True)


def _mutate_structure(rng, base):
    """One to three edits of the graph's structure (tensor indices and operator list)."""
    import copy

    from tfq.converter import tflite_io

    fb, _, _ = tflite_io.load_model(base)
    sg = fb.subgraphs[0]
    n_tensors = len(sg.tensors)
    edits = []
    for _ in range(int(rng.integers(1, 4))):
        ops = sg.operators
        outputs = [int(t) for op in ops for t in op.outputs] + [int(t) for t in sg.outputs]
        # Mostly tfq operators and ADDs (which the delegate may fuse): edits of other
        # builtins test LiteRT, not the delegate.
        tfq_ops = [o for o in ops if tflite_io.op_name(fb, o).startswith("TFQ_")
                   or tflite_io.op_name(fb, o) == "ADD"]
        pool = tfq_ops if tfq_ops and rng.random() < 0.85 else ops
        op = pool[int(rng.integers(0, len(pool)))]
        r = rng.random()
        if r < 0.35:  # an operator writes a tensor another operator (or the graph) outputs
            op.outputs = np.array([outputs[int(rng.integers(0, len(outputs)))]], dtype=np.int32)
            edits.append("output->output")
        elif r < 0.55:  # any slot, any index (including -1 and the constants)
            which = "inputs" if rng.random() < 0.5 else "outputs"
            slots = np.array(getattr(op, which), dtype=np.int32)  # a writable copy
            if len(slots):
                slots[int(rng.integers(0, len(slots)))] = int(rng.integers(-1, n_tensors))
            setattr(op, which, slots)
            edits.append("slot->any")
        elif r < 0.75:  # a copy of an operator, maybe writing another's output
            dup = copy.deepcopy(op)
            if rng.random() < 0.6:
                dup.outputs = np.array([outputs[int(rng.integers(0, len(outputs)))]], dtype=np.int32)
            ops.insert(int(rng.integers(0, len(ops) + 1)), dup)
            edits.append("duplicate")
        elif r < 0.88:  # operators out of order
            i, j = rng.integers(0, len(ops), 2)
            ops[int(i)], ops[int(j)] = ops[int(j)], ops[int(i)]
            edits.append("swap")
        else:  # an intermediate tensor becomes (or replaces) a graph output
            t = outputs[int(rng.integers(0, len(outputs)))]
            sg.outputs = np.array(list(sg.outputs) + [t] if rng.random() < 0.5 else [t],
                                  dtype=np.int32)
            edits.append("graph-output")
    return tflite_io.save_model(fb), "+".join(edits)


def _mutate_sparse(rng, base):
    """One edit of a block-sparse op's counts, indices, codes or v2 options (a version-2 model)."""
    import sparse_models
    from tfq.converter import format as fmt

    ops = sparse_models.sparse_ops(base)
    g, i, _, opts, data = ops[int(rng.integers(0, len(ops)))]
    opts = dict(opts)
    nbr, nbc = fmt.block_counts(opts)
    nnz = opts["nnz_blocks"]
    ib = opts["index_bits"] // 8
    counts = data[:2 * nbr].view("<u2").copy()
    indices = data[2 * nbr:2 * nbr + nnz * ib].view(np.uint8 if ib == 1 else "<u2").copy()
    codes = data[2 * nbr + nnz * ib:].reshape(nnz, fmt.block_bytes(opts)).copy()
    r = rng.random()
    br = int(rng.integers(0, nbr))
    if r < 0.2:  # a count changed (nnz_blocks too, half the time)
        delta = int(rng.choice([-1, 1, int(rng.integers(0, 1 << 16))]))
        counts[br] = (int(counts[br]) + delta) % (1 << 16)
        if rng.random() < 0.5:
            opts["nnz_blocks"] = int(counts.astype(np.int64).sum())
        edit = "count"
    elif r < 0.4 and nnz:  # an index set to any value near the range
        indices[int(rng.integers(0, nnz))] = int(rng.integers(0, nbc + 3)) % (1 << (8 * ib))
        edit = "index"
    elif r < 0.5 and nnz > 1:  # two neighbouring indices swapped, or one duplicated
        b = int(rng.integers(0, nnz - 1))
        if rng.random() < 0.5:
            indices[b], indices[b + 1] = indices[b + 1], indices[b]
        else:
            indices[b + 1] = indices[b]
        edit = "index-order"
    elif r < 0.7:  # a block inserted in a block row, everything consistent but the index / codes
        at = int(counts[:br].astype(np.int64).sum()) + int(rng.integers(0, int(counts[br]) + 1))
        counts[br] = (int(counts[br]) + 1) % (1 << 16)
        indices = np.insert(indices, at, int(rng.integers(0, nbc + 2)) % (1 << (8 * ib)))
        block = rng.integers(0, 256, codes.shape[1], dtype=np.uint8)
        codes = np.insert(codes, at, block, axis=0)
        opts["nnz_blocks"] = nnz + 1
        edit = "insert-block"
    elif r < 0.85 and nnz:  # a code byte of a stored block
        flat = codes.reshape(-1)
        flat[int(rng.integers(0, flat.size))] = int(rng.integers(0, 256))
        edit = "code"
    else:  # a v2 option
        key = ["block_rows", "block_cols", "nnz_blocks", "index_bits"][int(rng.integers(0, 4))]
        opts[key] = int(rng.choice([0, 1, 2, 3, 4, 8, 16, 32, 64, nbr * nbc, nbr * nbc + 1,
                                    1 << 31, 1 << 62, -1, opts[key] + 1, opts[key] - 1]))
        edit = "option-" + key
    blob = np.concatenate([counts.view(np.uint8), indices.view(np.uint8), codes.reshape(-1)])
    return sparse_models.edit_op(base, g, i, options=opts, weights=blob), "sparse-" + edit


def _mutate_dense_v2(rng, base):
    """One edit of a version-2 dense op (rows ending in mini-blocks): a code byte, the size, the options."""
    import sparse_models
    from tfq.converter import format as fmt

    ops = sparse_models.dense_v2_ops(base)
    g, i, _, opts, data = ops[int(rng.integers(0, len(ops)))]
    opts = dict(opts)
    bits = opts["bits"]
    row_bytes = fmt.compact_row_bytes(opts["k"], bits)
    nb, _ = fmt.row_geometry(opts["k"], bits)
    r = rng.random()
    if r < 0.35:  # a byte of a mini-block (codes and padding fields), or anywhere in a row
        row = int(rng.integers(0, opts["rows"]))
        lo = nb * 32 if rng.random() < 0.8 else 0
        data[row * row_bytes + int(rng.integers(lo, row_bytes))] = int(rng.integers(0, 256))
        edit = "code"
    elif r < 0.55:  # the size: a byte, a mini-block or a row more or less, or version 1's size
        delta = int(rng.choice([-1, 1, -4 * bits, 4 * bits, -row_bytes, row_bytes]))
        if rng.random() < 0.2:
            delta = fmt.packed_size(opts["rows"], opts["k"], bits) - data.size
        data = np.resize(data, max(0, data.size + delta))
        edit = "size"
    else:  # an option: version, layout, k, rows, bits
        key = ["version", "layout", "k", "rows", "bits"][int(rng.integers(0, 5))]
        if key == "layout":
            opts[key] = str(rng.choice(["block_sparse", "dense ", "DENSE", "", "padded"]))
        else:
            opts[key] = int(rng.choice([0, 1, 2, 3, -1, 1 << 31, opts[key] + 1, opts[key] - 1,
                                        opts[key] + 32, opts[key] - 32]))
        edit = "option-" + key
    return sparse_models.edit_op(base, g, i, options=opts, weights=data), "dense2-" + edit


def _delegate_options(args):
    return {"num_threads": str(args.threads), "isa": args.isa, "activation_passes": str(args.passes),
            "int8_conv": "true"}


def _invoke(blob, delegate, seed):
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob, experimental_delegates=[delegate])
    interp.allocate_tensors()
    details = interp.get_input_details()
    if any(np.prod(d["shape"], dtype=np.int64) > 4_000_000 for d in details):
        raise ValueError("input too large for a quick run")  # a valid but huge model
    for d in details:
        x = np.random.default_rng(seed).standard_normal(d["shape"])
        interp.set_tensor(d["index"], x.astype(d["dtype"]))
    interp.invoke()


def _run_models(args, lib_path):
    """Runs each model once; counts those refused with a clean error."""
    from ai_edge_litert.interpreter import load_delegate

    delegate = load_delegate(lib_path, _delegate_options(args))
    refused = failed = 0
    for i, path in enumerate(args.models):
        print(path, flush=True)
        try:
            _invoke(pathlib.Path(path).read_bytes(), delegate, i)
        except (RuntimeError, ValueError) as err:
            refused += "tfq delegate: refusing node" in str(err)
            failed += "tfq delegate: refusing node" not in str(err)
    print(f"FUZZ DONE {len(args.models)} refused {refused} failed {failed}", flush=True)


def _list_isas(lib_path):
    from ai_edge_litert.interpreter import load_delegate

    found = []
    for isa in ISAS:
        try:
            load_delegate(lib_path, {"isa": isa})
        except ValueError:
            continue
        found.append(isa)
    print("FUZZ DONE " + " ".join([str(len(found))] + found), flush=True)


def _models_fuzz(args, lib_path):
    import sparse_models
    from ai_edge_litert.interpreter import load_delegate

    rng = np.random.default_rng(args.seed)
    bases = [pathlib.Path(p).read_bytes() for p in args.models]
    regions = [_tfq_regions(b) for b in bases]
    sparse = [bool(sparse_models.sparse_ops(b)) for b in bases]
    dense2 = [bool(sparse_models.dense_v2_ops(b)) for b in bases]
    delegate = load_delegate(lib_path, _delegate_options(args))
    # Every fourth run with two activation passes (their own scratch layout and passes).
    two_pass = load_delegate(lib_path, {**_delegate_options(args), "activation_passes": "2"})
    runs = structural = 0
    deadline = time.time() + args.seconds
    # Every run's mutation is drawn in order, so --start and --only replay
    # exactly; runs before them are drawn but not executed.
    while time.time() < deadline or runs < args.start or (args.only is not None and runs <= args.only):
        m = runs % len(bases)
        base, regs = bases[m], regions[m]
        if sparse[m] and rng.random() < 0.4:
            blob, edit = _mutate_sparse(rng, base)
            case = f"run {runs} model {m} {edit}"
        elif dense2[m] and rng.random() < 0.25:
            blob, edit = _mutate_dense_v2(rng, base)
            case = f"run {runs} model {m} {edit}"
        elif rng.random() < 0.4:
            blob, edits = _mutate_structure(rng, base)
            case = f"run {runs} model {m} structure {edits}"
        else:
            r = rng.random()
            if r < 0.45:
                options = [g for g in regs if g[2] == "options"]
                start, end, kind = options[int(rng.integers(0, 100)) % max(1, len(options))]
            elif r < 0.85:
                start, end, kind = regs[int(rng.integers(0, len(regs)))]
            else:
                start, end, kind = 0, len(base), "anywhere"
            blob = _mutate_bytes(rng, base, start, end)
            case = f"run {runs} model {m} {kind} [{start},{end})"
        execute = runs == args.only if args.only is not None else runs >= args.start
        if execute:
            passes = 2 if runs % 4 == 3 else 1
            print(case + (" passes 2" if passes == 2 else ""), flush=True)
            structural += "structure" in case
            try:
                _invoke(blob, two_pass if passes == 2 else delegate, runs)
            except (RuntimeError, ValueError, TypeError, IndexError, MemoryError):
                pass
        runs += 1
    print(f"FUZZ DONE {runs - args.start} mutated models, {structural} structural", flush=True)


def main():
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--lib", required=True)
    ap.add_argument("--mode", choices=("options", "models", "run", "isas"), required=True)
    ap.add_argument("--isa", default="auto", help="delegate option isa (kernel table)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--passes", type=int, default=1, help="delegate option activation_passes")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--only", type=int, help="replay: execute only this run index")
    ap.add_argument("--start", type=int, default=0, help="execute runs from this index on")
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    if args.mode == "options":
        _options_fuzz(args, args.lib)
    elif args.mode == "isas":
        _list_isas(args.lib)
    elif args.mode == "run":
        _run_models(args, args.lib)
    else:
        _models_fuzz(args, args.lib)


if __name__ == "__main__":
    main()
