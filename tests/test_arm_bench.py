"""benchmarks/arm: the scripts that measure speed on real ARM hardware.

Nothing ARM can be timed here (qemu times are not speed), so these tests run
the orchestration on the x86 host instead: `adb` mode against a stand-in
`adb` that executes commands locally and a stand-in `benchmark_model` with
the real tool's flags and output line (it runs the model in LiteRT with the
tfq delegate loaded through --external_delegate_path), and `board` mode
forced onto x86. They check the plumbing and that the printed table has
speed.py's columns; the numbers they print are x86 numbers and mean nothing
for ARM.
"""

import pathlib
import stat
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "arm" / "bench_arm.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

FAKE_ADB = """\
#!{python}
# Stand-in for adb: runs "shell" commands on this host, copies "push" files.
import shutil, subprocess, sys
args = sys.argv[1:]
if args[:1] == ["-s"]:
    args = args[2:]
if args[0] == "push":
    shutil.copy(args[1], args[2])
    sys.exit(0)
if args[0] == "shell":
    cmd = " ".join(args[1:])
    if cmd.startswith("getprop ro.product.cpu.abi"):
        print("arm64-v8a")
    elif cmd.startswith("getprop ro.product.model"):
        print("host dry run")
    else:
        sys.exit(subprocess.run(cmd, shell=True).returncode)
    sys.exit(0)
sys.exit("fake adb: unsupported " + " ".join(args))
"""

FAKE_BENCHMARK_MODEL = """\
#!{python}
# Stand-in for TFLite's benchmark_model: same flags, same result line.
import sys, time
import numpy as np
from ai_edge_litert.interpreter import Interpreter, load_delegate
flags = dict(a[2:].split("=", 1) for a in sys.argv[1:])
delegates = []
if "external_delegate_path" in flags:
    opts = dict(kv.split(":", 1) for kv in flags.get("external_delegate_options", "").split(";") if kv)
    delegates.append(load_delegate(flags["external_delegate_path"], opts))
it = Interpreter(model_path=flags["graph"], num_threads=int(flags["num_threads"]),
                 experimental_delegates=delegates or None)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d["index"], np.ones(d["shape"], np.float32))
for _ in range(int(flags["warmup_runs"])):
    it.invoke()
t = time.perf_counter()
for _ in range(int(flags["num_runs"])):
    it.invoke()
avg = (time.perf_counter() - t) / int(flags["num_runs"]) * 1e6
print(f"Inference timings in us: Init: 1, First inference: 1, Warmup (avg): {{avg:.1f}}, Inference (avg): {{avg:.1f}}")
"""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A speed.py cache with fp32 and tfq-t2 variants of a small MLP under case 'dense1024x3'."""
    import warnings

    import speed
    from tfq import testing
    from tfq.converter import convert

    folder = tmp_path_factory.mktemp("bench")
    case = folder / "dense1024x3"
    case.mkdir()
    model = testing.random_compressed_model("ternary", kind="mlp", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fp32 = speed.float_tflite(model)
    (case / "fp32.tflite").write_bytes(fp32)
    (case / "tfq-t2.tflite").write_bytes(bytes(convert(fp32)))
    return folder


def _script(path, text):
    path.write_text(textwrap.dedent(text).format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


def _table(stdout):
    lines = [ln for ln in stdout.splitlines() if ln.startswith("| case |")]
    assert lines, stdout
    return stdout[stdout.index(lines[-1]):].splitlines()


def test_adb_mode_with_stand_in_tools(cache, tmp_path):
    import speed
    from tfq.runtime import delegate_path

    adb = _script(tmp_path / "adb", FAKE_ADB)
    bm = _script(tmp_path / "benchmark_model", FAKE_BENCHMARK_MODEL)
    device = tmp_path / "device"
    r = subprocess.run([sys.executable, str(BENCH), "adb", "--adb", str(adb), "--serial", "X",
                        "--benchmark-model", str(bm), "--delegate", str(delegate_path()),
                        "--cache", str(cache), "--cases", "dense1024x3", "--threads", "1",
                        "--rounds", "2", "--runs", "3", "--warmup", "1",
                        "--device-dir", str(device)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (device / "dense1024x3" / "tfq-t2.tflite").exists()
    assert (device / "libtfq_delegate.so").exists()
    table = _table(r.stdout)
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header == ["case", "thr", *speed.LITERT_VARIANTS, *speed.TFQ_VARIANTS,
                      "t2/fp32", "t2/best", "p4/fp32", "p4/best", "target"]
    row = [c.strip() for c in table[2].strip("|").split("|")]
    assert row[0] == "dense1024x3" and row[1] == "1"
    t2_vs_fp32 = row[len(header) - 5]
    assert t2_vs_fp32.endswith("x") and float(t2_vs_fp32[:-1]) > 0
    assert "(fp32)" in row[len(header) - 4]
    assert "host dry run (arm64-v8a" in r.stdout


def test_board_mode_refuses_x86_and_runs_when_forced(cache):
    base = [sys.executable, str(BENCH), "board", "--cache", str(cache), "--cases", "dense1024x3",
            "--threads", "1", "--seconds", "0.2"]
    r = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "run `board` on the ARM board itself" in r.stderr
    r = subprocess.run(base + ["--allow-non-arm"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _table(r.stdout)[2].startswith("| dense1024x3 | 1 |")


def test_missing_models_are_explained(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH), "board", "--allow-non-arm", "--cache",
                        str(tmp_path), "--cases", "conv3x3"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0
    assert "no prepared models (run `bench_arm.py prepare --cases conv3x3`" in r.stderr


def test_parse_benchmark_model_output():
    sys.path.insert(0, str(BENCH.parent))
    import bench_arm

    out = ("INFO: Loaded model x\nInference timings in us: Init: 2345, First inference: 812, "
           "Warmup (avg): 301.5, Inference (avg): 296.25\n")
    assert bench_arm.parse_avg_us(out) == pytest.approx(296.25)
    assert bench_arm.parse_avg_us("ERROR: Failed to apply delegate") is None


@pytest.mark.parametrize("script", ["build_android.sh", "run_adb.sh", "run_board.sh"])
def test_shell_scripts_parse_and_refuse_clearly(script, tmp_path):
    path = BENCH.parent / script
    assert subprocess.run(["bash", "-n", str(path)]).returncode == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    r = subprocess.run(["bash", str(path)], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode != 0
    expected = {"build_android.sh": "set ANDROID_NDK", "run_adb.sh": "BENCHMARK_MODEL",
                "run_board.sh": "run this on the ARM board"}[script]
    assert expected in r.stderr, r.stderr


# ------------------------------------------------------------------ block-sparse cases

SPARSE_SPEC = "dense1024x3:0.9"


@pytest.fixture(scope="module")
def sparse_cache(cache):
    """The cache above plus the 90% block-sparse variant, made as `prepare` makes it."""
    sys.path.insert(0, str(BENCH.parent))
    import bench_arm

    folder = cache / "dense1024x3"
    paths = {"fp32": folder / "fp32.tflite", "tfq-t2": folder / "tfq-t2.tflite"}
    path, skipped = bench_arm.prepare_sparse("dense1024x3", 0.9, paths)
    assert path.name.startswith("tfq-sparse90-") and 0.5 < skipped < 1.0
    return cache


def _sparse_table(stdout):
    import bench_arm

    lines = stdout.splitlines()
    start = [i for i, ln in enumerate(lines) if ln.startswith("# tfq block-sparse speed")]
    assert start, stdout
    table = lines[start[-1]:]
    header = [c.strip() for c in table[2].strip("|").split("|")]
    assert header == list(bench_arm.SPARSE_HEADER)
    row = [c.strip() for c in table[4].strip("|").split("|")]
    return table[0], dict(zip(header, row))


def _check_sparse_row(row):
    from tfq.pruning import auto_shape

    assert row["case"] == "dense1024x3" and row["sparsity"] == "90%" and row["threads"] == "1"
    assert row["block"] == "x".join(map(str, auto_shape("dense", 1024, 1024)))
    assert row["best LiteRT (us)"].startswith("fp32 ")
    for col in ("vs best LiteRT", "vs dense ternary"):
        assert row[col].endswith("x") and float(row[col][:-1]) > 0
    assert row["MACs skipped"].endswith("%") and 50 < float(row["MACs skipped"][:-1]) < 100


def test_board_mode_sparse_case_on_x86(sparse_cache):
    r = subprocess.run([sys.executable, str(BENCH), "board", "--allow-non-arm", "--cache",
                        str(sparse_cache), "--cases", f"dense1024x3,{SPARSE_SPEC}", "--threads", "1",
                        "--seconds", "0.2"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    dense = r.stdout[r.stdout.index("# tfq speed on"):r.stdout.index("# tfq block-sparse speed")]
    assert "\n| dense1024x3 | 1 |" in dense  # the dense case keeps speed.py's table
    title, row = _sparse_table(r.stdout)
    assert "block-sparse: " in title
    _check_sparse_row(row)


def test_adb_mode_sparse_case_with_stand_in_tools(sparse_cache, tmp_path):
    from tfq.runtime import delegate_path

    adb = _script(tmp_path / "adb", FAKE_ADB)
    bm = _script(tmp_path / "benchmark_model", FAKE_BENCHMARK_MODEL)
    device = tmp_path / "device"
    r = subprocess.run([sys.executable, str(BENCH), "adb", "--adb", str(adb),
                        "--benchmark-model", str(bm), "--delegate", str(delegate_path()),
                        "--cache", str(sparse_cache), "--cases", SPARSE_SPEC, "--threads", "1",
                        "--rounds", "2", "--runs", "3", "--warmup", "1", "--device-dir", str(device)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (device / "dense1024x3" / "tfq-sparse.tflite").exists()
    _check_sparse_row(_sparse_table(r.stdout)[1])


def test_sparse_case_errors_name_the_problem(cache, tmp_path):
    base = [sys.executable, str(BENCH), "board", "--allow-non-arm", "--threads", "1"]
    r = subprocess.run(base + ["--cache", str(cache), "--cases", "dense1024x3:1.5"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "must be a number in [0, 1]" in r.stderr
    r = subprocess.run(base + ["--cache", str(tmp_path), "--cases", "conv3x3:0.9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "no prepared models (run `bench_arm.py prepare --cases conv3x3:0.9`" in r.stderr


@pytest.mark.parametrize("cpu", ["max", "cortex-a53"])
def test_board_mode_sparse_case_runs_under_qemu(sparse_cache, cpu):
    """The board script inside the emulated aarch64 Python with the real aarch64 LiteRT and the
    cross-built delegate (tests/test_arm_litert.py's environment): it runs and prints the table
    with the NEON block-sparse path. The emulated times it prints are not speed."""
    from test_arm import CPUS, build_aarch64

    delegate = build_aarch64("gcc", targets=("tfq_delegate",)) / "libtfq_delegate.so"
    env_sh = ROOT / "scripts" / "arm_env.sh"
    r = subprocess.run(["bash", str(env_sh), "prepare"], capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    r = subprocess.run(["bash", str(env_sh), "run", "--cpu", cpu, "--delegate", str(delegate),
                        str(BENCH), "board", "--cache", str(sparse_cache), "--cases", SPARSE_SPEC,
                        "--threads", "1", "--seconds", "0.1"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    title, row = _sparse_table(r.stdout)
    want = {"neon_dotprod": "neon_dotprod (block-sparse: sdot-128)",
            "neon": "neon (block-sparse: neon-128)"}[CPUS[cpu]]
    assert f"tfq kernels: {want}" in title, title
    _check_sparse_row(row)
