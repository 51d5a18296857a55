"""The speed table of benchmarks/speed.py, measured on a real ARM board or phone.

Timings under qemu say nothing about speed, so this script only runs on real
hardware. It reuses speed.py's cases and variants (the same .tflite files,
made once on an x86 host) and prints the same table: median invoke times in
microseconds and the ratios t2/fp32, t2/best, p4/fp32, p4/best.

A case written CASE:SPARSITY (for example conv3x3:0.9, the cases of
benchmarks/sparse_speed.py) adds the block-sparse variant of that script
(tfq-t2 with that fraction of its weight blocks zeroed, in the block="auto"
shape, format version 2) and prints sparse_speed.py's table instead: best
LiteRT, tfq dense ternary, tfq sparse, the ratios, and the fraction of
multiply-adds skipped against the time saved. `prepare` records the file,
block shape and skipped fraction in the case's sparse.json, so that a board
needs neither the converter nor Keras.

  prepare  (x86 host)  make the model variants of speed.py into --cache
  board    (aarch64 Linux with Python, e.g. Raspberry Pi OS 64-bit, Jetson,
           Graviton): times them with ai-edge-litert and the tfq delegate
           (NEON), interleaved in one process, exactly like speed.py
  adb      (host with a phone on adb): pushes the models, the Android build of
           libtfq_delegate.so and TensorFlow's `benchmark_model` tool, runs
           `benchmark_model` once per variant and round, interleaving the
           variants (ABCABC...), and reports the median over rounds of
           benchmark_model's average

Usage:
  python benchmarks/arm/bench_arm.py prepare [--cases ...] [--cache out/bench]
  python benchmarks/arm/bench_arm.py board   [--cases ...] [--cache DIR] [--threads 1,4]
  python benchmarks/arm/bench_arm.py adb --benchmark-model PATH --delegate PATH
         [--cases ...] [--cache DIR] [--threads 1,4] [--rounds 5] [--serial ID]
See docs/arm.md and benchmarks/arm/run_adb.sh, run_board.sh.
"""

import argparse
import json
import os
import pathlib
import platform
import re
import shlex
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(1, str(ROOT / "tests"))  # helpers.native: the test library's bindings

import sparse_speed  # noqa: E402  (benchmarks/sparse_speed.py: sparse cases, block, table)
import speed  # noqa: E402  (benchmarks/speed.py: cases, variants, targets)

VARIANTS = speed.LITERT_VARIANTS + speed.TFQ_VARIANTS
SPARSE = "tfq-sparse"  # the block-sparse variant of a CASE:SPARSITY case
SPARSE_HEADER = ("case", "block", "sparsity", "threads", "best LiteRT (us)", "tfq dense ternary us",
                 "tfq sparse us", "vs best LiteRT", "vs dense ternary", "MACs skipped",
                 "time saved vs dense ternary", "target")
DEVICE_DIR = "/data/local/tmp/tfq_bench"
_AVG = re.compile(r"Inference \(avg\):\s*([0-9.eE+]+)")


def table_header():
    return ("case", "thr") + VARIANTS + ("t2/fp32", "t2/best", "p4/fp32", "p4/best", "target")


def table_row(case, threads, med_us):
    """One row of speed.py's table from {variant: median microseconds}."""
    cells = [case, str(threads)]
    for v in VARIANTS:
        cells.append(f"{med_us[v]:.0f}" if v in med_us else "-")
    lit = {v: med_us[v] for v in speed.LITERT_VARIANTS if v in med_us}
    best_v = min(lit, key=lit.get) if lit else None
    for v in speed.TFQ_VARIANTS:
        if v in med_us and best_v is not None and "fp32" in med_us:
            cells += [f"{med_us['fp32'] / med_us[v]:.2f}x",
                      f"{lit[best_v] / med_us[v]:.2f}x ({best_v})"]
        else:
            cells += ["-", "-"]
    tg = speed.TARGETS.get(case)
    cells.append(f">={tg[0]}x / >={tg[1]}x" if tg else "")
    return cells


def print_table(title, rows):
    print(title)
    print("# batch 1, median invoke time in microseconds")
    header = table_header()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")


def split_case(spec):
    """'conv3x3' -> ('conv3x3', None); 'conv3x3:0.9' -> ('conv3x3', 0.9)."""
    case, _, sparsity = spec.partition(":")
    return case, (float(sparsity) if sparsity else None)


def is_tfq(variant):
    """Variants that run with the tfq delegate."""
    return variant in speed.TFQ_VARIANTS or variant == SPARSE


def cached_models(spec, cache):
    """{variant: path} of a prepared case; a sparse case also gets SPARSE (and no tfq-p4)."""
    case, sparsity = split_case(spec)
    folder = pathlib.Path(cache) / case
    paths = {v: folder / f"{v}.tflite" for v in VARIANTS if (folder / f"{v}.tflite").exists()}
    missing = "fp32" not in paths or not any(v in paths for v in speed.TFQ_VARIANTS)
    if sparsity is not None:
        paths.pop("tfq-p4", None)
        record = sparse_record(folder, sparsity)
        missing = (missing or "tfq-t2" not in paths or record is None
                   or not (folder / record["file"]).exists())
        if not missing:
            paths[SPARSE] = folder / record["file"]
    if missing:
        raise FileNotFoundError(
            f"{folder}: no prepared models (run `bench_arm.py prepare --cases {spec}` on an x86 "
            "host and copy the cache folder here)")
    return paths


def sparse_record(folder, sparsity):
    """{file, block, skipped} of a case's sparse variant, recorded at prepare (None: not there)."""
    path = pathlib.Path(folder) / "sparse.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get(f"{sparsity:g}")


def prepare_sparse(case, sparsity, paths):
    """Makes the block-sparse variant next to `paths` (speed.make_models' files) as
    sparse_speed.py does, and records its skipped multiply-adds in sparse.json (a board
    need not have the converter to count them)."""
    # The dense ternary model with float first/last layers (`tfq-t2`, which
    # the board runs as the dense column), as sparse_speed.py --float-layers float.
    path, skipped = sparse_speed.sparse_model(case, sparsity, paths["tfq-t2"])
    record = path.parent / "sparse.json"
    known = json.loads(record.read_text()) if record.exists() else {}
    known[f"{sparsity:g}"] = {"file": path.name, "block": list(sparse_speed.block_of(case)),
                              "skipped": skipped}
    record.write_text(json.dumps(known, indent=1))
    return path, skipped


def sparse_row(spec, threads, med_us, record):
    """One row of sparse_speed.py's table from {variant: median microseconds}."""
    case, sparsity = split_case(spec)
    lit = {v: med_us[v] for v in speed.LITERT_VARIANTS if v in med_us}
    title = sparse_speed.TITLES.get(case, case)
    block = "x".join(map(str, record["block"]))
    if not lit or SPARSE not in med_us or "tfq-t2" not in med_us:
        return [title, block, f"{sparsity:.0%}", str(threads), "timing failed"] + [""] * 7
    best = min(lit, key=lit.get)
    sp, dn = med_us[SPARSE], med_us["tfq-t2"]
    tgt = sparse_speed.TARGETS.get(f"{case}:{sparsity:g}")
    target = "" if tgt is None else " / ".join("-" if x is None else f">= {x}x" for x in tgt)
    return [title, block, f"{sparsity:.0%}", str(threads), f"{best} {lit[best]:.0f}", f"{dn:.0f}",
            f"{sp:.0f}", f"{lit[best] / sp:.2f}x", f"{dn / sp:.2f}x", f"{record['skipped']:.1%}",
            f"{1 - sp / dn:.1%}", target]


def add_row(spec, threads, med_us, paths, rows, sparse_rows):
    """Appends the row of one case and thread count to its table; returns it."""
    sparsity = split_case(spec)[1]
    if sparsity is None:
        rows.append(table_row(spec, threads, med_us))
        return rows[-1]
    record = sparse_record(paths[SPARSE].parent, sparsity)
    sparse_rows.append(sparse_row(spec, threads, med_us, record))
    return sparse_rows[-1]


def print_tables(title, rows, sparse_rows):
    """speed.py's table for the dense cases, sparse_speed.py's for the CASE:SPARSITY ones."""
    if rows:
        print_table(title, rows)
    if sparse_rows:
        if rows:
            print()
        print(title.replace("# tfq speed", "# tfq block-sparse speed"))
        print("# batch 1, median invoke time in microseconds")
        print("| " + " | ".join(SPARSE_HEADER) + " |")
        print("|" + "---|" * len(SPARSE_HEADER))
        for cells in sparse_rows:
            print("| " + " | ".join(cells) + " |")


def delegate_kernels():
    """(ISA, block-sparse path) the tfq delegate selects on this CPU, from the delegate itself."""
    import ctypes

    from tfq.runtime import delegate_path

    lib = ctypes.CDLL(str(delegate_path()))
    lib.tfq_delegate_isa.restype = ctypes.c_char_p
    lib.tfq_delegate_sparse_path.restype = ctypes.c_char_p
    return lib.tfq_delegate_isa(0).decode(), lib.tfq_delegate_sparse_path(0).decode()


# ------------------------------------------------------------------ prepare

def cmd_prepare(args):
    for spec in args.cases:
        case, sparsity = split_case(spec)
        paths = speed.make_models(case, args.cache)
        if sparsity is not None:
            path, skipped = prepare_sparse(case, sparsity, paths)
            paths = dict(paths, **{path.stem: path})
            print(f"{spec}: {path.name} skips {skipped:.1%} of the tfq ops' multiply-adds")
        print(f"{case}: {', '.join(sorted(paths))} in {pathlib.Path(args.cache) / case}")
    return 0


# ------------------------------------------------------------------ board

def cmd_board(args):
    machine = platform.machine()
    if machine not in ("aarch64", "arm64") and not args.allow_non_arm:
        print(f"this is a {machine} machine: run `board` on the ARM board itself "
              "(or pass --allow-non-arm to try the script here)", file=sys.stderr)
        return 2
    isa, sparse_path = delegate_kernels()
    rows, sparse_rows, results = [], [], {}
    for spec in args.cases:
        paths = cached_models(spec, args.cache)
        for t in args.threads:
            med = speed.time_case(paths, t, args.seconds)
            med_us = {v: s * 1e6 for v, s in med.items()}
            results[f"{spec}/{t}"] = med_us
            print("| " + " | ".join(add_row(spec, t, med_us, paths, rows, sparse_rows)) + " |",
                  flush=True)
    print()
    print_tables(f"# tfq speed on {speed.cpu_name() or machine}, {os.cpu_count()} CPUs, "
                 f"tfq kernels: {isa} (block-sparse: {sparse_path}), "
                 f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", rows, sparse_rows)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


# ------------------------------------------------------------------ adb

class Adb:
    def __init__(self, adb, serial=None):
        self.base = [adb] + (["-s", serial] if serial else [])

    def run(self, *args, check=True):
        r = subprocess.run(self.base + list(args), capture_output=True, text=True)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(self.base + list(args))} failed: {r.stderr or r.stdout}")
        return r.stdout

    def shell(self, command):
        return self.run("shell", command)

    def push(self, local, remote):
        self.run("push", str(local), remote)


def parse_avg_us(output):
    """benchmark_model's 'Inference (avg): N' in microseconds (None if absent)."""
    m = _AVG.findall(output)
    return float(m[-1]) if m else None


def cmd_adb(args):
    adb = Adb(args.adb, args.serial)
    DEVICE_DIR = args.device_dir  # noqa: N806
    abi = adb.shell("getprop ro.product.cpu.abi").strip()
    model = adb.shell("getprop ro.product.model").strip()
    features = adb.shell("grep -m1 -i '^Features' /proc/cpuinfo || true").strip()
    has_dot = " asimddp" in f" {features.split(':', 1)[-1]} "
    adb.shell(f"mkdir -p {DEVICE_DIR}")
    adb.push(args.benchmark_model, f"{DEVICE_DIR}/benchmark_model")
    adb.push(args.delegate, f"{DEVICE_DIR}/libtfq_delegate.so")
    adb.shell(f"chmod 755 {DEVICE_DIR}/benchmark_model")
    rows, sparse_rows, results = [], [], {}
    for spec in args.cases:
        paths = cached_models(spec, args.cache)
        case = split_case(spec)[0]
        adb.shell(f"mkdir -p {DEVICE_DIR}/{case}")
        for v, p in paths.items():
            adb.push(p, f"{DEVICE_DIR}/{case}/{v}.tflite")
        for t in args.threads:
            times = {v: [] for v in paths}
            failed = {}
            for _ in range(args.rounds):
                for v in paths:  # interleaved: one run of every variant per round
                    if v in failed:
                        continue
                    cmd = [f"{DEVICE_DIR}/benchmark_model", f"--graph={DEVICE_DIR}/{case}/{v}.tflite",
                           f"--num_threads={t}", f"--num_runs={args.runs}",
                           f"--warmup_runs={args.warmup}", "--use_xnnpack=true"]
                    if is_tfq(v):
                        cmd += [f"--external_delegate_path={DEVICE_DIR}/libtfq_delegate.so",
                                f"--external_delegate_options=num_threads:{t}"]
                    out = subprocess.run(adb.base + ["shell", " ".join(shlex.quote(c) for c in cmd)],
                                         capture_output=True, text=True)
                    avg = parse_avg_us(out.stdout + out.stderr)
                    if avg is None:
                        failed[v] = (out.stdout + out.stderr).strip().splitlines()[-1:] or ["?"]
                        print(f"  {case}/{t} {v}: cannot run ({failed[v][0]})", file=sys.stderr)
                    else:
                        times[v].append(avg)
            med_us = {v: statistics.median(ts) for v, ts in times.items() if ts}
            results[f"{spec}/{t}"] = med_us
            print("| " + " | ".join(add_row(spec, t, med_us, paths, rows, sparse_rows)) + " |",
                  flush=True)
    print()
    print_tables(f"# tfq speed on {model} ({abi}, dot product: {'yes' if has_dot else 'no'}), "
                 f"benchmark_model, median over {args.rounds} interleaved rounds of "
                 f"{args.runs}-run averages, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
                 rows, sparse_rows)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p):
        p.add_argument("--cases", default="dense4096,dense1024x3,conv3x3,conv1x1",
                       type=lambda s: [c for c in s.split(",") if c])
        p.add_argument("--cache", default=str(ROOT / "out" / "bench"))

    p = sub.add_parser("prepare", help="make the model variants (x86 host, needs TensorFlow)")
    common(p)
    # run_adb.sh passes the same arguments to prepare and adb.
    p.add_argument("--threads", help=argparse.SUPPRESS)
    for name in ("board", "adb"):
        p = sub.add_parser(name)
        common(p)
        p.add_argument("--threads", default=[1, 4], type=lambda s: [int(t) for t in s.split(",")])
        p.add_argument("--json", help="also write the medians here")
        if name == "board":
            p.add_argument("--seconds", type=float, default=2.0)
            p.add_argument("--allow-non-arm", action="store_true", help=argparse.SUPPRESS)
        else:
            p.add_argument("--benchmark-model", required=True, type=pathlib.Path,
                           help="TensorFlow's benchmark_model for android_aarch64")
            p.add_argument("--delegate", required=True, type=pathlib.Path,
                           help="libtfq_delegate.so built for arm64-v8a (build_android.sh)")
            p.add_argument("--adb", default="adb")
            p.add_argument("--serial")
            p.add_argument("--rounds", type=int, default=5)
            p.add_argument("--runs", type=int, default=20, help="benchmark_model --num_runs")
            p.add_argument("--warmup", type=int, default=5)
            p.add_argument("--device-dir", default=DEVICE_DIR, help="scratch folder on the device")
    args = ap.parse_args(argv)
    for c in args.cases:
        case, _, sparsity = c.partition(":")
        if case not in speed.CASES:
            ap.error(f"unknown case {case!r}; valid: {', '.join(speed.CASES)} (sparse: "
                     f"CASE:SPARSITY, e.g. {', '.join(sparse_speed.CASES)})")
        try:
            bad = sparsity != "" and not 0.0 <= float(sparsity) <= 1.0
        except ValueError:
            bad = True
        if bad:
            ap.error(f"case {c!r}: the sparsity after ':' must be a number in [0, 1]")
    try:
        return {"prepare": cmd_prepare, "board": cmd_board, "adb": cmd_adb}[args.cmd](args)
    except (FileNotFoundError, RuntimeError) as err:
        print(f"bench_arm.py {args.cmd}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
