"""Rows ending in 32-weight mini-blocks (format version 2 `dense`) against padded rows (version 1).

For each case a Keras model gets random in-set ternary (t2) or pow2_4bit (p4)
weights and is converted once (`tfq.convert`: version 2 `dense` for every op
it makes smaller); `tfq.converter.sparse.as_version_1` writes the same
weights with every row padded to whole 32-byte blocks. Both files run in
the tfq delegate, timed interleaved in one process after a warm-up
(each with its own interpreter and delegate instance), medians per
invoke, batch 1. The
table gives the tensor-1 bytes of both files and time(v1) / time(v2): above
1 the mini-blocks are faster (they skip the padding's multiply-adds).

`--before LIB` also times the version-1 file with another build of the
delegate (e.g. the previous commit's library), interleaved in the same
process: time(before) / time(v1) shows whether the kernels' new tail loop
costs the padded layout anything. The delegate timed as "v1"/"v2" is
`tfq.delegate_path()` (set TFQ_DELEGATE_PATH to pick a build).

Cases: dense1024x3 and conv3x3 / conv1x1 of benchmarks/speed.py (k a
multiple of the block: both files are the same, version 1, except conv3x3
ternary, k = 576), lenet300 (LeNet-300-100: k = 784, 300, 100) and
firstconv (a 3x3 convolution on RGB, k = 27, 112x112x3 -> 32 channels).

Usage: python benchmarks/dense_v2.py [--cases a,b] [--threads 1,2] [--seconds 2]
       [--before path/to/libtfq_delegate.so]
"""

import argparse
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

CASES = ("dense1024x3", "conv3x3", "conv1x1", "lenet300", "firstconv")
SCHEMES = {"t2": "ternary", "p4": "pow2_4bit"}


def build_keras(case):
    import keras

    import speed

    if case in speed.CASES:
        return speed.build_keras(case)[0]
    if case == "lenet300":
        inp = keras.Input((784,))
        x = keras.layers.Dense(300, activation="relu", name="fc1")(inp)
        x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
        return keras.Model(inp, keras.layers.Dense(10, name="fc3")(x), name=case)
    if case == "firstconv":
        inp = keras.Input((112, 112, 3))
        return keras.Model(inp, keras.layers.Conv2D(32, 3, padding="same", name="conv")(inp), name=case)
    raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")


def make_files(case, folder):
    """{variant: path} for variants v2-t2, v1-t2, v2-p4, v1-p4 (all tfq ops, every layer)."""
    from tfq.converter import convert
    from tfq.converter import sparse as sparse_layout
    from tfq.testing import set_in_set_weights

    import speed

    model = build_keras(case)
    names = speed.weighted_layers(model)
    paths = {}
    with contextlib.redirect_stdout(sys.stderr):  # the TF converter prints to stdout
        for tag, scheme in SCHEMES.items():
            set_in_set_weights(model, {n: scheme for n in names}, seed=0)
            speed.rescale_kernels(model, names)
            v2 = bytes(convert(speed.float_tflite(model)))
            for version, data in (("v2", v2), ("v1", sparse_layout.as_version_1(v2))):
                p = pathlib.Path(folder) / f"{case}-{version}-{tag}.tflite"
                p.write_bytes(data)
                paths[f"tfq-{version}-{tag}"] = p
    return paths


def code_bytes(path):
    from tfq.converter import inspect

    return sum(r["code_bytes"] for r in inspect.inspect_model(str(path))["ops"] if r["kind"] == "tfq")


def time_variants(variants, threads, seconds):
    """Interleaved timing in a fresh process; variants {name: (model path, delegate library)}.

    Each variant gets its own interpreter with its own delegate instance;
    two builds of the delegate can be loaded side by side (ctypes loads each
    library with RTLD_LOCAL, so each keeps its own symbols), so "before"
    and "after" share every moment of the machine's load.
    """
    code = ("import sys, json; sys.path.insert(0, %r); from dense_v2 import _time_here; "
            "print('RESULT ' + json.dumps(_time_here(json.loads(sys.argv[1]), int(sys.argv[2]), "
            "float(sys.argv[3]))))" % str(ROOT / "benchmarks"))
    arg = json.dumps({k: [str(p), str(lib)] for k, (p, lib) in variants.items()})
    out = subprocess.run([sys.executable, "-c", code, arg, str(threads), str(seconds)],
                         capture_output=True, text=True, timeout=3600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"timing failed: {out.stderr[-2000:]}")


def _time_here(variants, threads, seconds):
    import statistics
    import time

    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    interps = {}
    for name, (path, lib) in variants.items():
        delegate = load_delegate(lib, {"num_threads": str(threads)})
        it = Interpreter(model_path=path, num_threads=threads, experimental_delegates=[delegate])
        it.allocate_tensors()
        d = it.get_input_details()[0]
        it.set_tensor(d["index"], np.random.default_rng(1).standard_normal(d["shape"]).astype(np.float32))
        for _ in range(3):
            it.invoke()
        interps[name] = it
    times = {v: [] for v in interps}
    budget = time.perf_counter() + seconds
    rounds = 0
    while rounds < 20 or (time.perf_counter() < budget and rounds < 20000):
        for v, it in interps.items():
            t = time.perf_counter()
            it.invoke()
            times[v].append(time.perf_counter() - t)
        rounds += 1
    return {v: statistics.median(ts) for v, ts in times.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--before", help="another libtfq_delegate.so to time the version-1 files with")
    args = ap.parse_args(argv)
    import tfq
    from tfq.report import machine_summary

    after = tfq.delegate_path()

    print(machine_summary())
    print("Medians per invoke (ms), batch 1, interleaved in one process; the machine is shared, "
          "so differences of a few percent are noise.")
    cols = "| case | scheme | threads | codes v1 (B) | codes v2 (B) | v1 ms | v2 ms | v1/v2 |"
    if args.before:
        cols += " before ms | before/v1 |"
    print(cols)
    print("|" + "---|" * (cols.count("|") - 1))
    with tempfile.TemporaryDirectory() as tmp:
        for case in args.cases.split(","):
            paths = make_files(case, tmp)
            for threads in (int(t) for t in args.threads.split(",")):
                for tag, scheme in SCHEMES.items():
                    variants = {v: (paths[f"tfq-{v}-{tag}"], after) for v in ("v1", "v2")}
                    if args.before:
                        variants["before"] = (paths[f"tfq-v1-{tag}"], args.before)
                    med = time_variants(variants, threads, args.seconds)
                    v1, v2 = med["v1"], med["v2"]
                    row = (f"| {case} | {scheme} | {threads} | {code_bytes(paths[f'tfq-v1-{tag}'])} | "
                           f"{code_bytes(paths[f'tfq-v2-{tag}'])} | {v1 * 1e3:.3f} | {v2 * 1e3:.3f} | "
                           f"{v1 / v2:.2f} |")
                    if args.before:
                        b = med["before"]
                        row += f" {b * 1e3:.3f} | {b / v1:.2f} |"
                    print(row, flush=True)


if __name__ == "__main__":
    main()
