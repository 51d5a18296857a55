"""Speed of the tfq delegate against LiteRT's own paths, batch 1.

For each case (single ops and whole models) this script builds a Keras model
whose weighted layers (all but the first and last for whole models) hold
random ternary (or pow2_4bit) weights, converts it once per variant, and times
`invoke()` in ONE process, interleaving the variants (ABCABC...), after a
warm-up, reporting medians and ratios:

  fp32        LiteRT, XNNPACK float32
  dyn-int8    LiteRT dynamic-range int8 weights (TFLiteConverter DEFAULT)
  full-int8   LiteRT full integer int8 (random calibration data), float I/O
  aeq-int4    ai-edge-quantizer dynamic INT4 weights (channelwise)
  aeq-int2    ai-edge-quantizer dynamic INT2 weights (channelwise)
  tfq-portable tfq.convert(portable=True): builtin ops, INT2/INT4/INT8 weights
  tfq-t2      tfq.convert + tfq delegate, ternary weights
  tfq-p4      tfq.convert + tfq delegate, pow2_4bit weights

Ratios: time(fp32) / time(tfq) and time(best LiteRT) / time(tfq), where best
LiteRT is the fastest of fp32, dyn-int8, full-int8, aeq-int4, aeq-int2 and
tfq-portable (which runs in stock LiteRT) for that case and thread count.
Peak RSS: measured in a fresh subprocess per model (interpreter created,
tensors allocated, 3 invokes), as VmHWM minus VmRSS before loading.

With --isolated each variant is timed alone in its own process instead: no
other interpreter's thread pool is alive next to it. At 2 threads this is
what one deployed model sees; in the interleaved run XNNPACK's workers of the
variant timed just before are still spinning (they spin after each
operation), and they take the second core from the variant being timed.
The variants take turns --rounds times (3), each keeping its best median: a
burst of another tenant's work on a shared machine only adds time, and it
would otherwise land on whichever variant ran then.

Usage: python benchmarks/speed.py [--cases dense4096,conv3x3,...] [--threads 1,2]
       [--seconds 2] [--cache out/bench] [--no-rss] [--isolated [--rounds 3]]
"""

import argparse
import contextlib
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "tests"))  # helpers.native: the test library's bindings

import numpy as np  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CASES = ("dense4096", "dense1024x3", "conv3x3", "conv1x1", "mobilenetv2", "resnet50")
LITERT_VARIANTS = ("fp32", "dyn-int8", "full-int8", "aeq-int4", "aeq-int2", "tfq-portable")
TFQ_VARIANTS = ("tfq-t2", "tfq-p4")
TARGETS = {  # vs fp32, vs best LiteRT (the table)
    "dense4096": (12, 1.5), "dense1024x3": (6, 1.5), "conv3x3": (2.5, 2), "conv1x1": (2.5, 2),
    "mobilenetv2": (2, 1.5), "resnet50": (2.5, 2),
}


def build_keras(case):
    import keras

    if case == "dense4096":
        inp = keras.Input((4096,))
        out = keras.layers.Dense(4096, name="fc")(inp)
        return keras.Model(inp, out, name=case), None
    if case == "dense1024x3":
        inp = keras.Input((1024,))
        x = inp
        for i in range(3):
            x = keras.layers.Dense(1024, activation="relu", name=f"fc{i}")(x)
        return keras.Model(inp, x, name=case), None
    if case == "conv3x3":
        inp = keras.Input((56, 56, 64))
        out = keras.layers.Conv2D(64, 3, padding="same", name="conv")(inp)
        return keras.Model(inp, out, name=case), None
    if case == "conv1x1":
        inp = keras.Input((28, 28, 256))
        out = keras.layers.Conv2D(256, 1, name="conv")(inp)
        return keras.Model(inp, out, name=case), None
    if case == "mobilenetv2":
        m = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3))
        return m, ("Conv1", "predictions")
    if case == "resnet50":
        m = keras.applications.ResNet50(weights=None, input_shape=(224, 224, 3))
        return m, ("conv1_conv", "predictions")
    raise ValueError(f"unknown case {case!r}; valid: {', '.join(CASES)}")


def weighted_layers(model):
    import keras

    kinds = (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D)
    return [layer.name for layer in model.layers if isinstance(layer, kinds)]


def rescale_kernels(model, names):
    """Scales each named kernel by one constant so that its std is He's sqrt(2 / fan_in).

    One factor per layer keeps the weights in their set (scale * levels) and
    keeps activations of deep random networks finite (pow2 levels reach 64:
    unscaled, ResNet-50 overflows to inf and then runs NaN fast paths).
    """
    import keras

    for layer in model.layers:
        if layer.name not in names:
            continue
        kernel = getattr(layer, "depthwise_kernel", None) or layer.kernel
        w = np.asarray(kernel.numpy())
        fan_in = int(np.prod(w.shape[:-1])) if not isinstance(layer, keras.layers.DepthwiseConv2D) \
            else int(np.prod(w.shape[:2]))
        std = float(np.std(w))
        if std > 0:
            kernel.assign((w * (np.sqrt(2.0 / fan_in) / std)).astype(np.float32))


def float_tflite(model):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def input_shape(model):
    return (1,) + tuple(int(d) for d in model.inputs[0].shape[1:])


def litert_int8(model, full):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    if full:
        shape = input_shape(model)
        rng = np.random.default_rng(0)

        def data():
            for _ in range(4):
                yield [rng.standard_normal(shape).astype(np.float32)]

        conv.representative_dataset = data
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return conv.convert()


def aeq(float_bytes, bits):
    from ai_edge_quantizer import qtyping, quantizer

    q = quantizer.Quantizer(float_bytes)
    # Dynamic INT2/INT4 exists for these two ops only (not depthwise).
    for op in (qtyping.TFLOperationName.FULLY_CONNECTED, qtyping.TFLOperationName.CONV_2D):
        q.add_dynamic_config(regex=".*", operation_name=op, num_bits=bits)
    return bytes(q.quantize(enable_progress_report=False).quantized_model)


def make_models(case, cache):
    """Returns {variant: path} (cached under `cache`)."""
    cache = pathlib.Path(cache) / case
    cache.mkdir(parents=True, exist_ok=True)
    variants = LITERT_VARIANTS + TFQ_VARIANTS
    paths = {v: cache / f"{v}.tflite" for v in variants}
    if all(p.exists() for p in paths.values()):
        return paths
    with contextlib.redirect_stdout(sys.stderr):  # the TF converter prints to stdout
        return _make_models(case, cache, paths, variants)


def _make_models(case, cache, paths, variants):
    from tfq.converter import convert
    from tfq.testing import set_in_set_weights

    model, keep = build_keras(case)
    names = [n for n in weighted_layers(model) if not keep or n not in keep]
    t0 = time.time()
    set_in_set_weights(model, {n: "ternary" for n in names}, seed=0)
    rescale_kernels(model, names)
    fb = float_tflite(model)
    paths["fp32"].write_bytes(fb)
    paths["dyn-int8"].write_bytes(litert_int8(model, full=False))
    paths["full-int8"].write_bytes(litert_int8(model, full=True))
    for bits in (4, 2):
        try:
            paths[f"aeq-int{bits}"].write_bytes(aeq(fb, bits))
        except Exception as err:  # noqa: BLE001 - report and go on without this baseline
            print(f"[{case}] ai-edge-quantizer INT{bits} failed: {err}", file=sys.stderr)
    paths["tfq-portable"].write_bytes(bytes(convert(fb, portable=True)))
    paths["tfq-t2"].write_bytes(bytes(convert(fb)))
    set_in_set_weights(model, {n: "pow2_4bit" for n in names}, seed=1)
    rescale_kernels(model, names)
    paths["tfq-p4"].write_bytes(bytes(convert(float_tflite(model))))
    print(f"[{case}] converted {len(variants)} variants in {time.time() - t0:.0f} s", file=sys.stderr)
    return {v: p for v, p in paths.items() if p.exists()}


def time_case_subprocess(case, paths, threads, seconds, variants=None):
    """Runs time_case in a fresh process (no TensorFlow loaded next to LiteRT).

    A baseline that crashes LiteRT (seen once with an ai-edge-quantizer model)
    is reported and the case is re-run without it.
    """
    variants = [v for v in (paths if variants is None else variants) if v in paths]
    if not variants:
        return {}
    code = ("import sys, json, pathlib; sys.path.insert(0, %r); from speed import time_case; "
            "paths = {k: pathlib.Path(v) for k, v in json.loads(sys.argv[1]).items()}; "
            "print('RESULT ' + json.dumps(time_case(paths, int(sys.argv[2]), float(sys.argv[3]))))"
            % str(pathlib.Path(__file__).resolve().parent))
    arg = json.dumps({v: str(paths[v]) for v in variants})
    out = subprocess.run([sys.executable, "-c", code, arg, str(threads), str(seconds)],
                         capture_output=True, text=True, timeout=3600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    print(f"[{case}] timing process failed (exit {out.returncode}); stderr tail:\n"
          + out.stderr[-1500:], file=sys.stderr)
    suspects = [v for v in variants if v.startswith("aeq-")]
    if suspects:
        print(f"[{case}] retrying without {suspects}", file=sys.stderr)
        return time_case_subprocess(case, paths, threads, seconds,
                                    [v for v in variants if v not in suspects])
    return {}


def time_case_isolated(case, paths, threads, seconds, rounds=1):
    """Each variant alone in a fresh process; returns {variant: median seconds}.

    With rounds > 1 the variants take turns `rounds` times (a fresh process
    each time) and each keeps its best median: on a shared machine a burst
    of another tenant's work lengthens whichever variant it meets, and it
    only ever adds time.
    """
    med = {}
    for _ in range(max(1, rounds)):
        for v in paths:
            for name, t in time_case_subprocess(case, paths, threads, seconds, [v]).items():
                med[name] = min(t, med.get(name, t))
    return med


def make_interpreter(variant, path, threads):
    from ai_edge_litert.interpreter import Interpreter

    import tfq

    if variant.startswith("tfq-") and variant != "tfq-portable":
        interp = tfq.Interpreter(str(path), num_threads=threads)
    else:
        interp = Interpreter(model_path=str(path), num_threads=threads)
    interp.allocate_tensors()
    d = interp.get_input_details()[0]
    x = np.random.default_rng(1).standard_normal(d["shape"]).astype(np.float32)
    interp.set_tensor(d["index"], x)
    return interp


def time_case(paths, threads, seconds):
    """Interleaved timing; returns {variant: median seconds}."""
    interps = {}
    for v, p in paths.items():
        try:
            interps[v] = make_interpreter(v, p, threads)
        except Exception as err:  # noqa: BLE001 - a baseline that does not load is reported
            print(f"  {v}: cannot run ({err})", file=sys.stderr)
    single = {}
    for v, it in interps.items():  # warm-up and a first estimate
        for _ in range(2):
            it.invoke()
        out = it.get_tensor(it.get_output_details()[0]["index"])
        if not np.all(np.isfinite(out)):
            print(f"  WARNING: {v} gives non-finite outputs; its time is not meaningful",
                  file=sys.stderr)
        t = time.perf_counter()
        it.invoke()
        single[v] = time.perf_counter() - t
    fastest = min(single.values())
    # Variants 10x slower than the fastest get few runs (INT2/INT4 convolutions
    # fall back to slow reference kernels).
    times = {v: [] for v in interps}
    budget = time.perf_counter() + seconds
    rounds = 0
    while rounds < 5 or (time.perf_counter() < budget and rounds < 2000):
        for v, it in interps.items():
            if single[v] > 10 * fastest and len(times[v]) >= 3:
                continue
            t = time.perf_counter()
            it.invoke()
            times[v].append(time.perf_counter() - t)
        rounds += 1
    return {v: statistics.median(ts) for v, ts in times.items()}


RSS_SNIPPET = r"""
import sys, os, numpy as np
sys.path.insert(0, {root!r})
def status(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) / 1024.0
from ai_edge_litert.interpreter import Interpreter
import tfq.runtime as rt
before = status('VmRSS')
if {tfq!r}:
    it = rt.Interpreter({path!r}, num_threads=1)
else:
    it = Interpreter(model_path={path!r}, num_threads=1)
it.allocate_tensors()
d = it.get_input_details()[0]
it.set_tensor(d['index'], np.ones(d['shape'], np.float32))
for _ in range(3):
    it.invoke()
print(status('VmHWM') - before)
"""


def peak_rss(variant, path):
    code = RSS_SNIPPET.format(root=str(ROOT), path=str(path),
                              tfq=variant.startswith("tfq-") and variant != "tfq-portable")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    try:
        return float(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return float("nan")


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--seconds", type=float, default=2.0, help="timing budget per case and thread count")
    ap.add_argument("--cache", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--rounds", type=int, default=3,
                    help="--isolated: the variants take turns this many times, each keeping its best median")
    ap.add_argument("--isolated", action="store_true",
                    help="time each variant alone in its own process (not interleaved)")
    args = ap.parse_args(argv)
    from helpers import native

    cases = [c for c in args.cases.split(",") if c]
    threads = [int(t) for t in args.threads.split(",")]
    print(f"# tfq speed, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, CPU: {cpu_name()}, "
          f"{os.cpu_count()} logical CPUs, tfq kernels: {native.selected_isa()} "
          f"(ternary GEMV and block-sparse vectors: {native.sparse_path()})")
    print("# batch 1, median invoke time in microseconds, " + (
        f"each variant alone in its own process, best median of {args.rounds} rounds" if args.isolated
        else "variants interleaved in one process"))
    results = {}
    header = ("case", "thr") + LITERT_VARIANTS + TFQ_VARIANTS + (
        "t2/fp32", "t2/best", "p4/fp32", "p4/best", "target")
    rows = []
    for case in cases:
        paths = make_models(case, args.cache)
        for t in threads:
            if args.isolated:
                med = time_case_isolated(case, paths, t, args.seconds, args.rounds)
            else:
                med = time_case_subprocess(case, paths, t, args.seconds)
            if "fp32" not in med:
                print(f"| {case} | {t} | failed |", flush=True)
                continue
            lit = {v: med[v] for v in LITERT_VARIANTS if v in med}
            best_v = min(lit, key=lit.get)
            r = {"times_us": {v: med[v] * 1e6 for v in med}, "best_litert": best_v}
            cells = [case, str(t)]
            for v in LITERT_VARIANTS + TFQ_VARIANTS:
                cells.append(f"{med[v] * 1e6:.0f}" if v in med else "-")
            for v in TFQ_VARIANTS:
                if v in med:
                    r[f"{v}_vs_fp32"] = med["fp32"] / med[v]
                    r[f"{v}_vs_best"] = lit[best_v] / med[v]
                    cells += [f"{r[f'{v}_vs_fp32']:.2f}x", f"{r[f'{v}_vs_best']:.2f}x ({best_v})"]
                else:
                    cells += ["-", "-"]
            tg = TARGETS.get(case)
            cells.append(f">={tg[0]}x / >={tg[1]}x" if tg else "")
            results[f"{case}/{t}"] = r
            rows.append(cells)
            print("| " + " | ".join(cells) + " |", flush=True)
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    if not args.no_rss:
        print()
        print("# peak RSS of a fresh interpreter (MB above the Python baseline), model file size (MB)")
        print("| case | " + " | ".join(LITERT_VARIANTS + TFQ_VARIANTS) + " |")
        print("|" + "---|" * (1 + len(LITERT_VARIANTS + TFQ_VARIANTS)))
        for case in cases:
            paths = make_models(case, args.cache)
            cells = [case]
            for v in LITERT_VARIANTS + TFQ_VARIANTS:
                if v in paths:
                    rss = peak_rss(v, paths[v])
                    size = paths[v].stat().st_size / 2**20
                    cells.append(f"{rss:.1f} ({size:.1f})")
                    results.setdefault(f"{case}/rss", {})[v] = {"rss_mb": rss, "file_mb": size}
                else:
                    cells.append("-")
            print("| " + " | ".join(cells) + " |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
