"""libFuzzer over the delegate's node path, under AddressSanitizer + UBSan.

tests/native/fuzz_node.cc drives ParseNode, the delegate's graph checks,
KernelInit / KernelPrepare / KernelInvoke through a stand-in interpreter
(tests/native/fake_graph.h) on one node record plus a trailer of structure
choices (kernels and ISA cap, threads, output aliasing an input, constant
output, a second writer of the output, the output shrunk after prepare),
with every tensor in a heap buffer of exactly its bytes. This test builds it
with clang++ into build-fuzz/ (only the sources it needs), checks the seed
corpus (tests/native/fuzz_corpus/, written by tests/native/make_fuzz_corpus.py)
and the known shapes of the two-writers overflow, then fuzzes for
FUZZ_SECONDS. Any sanitizer report, trap or libFuzzer error fails it and
names the reproducer: `build-fuzz/tfq_fuzz_node FILE` replays it, with
TFQ_FUZZ_VERBOSE=1 printing the choices and what the delegate did.
"""

import os
import pathlib
import re
import shutil
import struct
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = ROOT / "build-fuzz"
CORPUS = ROOT / "tests" / "native" / "fuzz_corpus"
ARTIFACTS = BUILD / "artifacts"
FUZZ_SECONDS = 20
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "ERROR: libFuzzer", "was modified", "SUMMARY:")


def _env(verbose=False):
    env = dict(os.environ)
    env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    # A small quarantine keeps ASan's freed memory from counting against the RSS limit.
    env["ASAN_OPTIONS"] = "quarantine_size_mb=64:allocator_may_return_null=1"
    env.pop("LD_PRELOAD", None)
    if verbose:
        env["TFQ_FUZZ_VERBOSE"] = "1"
    else:
        env.pop("TFQ_FUZZ_VERBOSE", None)
    return env


@pytest.fixture(scope="module")
def fuzzer():
    clang = shutil.which("clang++")
    if clang is None:
        pytest.fail("clang++ not found: scripts/setup_env.sh installs clang (libFuzzer ships with it)")
    if not (BUILD / "CMakeCache.txt").exists():
        r = subprocess.run(["cmake", "-S", str(ROOT / "tfq" / "delegates"), "-B", str(BUILD),
                            f"-DCMAKE_CXX_COMPILER={clang}", "-DCMAKE_BUILD_TYPE=Debug",
                            "-DTFQ_BUILD_FUZZER=ON", "-DTFQ_COPY_TO_SOURCE=OFF"],
                           capture_output=True, text=True)
        assert r.returncode == 0, f"configure failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    r = subprocess.run(["cmake", "--build", str(BUILD), "-j2", "--target", "tfq_fuzz_node"],
                       capture_output=True, text=True)
    assert r.returncode == 0, f"build failed:\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return BUILD / "tfq_fuzz_node"


# Files per process: ASan's quarantine and allocator caches grow over a long
# replay (1,560 runs of 15 seeds passed libFuzzer's 2 GB RSS limit in one process).
RUN_CHUNK = 200


def _run_each(fuzzer, files):
    """Runs the target once on each file; returns {file name: its verbose report}."""
    reports = {}
    for i in range(0, len(files), RUN_CHUNK):
        chunk_files = files[i:i + RUN_CHUNK]
        r = subprocess.run([str(fuzzer), "-rss_limit_mb=3072", *map(str, chunk_files)], capture_output=True,
                           text=True, env=_env(verbose=True), timeout=300)
        for marker in SANITIZER_MARKERS:
            assert marker not in r.stderr, r.stderr[-6000:]
        assert r.returncode == 0, r.stderr[-6000:]
        for chunk in r.stderr.split("Running: ")[1:]:
            name, _, body = chunk.partition("\n")
            reports[pathlib.Path(name).name] = body
    assert len(reports) == len(files), f"{len(reports)} reports for {len(files)} files"
    return reports


TRAILER_BYTES = 5  # fuzz_node.cc


def _record_end(data, p=0):
    """Offset where the node record starting at p ends; export_nodes.py's layout."""
    for _ in range(2):
        (n,) = struct.unpack_from("<I", data, p)
        p += 4 + n
    for _ in range(5):
        (ndims,) = struct.unpack_from("<I", data, p + 2)
        p += 6 + 4 * ndims
        (nbytes,) = struct.unpack_from("<Q", data, p)
        p += 8 + nbytes
    return p


def _split(seed):
    """(first record, trailer, second record or b"") of a seed file."""
    data = seed.read_bytes()
    end = _record_end(data)
    trailer = data[end:end + TRAILER_BYTES]
    rest = data[end + TRAILER_BYTES:]
    assert len(trailer) == TRAILER_BYTES, f"{seed.name}: no {TRAILER_BYTES}-byte trailer"
    assert not rest or _record_end(rest) == len(rest), f"{seed.name}: bad second record"
    assert bool(rest) == bool(trailer[4] & 1), f"{seed.name}: chain bit without a second record"
    return data[:end], trailer, rest


def test_seed_corpus_is_claimed_and_exact(fuzzer, tmp_path):
    seeds = sorted(CORPUS.iterdir())
    assert sum(p.stat().st_size for p in seeds) < 24 * 1024
    # Chains run with the int8 hand-over (other numbers than the exported
    # float path); the same records without it must reproduce the export.
    no_handover = []
    for p in seeds:
        first, trailer, second = _split(p)
        if second:
            no_handover.append(tmp_path / f"{p.name}-float")
            no_handover[-1].write_bytes(first + trailer[:4] + bytes([trailer[4] | 4]) + second)
    reports = _run_each(fuzzer, seeds + no_handover)
    ops, schemes = set(), set()
    for p in seeds + no_handover:
        report = reports[p.name]
        chain = p.name.startswith("chain")
        # A seed the delegate refused would only teach the fuzzer its refusals.
        claimed = "2 partition(s) claimed" if p in no_handover else "1 partition(s) claimed"
        assert claimed in report and "invoke ok" in report, f"{p.name}:\n{report}"
        assert "refus" not in report, f"{p.name}:\n{report}"
        if not chain or p in no_handover:
            assert "output equals the expected output" in report, f"{p.name}:\n{report}"
        ops.add(re.search(r"node (TFQ_\w+)", report).group(1))
        schemes.add(p.name.split("_")[0])
    assert ops == {"TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D", "TFQ_FULLY_CONNECTED"}
    assert {"ternary", "pow2", "chain"} <= schemes


# Trailers of the known shapes of the overflow (fuzz_node.cc): (bits of byte
# 0 besides kernels and threads, byte 1, byte 2, byte 3), what the delegate
# must do with them and the message naming the reason; last, the legitimate
# resize of the input between invokes, which must keep working.
REFUSED = ("refusing node 0 (",)
KNOWN_SHAPES = {
    "second tfq writer, smaller input": ((0, 0x14, 0x04, 0), REFUSED),
    "second builtin writer": ((0, 0x84, 0, 0), REFUSED),
    "second writer runs first": ((0, 0x1C, 0x04, 0), REFUSED),
    "input has two writers": ((0, 0x40, 0, 0), REFUSED),
    "output is the input": ((0, 0x01, 0, 0), REFUSED),
    "output is the weights": ((0, 0x01, 1, 0), REFUSED),
    "output is the scales": ((0, 0x01, 2, 0), REFUSED),
    "output is the bias": ((0, 0x01, 3, 0), REFUSED),
    "output is a constant": ((0, 0x02, 0, 0), REFUSED),
    "output shrunk after prepare": ((0, 0x20, 0, 0x80), ("invoke refused", "output has")),
    "output emptied after prepare": ((0, 0x20, 0, 0), ("invoke refused", "output has")),
    "input shrunk after prepare": ((0x20, 0x20, 0, 0xF0), ("invoke refused", "input has")),
    "input resized, prepared again": ((0x40, 0, 0x04, 0), ("invoke ok",)),
}


def test_known_overflow_shapes_are_refused_cleanly(fuzzer, tmp_path):
    cases = {}
    for seed in sorted(CORPUS.iterdir()):
        first, trailer, second = _split(seed)
        for i, (what, (bits, _)) in enumerate(KNOWN_SHAPES.items()):
            for kernels in range(4):  # reference, avx2 cap, avx512vnni cap, auto
                for threads in (1, 4):
                    byte0 = kernels | (threads - 1) << 2 | 0x10 | bits[0]  # 0x10: invoke twice
                    name = f"{seed.name}-{i}-{kernels}-{threads}"
                    (tmp_path / name).write_bytes(first + bytes([byte0, *bits[1:], trailer[4]]) +
                                                  second)
                    cases[name] = (what, bool(second))
    reports = _run_each(fuzzer, [tmp_path / n for n in cases])
    for name, (what, chain) in cases.items():
        report = reports[name]
        for expected in KNOWN_SHAPES[what][1]:
            assert expected in report, f"{what} ({name}):\n{report}"
        if KNOWN_SHAPES[what][1] == REFUSED and not chain:
            assert "0 partition(s) claimed" in report, f"{what} ({name}):\n{report}"
        if "invoke ok" in KNOWN_SHAPES[what][1]:
            assert "refused" not in report, f"{what} ({name}):\n{report}"


def test_libfuzzer_finds_nothing_in_bounded_time(fuzzer, tmp_path):
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS, corpus)
    ARTIFACTS.mkdir(exist_ok=True)
    before = set(ARTIFACTS.iterdir())
    r = subprocess.run([str(fuzzer), f"-max_total_time={FUZZ_SECONDS}", "-rss_limit_mb=3072", "-seed=1",
                        "-timeout=30", "-print_final_stats=1", f"-artifact_prefix={ARTIFACTS}/",
                        str(corpus)], capture_output=True, text=True, env=_env(),
                       timeout=FUZZ_SECONDS + 120)
    new = sorted(set(ARTIFACTS.iterdir()) - before)
    found = [m for m in SANITIZER_MARKERS if m in r.stderr]
    assert r.returncode == 0 and not found and not new, (
        f"fuzzer failed (exit {r.returncode}, {found}); reproducer(s): "
        f"{', '.join(map(str, new)) or 'none written'}\n"
        f"replay: TFQ_FUZZ_VERBOSE=1 {fuzzer} REPRODUCER\n{r.stderr[-6000:]}")
    execs = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", r.stderr).group(1))
    print(f"libFuzzer: {execs} inputs in {FUZZ_SECONDS} s, corpus grew to "
          f"{len(list(corpus.iterdir()))} files")
    assert execs >= 1000, r.stderr[-2000:]
