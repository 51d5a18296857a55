"""Chooses the block shape of block-structured pruning from kernel measurements.

Compiles the block-sparse prototype in this folder (bs_*.cc: int8 activations
x int8 weight levels of a block-sparse matrix; AVX-512 VNNI in 512-bit and
256/128-bit vectors, AVX2 with vpmaddubsw + vpmaddwd), checks every variant
against a scalar reference (exact int32 equality, at every sparsity) and
times them interleaved in one process, medians of ROUNDS rounds; the whole
run is repeated in RUNS processes and the median of the medians printed.

Cases: the convolutions of issue 13 as GEMM over pixels (conv3x3: 3x3 64->64
at 56x56, im2col K = 576; conv1x1: 1x1 256->256 at 28x28) and GEMV batch 1
(gemv4096: 4096x4096; gemv1024: 1024x1024). Times are the inner loop only
(activations already quantized and laid out; int32 outputs); the layout
costs are printed separately. "vs LiteRT int8" divides LiteRT's full-int8
whole-op time (benchmarks/speed.py --json, 1 thread; dense1024x3 / 3 for
gemv1024) by the loop time, so it is an upper bound of the op's speed-up.

Usage: python benchmarks/block_sparse/choose_block.py [--runs 3] [--rounds 21]
       [--cases conv3x3,conv1x1,gemv4096,gemv1024] [--sparsities 0,0.75,0.9,0.95]
       [--speed-json out/speed.json] [--full out/block_full.md]
"""

import argparse
import json
import math
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
FLAGS = {
    "bs_main.cc": [],
    "bs_avx2.cc": ["-mavx2", "-mfma"],
    "bs_avx512.cc": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx512vbmi"],
}
LITERT_CASE = {"conv3x3": ("conv3x3", 1), "conv1x1": ("conv1x1", 1),
               "gemv4096": ("dense4096", 1), "gemv1024": ("dense1024x3", 3)}


def compiler():
    for cxx in (os.environ.get("CXX"), "clang++", "g++"):
        if cxx and shutil.which(cxx):
            return cxx
    sys.exit("no C++ compiler (clang++ or g++) found")


def build(out_dir):
    cxx = compiler()
    out_dir.mkdir(parents=True, exist_ok=True)
    objs = []
    for src, flags in FLAGS.items():
        obj = out_dir / (src + ".o")
        cmd = [cxx, "-O3", "-std=c++17", "-Wall", *flags, "-c", str(HERE / src), "-o", str(obj)]
        subprocess.run(cmd, check=True)
        objs.append(str(obj))
    exe = out_dir / "bs_bench"
    subprocess.run([cxx, *objs, "-o", str(exe)], check=True)
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return exe, version


def run_once(exe, cases, sparsities, rounds):
    out = subprocess.run([str(exe), cases, sparsities, str(rounds)], capture_output=True, text=True)
    results, layouts, fails = {}, {}, []
    for line in out.stdout.splitlines():
        f = line.split("\t")
        if f[0] == "RESULT":
            key = (f[1], float(f[2]), f[3], f[4], f[5])  # case, sparsity, isa, family, shape
            results[key] = {"us": float(f[6]), "skipped": float(f[7]), "bytes": int(f[10])}
        elif f[0] == "LAYOUT":
            layouts[f[1]] = [float(x) for x in f[2:]]
        elif f[0] == "FAIL":
            fails.append(line)
    if out.returncode != 0 or fails:
        sys.exit("self-check FAILED:\n" + "\n".join(fails) + out.stderr[-2000:])
    return results, layouts


def cpu_name():
    try:
        info = open("/proc/cpuinfo").read()
        name = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        fam = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("cpu family"))
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model\t"))
        return f"{name} (family {fam}, model {model})"
    except (OSError, StopIteration):
        return platform.processor()


def litert_times(path):
    """{case: (full-int8 us, tfq-t2 us)} from a speed.py --json file (1 thread)."""
    if not path or not pathlib.Path(path).exists():
        return {}
    data = json.loads(pathlib.Path(path).read_text())
    out = {}
    for case, (name, div) in LITERT_CASE.items():
        r = data.get(f"{name}/1")
        if r:
            t = r["times_us"]
            out[case] = (t.get("full-int8", math.nan) / div, t.get("tfq-t2", math.nan) / div)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="conv3x3,conv1x1,gemv4096,gemv1024")
    ap.add_argument("--sparsities", default="0,0.75,0.9,0.95")
    ap.add_argument("--runs", type=int, default=3, help="processes (median of their medians)")
    ap.add_argument("--rounds", type=int, default=21, help="interleaved rounds per process")
    ap.add_argument("--speed-json", default=str(ROOT / "out" / "speed.json"))
    ap.add_argument("--full", default=str(ROOT / "out" / "block_full.md"), help="full table (every variant)")
    ap.add_argument("--build-dir", default=str(ROOT / "build" / "block_sparse"))
    args = ap.parse_args(argv)

    if 0.0 not in [float(x) for x in args.sparsities.split(",")]:
        args.sparsities = "0," + args.sparsities  # the dense loop every ratio refers to
    exe, cxx_version = build(pathlib.Path(args.build_dir))
    runs, layouts = [], {}
    for i in range(args.runs):
        r, layouts = run_once(exe, args.cases, args.sparsities, args.rounds)
        runs.append(r)
        print(f"# run {i + 1}/{args.runs}: {len(r)} variant x sparsity results, all exact", file=sys.stderr)
    res = {}
    for key in runs[0]:
        us = [r[key]["us"] for r in runs if key in r]
        res[key] = dict(runs[0][key], us=statistics.median(us), spread=(max(us) - min(us)) / statistics.median(us))
    lit = litert_times(args.speed_json)
    cases = [c for c in args.cases.split(",") if c]
    sps = sorted({k[1] for k in res})
    isas = list(dict.fromkeys(k[2] for k in res))

    print(f"# block-sparse prototype, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU: {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs (shared with other work: medians of {args.runs} processes x "
          f"{args.rounds} interleaved rounds), {cxx_version}")
    print("# int8 activations x int8 ternary levels, 1 thread, inner loop only (no quantization, epilogue);"
          " dense loop = the fastest 0% variant of the same ISA; x = its time / this time")
    # Dense loop per case and ISA.
    dense = {}
    for c in cases:
        for isa in isas:
            t = [(v["us"], k) for k, v in res.items() if k[0] == c and k[2] == isa and k[1] == 0]
            if t:
                dense[c, isa] = min(t)
    full = ["| case | ISA | family | block | sparsity | us | x dense loop | MACs skipped | time saved |"
            " vs LiteRT int8 | run spread | bytes (values+index) |", "|" + "---|" * 12]
    for key in sorted(res, key=lambda k: (cases.index(k[0]), isas.index(k[2]), k[4], k[3], k[1])):
        c, sp, isa, fam, shape = key
        v = res[key]
        d = dense[c, isa][0]
        li = lit.get(c, (math.nan,))[0]
        full.append(f"| {c} | {isa} | {fam} | {shape} | {sp:.0%} | {v['us']:.1f} | {d / v['us']:.2f}x | "
                    f"{v['skipped']:.1%} | {1 - v['us'] / d:.1%} | {li / v['us']:.2f}x | {v['spread']:.0%} | {v['bytes']} |")
    pathlib.Path(args.full).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(args.full).write_text("\n".join(full) + "\n")

    # Summary: per case, ISA and block shape, the faster family at 90%.
    for c in cases:
        li, tfq_dense = lit.get(c, (math.nan, math.nan))
        print()
        lay = layouts.get(c)
        extra = (f"; layout costs (scalar, us): im2col {lay[0]:.0f}, + quads layout from its rows (P) {lay[1]:.0f},"
                 f" or k-rows layout (P, Cx1) {lay[2]:.0f}, int32 output transpose (P) {lay[3]:.0f}") if lay else ""
        print(f"## {c}: LiteRT full-int8 {li:.0f} us, tfq dense ternary {tfq_dense:.0f} us (whole op, speed.py)"
              + extra)
        hdr = ["ISA", "block", "fam", "0% us"] + [f"{s:.0%} us (x)" for s in sps if s > 0] + [
            "90%: MACs skipped / time saved", "90% vs LiteRT int8"]
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for isa in isas:
            d = dense[c, isa][0]
            shapes = sorted({k[4] for k in res if k[0] == c and k[2] == isa},
                            key=lambda s: tuple(int(x) for x in s.split("x")))
            for shape in shapes:
                fams = {k[3] for k in res if k[0] == c and k[2] == isa and k[4] == shape}
                ref_sp = 0.9 if 0.9 in sps else sps[-1]
                fam = min(fams, key=lambda f: res.get((c, ref_sp, isa, f, shape), {"us": 1e99})["us"])
                get = lambda s: res.get((c, s, isa, fam, shape))
                cells = [isa, shape, fam, f"{get(0)['us']:.1f}" if get(0) else "-"]
                for s in sps:
                    if s > 0:
                        v = get(s)
                        cells.append(f"{v['us']:.1f} ({d / v['us']:.1f}x)" if v else "-")
                v = get(ref_sp)
                cells.append(f"{v['skipped']:.1%} / {1 - v['us'] / d:.1%}" if v else "-")
                cells.append(f"{li / v['us']:.2f}x" if v else "-")
                print("| " + " | ".join(cells) + " |")

    # Ranking per ISA and layer kind: mean over cases and sparsities > 0 of
    # time / best time among shapes (1.00 = fastest everywhere).
    print()
    print("## ranking: mean of time / fastest shape over the kind's cases at sparsities > 0 (best family per"
          " shape; int8-level variants only, C2 = 2-bit codes left out so that every shape reads the same bytes)")
    print("| ISA | kind | 1st | 2nd | 3rd | 4th |")
    print("|---|---|---|---|---|---|")
    for isa in isas:
        for kind, kcases in (("conv", [c for c in cases if c.startswith("conv")]),
                             ("dense", [c for c in cases if c.startswith("gemv")])):
            if not kcases:
                continue
            ratios = {}
            for c in kcases:
                for s in sps:
                    if s == 0:
                        continue
                    best = {}
                    for k, v in res.items():
                        if k[0] == c and k[1] == s and k[2] == isa and k[3] != "C2":
                            best[k[4]] = min(best.get(k[4], 1e99), v["us"])
                    if not best:
                        continue
                    m = min(best.values())
                    for shape, t in best.items():
                        ratios.setdefault(shape, []).append(t / m)
            rank = sorted((statistics.mean(r), s) for s, r in ratios.items())
            print(f"| {isa} | {kind} | " + " | ".join(f"{s} ({r:.2f})" for r, s in rank[:4]) + " |")
    print(f"\n(full table of every variant: {os.path.relpath(args.full, ROOT)})")


if __name__ == "__main__":
    main()
