"""Where block-sparse beats dense: the sparsity at which a version-2 op is as fast as version 1.

For one layer of each kind (fully connected at batch 1, convolution 3x3,
convolution 1x1) the same ternary weights, with a fraction of their blocks
zeroed (tfq.pruning.AUTO_BLOCKS: 16x4 for the convolutions; 4x4, block="auto"'s shape
for Dense kernels below 2**20 weights, for the fully connected layers, the smallest
blocks the converter decides for), run as a dense version-1 op and as a block-sparse version-2
op, through LiteRT with the delegate, 1 thread, median of interleaved
invocations (ABAB), microseconds; the outputs of the two are checked equal
first. The ratio v2 / v1 falls with the sparsity; the break-even (linear
interpolation between the two grid points around ratio 1) is what the
converter's `sparse="auto"` uses (tfq/converter/sparse.py, docs/converter.md).

Usage: python benchmarks/sparse_breakeven.py [--rounds N] [--sparsities 0,0.1,...]
"""

import argparse
import ctypes
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

import numpy as np  # noqa: E402

from tfq.report import machine_summary  # noqa: E402

SPARSITIES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7)


def layers():
    import keras
    from tfq.testing import set_in_set_weights

    def one(shape, layer):
        inputs = keras.Input(shape)
        return set_in_set_weights(keras.Model(inputs, layer(inputs)), "ternary", 0)

    return {
        "FC 1024x1024 (batch 1)": one((1024,), keras.layers.Dense(1024)),
        "FC 4096x4096 (batch 1)": one((4096,), keras.layers.Dense(4096)),
        "Conv 3x3 64->64 at 56x56": one((56, 56, 64), keras.layers.Conv2D(64, 3, padding="same")),
        "Conv 1x1 256->256 at 28x28": one((28, 28, 256), keras.layers.Conv2D(256, 1)),
        # ResNet-50's narrow-k expansion (k = 64): bound by its 802,816 float outputs.
        "Conv 1x1 64->256 at 56x56": one((56, 56, 64), keras.layers.Conv2D(256, 1)),
    }


def interpreter(image):
    import tfq
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    interp = Interpreter(model_content=image,
                         experimental_delegates=[load_delegate(tfq.delegate_path(), {"num_threads": "1"})])
    interp.allocate_tensors()
    return interp


def break_even(points):
    """Lowest sparsity where v2 / v1 reaches 1 (interpolated), from [(sparsity, ratio)]."""
    for (s0, r0), (s1, r1) in zip(points, points[1:]):
        if r0 <= 1.0:
            return s0
        if r1 <= 1.0:
            return s0 + (s1 - s0) * (r0 - 1.0) / (r0 - r1)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--sparsities", default=",".join(str(s) for s in SPARSITIES))
    args = ap.parse_args(argv)
    sparsities = [float(s) for s in args.sparsities.split(",")]

    import sparse_models
    import tfq
    from tfq.converter import convert
    from tfq.pruning import AUTO_BLOCKS

    lib = ctypes.CDLL(tfq.delegate_path())
    lib.tfq_delegate_isa.restype = ctypes.c_char_p
    lib.tfq_delegate_sparse_path.restype = ctypes.c_char_p
    print(f"CPU: {machine_summary()}; dense kernels: {lib.tfq_delegate_isa(0).decode()}; block-sparse: "
          f"{lib.tfq_delegate_sparse_path(0).decode()}; 1 thread; blocks {AUTO_BLOCKS}; "
          f"median of {args.rounds} interleaved invokes; shared machine (other jobs running: noisy)")
    print("| layer | zero blocks | v1 dense us | v2 sparse us | v2 / v1 |")
    print("|---|---|---|---|---|")
    summary = []
    for name, model in layers().items():
        base = bytes(convert(model, sparse=False))
        points = []
        for sparsity in sparsities:
            block = AUTO_BLOCKS["dense" if name.startswith("FC") else "conv"]
            v1, v2 = sparse_models.sparse_pair(base, block, sparsity, seed=0)
            interps = [interpreter(v1), interpreter(v2)]
            d = interps[0].get_input_details()[0]
            x = np.random.default_rng(0).normal(size=d["shape"]).astype(np.float32)
            outs = []
            for it in interps:
                it.set_tensor(d["index"], x)
                it.invoke()
                outs.append(it.get_tensor(it.get_output_details()[0]["index"]).copy())
            assert np.array_equal(outs[0], outs[1]), name
            times = [[], []]
            for _ in range(args.rounds):
                for i, it in enumerate(interps):
                    t = time.perf_counter()
                    it.invoke()
                    times[i].append(time.perf_counter() - t)
            a, b = (np.median(t) * 1e6 for t in times)
            points.append((sparsity, b / a))
            print(f"| {name} | {sparsity:.0%} | {a:.0f} | {b:.0f} | {b / a:.2f} |", flush=True)
        summary.append((name, break_even(points)))
    print()
    print("| layer | break-even sparsity (v2 as fast as v1) |")
    print("|---|---|")
    for name, be in summary:
        print(f"| {name} | {'not reached' if be is None else f'{be:.0%}'} |")


if __name__ == "__main__":
    sys.exit(main())
