"""Bazel: BUILD/WORKSPACE load offline, mirror CMake, and build the kernels.

`bazel query //...` (Debian's bazel-bootstrap, no network) must load every
package; scripts/check_build_files.py must find the Bazel and CMake source
lists identical; a deliberate difference must be reported; and since the
workspace maps Bazel's default repositories to local stand-ins
(third_party/bazel), the delegate and the kernel test really build and pass
under Bazel too.
"""

import copy
import importlib.util
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _bazel():
    exe = shutil.which("bazel")
    if exe is None:
        pytest.fail("bazel not installed (scripts/setup_env.sh installs bazel-bootstrap)")
    return exe


def _checker():
    spec = importlib.util.spec_from_file_location("check_build_files",
                                                  ROOT / "scripts" / "check_build_files.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def build_lists(tmp_path_factory):
    bazel = _bazel()
    if not shutil.which("aarch64-linux-gnu-g++"):
        pytest.fail("aarch64 cross compiler missing (needed for CMake's NEON configuration)")
    chk = _checker()
    tmp = tmp_path_factory.mktemp("cmake")
    return chk, chk.cmake_configs(tmp), chk.bazel_rules(bazel)


def test_bazel_query_loads_every_package():
    r = subprocess.run([_bazel(), "--batch", "query", "//..."], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    targets = set(r.stdout.split())
    for t in ("//:libtfq_delegate.so", "//:libtfq_testing.so", "//:tfq_kernels", "//:tfq_kernels_neon",
              "//:tfq_kernels_neon_dotprod", "//:tfq_kernels_avx2", "//:tfq_kernels_test",
              "//:tfq_node_runner", "//:tfq", "//:pytest"):
        assert t in targets
    assert not list(ROOT.glob("bazel-*")), "bazel left convenience symlinks in the source tree"


def test_bazel_and_cmake_source_lists_agree(build_lists):
    chk, configs, rules = build_lists
    assert chk.compare(configs, rules) == []
    neon = configs["aarch64"]["tfq_kernels"]["sources"]
    assert neon["tfq/delegates/kernels/gemm/neon_dotprod.cc"] == {"-march=armv8.2-a+dotprod"}
    assert neon["tfq/delegates/kernels/gemm/neon.cc"] == set()
    host = configs["host"]["tfq_kernels"]["sources"]
    assert host["tfq/delegates/kernels/gemm/avx2.cc"] == {"-mavx2", "-mfma"}
    assert "-mavx512vnni" in host["tfq/delegates/kernels/gemm_interleaved/avx512vnni.cc"]
    # The test entry points are in the test library only.
    for cfg in configs.values():
        assert "tfq/delegates/testing_api.cc" not in cfg["tfq_delegate"]["sources"]
        assert "tfq/delegates/testing_api.cc" in cfg["tfq_testing"]["sources"]


def test_differences_are_reported(build_lists):
    chk, configs, rules = build_lists
    rules = copy.deepcopy(rules)
    rules["//:tfq_kernels_neon_dotprod"]["copts"].remove("-march=armv8.2-a+dotprod")
    rules["//:tfq_kernels"]["srcs"].remove("//:tfq/delegates/kernels/layers/conv2d.cc")
    rules["//:tfq_delegate_lib"]["hdrs"].remove("//:tfq/delegates/node_spec.h")
    problems = "\n".join(chk.compare(configs, rules))
    assert "gemm/neon_dotprod.cc: ISA flags differ" in problems
    assert "kernels/layers/conv2d.cc: built by CMake (tfq_delegate, tfq_kernels) but not by Bazel" in problems
    assert "node_spec.h: header not declared in Bazel" in problems


def test_check_script_passes():
    _bazel()
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_build_files.py")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "source lists agree" in r.stdout


def test_bazel_builds_delegate_and_passes_kernel_test():
    bazel = _bazel()
    r = subprocess.run([bazel, "--batch", "test", "//:tfq_kernels_test", "//:libtfq_delegate.so",
                        "//:libtfq_testing.so", "--test_output=errors"], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    bin_dir = subprocess.run([bazel, "--batch", "info", "bazel-bin"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.strip()
    from helpers import native

    lib = native.library(pathlib.Path(bin_dir) / "libtfq_testing.so")
    assert native.selected_isa(True, lib) == "reference"
    assert native.selected_isa(False, lib) != "reference"
    exported = subprocess.run(["nm", "-D", "--defined-only", str(pathlib.Path(bin_dir) / "libtfq_delegate.so")],
                              capture_output=True, text=True, check=True).stdout
    assert "tflite_plugin_create_delegate" in exported and "tfq_testing" not in exported
