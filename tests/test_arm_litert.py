"""aarch64 end to end: the real LiteRT interpreter runs tfq models with the aarch64 delegate.

scripts/arm_env.sh prepares an emulated aarch64 CPython 3.11 (Debian's arm64
packages) with the aarch64 wheels of ai-edge-litert and numpy; the delegate
is cross-compiled with GCC (build-aarch64/, as in tests/test_arm.py). The
converted models of the x86 end-to-end tests (tests/test_converter_e2e.py,
tests/test_delegate.py) are written to a folder with their inputs, then
tests/helpers/litert_cases.py runs them once on x86 (host LiteRT, host
delegate) and once per CPU model inside the emulated Python under
`qemu-aarch64 -cpu max` (dot product: neon_dotprod kernels) and
`-cpu cortex-a53` (plain neon). The aarch64 outputs must match the reference
executor (tfq.converter.reference, delegate arithmetic) with the tolerances
of the x86 tests, and equal the x86 outputs bit for bit unless the model has
builtin float math (LSTM gates, a float first/last layer), which LiteRT may
round differently per CPU; the delegate's log must name the expected
kernels. The MNIST case runs the Android demo's trained ternary LeNet-5 on
300 test images. Last, 200 crafted models (tests/test_fuzz.py's mutations)
must not crash the aarch64 delegate and must be refused exactly when x86
refuses them, and tests/test_delegate_safety.py's aliasing graphs must be
refused with every NEON table. Block-sparse (format version 2) models run
the NEON block-sparse kernels (SPARSE_CASES).

Emulated run times say nothing about speed; nothing here times anything.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from test_arm import CPUS, ROOT, build_aarch64

sys.path.insert(0, str(ROOT / "tests" / "helpers"))
import litert_cases  # noqa: E402

ARM_ENV = ROOT / "scripts" / "arm_env.sh"
HELPER = ROOT / "tests" / "helpers" / "litert_cases.py"
LENET = ROOT / "android_demo" / "app" / "src" / "main" / "assets" / "lenet5_tfq_ternary.tflite"
MNIST_IMAGES = 300
CHAIN_SCALES = (1.0, 0.05, 20.0)
CHAIN_OPTIONS = {"plain": {}, "threads2": {"num_threads": 2}, "scalar": {"force_reference": 1},
                 "nohandover": {"int8_handover": 0}}
SCHEMES = ("binary", "ternary", "pow2_3bit", "pow2_4bit")
# Block-sparse (format version 2) twins of converted models (tests/helpers/sparse_models.py):
# (case, model kind, scheme, block, sparsity, threads). Every scheme with a zero level; the
# NEON fast shapes (R 4..32, C a multiple of 4) and a scalar-fallback one (1 x 4); FC and
# convolutions (in_c a multiple of C: implicit im2col; otherwise im2col); 0% to an all-zero
# layer; the int8 hand-over chain.
SPARSE_CASES = (
    ("sparse_cnn_ternary", "cnn", "ternary", (32, 4), 0.9, 1),
    ("sparse_cnn_pow2_3bit", "cnn", "pow2_3bit", (8, 8), 0.5, 2),
    ("sparse_cnn_pow2_4bit", "cnn", "pow2_4bit", (16, 4), 0.0, 1),
    ("sparse_mlp_ternary", "mlp", "ternary", (4, 32), 0.99, 1),
    ("sparse_mlp_pow2_3bit", "mlp", "pow2_3bit", (1, 4), 0.5, 1),
    ("sparse_mlp_pow2_4bit", "mlp", "pow2_4bit", (32, 4), 1.0, 2),
    ("sparse_chain_ternary", "chain", "ternary", (4, 4), 0.5, 2),
)

# Builtin float ops whose rounding may differ between x86 and aarch64 (LiteRT
# and XNNPACK pick their kernels per ISA and per core, e.g. Cortex-A53). A model
# without them must give bit-identical outputs on both: the tfq kernels'
# accumulators are exact and their epilogue is shared scalar code (docs/arm.md).
ROUNDING_MAY_DIFFER = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                       "BATCH_MATMUL", "LOGISTIC", "TANH", "SOFTMAX",
                       "UNIDIRECTIONAL_SEQUENCE_LSTM"}

# Tolerances of the x86 tests: (rtol, atol relative to max|want|, or absolute).
E2E = (1e-5, 1e-6, "relative")       # tests/test_converter_e2e.py
LSTM = (1e-5, 1e-6, "absolute")      # test_delegate_runs_packed_lstm_loop
CHAIN = (1e-4, 1e-5, "relative")     # tests/test_delegate.py, int8 hand-over


def _case_names():
    names = [f"{kind}_{s}" for kind in ("cnn", "mlp") for s in SCHEMES]
    names += ["mixed_dm1", "mixed_dm2", "lstm", "conv1d_dilated", "separable"]
    names += [f"chain_{o}_{i}" for i in range(len(CHAIN_SCALES)) for o in CHAIN_OPTIONS]
    names += ["chain_batch", "chain_reuse", "chain_extra_output", "mnist"]
    names += [name for name, *_ in SPARSE_CASES]
    return names


def _run_env(*args, timeout=1200):
    r = subprocess.run(["bash", str(ARM_ENV), *map(str, args)], capture_output=True, text=True,
                       timeout=timeout)
    return r


def _run_parallel(commands, folder, timeout=1800):
    """Runs {key: argv} at the same time (the emulated runs are mostly single-threaded:
    two of them use both cores); returns {key: CompletedProcess}. Output goes to
    files, so that a full pipe cannot serialise them."""
    procs = {}
    try:
        for key, argv in commands.items():
            out, err = folder / f"{key}.stdout", folder / f"{key}.stderr"
            with open(out, "w") as fo, open(err, "w") as fe:
                procs[key] = (subprocess.Popen([str(a) for a in argv], stdout=fo, stderr=fe,
                                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")),
                              out, err)
        done = {}
        for key, (p, out, err) in procs.items():
            rc = p.wait(timeout=timeout)
            done[key] = subprocess.CompletedProcess(p.args, rc, out.read_text(), err.read_text())
        return done
    finally:
        for p, _, _ in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def _env_run(cpu, delegate, *args):
    return ["bash", ARM_ENV, "run", "--cpu", cpu, "--delegate", delegate, HELPER, *args]


@pytest.fixture(scope="module")
def arm_delegate():
    """The aarch64 delegate (GCC cross build) and a prepared emulated Python."""
    missing = [t for t in ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake", "unshare", "dpkg",
                           "apt-get") if not shutil.which(t)]
    if missing:
        pytest.fail(f"not found: {', '.join(missing)}; scripts/setup_env.sh installs the cross "
                    "compiler and qemu-user, scripts/arm_env.sh needs a Debian host")
    r = _run_env("prepare")
    assert r.returncode == 0, f"scripts/arm_env.sh prepare failed:\n{r.stderr[-4000:]}"
    return build_aarch64("gcc", targets=("tfq_delegate",)) / "libtfq_delegate.so"


class _Cases:
    """Writes models and inputs to a folder and remembers what each case expects."""

    def __init__(self, folder):
        self.folder = folder
        self.cases = []
        self.expect = {}       # name -> (reference outputs, tolerance, extra info)

    def add(self, name, data, x, ref, tol, options=None, threads=None, batch=False, reuse=None,
            **info):
        model = f"{name}.tflite"
        (self.folder / model).write_bytes(bytes(data))
        case = {"name": name, "model": model, "options": dict(options or {}, verbosity=1),
                "threads": threads, "batch": batch}
        if reuse is not None:
            case["reuse"] = []
            for i, xi in enumerate(reuse):
                np.save(self.folder / f"{name}.in{i}.npy", xi.astype(np.float32))
                case["reuse"].append(f"{name}.in{i}.npy")
        else:
            np.save(self.folder / f"{name}.in.npy", x.astype(np.float32))
            case["input"] = f"{name}.in.npy"
        self.cases.append(case)
        self.expect[name] = (ref, tol, dict(info, options=case["options"],
                                            float_builtins=_ops(data) & ROUNDING_MAY_DIFFER))

    def write(self):
        (self.folder / "cases.json").write_text(json.dumps(self.cases, indent=1))


def _ops(data):
    from tfq.converter import tflite_io

    fb, _, _ = tflite_io.load_model(bytes(data))
    return {tflite_io.op_name(fb, op) for sg in fb.subgraphs for op in sg.operators or []}


def _build_cases(folder):
    import keras

    from tfq import datasets, layers
    from tfq import testing
    from tfq.converter import convert
    from tfq.converter.reference import ReferenceInterpreter

    def ref(data, x, **kw):
        return ReferenceInterpreter(bytes(data), "delegate", **kw).run(x)

    def per_image_ref(data, x, **kw):
        r = ReferenceInterpreter(bytes(data), "delegate", **kw)
        return [np.concatenate([r.run(row[None])[0] for row in x])]

    c = _Cases(folder)
    # Every scheme, as tests/test_converter_e2e.py::test_delegate_matches_reference.
    for kind in ("cnn", "mlp"):
        for scheme in SCHEMES:
            model = testing.random_compressed_model(scheme, kind, seed=3, batch_norm=kind == "cnn",
                                                    per_channel=scheme != "ternary")
            data = convert(model)
            x = np.random.default_rng(4).normal(size=(3,) + tuple(model.input_shape[1:]))
            x = x.astype(np.float32)
            c.add(f"{kind}_{scheme}", data, x, per_image_ref(data, x), E2E)
    # Every tfq op and scheme in one model; depthwise multiplier 1 (NEON) and 2 (fallback);
    # the first as a batch of 2 on 2 threads (batched GEMM).
    for dm in (1, 2):
        model = testing.small_cnn(input_shape=(13, 11, 5), depth_multiplier=dm,
                                  name=f"arm_mixed_dm{dm}")
        testing.set_in_set_weights(model, {"conv": "binary", "dwconv": "pow2_4bit",
                                           "pwconv": "pow2_3bit", "fc": "ternary"}, seed=dm)
        data = convert(model)
        x = (np.random.default_rng(dm).standard_normal((2, 13, 11, 5)) * 3).astype(np.float32)
        if dm == 1:
            c.add("mixed_dm1", data, x, ref(data, x), E2E, threads=2, batch=True)
        else:
            c.add("mixed_dm2", data, x, per_image_ref(data, x), E2E)
    # The LSTM of test_delegate_runs_packed_lstm_loop (packed kernels in a WHILE loop).
    rng = np.random.default_rng(5)
    inputs = keras.Input((6, 5))
    h = keras.layers.LSTM(8, name="lstm")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="fc")(h))
    for v in model.get_layer("lstm").weights:
        if "kernel" in v.path:
            v.assign(testing.in_set_kernel(tuple(v.shape), "ternary", rng))
    data = convert(model)
    x = rng.normal(size=(2, 6, 5)).astype(np.float32)
    c.add("lstm", data, x, per_image_ref(data, x), LSTM)
    # Dilated Conv1D and SeparableConv2D (test_more_layer_types).
    for kind, shape in (("conv1d_dilated", (2, 16, 4)), ("separable", (2, 10, 10, 4))):
        keras.utils.set_random_seed(6)
        inputs = keras.Input(shape[1:])
        if kind == "conv1d_dilated":
            out = keras.layers.Conv1D(6, 3, padding="same", dilation_rate=2, name="c")(inputs)
        else:
            out = keras.layers.SeparableConv2D(6, 3, strides=2, padding="same",
                                               depth_multiplier=2, name="c")(inputs)
        model = layers.quantize_model(keras.Model(inputs, out), "ternary", skip_first_last=False)
        data = convert(model)
        x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
        c.add(kind, data, x, per_image_ref(data, x), E2E)
    # The int8 hand-over chain (tests/test_delegate.py): every option, three input scales.
    data, _ = testing.random_compressed_tflite("ternary", "chain", seed=11)
    for i, scale in enumerate(CHAIN_SCALES):
        x = (scale * np.random.default_rng(i).standard_normal((1, 10, 10, 4))).astype(np.float32)
        for name, opts in CHAIN_OPTIONS.items():
            handover = name != "nohandover"
            c.add(f"chain_{name}_{i}", data, x, ref(data, x, int8_handover=handover), CHAIN,
                  options=opts, handover=handover)
    xb = np.random.default_rng(5).standard_normal((3, 10, 10, 4)).astype(np.float32)
    c.add("chain_batch", data, xb, ref(data, xb), CHAIN, batch=True)
    xs = [np.random.default_rng(s).standard_normal((1, 10, 10, 4)).astype(np.float32)
          for s in (6, 6, 7, 6)]
    xs[1] = np.zeros_like(xs[1])
    xs[2][0, 3, 3, 2] = np.nan
    c.add("chain_reuse", data, None, [np.stack([ref(data, xi)[0] for xi in xs])], CHAIN,
          options={"num_threads": 2}, reuse=xs)
    data2, _ = testing.random_compressed_tflite("ternary", "chain_extra_output", seed=12)
    x = np.random.default_rng(8).standard_normal((1, 10, 10, 4)).astype(np.float32)
    c.add("chain_extra_output", data2, x, ref(data2, x), CHAIN)
    # Block-sparse models (format version 2).
    import sparse_models

    for name, kind, scheme, block, sparsity, threads in SPARSE_CASES:
        if kind == "chain":
            base, _ = testing.random_compressed_tflite(scheme, "chain", seed=13)
            x = np.random.default_rng(9).standard_normal((1, 10, 10, 4)).astype(np.float32)
            tol = CHAIN
        else:
            model = testing.random_compressed_model(scheme, kind, seed=14, batch_norm=kind == "cnn",
                                                    per_channel=scheme != "ternary")
            base = convert(model)
            x = np.random.default_rng(10).normal(size=(3,) + tuple(model.input_shape[1:]))
            x = x.astype(np.float32)
            tol = E2E
        _, data = sparse_models.sparse_pair(base, block, sparsity, seed=len(name))
        assert sparse_models.sparse_ops(data), name
        c.add(name, data, x, ref(data, x), tol,
              options={"num_threads": threads} if threads > 1 else None, batch=kind != "chain")
    # MNIST: the Android demo's trained ternary LeNet-5, image by image.
    (_, _), (xt, yt) = datasets.mnist()
    xm = xt[:MNIST_IMAGES].astype(np.float32)
    lenet = LENET.read_bytes()
    c.add("mnist", lenet, xm, per_image_ref(lenet, xm), None, labels=yt[:MNIST_IMAGES])
    c.write()
    return c


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    """The cases, and their outputs on x86 (host LiteRT with the host delegate)."""
    import tfq

    folder = tmp_path_factory.mktemp("arm_cases")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        c = _build_cases(folder)
    c.x86 = {case["name"]: litert_cases.run_case(folder, case, tfq.delegate_path())
             for case in c.cases}
    assert sorted(c.expect) == sorted(_case_names())
    return c


@pytest.fixture(scope="module")
def arm_runs(arm_delegate, cases, tmp_path_factory):
    """Runs every case inside the emulated aarch64 LiteRT, both CPU models at once."""
    folder = tmp_path_factory.mktemp("arm_out")
    for cpu in CPUS:
        (folder / cpu).mkdir()
    runs = _run_parallel({cpu: _env_run(cpu, arm_delegate, cases.folder, folder / cpu)
                          for cpu in CPUS}, folder)
    return folder, runs


@pytest.fixture(scope="module", params=sorted(CPUS))
def arm_run(request, arm_runs, cases):
    """(cpu, {case: outputs}, {case: delegate log}) of one CPU model."""
    cpu = request.param
    folder, runs = arm_runs
    out, r = folder / cpu, runs[cpu]
    assert r.returncode == 0 and "CASES DONE" in r.stdout, (
        f"aarch64 LiteRT run (-cpu {cpu}) failed, exit {r.returncode}:\n"
        f"{r.stdout[-2000:]}\n{r.stderr[-6000:]}")
    logs = {}
    for chunk in r.stderr.split("=== case ")[1:]:
        name, _, text = chunk.partition("\n")
        logs[name.strip()] = text
    outputs = {}
    for name in cases.expect:
        with np.load(out / f"{name}.npz") as z:
            outputs[name] = [z[f"arr_{i}"] for i in range(len(z.files))]
    return cpu, outputs, logs


def _assert_close(got, want, tol, what):
    rtol, atol, kind = tol
    assert len(got) == len(want), f"{what}: {len(got)} outputs, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"{what}: output {i} shape {g.shape}, expected {w.shape}"
        finite = np.isfinite(w)
        scale = max(float(np.max(np.abs(w[finite]), initial=0.0)), 1e-3)
        np.testing.assert_allclose(g, w, rtol=rtol, err_msg=f"{what}, output {i}",
                                   atol=atol * scale if kind == "relative" else atol)


@pytest.mark.parametrize("name", [n for n in _case_names() if n != "mnist"])
def test_aarch64_litert_matches_reference_and_x86(arm_run, cases, name):
    """Within the x86 tests' tolerances of the reference executor, and of x86;
    bit-identical to x86 when the model has no builtin float math."""
    cpu, outputs, logs = arm_run
    want, tol, info = cases.expect[name]
    got = outputs[name]
    _assert_close(got, want, tol, f"-cpu {cpu} {name} vs the reference executor")
    if info["float_builtins"]:
        _assert_close(got, cases.x86[name], tol, f"-cpu {cpu} {name} vs x86")
    else:
        for i, (g, w) in enumerate(zip(got, cases.x86[name])):
            np.testing.assert_array_equal(g, w, err_msg=f"-cpu {cpu} {name} output {i}: not "
                                          "bit-identical to x86 (no builtin float math in it)")
    isa = "reference" if info["options"].get("force_reference") else CPUS[cpu]
    log = logs[name]
    assert f"kernels: {isa}" in log, f"-cpu {cpu} {name}: delegate log\n{log}"
    assert "refusing" not in log, log
    if name.startswith("chain_") and info.get("handover") and "batch" not in name:
        assert "chained 5 nodes" in log, log
    if name.startswith("sparse_"):
        assert "block-sparse" in log, f"-cpu {cpu} {name}: no block-sparse node claimed\n{log}"
    if name == "chain_reuse":
        y = got[0]
        assert np.all(np.isnan(y[2])) and not np.any(np.isnan(y[[0, 1, 3]]))
        np.testing.assert_array_equal(y[3], y[0])


def test_aarch64_litert_mnist_agreement(arm_run, cases):
    """The demo's ternary LeNet-5 on 300 MNIST test images: the thresholds of
    tests/test_delegate.py::test_mnist_top1_agreement against the reference,
    and the same top-1 as the x86 delegate on every image."""
    cpu, outputs, logs = arm_run
    y_arm = outputs["mnist"][0]
    y_ref = cases.expect["mnist"][0][0]
    y_x86 = cases.x86["mnist"][0]
    labels = cases.expect["mnist"][2]["labels"]
    acc = np.mean(np.argmax(y_arm, 1) == labels)
    agree_ref = np.mean(np.argmax(y_arm, 1) == np.argmax(y_ref, 1))
    agree_x86 = np.mean(np.argmax(y_arm, 1) == np.argmax(y_x86, 1))
    print(f"-cpu {cpu}: MNIST accuracy {acc:.4f} on {len(labels)} images, top-1 agreement with "
          f"the reference {agree_ref:.4f}, with x86 {agree_x86:.4f}, max |arm - x86| "
          f"{np.max(np.abs(y_arm - y_x86)):.3g}")
    assert f"kernels: {CPUS[cpu]}" in logs["mnist"], logs["mnist"]
    assert acc > 0.85
    assert agree_ref >= 0.999
    assert agree_x86 == 1.0
    big = np.max(np.abs(y_ref))
    close = np.isclose(y_arm, y_ref, rtol=1e-4, atol=1e-4 * big)
    assert close.mean() >= 0.999, close.mean()
    assert np.max(np.abs(y_arm - y_ref)) <= 0.05 * big


def test_runner_errors_name_the_problem(arm_delegate, tmp_path):
    """A missing delegate library, an unprepared environment, a bad option."""
    script = tmp_path / "noop.py"
    script.write_text("print('never')\n")
    r = _run_env("run", "--delegate", tmp_path / "missing.so", script, timeout=60)
    assert r.returncode != 0 and "missing.so not found" in r.stderr, r.stderr
    r = subprocess.run(["bash", str(ARM_ENV), "run", "--delegate", str(arm_delegate), str(script)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, TFQ_ARM_ENV=str(tmp_path / "empty")))
    assert r.returncode != 0 and "run 'bash scripts/arm_env.sh prepare' first" in r.stderr, r.stderr
    r = _run_env("run", "--threads", "2", script, timeout=60)
    assert r.returncode != 0 and "unknown option --threads" in r.stderr, r.stderr
    r = _run_env("install", timeout=60)
    assert r.returncode != 0 and "usage: arm_env.sh prepare | run" in r.stderr, r.stderr


# ---------------------------------------------------------------------------
# Crafted models through the aarch64 delegate: tests/test_fuzz.py's mutations
# and tests/test_delegate_safety.py's aliasing graphs.

CRAFTED_MODELS = 200
STRUCTURAL = 0.4      # share of graph-structure mutations, as in test_fuzz.py


@pytest.fixture(scope="module")
def crafted(tmp_path_factory):
    """CRAFTED_MODELS mutants of test_fuzz.py's base models, made with its mutation
    helpers: the graph's structure (outputs, inputs, duplicated or swapped
    operators, graph outputs), or bytes of the tfq custom options, of the packed
    buffers and tfq tensor shapes, or anywhere in the file. Returns (folder,
    {file: how it was made})."""
    import test_fuzz

    from tfq.testing import random_compressed_tflite

    folder = tmp_path_factory.mktemp("arm_crafted")
    kinds = [("ternary", "cnn"), ("pow2_4bit", "cnn"), ("binary", "mlp"), ("pow2_3bit", "cnn"),
             ("ternary", "chain")]      # test_fuzz.py's `models`
    bases = [bytes(random_compressed_tflite(s, k, seed=i)[0]) for i, (s, k) in enumerate(kinds)]
    regions = [test_fuzz._tfq_regions(b) for b in bases]
    rng = np.random.default_rng(2026)
    made = {}
    for n in range(CRAFTED_MODELS):
        m = n % len(bases)
        base = f"{'/'.join(kinds[m])} model"
        if rng.random() < STRUCTURAL:
            blob, edits = test_fuzz._mutate_structure(rng, bases[m])
            how = f"{base}, structure {edits}"
        else:
            options = [g for g in regions[m] if g[2] == "options"]
            r = rng.random()
            if r < 0.45 and options:
                start, end, kind = options[int(rng.integers(0, len(options)))]
            elif r < 0.85:
                start, end, kind = regions[m][int(rng.integers(0, len(regions[m])))]
            else:
                start, end, kind = 0, len(bases[m]), "anywhere"
            blob = test_fuzz._mutate_bytes(rng, bases[m], start, end)
            how = f"{base}, {kind} bytes [{start}, {end})"
        name = f"{n:04d}.tflite"
        (folder / name).write_bytes(blob)
        made[name] = how
    return folder, made


@pytest.fixture(scope="module")
def aliasing(tmp_path_factory):
    """test_delegate_safety.py's aliasing graphs: (folder, {file: expected message})."""
    from test_delegate_safety import CASES, crafted_models

    folder = tmp_path_factory.mktemp("arm_aliasing")
    expected = {}
    for name, blob in crafted_models().items():
        (folder / f"{name}.tflite").write_bytes(blob)
        expected[f"{name}.tflite"] = CASES[name][2]
    return folder, expected


def _tables(cpu):
    """The kernel tables the delegate can pin (its `isa` option) under a CPU model."""
    return ["reference", "neon"] + (["neon_dotprod"] if CPUS[cpu] == "neon_dotprod" else [])


def _crafted_outcomes(stdout):
    """{"FILE OPTIONS": "ran" | "refused: MESSAGE"} from the runner's output, and the
    last run started."""
    outcomes, last = {}, None
    for line in stdout.splitlines():
        if line.startswith("crafted "):
            last = line[len("crafted "):]
        elif line.startswith("  -> ") and last:
            outcomes[last] = line[5:]
    return outcomes, last


@pytest.fixture(scope="module")
def crafted_runs(arm_delegate, crafted, aliasing, tmp_path_factory):
    """All at once: the mutants through the x86 delegate (host LiteRT, in a subprocess:
    a crash must not take pytest down) and through the aarch64 one under both CPU
    models (2 threads, the CPU's best table); the aliasing graphs under both CPU
    models with every table and 1, 2 and 4 threads."""
    import tfq

    commands = {"x86": ["env", f"TFQ_DELEGATE_PATH={tfq.delegate_path()}", sys.executable,
                        HELPER, "--crafted", crafted[0]]}
    for cpu in CPUS:
        commands[cpu] = _env_run(cpu, arm_delegate, "--crafted", crafted[0])
        sets = [{"isa": isa, "num_threads": t} for isa in _tables(cpu) for t in (1, 2, 4)]
        commands[f"aliasing-{cpu}"] = _env_run(cpu, arm_delegate, "--crafted", aliasing[0],
                                               json.dumps(sets))
    runs = _run_parallel(commands, tmp_path_factory.mktemp("crafted_out"), timeout=900)
    return {key: (r, *_crafted_outcomes(r.stdout)) for key, r in runs.items()}


def _assert_finished(r, last, made, what):
    name = last.split()[0] if last else None
    assert r.returncode == 0 and "CRAFTED DONE" in r.stdout, (
        f"{what}: exit {r.returncode} (negative or above 128: a signal) while running {last} "
        f"({made.get(name)})\n{r.stdout[-1500:]}\n{r.stderr[-3000:]}")


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_crafted_models_do_not_crash_the_aarch64_delegate(crafted, crafted_runs, cpu):
    """No signal, no hang: every mutant runs or is refused with an error, and
    exactly the ones x86 refuses are refused."""
    _, made = crafted
    r, x86, last = crafted_runs["x86"]
    _assert_finished(r, last, made, "x86")
    r, outcomes, last = crafted_runs[cpu]
    _assert_finished(r, last, made, f"-cpu {cpu}")
    assert len(outcomes) == len(x86) == CRAFTED_MODELS
    refused = sum(o.startswith("refused") for o in outcomes.values())
    print(f"-cpu {cpu}: {CRAFTED_MODELS} crafted models, {refused} refused")
    differ = {k: (x86[k], outcomes[k]) for k in outcomes
              if outcomes[k].startswith("refused") != x86[k].startswith("refused")}
    assert not differ, f"-cpu {cpu}: outcomes differ from x86 (x86, aarch64): {differ}"


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_aliasing_graphs_are_refused_on_aarch64(aliasing, crafted_runs, cpu):
    """test_delegate_safety.py's graphs, every table of the CPU, 1/2/4 threads:
    refused with the message the x86 test expects."""
    _, expected = aliasing
    r, outcomes, last = crafted_runs[f"aliasing-{cpu}"]
    _assert_finished(r, last, expected, f"aliasing graphs, -cpu {cpu}")
    assert len(outcomes) == len(expected) * len(_tables(cpu)) * 3
    for run, outcome in outcomes.items():
        name = run.split()[0]
        assert outcome.startswith("refused:") and expected[name] in outcome, (
            f"-cpu {cpu} {run}: {outcome} (expected a refusal naming {expected[name]!r})")
