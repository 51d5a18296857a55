"""aarch64: the NEON kernels under qemu, and the delegate's node-level path on ARM.

Cross-builds tfq/delegates for aarch64 (cmake/aarch64-linux-gnu.toolchain.cmake)
twice, once with Debian's g++-aarch64-linux-gnu (build-aarch64/) and once with
clang++ --target=aarch64-linux-gnu (build-aarch64-clang/; the Android NDK
compiles with clang), each folder reused by later runs, then runs with each:

* tests/native/kernels_test.cc under `qemu-aarch64 -cpu max` (the CPU has the
  dot product: the dispatcher must pick neon_dotprod) and `-cpu cortex-a53`
  (it has not: plain neon). Every table function and every layer is compared
  with the scalar reference bit for bit, block-sparse (format version 2)
  kernels and layers included.
* tests/native/node_runner.cc on tensors exported on x86 from converted models
  (every tfq op and scheme, and the Android demo's ternary LeNet-5 on MNIST):
  each node runs through the delegate's own entry points on aarch64 and its
  output must equal the output the x86 delegate produced inside LiteRT, bit
  for bit. This checks every tfq node (also inside models whose final output
  passes through float layers) and the clang build; whole graphs in the real
  aarch64 LiteRT interpreter are tests/test_arm_litert.py's (docs/arm.md).

Emulated run times say nothing about speed; nothing here times anything.
"""

import fcntl
import importlib.util
import os
import pathlib
import shutil
import struct
import subprocess

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILDS = {"gcc": ROOT / "build-aarch64", "clang": ROOT / "build-aarch64-clang"}
TOOLCHAIN = ROOT / "cmake" / "aarch64-linux-gnu.toolchain.cmake"
SYSROOT = "/usr/aarch64-linux-gnu"
CPUS = {"max": "neon_dotprod", "cortex-a53": "neon"}


def _require_tools(compiler):
    tools = ("aarch64-linux-gnu-g++", "qemu-aarch64", "cmake") + (
        ("clang++",) if compiler == "clang" else ())
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        pytest.fail(f"ARM cross tools not installed ({', '.join(missing)}); scripts/setup_env.sh "
                    "installs g++-aarch64-linux-gnu, clang and qemu-user")


def build_aarch64(compiler="gcc", targets=("tfq_kernels_test", "tfq_node_runner")):
    """Configures (once) and builds aarch64 targets; returns the build folder.

    compiler "gcc" is Debian's aarch64-linux-gnu-g++; "clang" is clang++
    --target=aarch64-linux-gnu, the compiler family of the Android NDK.
    targets: the native test programs by default; tests/test_arm_litert.py
    builds the delegate library (tfq_delegate) in the same folder.

    A file lock keeps parallel pytest workers from building at the same time;
    later calls only let CMake check that everything is up to date.
    """
    build_dir = BUILDS[compiler]
    build_dir.mkdir(exist_ok=True)
    with open(build_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (build_dir / "CMakeCache.txt").exists():
            subprocess.run(
                ["cmake", "-S", str(ROOT / "tfq" / "delegates"), "-B", str(build_dir),
                 f"-DCMAKE_TOOLCHAIN_FILE={TOOLCHAIN}", f"-DTFQ_CROSS_COMPILER={compiler}",
                 "-DCMAKE_BUILD_TYPE=Release", "-DTFQ_BUILD_NATIVE_TESTS=ON",
                 "-DTFQ_COPY_TO_SOURCE=OFF"],
                check=True, capture_output=True, text=True)
        r = subprocess.run(["cmake", "--build", str(build_dir), "-j2", "--target", *targets],
                           capture_output=True, text=True)
        assert r.returncode == 0, (f"aarch64 build ({compiler}) failed:\n{r.stdout[-4000:]}\n"
                                   f"{r.stderr[-4000:]}")
    return build_dir


def qemu(cpu, *cmd, timeout=300):
    return subprocess.run(["qemu-aarch64", "-cpu", cpu, "-L", SYSROOT, *map(str, cmd)],
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module", params=["gcc", "clang"])
def arm_build(request):
    _require_tools(request.param)
    return build_aarch64(request.param)


def _load_exporter():
    spec = importlib.util.spec_from_file_location(
        "tfq_export_nodes", ROOT / "benchmarks" / "arm" / "export_nodes.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def exported_nodes(tmp_path_factory):
    """.tfqnodes files exported on x86: a mixed-scheme CNN and the demo's LeNet-5."""
    from tfq import testing
    from tfq.converter import convert
    from tfq.datasets import mnist

    exporter = _load_exporter()
    out = tmp_path_factory.mktemp("nodes")
    files = {}
    # Every op and scheme; depthwise with multiplier 1 (NEON path) and 2 (fallback).
    for dm in (1, 2):
        model = testing.small_cnn(input_shape=(13, 11, 5), depth_multiplier=dm,
                                  name=f"arm_mixed_dm{dm}")
        testing.set_in_set_weights(model, {"conv": "binary", "dwconv": "pow2_4bit",
                                           "pwconv": "pow2_3bit", "fc": "ternary"}, seed=dm)
        path = out / f"mixed_dm{dm}.tflite"
        path.write_bytes(convert(model))
        rng = np.random.default_rng(dm)
        nodes, _ = exporter.collect_nodes(path, rng.standard_normal((2, 13, 11, 5)) * 3)
        assert sorted({n[0] for n in nodes}) == ["TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D",
                                                   "TFQ_FULLY_CONNECTED"]
        files[f"mixed_dm{dm}"] = out / f"mixed_dm{dm}.tfqnodes"
        files[f"mixed_dm{dm}"].write_bytes(exporter.encode(nodes))
    lenet = ROOT / "android_demo" / "app" / "src" / "main" / "assets" / "lenet5_tfq_ternary.tflite"
    (_, _), (x_test, _) = mnist()
    nodes, _ = exporter.collect_nodes(lenet, x_test[:3])
    files["lenet5_ternary"] = out / "lenet5.tfqnodes"
    files["lenet5_ternary"].write_bytes(exporter.encode(nodes))
    return files


@pytest.mark.parametrize("cpu", sorted(CPUS))
def test_neon_kernels_equal_reference_under_qemu(arm_build, cpu):
    r = qemu(cpu, arm_build / "tfq_kernels_test", f"--expect-isa={CPUS[cpu]}")
    assert r.returncode == 0, f"qemu -cpu {cpu}:\n{r.stdout}\n{r.stderr}"
    assert f"selected isa: {CPUS[cpu]}" in r.stdout
    assert ", 0 failures" in r.stdout
    # The block-sparse kernels of every NEON table (not the scalar fallback), at 1-4 threads.
    assert "sparse layers (neon, sparse path neon-128, 1-4 threads) ok" in r.stdout
    if cpu == "max":
        assert "sparse layers (neon_dotprod, sparse path sdot-128, 1-4 threads) ok" in r.stdout
    # -cpu max tests both tables (plain NEON is always there); cortex-a53 only plain NEON.
    tested = r.stdout.strip().splitlines()[-1].split("tables tested:")[1].split()
    assert tested == (["neon", "neon_dotprod"] if cpu == "max" else ["neon"])


def test_wrong_isa_expectation_fails(arm_build):
    r = qemu("cortex-a53", arm_build / "tfq_kernels_test", "--expect-isa=neon_dotprod")
    assert r.returncode == 1
    assert "dispatcher selected neon, expected neon_dotprod" in r.stderr


@pytest.mark.parametrize("cpu", sorted(CPUS))
@pytest.mark.parametrize("model", ["mixed_dm1", "mixed_dm2", "lenet5_ternary"])
def test_node_path_on_aarch64_matches_x86_bit_for_bit(arm_build, exported_nodes, cpu, model):
    threads = 2 if model == "mixed_dm1" else 1
    r = qemu(cpu, arm_build / "tfq_node_runner", exported_nodes[model],
             f"--expect-isa={CPUS[cpu]}", f"--threads={threads}")
    assert r.returncode == 0, f"qemu -cpu {cpu} {model}:\n{r.stdout}\n{r.stderr}"
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("node ")]
    assert lines and all(ln.endswith("bit-identical to x86") for ln in lines), r.stdout


def test_node_runner_reports_a_mismatch_and_a_bad_file(arm_build, exported_nodes, tmp_path):
    exporter = _load_exporter()
    data = bytearray(exported_nodes["mixed_dm1"].read_bytes())
    # Flip the last float of the last node's expected output.
    data[-4:] = struct.pack("<f", struct.unpack("<f", bytes(data[-4:]))[0] + 1.0)
    bad = tmp_path / "bad.tfqnodes"
    bad.write_bytes(bytes(data))
    r = qemu("max", arm_build / "tfq_node_runner", bad)
    assert r.returncode == 1 and "MISMATCH (1 differ" in r.stdout, r.stdout
    trunc = tmp_path / "truncated.tfqnodes"
    trunc.write_bytes(bytes(data[:100]))
    r = qemu("max", arm_build / "tfq_node_runner", trunc)
    assert r.returncode == 1 and "truncated" in r.stderr, r.stderr
    assert exporter.MAGIC == b"TFQNODES"


def test_exporter_refuses_a_float_model(tmp_path):
    from tfq import testing
    from tfq.converter import convert

    model = testing.small_cnn(input_shape=(8, 8, 2), name="float_only")
    path = tmp_path / "float.tflite"
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        path.write_bytes(convert(model))
    with pytest.raises(ValueError, match="no tfq custom op"):
        _load_exporter().collect_nodes(path, np.zeros((1, 8, 8, 2), np.float32))
