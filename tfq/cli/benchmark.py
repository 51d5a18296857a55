"""`tfq benchmark`: median latency of a tfq .tflite against LiteRT float and int8 of its float parent."""

import numpy as np

from tfq.cli import common
from tfq.cli.common import UsageError


def add_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="the tfq .tflite model")
    p.add_argument("--baseline", metavar="PATH.keras",
                   help="the float .keras model, converted to LiteRT float and dynamic-range int8 and timed alongside")
    p.add_argument("--threads", type=common.comma_list, default=["1"], metavar="N,M",
                   help="interpreter threads, e.g. 1,2")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model (the median is reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed invokes first")


def run(args):
    """Median latency of a tfq .tflite against LiteRT float and dynamic-range int8 of the baseline."""
    threads = common.threads(args.threads)
    runs = common.positive("runs", args.runs)
    warmup = args.warmup
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    blob = common.read_tflite(args.file)
    if args.baseline:
        common.check_keras_file(args.baseline)
    from tfq import report

    models = {"tfq": blob}
    if args.baseline:
        base = common.load_keras_model(args.baseline, args.verbose)
        common.log(f"converting {args.baseline} to LiteRT float and dynamic-range int8")
        models = {"LiteRT float": report.keras_to_tflite(base), "LiteRT int8": report.keras_to_tflite(base, True),
                  "tfq": blob}
    probe = report.make_interpreter(blob)
    shape = [1] + list(probe.get_input_details()[0]["shape"][1:])
    sample = np.random.default_rng(0).random(shape, dtype=np.float32)
    rows = []
    for t in threads:
        med = report.interleaved_latency(models, sample, threads=t, runs=runs, warmup=warmup,
                                         progress=report.stderr_progress(f"benchmark, {t} thread(s)"))
        for label, ms in med.items():
            rows.append((label, t, ms, len(models[label]), med))
    lines = ["| model | threads | median ms | vs LiteRT float | vs LiteRT int8 | size (KiB) | runtime |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for label, t, ms, size, med in rows:
        vs_f = f"{med['LiteRT float'] / ms:.2f}x" if "LiteRT float" in med else "-"
        vs_i = f"{med['LiteRT int8'] / ms:.2f}x" if "LiteRT int8" in med else "-"
        rt = "LiteRT + tfq delegate" if report.has_tfq_ops(models[label]) else "LiteRT (XNNPACK)"
        lines.append(f"| {label} | {t} | {ms:.3f} | {vs_f} | {vs_i} | {size / 1024:.1f} | {rt} |")
    print("\n".join(lines))
    print(f"({runs} timed invokes per model after {warmup} warm-up, interleaved, batch 1; "
          f"ratios > 1 mean tfq is faster; {report.machine_summary()})")
    return 0


COMMAND = common.Command(run, "median latency of a .tflite against LiteRT float and int8 of its float parent",
                         add_flags, "tfq benchmark M_t.tflite --baseline M.keras --threads 1,2")
