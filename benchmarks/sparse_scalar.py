"""The delegate's scalar block-sparse path (format version 2) against the dense version-1 kernels.

Until the block-sparse SIMD kernels exist (issue 13), a version-2 op runs its
dot products through the scalar SparseGemm (docs/delegate.md, "Block-sparse
ops"). This prints what that costs for one layer: the same ternary weights,
with a fraction of their 32x4 blocks zeroed, as a dense version-1 op (SIMD
kernels of this CPU) and as a block-sparse version-2 op (scalar), through
LiteRT with the delegate, 1 thread, median of interleaved invocations (ABAB),
microseconds, and the ratio v2 / v1 (above 1: the scalar sparse path is
slower). The outputs of the two are checked equal first.

Usage: python benchmarks/sparse_scalar.py [--rounds N]
"""

import argparse
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

BLOCK = (32, 4)
SPARSITIES = (0.0, 0.5, 0.9)


def layers():
    import keras
    from tfq.testing import set_in_set_weights

    inputs = keras.Input((1024,))
    dense = keras.Model(inputs, keras.layers.Dense(1024, name="fc")(inputs))
    inputs = keras.Input((28, 28, 64))
    conv = keras.Model(inputs, keras.layers.Conv2D(64, 3, padding="same", name="conv")(inputs))
    return {"Dense 1024x1024 (batch 1)": set_in_set_weights(dense, "ternary", 0),
            "Conv 3x3 64->64 at 28x28": set_in_set_weights(conv, "ternary", 0)}


def interpreter(image):
    import tfq
    from ai_edge_litert.interpreter import Interpreter, load_delegate

    interp = Interpreter(model_content=image,
                         experimental_delegates=[load_delegate(tfq.delegate_path(), {"num_threads": "1"})])
    interp.allocate_tensors()
    return interp


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=60)
    args = ap.parse_args(argv)
    import ctypes

    import sparse_models
    import tfq
    from tfq.converter import convert

    lib = ctypes.CDLL(tfq.delegate_path())
    lib.tfq_delegate_isa.restype = ctypes.c_char_p
    isa = lib.tfq_delegate_isa(0).decode()
    print(f"CPU: {machine_summary()}; dense kernels: {isa}; block-sparse: scalar; "
          f"1 thread; blocks {BLOCK[0]}x{BLOCK[1]}; median of {args.rounds} interleaved invokes")
    print("| layer | zero blocks | v1 dense us | v2 sparse us | v2 / v1 |")
    print("|---|---|---|---|---|")
    for name, model in layers().items():
        base = bytes(convert(model))
        for sparsity in SPARSITIES:
            v1, v2 = sparse_models.sparse_pair(base, BLOCK, sparsity, seed=0)
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
            print(f"| {name} | {sparsity:.0%} | {a:.0f} | {b:.0f} | {b / a:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
