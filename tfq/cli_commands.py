"""The `compress`, `evaluate`, `benchmark` and `report` subcommands of `tfq` (see tfq/cli.py).

Flags are absl flags on the global FLAGS (tfq/cli.py defines the shared
`--model` and `--out`); each `cmd_*(args) -> exit code` takes the positional
arguments left after flag parsing. Errors are raised, not printed: tfq/cli.py
turns `UsageError` into exit code 2 and other failures into exit code 1, each
with a one-line message (docs/cli.md).
"""

import os
import sys

import numpy as np
from absl import flags

FLAGS = flags.FLAGS

flags.DEFINE_string("scheme", "ternary", "compress: binary, ternary, pow2_3bit or pow2_4bit.")
flags.DEFINE_float("sparsity", None, "compress: fraction of weights set to zero, in [0, 1).")
flags.DEFINE_string(
    "data", None,
    "compress/evaluate/report: 'mnist' (from $TFQ_DATA_DIR/mnist or a download), a directory holding the "
    "MNIST IDX .gz files, or an .npz with x_train, y_train, x_test, y_test. With compress it selects ADMM "
    "training; without it compress is data-free.",
)
flags.DEFINE_string("eval_data", None, "compress: data (same forms as --data) used only to report accuracy.")
flags.DEFINE_integer("epochs", None, "compress: training epochs with --data (derived when unset).")
flags.DEFINE_float("learning_rate", None, "compress: learning rate with --data (derived when unset).")
flags.DEFINE_integer("batch_size", None, "compress: batch size with --data (default 128).")
flags.DEFINE_bool("corrections", True, "compress: data-free bias correction and cross-layer equalization.")
flags.DEFINE_bool("skip_first_last", True, "compress: keep the first and last compressible layers in float.")
flags.DEFINE_list("layers", None, "compress: compress exactly these layers (comma-separated names).")
flags.DEFINE_string("baseline", None, "benchmark: the float .keras model, converted to LiteRT float and int8.")
flags.DEFINE_list("threads", ["1"], "benchmark/evaluate/report: interpreter threads, e.g. 1,2.")
flags.DEFINE_integer("runs", 50, "benchmark/report: timed invokes per model (median reported).")
flags.DEFINE_integer("warmup", 5, "benchmark/report: untimed invokes first.")
flags.DEFINE_list("models", None, "report: model files (.keras or .tflite), comma- or space-separated.")
flags.DEFINE_string("markdown", None, "report: also write the table to this .md file (default: next to --out).")
flags.DEFINE_integer("limit", None, "evaluate/report: use only the first N test images.")
flags.DEFINE_bool("int8_baseline", True, "report: add LiteRT dynamic-range int8 for float .keras models.")


def quiet_tensorflow():
    """Imports TensorFlow with its start-up chatter (oneDNN, CUDA probing) kept off stderr.

    The messages come from C++ before any log level applies; with --verbose they are kept.
    """
    if "tensorflow" in sys.modules or FLAGS.verbose:
        import tensorflow  # noqa: F401

        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf

        tf.config.list_physical_devices()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _usage_error(msg):
    from tfq.cli import UsageError

    return UsageError(msg)


def _log(msg):
    print(f"[tfq] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Flag validation
# --------------------------------------------------------------------------


# The scheme names of tfq.quantizers and docs/format.md, checked here without importing TensorFlow.
_SCHEMES = ("binary", "ternary", "pow2_3bit", "pow2_4bit")


def _scheme():
    name = (FLAGS.scheme or "").lower()
    if name not in _SCHEMES:
        raise _usage_error(f"unknown scheme {FLAGS.scheme!r}; valid: {', '.join(_SCHEMES)}")
    return name


def _sparsity():
    s = FLAGS.sparsity
    if s is not None and not 0.0 <= s < 1.0:
        raise _usage_error(f"--sparsity must be in [0, 1), got {s}")
    return s


def _threads():
    try:
        threads = [int(t) for t in FLAGS.threads]
    except ValueError:
        raise _usage_error(f"--threads must be comma-separated positive integers, got {','.join(FLAGS.threads)}")
    if not threads or any(t < 1 for t in threads):
        raise _usage_error(f"--threads must be comma-separated positive integers, got {','.join(FLAGS.threads)}")
    return threads


def _positive(name):
    value = getattr(FLAGS, name)
    if value is not None and value < 1:
        raise _usage_error(f"--{name} must be a positive integer, got {value}")
    return value


def _existing(path, what, suffixes):
    if not path:
        raise _usage_error(f"missing {what}")
    if not os.path.exists(path):
        raise _usage_error(f"{path}: no such file")
    if suffixes and not path.endswith(suffixes):
        raise _usage_error(f"{path}: expected a {' or '.join(suffixes)} file")
    return path


def _out_path(suffix):
    if not FLAGS.out:
        raise _usage_error(f"missing --out PATH{suffix}")
    if not FLAGS.out.endswith(suffix):
        raise _usage_error(f"--out must end with {suffix}, got {FLAGS.out}")
    parent = os.path.dirname(os.path.abspath(FLAGS.out))
    if not os.path.isdir(parent):
        raise _usage_error(f"--out: directory {parent} does not exist")
    return FLAGS.out


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


def _check_data_spec(spec):
    """Usage checks of a --data value that need no loading."""
    if spec is None or spec == "mnist" or os.path.isdir(spec):
        return
    if spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise _usage_error(f"{spec}: no such file")
        return
    raise _usage_error(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")


def load_data(spec, limit=None):
    """((x_train, y_train), (x_test, y_test)) for a --data value (see the flag's help)."""
    from tfq import datasets

    if spec is None:
        raise _usage_error("missing --data (mnist, a directory with MNIST files, or an .npz)")
    if spec == "mnist":
        (x, y), (xt, yt) = datasets.mnist()
    elif os.path.isdir(spec):
        if os.path.isdir(os.path.join(spec, "mnist")):
            (x, y), (xt, yt) = datasets.mnist(data_dir=spec)
        elif any(f.endswith("idx3-ubyte.gz") for f in os.listdir(spec)):
            (x, y), (xt, yt) = datasets.mnist(data_dir=os.path.dirname(os.path.abspath(spec)))
        else:
            raise _usage_error(f"--data {spec}: directory holds no MNIST IDX files (expected mnist/*.gz)")
    elif spec.endswith(".npz"):
        if not os.path.exists(spec):
            raise _usage_error(f"{spec}: no such file")
        with np.load(spec) as f:
            missing = {"x_train", "y_train", "x_test", "y_test"} - set(f.files)
            if missing:
                raise ValueError(f"{spec}: missing arrays {sorted(missing)}")
            x, y, xt, yt = (f[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        x, xt = x.astype(np.float32), xt.astype(np.float32)
    else:
        raise _usage_error(f"--data must be 'mnist', a directory or an .npz file, got {spec!r}")
    if limit:
        xt, yt = xt[:limit], yt[:limit]
    return (x, y), (xt, yt)


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def cmd_compress(args):
    """Compresses a .keras model: data-free by default, ADMM training with --data."""
    if args:
        raise _usage_error(f"compress takes no positional arguments, got {' '.join(args)}")
    from tfq.cli import _load_keras_model

    path = _existing(FLAGS.model, "--model PATH.keras", (".keras",))
    scheme = _scheme()
    sparsity = _sparsity()
    out = _out_path(".keras")
    _positive("epochs")
    _positive("batch_size")
    if FLAGS.learning_rate is not None and not FLAGS.learning_rate > 0:
        raise _usage_error(f"--learning_rate must be positive, got {FLAGS.learning_rate}")
    if FLAGS.epochs is not None and not FLAGS.data:
        raise _usage_error("--epochs needs --data (the data-free path does not train)")
    for spec in (FLAGS.data, FLAGS.eval_data):
        _check_data_spec(spec)
    quiet_tensorflow()
    data = validation = None
    if FLAGS.data:
        (x, y), (xt, yt) = load_data(FLAGS.data)
        data, validation = (x, y), (xt, yt)
    elif FLAGS.eval_data:
        _, validation = load_data(FLAGS.eval_data, FLAGS.limit)
    model = _load_keras_model(path)
    layers = {name: True for name in FLAGS.layers} if FLAGS.layers else None
    import tfq

    _log(f"compressing {path} to {scheme}" + (f", {sparsity:.0%} sparse" if sparsity else "")
         + (" with ADMM training" if data is not None else " (data-free)"))
    small, report = tfq.compress(
        model, scheme, sparsity=sparsity, data=data, validation_data=validation, epochs=FLAGS.epochs,
        layers=layers, corrections=FLAGS.corrections, skip_first_last=FLAGS.skip_first_last,
        learning_rate=FLAGS.learning_rate, batch_size=FLAGS.batch_size, verbose=1, return_report=True,
    )
    small.save(out)
    print(report.to_markdown())
    print(f"wrote {out}")
    return 0


def _read_tflite(path):
    _existing(path, "a .tflite FILE", (".tflite",))
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8 or blob[4:8] != b"TFL3":
        raise ValueError(f"{path}: not a TFLite flatbuffer (corrupted or wrong file)")
    return blob


def cmd_evaluate(args):
    """Top-1 accuracy of a .tflite classifier through LiteRT (with the tfq delegate when needed)."""
    if len(args) != 1:
        raise _usage_error("evaluate takes exactly one FILE.tflite")
    from tfq import report

    threads = _threads()[0]
    _positive("limit")
    blob = _read_tflite(args[0])
    _check_data_spec(FLAGS.data or "mnist")
    _, (xt, yt) = load_data(FLAGS.data or "mnist", FLAGS.limit)
    runtime = "LiteRT + tfq delegate" if report.has_tfq_ops(blob) else "LiteRT"
    acc = report.tflite_accuracy(blob, xt, yt, threads=threads, progress=report.stderr_progress("evaluate"))
    print(f"{args[0]}: accuracy {100 * acc:.2f}% on {len(xt)} images ({runtime}, {threads} thread"
          f"{'s' if threads > 1 else ''})")
    return 0


def cmd_benchmark(args):
    """Median latency of a tfq .tflite against LiteRT float and dynamic-range int8 of the baseline."""
    if len(args) != 1:
        raise _usage_error("benchmark takes exactly one FILE.tflite")
    from tfq import report

    threads = _threads()
    runs = _positive("runs")
    warmup = FLAGS.warmup
    if warmup is None or warmup < 0:
        raise _usage_error(f"--warmup must be >= 0, got {warmup}")
    blob = _read_tflite(args[0])
    models = {"tfq": blob}
    if FLAGS.baseline:
        from tfq.cli import _load_keras_model

        baseline = _existing(FLAGS.baseline, "--baseline PATH.keras", (".keras",))
        quiet_tensorflow()
        base = _load_keras_model(baseline)
        _log(f"converting {FLAGS.baseline} to LiteRT float and dynamic-range int8")
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


def cmd_report(args):
    """Accuracy against size and latency for several models: a PNG figure and a Markdown table."""
    from tfq import report

    paths = list(FLAGS.models or []) + list(args)
    if not paths:
        raise _usage_error("report needs --models FILE [FILE ...] (.keras or .tflite)")
    for p in paths:
        _existing(p, "a model file", (".keras", ".tflite"))
    out = _out_path(".png")
    threads = _threads()[0]
    runs = _positive("runs")
    _positive("limit")
    _check_data_spec(FLAGS.data or "mnist")
    for p in paths:
        if p.endswith(".tflite"):
            _read_tflite(p)
    quiet_tensorflow()
    _, (xt, yt) = load_data(FLAGS.data or "mnist", FLAGS.limit)
    measurements = []
    for i, p in enumerate(paths):
        _log(f"model {i + 1}/{len(paths)}: {p}")
        measurements.extend(report.measurements_for(p, xt, yt, threads=threads, int8_baseline=FLAGS.int8_baseline,
                                                    runs=runs, log=_log))
    report.plot(measurements, out)
    table = report.markdown_table(measurements)
    md = FLAGS.markdown or os.path.splitext(out)[0] + ".md"
    with open(md, "w") as f:
        f.write(table + "\n")
    print(table)
    print(f"wrote {out} and {md} ({len(xt)} test images, {threads} thread{'s' if threads > 1 else ''})")
    return 0


COMMANDS = {
    "compress": (cmd_compress, "compress --model M.keras --scheme ternary [--sparsity 0.9] [--data mnist] "
                               "--out M_t.keras"),
    "evaluate": (cmd_evaluate, "evaluate M_t.tflite --data mnist [--limit N]"),
    "benchmark": (cmd_benchmark, "benchmark M_t.tflite [--baseline M.keras] [--threads 1,2] [--runs 50]"),
    "report": (cmd_report, "report --models M.keras M_t.keras ... --data mnist --out report.png"),
}
