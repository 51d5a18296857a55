"""tests/native/kernels_test.cc on this machine: every SIMD kernel table against the scalar reference.

The same program runs under qemu for the two ARM CPU models (test_arm.py);
here it is built natively (build-native/, CMake with
TFQ_BUILD_NATIVE_TESTS=ON) and run on the x86-64 CPU, which checks the
AVX2 and AVX-512 VNNI tables the CPU has, element by element: quantization
(plain and biased codes), GEMMs, depthwise, the float, fused (residual and
statistics) and int8 hand-over epilogues, the block-sparse kernels and
layers with 1-4 threads.
"""

import fcntl
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))
import native  # noqa: E402

BUILD = ROOT / "build-native"


def _build():
    if not shutil.which("cmake"):
        pytest.fail("cmake is not installed (scripts/setup_env.sh installs it)")
    BUILD.mkdir(exist_ok=True)
    with open(BUILD / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (BUILD / "CMakeCache.txt").exists():
            subprocess.run(["cmake", "-S", str(ROOT / "tfq" / "delegates"), "-B", str(BUILD),
                            "-DCMAKE_BUILD_TYPE=Release", "-DTFQ_BUILD_NATIVE_TESTS=ON",
                            "-DTFQ_COPY_TO_SOURCE=OFF"], check=True, capture_output=True, text=True)
        r = subprocess.run(["cmake", "--build", str(BUILD), "-j2", "--target", "tfq_kernels_test"],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"native build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    found = list(BUILD.rglob("tfq_kernels_test"))
    assert found, "tfq_kernels_test was not built"
    return found[0]


def test_every_table_matches_the_reference():
    binary = _build()
    isa = native.selected_isa()
    r = subprocess.run([str(binary), f"--expect-isa={isa}"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert " 0 failures" in r.stdout, r.stdout[-2000:]
    tested = r.stdout.strip().splitlines()[-1]
    for name in ("avx2", "avx512vnni"):
        if name in native.available_isas():
            assert name in tested, tested
    if "avx512vnni" in native.available_isas():
        # Both vector widths of the AVX-512 table's GEMV and block-sparse kernels.
        assert tested.split().count("avx512vnni") == 2, tested
        for width in ("vnni-256", "vnni-512"):
            assert f"({width}) ok" in r.stdout, r.stdout[-2000:]
