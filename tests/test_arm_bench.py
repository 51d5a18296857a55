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
