"""`tfq convert`: a compressed .keras model (or a float .tflite) to a .tflite with packed low-bit weights."""

import sys
import warnings

from tfq.cli import common


def add_flags(p):
    p.add_argument("--model", required=True, metavar="PATH",
                   help="the compressed model: a .keras file (from tfq compress), or a float .tflite")
    p.add_argument("--out", required=True, metavar="PATH.tflite", help="where to write the .tflite file")
    p.add_argument("--portable", action="store_true",
                   help="write builtin INT2/INT4/INT8 weights instead of tfq custom ops (runs without the delegate)")
    p.add_argument("--sparse", choices=("auto", "true", "false"), default="false",
                   help="block-sparse ops (format version 2): auto = where they take at most 3/4 of the dense "
                        "bytes (pruned weights), true = wherever possible, false = dense version 1 only")
    p.add_argument("--float_layers", choices=("float", "int8"), default="float",
                   help="the layers in no tfq set (usually the first and last): keep them float, or store 8-bit "
                        "per-channel weights run by LiteRT's dynamic-range kernels (4x smaller, lossy)")
    p.add_argument("--allow_float", action="store_true",
                   help="write the file even when no weight lies in a tfq set (a plain float model)")


def summary_line(reports):
    """One line: which ops were packed (by scheme) and which stayed float (by reason)."""
    packed = [r for r in reports if r.packed]
    by_scheme = {}
    for r in packed:
        by_scheme.setdefault(r.scheme, []).append(r.layer or r.weight)
    parts = [f"{len(packed)} of {len(reports)} weighted ops packed"]
    parts += [f"{scheme}: {', '.join(names)}" for scheme, names in by_scheme.items()]
    int8 = [r.layer or r.weight for r in reports if not r.packed and r.scheme == "int8"]
    if int8:
        parts.append(f"int8: {', '.join(int8)}")
    floats = [r.layer or r.weight for r in reports if not r.packed and r.scheme != "int8"]
    if floats:
        parts.append(f"float: {', '.join(floats)}")
    return "; ".join(parts)


def run(args):
    """Converts a compressed Keras model (or a float .tflite) into a tfq .tflite."""
    is_tflite = args.model.endswith(".tflite")
    common.existing(args.model, "--model PATH", (".keras", ".tflite"))
    out = common.out_path(args.out, ".tflite")
    if not is_tflite:
        common.check_keras_file(args.model)
    from tfq import quiet

    quiet.import_tensorflow(args.verbose)
    from tfq.converter import convert

    source = args.model if is_tflite else common.load_keras_model(args.model, args.verbose)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = convert(source, portable=args.portable,
                         sparse={"auto": "auto", "true": True, "false": False}[args.sparse],
                         float_layers=args.float_layers)
    packed = [r for r in result.report if r.packed]
    if args.verbose:
        for w in caught:
            print(f"tfq convert: note: {w.message}", file=sys.stderr)
        for r in result.report:
            if not r.packed:
                kept = "int8" if r.scheme == "int8" else "float"
                print(f"  kept in {kept} ({r.op} {r.weight}): {r.reason}", file=sys.stderr)
    if not packed and not args.allow_float:
        raise ValueError(
            f"{args.model}: nothing to pack, no weight lies in a tfq set (not compressed?); compress it first "
            f"(tfq compress --model {args.model} --out M_t.keras) or pass --allow_float for a float .tflite")
    with open(out, "wb") as f:
        f.write(result)
    common.print_inspection(out)
    print(f"converted: {summary_line(result.report)}")
    print(f"wrote {out} ({len(result)} bytes)" + ("" if packed else ", a plain float model (--allow_float)"))
    return 0


COMMAND = common.Command(
    run, "write a .tflite with packed low-bit weights (tfq custom ops or --portable)", add_flags,
    "tfq convert --model M_t.keras --out M_t.tflite\n"
    "tfq convert --model M_t.keras --portable --out M_t_portable.tflite   # builtin ops only\n"
    "tfq convert --model M_t.keras --float_layers int8 --out M_t8.tflite  # first/last layers 8-bit")
