"""The `compress`, `evaluate`, `benchmark` and `report` subcommands of `tfq` (see tfq/cli.py).

Each `cmd_*(args) -> exit code` takes the parsed `argparse.Namespace`; each
`_*_flags(parser)` defines that command's flags. Everything that can be
checked without TensorFlow (paths, suffixes, values) is checked before
TensorFlow loads, so a wrong command line fails at once.
"""

import os

import numpy as np

from tfq import schemes
from tfq import cli
from tfq.cli import UsageError, comma_list, existing, log, out_path

DATA_HELP = ("'mnist' (from $TFQ_DATA_DIR/mnist when set, else the Keras download), a directory holding the "
             "MNIST IDX .gz files, or an .npz with x_train, y_train, x_test, y_test")

SCHEMES = schemes.NAMES


# --------------------------------------------------------------------------
# Flag validation
# --------------------------------------------------------------------------


def _scheme(value):
    name = (value or "").lower()
    if name not in SCHEMES:
        raise UsageError(f"unknown scheme {value!r}; valid: {', '.join(SCHEMES)}")
    return name


def _threads(values):
    joined = ",".join(values)
    try:
        threads = [int(t) for t in values]
    except ValueError:
        threads = []
    if not threads or any(t < 1 for t in threads):
        raise UsageError(f"--threads must be comma-separated positive integers, got {joined}")
    return threads


def _positive(name, value):
    if value is not None and value < 1:
        raise UsageError(f"--{name} must be a positive integer, got {value}")
    return value


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def _check_data_spec(spec):
    """Usage checks of a --data value that need no loading."""
    if spec is None or spec == "mnist" or os.path.isdir(spec):
        return
    if spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise UsageError(f"{spec}: no such file")
        return
    raise UsageError(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")


def load_data(spec, limit=None):
    """((x_train, y_train), (x_test, y_test)) for a --data value (see the flag's help)."""
    from tfq import datasets

    if spec is None:
        raise UsageError("missing --data (mnist, a directory with MNIST files, or an .npz)")
    if spec == "mnist":
        local = os.path.join(os.environ.get("TFQ_DATA_DIR") or "", "mnist")
        if not (os.path.isdir(local) and sum(f.endswith(".gz") for f in os.listdir(local)) >= 4):
            from tfq import quiet

            quiet.import_tensorflow()  # the download goes through Keras: its start-up notices stay quiet
        try:
            (x, y), (xt, yt) = datasets.mnist()
        except Exception as err:  # noqa: BLE001  (urllib, OSError, Keras' own wrappers)
            raise ValueError(f"MNIST: download failed ({cli.first_line(err)}); offline, set TFQ_DATA_DIR to a "
                             "folder whose mnist/ holds the four IDX .gz files") from err
    elif os.path.isdir(spec):
        if os.path.isdir(os.path.join(spec, "mnist")):
            (x, y), (xt, yt) = datasets.mnist(data_dir=spec)
        elif any(f.endswith("idx3-ubyte.gz") for f in os.listdir(spec)):
            (x, y), (xt, yt) = datasets.mnist(data_dir=os.path.dirname(os.path.abspath(spec)))
        else:
            raise UsageError(f"--data {spec}: directory holds no MNIST IDX files (expected mnist/*.gz)")
    elif spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise UsageError(f"{spec}: no such file")
        with np.load(spec) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(f"{spec}: missing arrays {sorted(missing)}")
            x, y, xt, yt = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        x, xt = x.astype(np.float32), xt.astype(np.float32)
    else:
        raise UsageError(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    return (x, y), (xt, yt)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def _compress_flags(p):
    p.add_argument("--model", required=True, metavar="PATH.keras", help="the float model")
    p.add_argument("--out", required=True, metavar="PATH.keras", help="where to write the compressed model")
    p.add_argument("--scheme", default="ternary", help=f"weight set: {', '.join(SCHEMES)}")
    p.add_argument("--sparsity", type=float, metavar="S", help="fraction of weights set to zero, in [0, 1)")
    p.add_argument("--data", metavar="DATA", help=f"train with ADMM on this data: {DATA_HELP}; without it, "
                   "compression is data-free (seconds)")
    p.add_argument("--eval_data", metavar="DATA", help="data (same forms as --data) used only to report accuracy")
    p.add_argument("--epochs", type=int, help="training epochs with --data (derived from the data size when unset)")
    p.add_argument("--learning_rate", type=float, help="learning rate with --data (1e-3 when unset)")
    p.add_argument("--batch_size", type=int, help="batch size with --data (128 when unset)")
    p.add_argument("--limit", type=int, metavar="N", help="with --eval_data: use only the first N test images")
    cli.bool_flag(p, "corrections", True, "data-free bias correction and cross-layer equalization")
    cli.bool_flag(p, "skip_first_last", True, "keep the first and last compressible layers in float")
    p.add_argument("--layers", type=comma_list, metavar="A,B", help="compress exactly these layers (comma-separated)")
    p.add_argument("--keep_training_state", action="store_true",
                   help="keep the ADMM/pruning state and the optimizer in the saved model, to resume training (a "
                   "file several times larger). By default both are removed: the file is no larger than the "
                   "float model's")


def cmd_compress(args):
    """Compresses a .keras model: data-free by default, ADMM training with --data."""
    path = existing(args.model, "--model PATH.keras", (".keras",))
    scheme = _scheme(args.scheme)
    sparsity = args.sparsity
    if sparsity is not None and not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity must be in [0, 1), got {sparsity}")
    out = out_path(args.out, ".keras")
    _positive("epochs", args.epochs)
    _positive("batch_size", args.batch_size)
    _positive("limit", args.limit)
    if args.learning_rate is not None and not args.learning_rate > 0:
        raise UsageError(f"--learning_rate must be positive, got {args.learning_rate}")
    if args.epochs is not None and not args.data:
        raise UsageError("--epochs needs --data (the data-free path does not train)")
    for spec in (args.data, args.eval_data):
        _check_data_spec(spec)
    cli.check_keras_file(path)
    model = cli.load_keras_model(path, args.verbose)
    data = validation = None
    if args.data:
        (x, y), (xt, yt) = load_data(args.data)
        data, validation = (x, y), (xt, yt)
    elif args.eval_data:
        _, validation = load_data(args.eval_data, args.limit)
    layers = {name: True for name in args.layers} if args.layers else None
    import tfq

    log(f"compressing {path} to {scheme}" + (f", {sparsity:.0%} sparse" if sparsity else "")
        + (" with ADMM training" if data is not None else " (data-free)"))
    small, report = tfq.compress(
        model, scheme, sparsity=sparsity, data=data, validation_data=validation, epochs=args.epochs,
        layers=layers, corrections=args.corrections, skip_first_last=args.skip_first_last,
        learning_rate=args.learning_rate, batch_size=args.batch_size, verbose=1, return_report=True,
        keep_training_state=args.keep_training_state,
    )
    small.save(out)
    print(report.to_markdown())
    print(f"wrote {out} ({os.path.getsize(out):,} bytes; {os.path.getsize(path):,} bytes for {path})")
    return 0


def _read_tflite(path):
    """The bytes of a .tflite file, after checking it parses as a TFLite model (errors name the file)."""
    existing(path, "a .tflite FILE", (".tflite",))
    from tfq.converter import tflite_io

    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (corrupted or wrong file)")
    tflite_io.load_model(blob, name=path)  # truncated or damaged files fail here, naming the file
    return blob


def _evaluate_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="a .tflite classifier")
    p.add_argument("--data", default="mnist", metavar="DATA", help=DATA_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    p.add_argument("--threads", type=comma_list, default=["1"], metavar="N", help="interpreter threads")


def cmd_evaluate(args):
    """Top-1 accuracy of a .tflite classifier through LiteRT (with the tfq delegate when needed)."""
    threads = _threads(args.threads)[0]
    _positive("limit", args.limit)
    blob = _read_tflite(args.file)
    _check_data_spec(args.data)
    from tfq import report

    _, (xt, yt) = load_data(args.data, args.limit)
    runtime = "LiteRT + tfq delegate" if report.has_tfq_ops(blob) else "LiteRT"
    acc = report.tflite_accuracy(blob, xt, yt, threads=threads, progress=report.stderr_progress("evaluate"))
    print(f"{args.file}: accuracy {100 * acc:.2f}% on {len(xt)} images ({runtime}, {threads} thread"
          f"{'s' if threads > 1 else ''})")
    return 0


def _benchmark_flags(p):
    p.add_argument("file", metavar="FILE.tflite", help="the tfq .tflite model")
    p.add_argument("--baseline", metavar="PATH.keras",
                   help="the float .keras model, converted to LiteRT float and dynamic-range int8 and timed alongside")
    p.add_argument("--threads", type=comma_list, default=["1"], metavar="N,M", help="interpreter threads, e.g. 1,2")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model (the median is reported)")
    p.add_argument("--warmup", type=int, default=5, help="untimed invokes first")


def cmd_benchmark(args):
    """Median latency of a tfq .tflite against LiteRT float and dynamic-range int8 of the baseline."""
    threads = _threads(args.threads)
    runs = _positive("runs", args.runs)
    warmup = args.warmup
    if warmup < 0:
        raise UsageError(f"--warmup must be >= 0, got {warmup}")
    blob = _read_tflite(args.file)
    if args.baseline:
        cli.check_keras_file(args.baseline)
    from tfq import report

    models = {"tfq": blob}
    if args.baseline:
        base = cli.load_keras_model(args.baseline, args.verbose)
        log(f"converting {args.baseline} to LiteRT float and dynamic-range int8")
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


def _report_flags(p):
    p.add_argument("--models", nargs="+", required=True, metavar="FILE",
                   help="model files (.keras or .tflite), space- or comma-separated; float .keras models are "
                   "the baselines")
    p.add_argument("--out", required=True, metavar="PATH.png", help="the figure")
    p.add_argument("--markdown", metavar="PATH.md", help="the table (default: --out with .md)")
    p.add_argument("--data", default="mnist", metavar="DATA", help=DATA_HELP)
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N test images")
    p.add_argument("--threads", type=comma_list, default=["1"], metavar="N", help="interpreter threads")
    p.add_argument("--runs", type=int, default=50, help="timed invokes per model (the median is reported)")
    cli.bool_flag(p, "int8_baseline", True, "add LiteRT dynamic-range int8 for each float .keras model")


def cmd_report(args):
    """Accuracy against size and latency for several models: a PNG figure and a Markdown table."""
    paths = [p for value in args.models for p in comma_list(value)]
    for p in paths:
        existing(p, "a model file", (".keras", ".tflite"))
    out = out_path(args.out, ".png")
    threads = _threads(args.threads)[0]
    runs = _positive("runs", args.runs)
    _positive("limit", args.limit)
    _check_data_spec(args.data)
    for p in paths:
        if p.endswith(".tflite"):
            _read_tflite(p)
        else:
            cli.check_keras_file(p)
    from tfq import quiet

    quiet.import_tensorflow(args.verbose)
    from tfq import report

    _, (xt, yt) = load_data(args.data, args.limit)
    measurements = []
    for i, p in enumerate(paths):
        log(f"model {i + 1}/{len(paths)}: {p}")
        measurements.extend(report.measurements_for(p, xt, yt, threads=threads, int8_baseline=args.int8_baseline,
                                                    runs=runs, log=log))
    report.plot(measurements, out)
    table = report.markdown_table(measurements)
    md = args.markdown or os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out} and {md} ({len(xt)} test images, {threads} thread{'s' if threads > 1 else ''})")
    return 0


COMMANDS = {
    "compress": cli.Command(
        cmd_compress, "compress a .keras model to 1-4 bit weights (data-free, or ADMM training with --data)",
        _compress_flags,
        "tfq compress --model M.keras --scheme pow2_4bit --out M_p4.keras              # data-free, seconds\n"
        "tfq compress --model M.keras --scheme ternary --sparsity 0.9 --data mnist --out M_t.keras   # ADMM"),
    "evaluate": cli.Command(cmd_evaluate, "top-1 accuracy of a .tflite through LiteRT (+ the tfq delegate)",
                            _evaluate_flags, "tfq evaluate M_t.tflite --data mnist --limit 1000"),
    "benchmark": cli.Command(
        cmd_benchmark, "median latency of a .tflite against LiteRT float and int8 of its float parent",
        _benchmark_flags, "tfq benchmark M_t.tflite --baseline M.keras --threads 1,2"),
    "report": cli.Command(
        cmd_report, "accuracy against size and latency of several models: PNG figure + Markdown table",
        _report_flags, "tfq report --models M.keras M_t.keras --data mnist --out report.png"),
}
