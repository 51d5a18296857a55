"""`tfq.converter.inspect` and the `python -m tfq inspect/convert` command line."""

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from tfq import testing
from tfq.converter import convert, format as fmt, tflite_io
from tfq.converter.inspect import format_table, inspect_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cli(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "tfq", *args], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import tensorflow as tf
    d = tmp_path_factory.mktemp("inspect")
    model = testing.random_compressed_model("ternary", "cnn", seed=1, sparsity=0.5)
    (d / "t.tflite").write_bytes(convert(model))
    (d / "p.tflite").write_bytes(convert(model, portable=True))
    (d / "f.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    model.save(d / "m.keras")
    return d


def test_inspect_tfq_model(files):
    info = inspect_model(files / "t.tflite")
    assert [r["op"] for r in info["ops"]] == ["TFQ_CONV_2D", "TFQ_DEPTHWISE_CONV_2D", "TFQ_CONV_2D",
                                             "TFQ_FULLY_CONNECTED"]
    assert all(r["kind"] == "tfq" and r["set"] == "ternary" and r["bits"] == 2 for r in info["ops"])
    fc = info["ops"][-1]
    assert fc["params"] == 5 * 5 * 12 * 10
    # k = 300: two whole blocks and two mini-blocks (format version 2, layout dense)
    assert fc["bytes"] == fmt.compact_size(10, 300, 2) + 4 * 10 and fc["layout"] == "dense v2"
    assert 0.35 < fc["sparsity"] < 0.65
    assert info["compression"] == pytest.approx(info["float_weight_bytes"] / info["weight_bytes"])
    table = format_table(info)
    assert "TFQ_FULLY_CONNECTED" in table and "compression" in table


def test_inspect_foreign_float_and_portable_models(files):
    f = inspect_model(files / "f.tflite")
    assert [r["kind"] for r in f["ops"]] == ["builtin"] * 4
    # the float kernels lie in the ternary set: inspection detects it from the values
    assert {r["set"] for r in f["ops"]} == {"ternary"} and {r["bits"] for r in f["ops"]} == {32}
    assert f["compression"] == pytest.approx(1.0)
    p = inspect_model(files / "p.tflite")
    assert [(r["op"], r["type"], r["set"]) for r in p["ops"]] == [
        ("CONV_2D", "INT8", "ternary"), ("DEPTHWISE_CONV_2D", "FLOAT32", "ternary"),
        ("CONV_2D", "INT8", "ternary"), ("FULLY_CONNECTED", "INT2", "ternary")] or \
        p["ops"][-1]["type"] == "INT2"


def test_cli_inspect_json_and_table(files):
    out = _cli("inspect", str(files / "t.tflite"), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["tfq_ops"] == 4 and info["file_bytes"] == (files / "t.tflite").stat().st_size
    out = _cli("inspect", str(files / "p.tflite"))
    assert out.returncode == 0 and "INT2" not in out.stderr and "FULLY_CONNECTED" in out.stdout


def test_cli_convert_keras_file(files, tmp_path):
    out = _cli("convert", "--model", str(files / "m.keras"), "--out", str(tmp_path / "o.tflite"))
    assert out.returncode == 0, out.stderr
    assert "TFQ_CONV_2D" in out.stdout
    strip = lambda info: [{k: v for k, v in r.items() if k != "name"} for r in info["ops"]]
    assert strip(inspect_model(tmp_path / "o.tflite")) == strip(inspect_model(files / "t.tflite"))
    out = _cli("convert", "--model", str(files / "m.keras"), "--out", str(tmp_path / "p.tflite"),
               "--portable")
    assert out.returncode == 0 and "TFQ_" not in out.stdout


def test_cli_bad_input_has_clear_errors(files, tmp_path):
    data = (files / "t.tflite").read_bytes()
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.tflite").write_text("not a model")
    for name, message in (("trunc.tflite", "truncated or corrupted"),
                          ("text.tflite", "not a TFLite model")):
        out = _cli("inspect", str(tmp_path / name))
        assert out.returncode == 1
        assert f"{name}: {message}" in out.stderr and "Traceback" not in out.stderr
    # a missing input path is a usage error, as for every other command (docs/cli.md)
    out = _cli("inspect", str(tmp_path / "missing.tflite"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip() == f"tfq inspect: {tmp_path / 'missing.tflite'}: no such file"
    fb, _, _ = tflite_io.load_model(data)
    op = fb.subgraphs[0].operators[0]
    opts = fmt.decode_options(bytes(op.customOptions))
    opts["version"] = 9
    op.customOptions = np.frombuffer(fmt.encode_options(opts), np.uint8)
    (tmp_path / "v9.tflite").write_bytes(tflite_io.save_model(fb))
    out = _cli("inspect", str(tmp_path / "v9.tflite"))
    assert out.returncode == 1 and "version 9 is not supported (supported: 1, 2)" in out.stderr
    assert "Traceback" not in out.stderr
    out = _cli("convert", "--model", str(tmp_path / "nope.keras"), "--out", str(tmp_path / "x"))
    assert out.returncode == 2 and "no such file" in out.stderr
    out = _cli("frobnicate")
    assert out.returncode == 2 and "unknown command" in out.stderr


def _float_fc_model(path, rows, k):
    """A one-op float FULLY_CONNECTED .tflite with a rows x k weight tensor, written directly."""
    from ai_edge_litert import schema_py_generated as schema

    from tfq.converter import tflite_io

    m = schema.ModelT()
    m.version = 3
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.FULLY_CONNECTED
    m.operatorCodes = [code]
    empty, weights = schema.BufferT(), schema.BufferT()
    weights.data = np.random.default_rng(0).standard_normal((rows, k)).astype(np.float32).view(np.uint8).reshape(-1)
    m.buffers = [empty, weights]
    tensors = []
    for name, shape, buf in (("x", [1, k], 0), ("w", [rows, k], 1), ("y", [1, rows], 0)):
        t = schema.TensorT()
        t.name, t.shape, t.buffer, t.type = name, shape, buf, schema.TensorType.FLOAT32
        tensors.append(t)
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, -1], [2]
    sg = schema.SubGraphT()
    sg.tensors, sg.operators, sg.inputs, sg.outputs = tensors, [op], [0], [2]
    m.subgraphs = [sg]
    path.write_bytes(tflite_io.save_model(m))


def test_inspect_memory_stays_near_the_file_size(tmp_path):
    """`tfq inspect` maps the file and checks sets in chunks: a 64 MB float model peaks
    well below twice its size (reading it, a copy for parsing and float64 detection
    arrays once took 460 MB for a 200 MB file)."""
    import subprocess
    import sys

    path = tmp_path / "big_float.tflite"
    _float_fc_model(path, 4096, 4096)
    size_mb = path.stat().st_size / 2**20
    probe = ("import resource, sys\n"
             "from tfq.converter import inspect\n"
             "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
             "info = inspect.inspect_model(sys.argv[1])\n"
             "assert info['ops'][0]['set'] == 'float' and info['ops'][0]['params'] == 4096 * 4096\n"
             "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)\n")
    out = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mb = float(out.stdout.strip().splitlines()[-1])
    assert peak_mb < 1.1 * size_mb + 48, f"inspect of a {size_mb:.0f} MB file peaked {peak_mb:.0f} MB above start"
