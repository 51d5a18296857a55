"""Block-sparse speed: the issue-13 cases against LiteRT and tfq's dense ternary kernels, batch 1.

Each case is one of benchmarks/speed.py's networks (same Keras model, same
LiteRT baselines, built and cached by speed.make_models) plus one more
variant, `tfq-sparse`: the tfq ternary model (tfq-t2) with `sparsity` of
the weight blocks of every TFQ_FULLY_CONNECTED / TFQ_CONV_2D op zeroed and
written block-sparse (format version 2), in the shape block="auto" prunes
that layer kind with (tfq.pruning.auto_shape: 16x4 convolutions and
Dense kernels of 2**20 weights or more, 4x4 smaller Dense kernels). The first and last layers of whole models are not tfq ops: by
default (--float-layers int8) they get 8-bit dynamic-range weights
(`tfq.convert(float_layers="int8")`, as LiteRT's full-int8 model has 8-bit
first and last layers too), in both tfq-t2 and tfq-sparse; with
--float-layers float they stay float32, as in speed.py. Depthwise
convolutions stay dense. Timing is speed.py's: interleaved in one process (ABCABC...), or
with --isolated each variant alone in its own process.

Per case and thread count it prints the best LiteRT variant (fastest of
fp32, dyn-int8, full-int8, aeq-int4, aeq-int2, tfq-portable), tfq dense
ternary (tfq-t2), tfq sparse, the ratios best-LiteRT / sparse and
dense-ternary / sparse, and the fraction of the tfq ops' multiply-adds the
zeroed blocks skip against the fraction of tfq-t2's time saved.

A case may name its block shape instead of auto's: `dense4096:0.9:32x4`.

Usage: python benchmarks/sparse_speed.py [--cases conv3x3:0.9,dense4096:0.9:32x4,...] [--threads 1,2]
       [--seconds 2] [--isolated] [--float-layers int8|float] [--cache out/bench]
"""

import argparse
import ctypes
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

import numpy as np  # noqa: E402

import speed  # noqa: E402

CASES = ("conv3x3:0.9", "conv3x3:0.75", "conv1x1:0.9", "dense4096:0.9", "resnet50:0.9",
         "mobilenetv2:0.9")
TITLES = {"conv3x3": "Conv 3x3 64->64 at 56x56", "conv1x1": "Conv 1x1 256->256 at 28x28",
          "dense4096": "Dense 4096x4096", "resnet50": "ResNet-50 (224)",
          "mobilenetv2": "MobileNetV2 (224), 1x1 convs"}
# The targets: (vs best LiteRT, vs tfq dense ternary), None: none set.
TARGETS = {"conv3x3:0.9": (3, 3), "conv3x3:0.75": (2, None), "conv1x1:0.9": (3, None),
           "dense4096:0.9": (5, None), "resnet50:0.9": (3, None), "mobilenetv2:0.9": (1.5, None)}


def skipped_fraction(v1, v2):
    """Multiply-adds of the tfq FC / conv ops skipped by v2's zero blocks, as a fraction of v1's.

    Per op: rows x k x output pixels in v1, stored blocks x R x C x output
    pixels in v2 (a partial edge block counted whole).
    """
    from tfq.converter import format as fmt
    from tfq.converter import tflite_io

    import sparse_models

    total = kept = 0
    m2, d2, _ = tflite_io.load_model(bytes(v2))
    for sg in m2.subgraphs:
        for op in sg.operators or []:
            if tflite_io.op_name(m2, op) not in sparse_models.SPARSE_OPS:
                continue
            opts = fmt.decode_options(np.asarray(op.customOptions, dtype=np.uint8).tobytes())
            out = sg.tensors[int(op.outputs[0])].shape
            pixels = int(np.prod(out[:-1]))
            total += opts["rows"] * opts["k"] * pixels
            if fmt.is_sparse(opts):
                kept += opts["nnz_blocks"] * opts["block_rows"] * opts["block_cols"] * pixels
            else:
                kept += opts["rows"] * opts["k"] * pixels
    return 1.0 - kept / total if total else 0.0


def block_of(case):
    """The block="auto" shape of the case's tfq layers (whole models: their 64-channel and wider convolutions)."""
    from tfq.pruning import auto_shape

    if case.startswith("dense"):
        n = int(case[len("dense"):].split("x")[0])
        return auto_shape("dense", n, n)
    return auto_shape("conv", 64, 576)


def dense_model(paths, float_layers):
    """Path of the dense ternary variant: speed.py's tfq-t2, or its float_layers="int8" twin."""
    if float_layers == "float":
        return paths["tfq-t2"]
    from tfq.converter import convert

    path = paths["tfq-t2"].parent / "tfq-t2-i8.tflite"
    if not path.exists():
        path.write_bytes(bytes(convert(paths["fp32"].read_bytes(), float_layers="int8")))
    return path


def sparse_model(case, sparsity, dense_path, block=None):
    """Path of the tfq-sparse variant of `dense_path` (cached next to it) and its skipped-MAC fraction.

    block: (rows, cols) of the zeroed blocks, None for block="auto"'s shape.
    """
    import sparse_models

    base = dense_path.read_bytes()
    R, C = block or block_of(case)
    tag = "-i8" if dense_path.stem.endswith("-i8") else ""
    path = dense_path.parent / f"tfq-sparse{int(round(sparsity * 100))}-{R}x{C}{tag}.tflite"
    if not path.exists():
        _, v2 = sparse_models.sparse_pair(base, (R, C), sparsity, seed=0)
        path.write_bytes(v2)
    return path, skipped_fraction(base, path.read_bytes())


def parse_case(spec):
    """"dense4096:0.9" or "dense4096:0.9:32x4" -> (case, sparsity, block or None)."""
    from tfq.pruning import check_block

    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] not in TITLES:
        raise SystemExit(f"bad case {spec!r}: expected NAME:SPARSITY[:RxC] with NAME one of {sorted(TITLES)}")
    block = None
    if len(parts) == 3:
        try:
            block = check_block(parts[2], what=f"block of case {spec!r}")
        except ValueError as e:
            raise SystemExit(str(e)) from None
        if not isinstance(block, tuple):
            raise SystemExit(f"bad case {spec!r}: the block must be a shape such as 32x4, got {parts[2]!r}")
    return parts[0], float(parts[1]), block


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--cache", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--isolated", action="store_true")
    ap.add_argument("--rounds", type=int, default=3,
                    help="--isolated: the variants take turns this many times, each keeping its best median")
    ap.add_argument("--float-layers", choices=("int8", "float"), default="int8",
                    help="the non-tfq first/last layers of whole models: 8-bit dynamic-range weights, or float32")
    args = ap.parse_args(argv)
    import tfq
    from tfq.report import machine_summary

    lib = ctypes.CDLL(tfq.delegate_path())
    lib.tfq_delegate_isa.restype = ctypes.c_char_p
    lib.tfq_delegate_sparse_path.restype = ctypes.c_char_p
    print(f"CPU: {machine_summary()}")
    print(f"tfq kernels: {lib.tfq_delegate_isa(0).decode()}; block-sparse path: "
          f"{lib.tfq_delegate_sparse_path(0).decode()}; batch 1; "
          + (f"each variant alone in its own process, best median of {args.rounds} rounds" if args.isolated
             else "variants interleaved in one process")
          + f"; medians over {args.seconds:g} s; first/last layers of whole models: "
          + ("8-bit dynamic-range weights" if args.float_layers == "int8" else "float32")
          + "; shared machine (other jobs running: expect noise)")
    print("| case | block | sparsity | threads | best LiteRT (us) | tfq dense ternary us | tfq sparse us | "
          "vs best LiteRT | vs dense ternary | MACs skipped | time saved vs dense ternary | target |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.cases.split(","):
        case, sparsity, block = parse_case(spec)
        paths = speed.make_models(case, args.cache)
        dense_path = dense_model(paths, args.float_layers)
        sparse_path, skipped = sparse_model(case, sparsity, dense_path, block)
        run = {v: p for v, p in paths.items() if v != "tfq-p4"}
        run["tfq-t2"] = dense_path
        run["tfq-sparse"] = sparse_path
        for threads in (int(t) for t in args.threads.split(",")):
            if args.isolated:
                med = speed.time_case_isolated(case, run, threads, args.seconds, args.rounds)
            else:
                med = speed.time_case_subprocess(case, run, threads, args.seconds)
            if "tfq-sparse" not in med or "tfq-t2" not in med:
                print(f"| {TITLES[case]} | | {sparsity:.0%} | {threads} | timing failed |")
                continue
            base = {v: t for v, t in med.items() if v in speed.LITERT_VARIANTS}
            best = min(base, key=base.get)
            sp, dn = med["tfq-sparse"], med["tfq-t2"]
            tgt = TARGETS.get(f"{case}:{spec.split(':')[1]}")
            target = "" if tgt is None else " / ".join(
                "-" if x is None else f">= {x}x" for x in tgt)
            R, C = block or block_of(case)
            print(f"| {TITLES[case]} | {R}x{C}{'' if block else ' (auto)'} | {sparsity:.0%} | {threads} | {best} {base[best] * 1e6:.0f} | "
                  f"{dn * 1e6:.0f} | {sp * 1e6:.0f} | {base[best] / sp:.2f}x | {dn / sp:.2f}x | "
                  f"{skipped:.1%} | {1 - sp / dn:.1%} | {target} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
