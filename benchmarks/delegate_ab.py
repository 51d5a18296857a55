"""Two builds of the tfq delegate on the same models, invokes alternating in one process.

For kernel work on a shared machine: the load of the other jobs changes from one
minute to the next by more than most kernel changes, so timing build A in one
run and build B in the next compares the load, not the builds. Here both
builds run the same .tflite in one process, one invoke of A, one of B, and so
on: both see the same load. It prints the median, the 10th percentile and the
minimum of each (the low percentiles are the ones the other jobs disturb
least), B / A at the 10th percentile, and whether both gave the same outputs.
Two interpreters share the caches, so absolute times are higher than a model
alone would take; the comparison is the point.

Usage: python benchmarks/delegate_ab.py A.so B.so model.tflite [model.tflite ...]
       [--runs 3000] [--threads 1]
"""

import argparse
import ctypes
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="build A: path of a libtfq_delegate.so")
    ap.add_argument("b", help="build B: path of a libtfq_delegate.so")
    ap.add_argument("models", nargs="+", help=".tflite files with tfq ops")
    ap.add_argument("--runs", type=int, default=3000, help="invokes of each build per model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    from tfq.report import machine_summary

    libs = (args.a, args.b)
    for lib in libs:
        if not os.path.isfile(lib):
            ap.error(f"no delegate library at {lib}")
    isa = [ctypes.CDLL(os.path.abspath(lib)) for lib in libs]
    for lib in isa:
        lib.tfq_delegate_isa.restype = ctypes.c_char_p
        lib.tfq_delegate_sparse_path.restype = ctypes.c_char_p
    print(f"CPU: {machine_summary()}")
    print("tfq kernels: " + "; ".join(
        f"{name} {lib.tfq_delegate_isa(0).decode()} (block-sparse {lib.tfq_delegate_sparse_path(0).decode()})"
        for name, lib in zip("AB", isa)) + f"; {args.threads} thread(s); {args.runs} invokes each, "
        "alternating; shared machine (other jobs running: expect noise)")
    print(f"A = {args.a}\nB = {args.b}")
    print("| model | A median us | A p10 | A min | B median us | B p10 | B min | B / A (p10) | same outputs |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model in args.models:
        its = []
        for lib in libs:
            it = Interpreter(model_path=model, num_threads=args.threads,
                             experimental_delegates=[load_delegate(lib)])
            it.allocate_tensors()
            d = it.get_input_details()[0]
            x = np.random.default_rng(1).standard_normal(d["shape"]).astype(np.float32)
            it.set_tensor(d["index"], x)
            for _ in range(5):
                it.invoke()
            its.append(it)
        times = [[], []]
        for _ in range(args.runs):
            for i, it in enumerate(its):
                t = time.perf_counter()
                it.invoke()
                times[i].append(time.perf_counter() - t)
        outs = [it.get_tensor(it.get_output_details()[0]["index"]) for it in its]
        same = np.array_equal(outs[0], outs[1])
        stats = []
        for ts in times:
            ts = np.sort(np.asarray(ts)) * 1e6
            stats.append((ts[len(ts) // 2], ts[len(ts) // 10], ts[0]))
        name = os.path.join(os.path.basename(os.path.dirname(model)), os.path.basename(model))
        (am, ap10, amin), (bm, bp10, bmin) = stats
        print(f"| {name} | {am:.0f} | {ap10:.0f} | {amin:.0f} | {bm:.0f} | {bp10:.0f} | {bmin:.0f} | "
              f"{bp10 / ap10:.2f} | {'yes' if same else 'NO'} |", flush=True)
        del its


if __name__ == "__main__":
    sys.exit(main())
