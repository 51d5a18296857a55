"""Measuring models through LiteRT and reporting them: a figure and a Markdown table.

`measure(...)` takes a Keras model file or a .tflite file and returns its size,
accuracy and latency as LiteRT runs it (with the tfq delegate when the model
has tfq custom ops); `plot(...)` draws accuracy against size and against
latency; `markdown_table(...)` prints the same numbers. `tfq report` and
`tfq benchmark` are thin layers over these.
"""

import contextlib
import dataclasses
import io
import os
import statistics
import sys
import time
import warnings

import numpy as np

from tfq import schemes

_TFQ_OPS = (b"TFQ_FULLY_CONNECTED", b"TFQ_CONV_2D", b"TFQ_DEPTHWISE_CONV_2D")


@dataclasses.dataclass
class Measurement:
    """One model as LiteRT runs it."""

    label: str
    kind: str  # "float", "int8 (LiteRT dynamic range)", "tfq ternary", ...
    size_bytes: int  # .tflite file size
    accuracy: float = None
    latency_ms: float = None  # median of single-image invokes
    threads: int = 1
    runtime: str = "LiteRT"
    source: str = ""


# --------------------------------------------------------------------------
# Conversion helpers
# --------------------------------------------------------------------------


def keras_to_tflite(model, int8=False):
    """Stock TFLite conversion of a Keras model: float, or dynamic-range int8 weights (batch 1 with recurrent layers)."""
    import tensorflow as tf

    from tfq.converter.rewrite import with_static_batch

    converter = tf.lite.TFLiteConverter.from_keras_model(with_static_batch(model))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with contextlib.redirect_stdout(io.StringIO()):  # the SavedModel export prints its signatures
        return converter.convert()


def has_tfq_ops(tflite_bytes):
    """True when the flatbuffer uses tfq custom ops (and so needs the delegate)."""
    data = bytes(tflite_bytes)
    return any(code in data for code in _TFQ_OPS)


def tflite_scheme(tflite_bytes):
    """The tfq scheme(s) used by a .tflite, e.g. "ternary" or "ternary+pow2_4bit"; "float" when none."""
    data = bytes(tflite_bytes)
    if not has_tfq_ops(data):
        return "float"
    found = [s for s in schemes.NAMES if s.encode() in data]
    return "+".join(found) or "tfq"


def make_interpreter(tflite_bytes, threads=1, use_delegate=None, delegate_options=None):
    """A LiteRT interpreter for the model, with the tfq delegate when it has tfq ops.

    Args:
        tflite_bytes: the flatbuffer.
        threads: interpreter threads.
        use_delegate: True/False to force, None to decide from the ops.
        delegate_options: extra tfq delegate options (`tfq.runtime.load_delegate`).

    Raises:
        RuntimeError: the model needs the tfq delegate and it is not available.
    """
    if use_delegate is None:
        use_delegate = has_tfq_ops(tflite_bytes)
    if use_delegate:
        try:
            import tfq.runtime as runtime
        except ImportError as e:
            raise RuntimeError(f"the model uses tfq custom ops but the tfq runtime is unavailable: {e}") from e
        return runtime.Interpreter(model_content=bytes(tflite_bytes), num_threads=threads,
                                   delegate_options=delegate_options)
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=bytes(tflite_bytes), num_threads=threads)


def _prepare(interp, batch):
    inp = interp.get_input_details()[0]
    shape = list(inp["shape"])
    if shape[0] != batch:
        interp.resize_tensor_input(inp["index"], [batch] + shape[1:])
    interp.allocate_tensors()
    return interp.get_input_details()[0], interp.get_output_details()[0]


def tflite_accuracy(tflite_bytes, x, y, threads=1, batch=64, progress=None):
    """Top-1 accuracy of a .tflite classifier through LiteRT (and the tfq delegate when needed)."""
    interp = make_interpreter(tflite_bytes, threads)
    try:
        inp, out = _prepare(interp, batch)
    except (RuntimeError, ValueError):
        # Some graphs have a fixed batch; fall back to one image at a time.
        interp = make_interpreter(tflite_bytes, threads)
        batch = 1
        inp, out = _prepare(interp, batch)
    correct = 0
    n = len(x) - len(x) % batch if batch > 1 else len(x)
    steps = max(n // batch, 1)
    for step, i in enumerate(range(0, n, batch)):
        interp.set_tensor(inp["index"], np.asarray(x[i : i + batch], dtype=inp["dtype"]))
        interp.invoke()
        logits = interp.get_tensor(out["index"])
        correct += int((logits.reshape(batch, -1).argmax(-1) == np.asarray(y[i : i + batch]).reshape(-1)).sum())
        if progress:
            progress(step + 1, steps)
    if n < len(x):
        # The tail that does not fill a batch, one image at a time.
        interp = make_interpreter(tflite_bytes, threads)
        inp, out = _prepare(interp, 1)
        for j in range(n, len(x)):
            interp.set_tensor(inp["index"], np.asarray(x[j : j + 1], dtype=inp["dtype"]))
            interp.invoke()
            correct += int(interp.get_tensor(out["index"]).reshape(-1).argmax() == int(np.asarray(y[j])))
    return correct / max(len(x), 1)


def tflite_latency(tflite_bytes, sample, threads=1, runs=50, warmup=5):
    """Median milliseconds of one `invoke` on a single input (after warm-up)."""
    interp = make_interpreter(tflite_bytes, threads)
    inp, _ = _prepare(interp, 1)
    interp.set_tensor(inp["index"], np.asarray(sample[:1], dtype=inp["dtype"]))
    for _ in range(warmup):
        interp.invoke()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        interp.invoke()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def interleaved_latency(models, sample, threads=1, runs=50, warmup=5, progress=None, delegate_options=None):
    """Median ms per model, measured round-robin so that machine noise hits every model alike.

    Args:
        models: {label: tflite bytes}.
        sample: an input batch; its first element is used.
        delegate_options: extra tfq delegate options for the models with tfq ops.

    Returns:
        {label: median milliseconds}.
    """
    interps = {}
    for label, blob in models.items():
        interp = make_interpreter(blob, threads, delegate_options=delegate_options)
        inp, _ = _prepare(interp, 1)
        interp.set_tensor(inp["index"], np.asarray(sample[:1], dtype=inp["dtype"]))
        for _ in range(warmup):
            interp.invoke()
        interps[label] = interp
    times = {label: [] for label in models}
    for r in range(runs):
        for label, interp in interps.items():
            t0 = time.perf_counter()
            interp.invoke()
            times[label].append((time.perf_counter() - t0) * 1e3)
        if progress:
            progress(r + 1, runs)
    return {label: statistics.median(t) for label, t in times.items()}


# --------------------------------------------------------------------------
# Measuring model files
# --------------------------------------------------------------------------


def load_keras(path):
    """Loads a .keras model file, with tfq's custom objects registered."""
    import keras

    # Registers tfq's serializable classes (quantizers, quantized layers, the
    # compression record) before deserialization.
    import tfq.layers  # noqa: F401
    import tfq.quantizers  # noqa: F401
    import tfq.record  # noqa: F401

    return keras.saving.load_model(path, compile=False)


def measurements_for(path, x, y, threads=1, int8_baseline=True, runs=50, log=None):
    """Measures a model file (.keras or .tflite) through LiteRT.

    A .keras model is converted with `tfq.convert` (packed tfq ops when its
    weights lie in a tfq set, plain float otherwise); a float .keras model
    also yields a LiteRT dynamic-range int8 entry when `int8_baseline` is set.
    """
    log = log or (lambda msg: None)
    stem = os.path.splitext(os.path.basename(path))[0]
    blobs = []
    if path.endswith(".tflite"):
        with open(path, "rb") as f:
            blob = f.read()
        blobs.append((stem, blob))
    else:
        import tfq

        model = load_keras(path)
        log(f"converting {path}")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            blob = bytes(tfq.convert(model))
        if has_tfq_ops(blob):
            for w in caught:  # partly packed: what stayed float may be a surprise
                warnings.warn(w.message, w.category, stacklevel=2)
        else:  # a float model passed on purpose (the baseline): its conversion notes are noise
            log(f"{path}: float model (no weight in a tfq set), measured as LiteRT float")
        blobs.append((stem, blob))
        if int8_baseline and not has_tfq_ops(blob):
            blobs.append((f"{stem} int8", keras_to_tflite(model, int8=True)))
    out = []
    for label, blob in blobs:
        scheme = tflite_scheme(blob)
        kind = scheme if scheme != "float" else ("int8 (LiteRT dynamic range)" if label.endswith(" int8") else "float")
        if kind not in ("float", "int8 (LiteRT dynamic range)"):
            kind = f"tfq {kind}"
        log(f"evaluating {label} ({kind})")
        acc = tflite_accuracy(blob, x, y, threads=threads)
        lat = tflite_latency(blob, x, threads=threads, runs=runs)
        out.append(
            Measurement(
                label=label, kind=kind, size_bytes=len(blob), accuracy=acc, latency_ms=lat, threads=threads,
                runtime="LiteRT + tfq delegate" if has_tfq_ops(blob) else "LiteRT", source=path,
            )
        )
    return out


# --------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------


def markdown_table(measurements):
    """The measurements as a Markdown table (size ratio against the first float model, else the largest)."""
    if not measurements:
        return ""
    floats = [m.size_bytes for m in measurements if m.kind == "float"]
    ref = floats[0] if floats else max(m.size_bytes for m in measurements)
    lines = [
        "| model | kind | size (KiB) | smaller than float by | accuracy | latency (ms, median) | threads | runtime |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for m in measurements:
        acc = "-" if m.accuracy is None else f"{100 * m.accuracy:.2f}%"
        lat = "-" if m.latency_ms is None else f"{m.latency_ms:.3f}"
        lines.append(
            f"| {m.label} | {m.kind} | {m.size_bytes / 1024:.1f} | {ref / max(m.size_bytes, 1):.1f}x | {acc} "
            f"| {lat} | {m.threads} | {m.runtime} |"
        )
    return "\n".join(lines)


def plot(measurements, out_path, title="tfq: accuracy against size and latency"):
    """Writes a PNG: accuracy against .tflite size (left) and against latency (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not measurements:
        raise ValueError("nothing to plot: no measurements.")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=110)
    kinds = sorted({m.kind for m in measurements})
    colors = {k: plt.cm.tab10(i % 10) for i, k in enumerate(kinds)}
    for ax, attr, xlabel in (
        (axes[0], "size_bytes", "model size (KiB, .tflite)"),
        (axes[1], "latency_ms", "latency (ms, median, batch 1)"),
    ):
        for m in measurements:
            xv = getattr(m, attr)
            if xv is None or m.accuracy is None:
                continue
            xv = xv / 1024 if attr == "size_bytes" else xv
            ax.scatter([xv], [100 * m.accuracy], color=colors[m.kind], s=60, label=m.kind, zorder=3)
            ax.annotate(m.label, (xv, 100 * m.accuracy), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xscale("log")
        ax.margins(x=0.2, y=0.1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    # Below the plots, so that it never hides a point.
    fig.legend(uniq.values(), uniq.keys(), fontsize=8, loc="lower center", ncol=max(1, len(uniq)), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def machine_summary():
    """One line naming the CPU, its SIMD extensions that matter here and the core count."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown CPU":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith(("flags", "Features")) and not flags:
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = [name for name in ("avx2", "avx512f", "avx512_vnni", "asimd", "asimddp") if name in flags]
    return f"{model}; {', '.join(isa) or 'no AVX2/NEON flags'}; {os.cpu_count()} cores"


def stderr_progress(label):
    """A callback (done, total) that draws a one-line progress bar on stderr."""
    tty = sys.stderr.isatty()
    t0 = time.perf_counter()

    def update(done, total):
        if not tty and done not in (total,) and done % max(total // 4, 1):
            return
        width = 24
        filled = int(width * done / max(total, 1))
        line = f"{label} [{'=' * filled}{'.' * (width - filled)}] {done}/{total} {time.perf_counter() - t0:5.1f}s"
        sys.stderr.write(("\r" + line) if tty else (line + "\n"))
        if tty and done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return update
