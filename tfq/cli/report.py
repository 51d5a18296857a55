"""`tfq report`: accuracy against size and latency of several models, as a PNG figure and a Markdown table."""

import os

from tfq.cli import common


def add_flags(p):
    p.add_argument("--models", nargs="+", required=True, metavar="FILE",
                   help="model files (.keras or .tflite), space- or comma-separated; float .keras models are "
                   "the baselines")
    p.add_argument("--out", required=True, metavar="PATH.png", help="the figure")
    p.add_argument("--markdown", metavar="PATH.md", help="the table (default: --out with .md)")
    p.add_argument("--data", default="mnist", metavar="DATA", help=common.DATA_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    p.add_argument("--threads", type=common.comma_list, default=["1"], metavar="N", help="interpreter threads")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model (the median is reported)")
    common.bool_flag(p, "int8_baseline", True, "add LiteRT dynamic-range int8 for each float .keras model")


def run(args):
    """Accuracy against size and latency for several models: a PNG figure and a Markdown table."""
    paths = [p for value in args.models for p in common.comma_list(value)]
    for p in paths:
        common.existing(p, "a model file", (".keras", ".tflite"))
    out = common.out_path(args.out, ".png")
    threads = common.threads(args.threads)[0]
    runs = common.positive("runs", args.runs)
    common.positive("limit", args.limit)
    common.check_data_spec(args.data)
    for p in paths:
        if p.endswith(".tflite"):
            common.read_tflite(p)
        else:
            common.check_keras_file(p)
    from tfq import quiet

    quiet.import_tensorflow(args.verbose)
    from tfq import report

    _, (xt, yt) = common.load_data(args.data, args.limit)
    measurements = []
    for i, p in enumerate(paths):
        common.log(f"model {i + 1}/{len(paths)}: {p}")
        measurements.extend(report.measurements_for(p, xt, yt, threads=threads, int8_baseline=args.int8_baseline,
                                                    runs=runs, log=common.log))
    report.plot(measurements, out)
    table = report.markdown_table(measurements)
    md = args.markdown or os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out} and {md} ({len(xt)} test images, {threads} thread{'s' if threads > 1 else ''})")
    return 0


COMMAND = common.Command(run, "accuracy against size and latency of several models: PNG figure + Markdown table",
                         add_flags, "tfq report --models M.keras M_t.keras --data mnist --out report.png")
