"""Checks that Bazel (BUILD) and CMake declare the same native sources.

CMake's side comes from CMake itself, through its file API (codemodel-v2),
for two configurations: the host (x86-64: AVX2 and AVX-512 VNNI files) and
aarch64 (cmake/aarch64-linux-gnu.toolchain.cmake: NEON files), native tests
on. Bazel's side comes from `bazel query //... --output=xml`, which also
proves that every package loads. Compared:

1. the .cc files of the delegate library (CMake targets tfq_delegate and
   tfq_kernels, union over configurations) with the .cc files of every rule
   //:libtfq_delegate.so depends on, and likewise for the test library
   (tfq_testing and tfq_kernels against //:libtfq_testing.so);
2. every .cc file under tfq/delegates is built by CMake (none forgotten), and
   every .h file there is declared in Bazel;
3. the native test programs' own sources;
4. the ISA flags of each source file (-mavx2, -march=armv8.2-a+dotprod...):
   CMake's per-file compile flags against the copts of the Bazel rule that
   holds the file;
5. the TFQ_HAVE_* definitions (union over configurations).

Exit status 0 when everything agrees; otherwise each difference is printed
and the status is 1.

Usage: python scripts/check_build_files.py [--bazel bazel] [--keep DIR]
"""

import argparse
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

ROOT = pathlib.Path(__file__).resolve().parents[1]
DELEGATES = ROOT / "tfq" / "delegates"
ISA_FLAG = re.compile(r"^-m(avx\S*|fma|sse\S*|arch=\S+|cpu=\S+|fpu=\S+)$")
TEST_TARGETS = {"tfq_kernels_test": "//:tfq_kernels_test", "tfq_node_runner": "//:tfq_node_runner"}
# CMake targets whose sources make up each shared library, and its Bazel rule.
LIBRARIES = {
    "delegate": (("tfq_delegate", "tfq_kernels"), "//:libtfq_delegate.so"),
    "test library": (("tfq_testing", "tfq_kernels"), "//:libtfq_testing.so"),
}


def _rel(path, base):
    p = pathlib.Path(path)
    if not p.is_absolute():
        p = base / p
    return p.resolve().relative_to(ROOT).as_posix()


def cmake_targets(build_dir, extra_args):
    """Configures tfq/delegates; returns {target: {"sources": {file: flags}, "defines": set}}."""
    query = build_dir / ".cmake" / "api" / "v1" / "query"
    query.mkdir(parents=True, exist_ok=True)
    (query / "codemodel-v2").write_text("")
    r = subprocess.run(["cmake", "-S", str(DELEGATES), "-B", str(build_dir),
                        "-DTFQ_BUILD_NATIVE_TESTS=ON", "-DTFQ_COPY_TO_SOURCE=OFF", *extra_args],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"cmake configure failed ({' '.join(extra_args) or 'host'}):\n{r.stderr}")
    reply = build_dir / ".cmake" / "api" / "v1" / "reply"
    index = json.loads(max(reply.glob("index-*.json")).read_text())
    cm_file = next(o["jsonFile"] for o in index["objects"] if o["kind"] == "codemodel")
    codemodel = json.loads((reply / cm_file).read_text())
    source_dir = pathlib.Path(codemodel["paths"]["source"])
    out = {}
    for t in codemodel["configurations"][0]["targets"]:
        tj = json.loads((reply / t["jsonFile"]).read_text())
        groups = tj.get("compileGroups", [])
        sources = {}
        for s in tj.get("sources", []):
            rel = _rel(s["path"], source_dir)
            if not rel.endswith(".cc"):
                continue
            flags = set()
            if "compileGroupIndex" in s:
                for frag in groups[s["compileGroupIndex"]].get("compileCommandFragments", []):
                    flags |= {f for f in frag["fragment"].split() if ISA_FLAG.match(f)}
            sources[rel] = flags
        defines = set()
        for g in groups:
            for d in g.get("defines", []):
                name = d["define"].split("=")[0]
                if name.startswith("TFQ_HAVE_"):
                    defines.add(name)
        out[tj["name"]] = {"sources": sources, "defines": defines}
    return out


def bazel_rules(bazel):
    """`bazel query //... --output=xml` parsed into {label: attrs}."""
    r = subprocess.run([bazel, "--batch", "query", "//...", "--output=xml"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"bazel query //... failed:\n{r.stderr[-3000:]}")
    rules = {}
    for rule in ET.fromstring(r.stdout).iter("rule"):
        attrs = {"class": rule.get("class")}
        for lst in rule.findall("list"):
            attrs[lst.get("name")] = [e.get("value") for e in lst]
        rules[rule.get("name")] = attrs
    return rules


def _file(label):
    return label.split(":", 1)[1] if label.startswith("//:") else None


def bazel_closure(rules, top):
    seen, stack = set(), [top]
    while stack:
        label = stack.pop()
        if label in seen or label not in rules:
            continue
        seen.add(label)
        stack.extend(rules[label].get("deps", []))
    return seen


def compare(cm_configs, rules):
    """Returns a list of human-readable differences (empty when consistent)."""
    problems = []
    cm_all, bz_all_files, cm_defines, bz_defines, cm_flags, bz_flags = set(), set(), set(), set(), {}, {}
    for lib, (cm_targets, bz_top) in LIBRARIES.items():
        cm_cc = set()
        for cfg in cm_configs.values():
            for name in cm_targets:
                t = cfg.get(name)
                if t is None:
                    problems.append(f"CMake target {name} missing")
                    continue
                cm_cc |= set(t["sources"])
                cm_defines |= t["defines"]
                for f, flags in t["sources"].items():
                    cm_flags.setdefault(f, set()).update(flags)
        cm_all |= cm_cc
        if bz_top not in rules:
            problems.append(f"Bazel target {bz_top} missing")
            continue
        bz_files = set()
        for label in bazel_closure(rules, bz_top):
            a = rules[label]
            isa = {c for c in a.get("copts", []) if ISA_FLAG.match(c)}
            for src in a.get("srcs", []) + a.get("hdrs", []):
                f = _file(src)
                if f:
                    bz_files.add(f)
                    if f.endswith(".cc"):
                        bz_flags[f] = isa
            bz_defines |= {d.split("=")[0] for d in a.get("local_defines", []) + a.get("defines", [])
                           if d.startswith("TFQ_HAVE_")}
        bz_all_files |= bz_files
        bz_cc = {f for f in bz_files if f.endswith(".cc")}
        cm_names = ", ".join(cm_targets)
        for f in sorted(cm_cc - bz_cc):
            problems.append(f"{f}: built by CMake ({cm_names}) but not by Bazel ({bz_top})")
        for f in sorted(bz_cc - cm_cc):
            problems.append(f"{f}: built by Bazel ({bz_top}) but not by CMake ({cm_names})")
    on_disk_cc = {p.relative_to(ROOT).as_posix() for p in DELEGATES.rglob("*.cc")}
    on_disk_h = {p.relative_to(ROOT).as_posix() for p in DELEGATES.rglob("*.h")}
    for f in sorted(on_disk_cc - cm_all):
        problems.append(f"{f}: on disk but in no CMake source list")
    for f in sorted(on_disk_h - bz_all_files):
        problems.append(f"{f}: header not declared in Bazel (srcs/hdrs of the libraries' deps)")
    for f in sorted(cm_all & set(bz_flags)):
        if cm_flags.get(f, set()) != bz_flags.get(f, set()):
            problems.append(f"{f}: ISA flags differ: CMake {sorted(cm_flags.get(f, set()))}, "
                            f"Bazel {sorted(bz_flags.get(f, set()))}")
    if cm_defines != bz_defines:
        problems.append(f"TFQ_HAVE_* definitions differ: CMake {sorted(cm_defines)}, "
                        f"Bazel {sorted(bz_defines)}")
    for cm_name, bz_label in TEST_TARGETS.items():
        cm_own = set()
        for cfg in cm_configs.values():
            if cm_name not in cfg:
                problems.append(f"CMake target {cm_name} missing (TFQ_BUILD_NATIVE_TESTS)")
                continue
            cm_own |= set(cfg[cm_name]["sources"]) - set(cfg["tfq_delegate_static"]["sources"])
        if bz_label not in rules:
            problems.append(f"Bazel target {bz_label} missing")
            continue
        bz_own = {_file(s) for s in rules[bz_label].get("srcs", []) if s.endswith(".cc")}
        if cm_own != bz_own:
            problems.append(f"{cm_name}: CMake sources {sorted(cm_own)} vs Bazel {bz_label} "
                            f"{sorted(bz_own)}")
    return problems


def cmake_configs(tmp):
    """The CMake side for the host and aarch64 configurations, configured under tmp."""
    return {
        # TFQ_AVX512_WITH_CLANG=OFF: with it, the AVX-512 files reach the
        # library as clang-built objects, which the code model lists as an
        # object, not as a source with flags; files and flags are the same.
        "host": cmake_targets(tmp / "host", ["-DTFQ_AVX512_WITH_CLANG=OFF"]),
        "aarch64": cmake_targets(tmp / "aarch64", [
            f"-DCMAKE_TOOLCHAIN_FILE={ROOT / 'cmake' / 'aarch64-linux-gnu.toolchain.cmake'}"]),
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bazel", default=shutil.which("bazel") or "bazel")
    ap.add_argument("--keep", type=pathlib.Path, help="configure into this folder (kept)")
    args = ap.parse_args(argv)
    tmp = args.keep or pathlib.Path(tempfile.mkdtemp(prefix="tfq-buildcheck-"))
    try:
        configs = cmake_configs(tmp)
        rules = bazel_rules(args.bazel)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    problems = compare(configs, rules)
    n_cc = len({f for c in configs.values() for t in ("tfq_delegate", "tfq_kernels", "tfq_testing")
                for f in c.get(t, {"sources": {}})["sources"]})
    print(f"bazel query //...: {len(rules)} rules loaded; CMake configurations: {', '.join(configs)}; "
          f"{n_cc} library sources compared")
    for p in problems:
        print(f"MISMATCH: {p}")
    if not problems:
        print("Bazel and CMake source lists agree (files, ISA flags, TFQ_HAVE_* definitions, tests)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
