"""What lowering TRANSPOSE_CONV to zero insertion + TFQ_CONV_2D costs (docs/converter.md).

One Keras Conv2DTranspose (28x28x64 -> 56x56x32, 3x3, stride 2, SAME),
ternary weights, as: the float .tflite (stock TRANSPOSE_CONV, LiteRT with
XNNPACK); tfq's packed one (RESHAPE/PAD/RESHAPE/PAD + TFQ_CONV_2D,
tfq.Interpreter with the delegate); tfq's portable one (the same lowering
with an INT8 dynamic-range CONV_2D, or with a static batch the INT8
TRANSPOSE_CONV of the last column, stock LiteRT); and, for comparison, the
float file with exact INT8 per-channel weights left on TRANSPOSE_CONV (stock
LiteRT's hybrid kernel), which the portable path uses only with a static batch.
Each with a dynamic batch (the TFLite converter then computes output_shape at run time, which XNNPACK
does not take, so LiteRT runs its own kernel) and a static batch of 1
(XNNPACK runs the float op). The lowered convolution does 4x the
multiply-adds of the transpose convolution.

1 thread, median of interleaved invocations (ABAB...), microseconds, the
ratio to float in the same run, and the file size.
"""

import os
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np

ROUNDS, WARMUP = 40, 5


def _int8_transpose_conv(float_bytes):
    """The float file with exact INT8 per-channel TRANSPOSE_CONV weights (hybrid op, not lowered)."""
    from ai_edge_litert import schema_py_generated as schema
    from tfq.converter import sets, tflite_io
    fb, data, _ = tflite_io.load_model(float_bytes)
    sg = fb.subgraphs[0]
    op = next(o for o in sg.operators if tflite_io.op_name(fb, o) == "TRANSPOSE_CONV")
    t = sg.tensors[int(op.inputs[1])]
    w = tflite_io.constant_array(fb, data, t)
    det, _ = sets.detect(w.reshape(w.shape[0], -1))
    q = schema.QuantizationParametersT()
    q.scale = np.broadcast_to(det.scales, (w.shape[0],)).astype(np.float32).copy()
    q.zeroPoint = np.zeros(w.shape[0], np.int64)
    q.quantizedDimension = 0
    t.type, t.quantization = schema.TensorType.INT8, q
    fb.buffers[t.buffer].data = det.levels.reshape(w.shape).astype(np.int8).view(np.uint8).reshape(-1)
    return tflite_io.save_model(fb)


def _models(batch_size):
    import keras
    from tfq import testing
    from tfq.converter import convert, rewrite
    inputs = keras.Input((28, 28, 64), batch_size=batch_size)
    model = keras.Model(inputs, keras.layers.Conv2DTranspose(32, 3, strides=2, padding="same",
                                                             name="tconv")(inputs))
    testing.set_in_set_weights(model, "ternary", seed=1)
    float_bytes = rewrite._keras_to_tflite(model)
    return {"float": float_bytes, "packed": convert(model),
            "portable": convert(model, portable=True), "int8": _int8_transpose_conv(float_bytes)}


def _time(interpreters, x):
    times = {name: [] for name in interpreters}
    for it in interpreters.values():
        it.set_tensor(it.get_input_details()[0]["index"], x)
    for _ in range(ROUNDS):
        for name, it in interpreters.items():
            start = time.perf_counter()
            it.invoke()
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t[WARMUP:])) * 1e6 for name, t in times.items()}


def _cpu():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())
    isa = [f for f in ("avx512_vnni", "avx512f", "avx2", "asimddp") if f" {f}" in info]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"


def main():
    from ai_edge_litert.interpreter import Interpreter as LiteRtInterpreter
    from tfq.runtime import Interpreter
    x = np.random.default_rng(0).normal(size=(1, 28, 28, 64)).astype(np.float32)
    print(f"# {_cpu()}, 1 thread, "
          f"median of {ROUNDS - WARMUP} interleaved runs, microseconds (ratio to float)")
    print("| batch | float TRANSPOSE_CONV | packed: lowered TFQ_CONV_2D (delegate) | "
          "portable (dynamic: lowered INT8 CONV_2D; static: INT8 TRANSPOSE_CONV) | "
          "INT8 TRANSPOSE_CONV (hybrid, not lowered) |")
    print("|---|---|---|---|---|")
    for label, batch in (("dynamic", None), ("static 1", 1)):
        files = _models(batch)
        its = {}
        for name, data in files.items():
            cls = Interpreter if name == "packed" else LiteRtInterpreter
            its[name] = cls(model_content=bytes(data), num_threads=1)
            its[name].allocate_tensors()
        t = _time(its, x)
        cells = [f"{t[k]:.0f} ({t[k] / t['float']:.2f}), {len(files[k])} B"
                 for k in ("float", "packed", "portable", "int8")]
        print(f"| {label} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
