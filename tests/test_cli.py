"""The `tfq` command line as a user runs it: subprocesses, real files, MNIST from TFQ_DATA_DIR."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


COMMANDS = ("compress", "convert", "inspect", "evaluate", "benchmark", "report")


def tfq_cli(*args, cwd, timeout=600, pythonpath=()):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*pythonpath, ROOT, env.get("PYTHONPATH", "")])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    proc = subprocess.run(
        [sys.executable, "-m", "tfq", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, mnist_small):
    """A trained float LeNet-5 (M.keras), a small .npz dataset and garbage files."""
    import keras

    import tfq

    d = tmp_path_factory.mktemp("cli")
    (x, y), (xt, yt) = mnist_small
    keras.utils.set_random_seed(0)
    model = tfq.models.lenet5()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    model.save(str(d / "M.keras"))
    np.savez(d / "small.npz", x_train=x, y_train=y, x_test=xt, y_test=yt)
    (d / "garbage.keras").write_bytes(b"this is not a zip archive")
    (d / "garbage.tflite").write_bytes(b"\x00" * 64)
    from tfq import report

    blob = report.keras_to_tflite(model)
    (d / "truncated.tflite").write_bytes(blob[: len(blob) // 2])
    # A `tensorflow` that fails on import: commands that must fail before loading TensorFlow use it.
    (d / "no_tf" / "tensorflow").mkdir(parents=True)
    (d / "no_tf" / "tensorflow" / "__init__.py").write_text("raise ImportError('TensorFlow was imported')\n")
    return d


def _quiet(stderr):
    """No TensorFlow start-up chatter and no Python warning (with its source line) on stderr."""
    for line in stderr.splitlines():
        assert not line.startswith(("E0000", "I0000", "W0000", "WARNING: All log messages")), stderr
        assert "Warning" not in line, stderr


def _one_line_error(stderr, *needles):
    assert "Traceback" not in stderr, stderr
    lines = [l for l in stderr.splitlines() if l.startswith("tfq")]
    assert len(lines) == 1, stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_pipeline_compress_convert_evaluate_benchmark_report(workdir):
    from PIL import Image

    rc, out, err = tfq_cli("compress", "--model", "M.keras", "--scheme", "pow2_4bit", "--out", "M_p4.keras",
                           "--eval_data", "small.npz", cwd=workdir)
    assert rc == 0, err
    assert (workdir / "M_p4.keras").exists()
    assert "| conv2 | Conv2D | pow2_4bit |" in out and "| fc1 | Dense | pow2_4bit |" in out, out
    assert "data-free [" in err  # the per-layer progress bar
    _quiet(err)

    rc, out, err = tfq_cli("convert", "--model", "M_p4.keras", "--out", "M_p4.tflite", cwd=workdir)
    assert rc == 0, err
    # One summary line; the first and last layers are float by design, not "kept in float" notes.
    assert "converted: 2 of 4 weighted ops packed; pow2_4bit: conv2, fc1; float: conv1, fc2" in out, out
    assert "kept in float" not in err
    _quiet(err)
    rc, out, err = tfq_cli("inspect", "M_p4.tflite", cwd=workdir)
    assert rc == 0 and "TFQ_" in out, out + err
    assert "tfq.Interpreter" in out and "load_delegate(tfq.delegate_path())" in out, out

    rc, out, err = tfq_cli("evaluate", "M_p4.tflite", "--data", "mnist", "--limit", "500", cwd=workdir)
    assert rc == 0, err
    acc = float(re.search(r"accuracy ([\d.]+)%", out).group(1))
    assert acc > 80, out  # LeNet-5 after three short epochs, pow2_4bit data-free
    assert "tfq delegate" in out

    rc, out, err = tfq_cli("benchmark", "M_p4.tflite", "--baseline", "M.keras", "--threads", "1,2", "--runs", "5",
                           cwd=workdir)
    assert rc == 0, err
    for label in ("LiteRT float", "LiteRT int8", "tfq"):
        for t in (1, 2):
            assert re.search(rf"\| {label} \| {t} \| [\d.]+ \|", out), out

    rc, out, err = tfq_cli("report", "--models", "M.keras,M_p4.keras", "M_p4.tflite", "--data", "mnist",
                           "--limit", "300", "--runs", "5", "--out", "report.png", cwd=workdir)
    assert rc == 0, err
    _quiet(err)  # the float baseline is converted on purpose: no warning about it
    with Image.open(workdir / "report.png") as img:
        img.verify()
    with Image.open(workdir / "report.png") as img:
        assert img.format == "PNG" and img.size[0] >= 800 and img.size[1] >= 350, img.size
        colors = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(colors[:: 97], axis=0)) > 20  # a drawn figure, not a blank canvas
    table = (workdir / "report.md").read_text()
    for row in ("| M | float |", "| M int8 | int8", "| M_p4 | tfq pow2_4bit |"):
        assert row in table, table
    assert table.count("\n") == 2 + 4  # header, separator, float, int8, .keras tfq, .tflite tfq


def test_compress_with_data_and_sparsity(workdir):
    rc, out, err = tfq_cli("compress", "--model", "M.keras", "--scheme", "ternary", "--sparsity", "0.5",
                           "--data", "small.npz", "--epochs", "2", "--out", "M_t.keras", cwd=workdir)
    assert rc == 0, err
    assert "admm + pruning" in out and "| fc1 | Dense | ternary |" in out, out
    sparsity = float(re.search(r"\| fc1 \| Dense \| ternary \| [\d,]+ \| 2 \| ([\d.]+)% \|", out).group(1))
    assert sparsity >= 50.0
    # Training state (ADMM, pruning, optimizer) is stripped: no larger than the float parent.
    assert (workdir / "M_t.keras").stat().st_size <= (workdir / "M.keras").stat().st_size
    _quiet(err)


def test_distribution_choices_are_the_pruning_ones():
    import argparse

    from tfq import pruning
    from tfq.cli import compress

    p = argparse.ArgumentParser()
    compress.add_flags(p)
    action = next(a for a in p._actions if a.dest == "distribution")
    assert tuple(action.choices) == pruning.DISTRIBUTIONS


def test_block_sparse_compress_convert_inspect(workdir):
    rc, out, err = tfq_cli("compress", "--model", "M.keras", "--sparsity", "0.9", "--block", "4x4",
                           "--distribution", "erk", "--noskip_first_last", "--out", "M_b.keras", cwd=workdir)
    assert rc == 0, err
    rc, out, err = tfq_cli("convert", "--model", "M_b.keras", "--sparse", "auto", "--out", "M_b.tflite", cwd=workdir)
    assert rc == 0, err
    rc, out, err = tfq_cli("inspect", "M_b.tflite", cwd=workdir)
    assert rc == 0, err
    assert "block 4x4" in out and "layout" in out.splitlines()[1], out
    dense = tfq_cli("convert", "--model", "M_b.keras", "--out", "M_d.tflite", cwd=workdir)
    assert dense[0] == 0, dense[2]
    assert (workdir / "M_b.tflite").stat().st_size < 0.5 * (workdir / "M_d.tflite").stat().st_size


def test_help_lists_commands_and_exits_0(workdir):
    for flag in ("--help", "-h", "help"):
        rc, out, err = tfq_cli(flag, cwd=workdir)
        assert rc == 0 and err == "", (rc, err)
        for name in COMMANDS:
            assert re.search(rf"^  {name} +\S", out, re.M), out  # one line each
        assert "absl" not in out and "--helpfull" not in out
    rc, out, err = tfq_cli(cwd=workdir)  # no command: the same text, as an error
    assert rc == 2 and "commands:" in err


@pytest.mark.parametrize("name", COMMANDS)
def test_command_help_shows_flags_defaults_and_example(workdir, name):
    for flag in ("--help", "-h"):
        rc, out, err = tfq_cli(name, flag, cwd=workdir, pythonpath=[str(workdir / "no_tf")])
        assert rc == 0 and err == "", (rc, err)
        assert out.startswith(f"usage: tfq {name}") and f"example:\n  tfq {name} " in out, out
        assert "--verbose" in out and "absl" not in out and "--logtostderr" not in out, out
    defaults = {"compress": "(default: ternary)", "benchmark": "(default: 50)", "evaluate": "(default: mnist)",
                "report": "(default: 50)", "convert": "--allow_float", "inspect": "--json"}
    assert defaults[name] in " ".join(out.split()), out


def test_convert_refuses_a_float_model_unless_allow_float(workdir):
    rc, out, err = tfq_cli("convert", "--model", "M.keras", "--out", "F.tflite", cwd=workdir)
    assert rc == 1, (rc, out, err)
    _one_line_error(err, "M.keras", "no weight lies in a tfq set", "tfq compress", "--allow_float")
    assert not (workdir / "F.tflite").exists()
    rc, out, err = tfq_cli("convert", "--model", "M.keras", "--out", "F.tflite", "--allow_float", cwd=workdir)
    assert rc == 0, err
    assert "converted: 0 of 4 weighted ops packed" in out and "plain float model" in out, out
    _quiet(err)
    assert "kept in float" not in err


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (("compress", "--model", "garbage.keras", "--out", "x.keras"), 1, ("garbage.keras", "not a Keras model")),
        (("convert", "--model", "garbage.keras", "--out", "x.tflite"), 1, ("garbage.keras", "not a Keras model")),
        (("convert", "--model", "M.keras", "--out", "x.onnx"), 2, ("--out must end with .tflite", "x.onnx")),
        (("evaluate", "truncated.tflite", "--data", "small.npz"), 1, ("truncated.tflite",)),
        (("benchmark", "truncated.tflite"), 1, ("truncated.tflite",)),
        (("benchmark", "garbage.tflite", "--baseline", "M.keras"), 1, ("garbage.tflite", "not a TFLite")),
        (("report", "--models", "M.keras", "garbage.keras", "--out", "r.png"), 1, ("garbage.keras",)),
        (("compress", "--model", "M.keras", "--out", "x.keras", "--scheme", "quad"), 2, ("unknown scheme",)),
        (("compress", "--model", "M.keras", "--out", "x.keras", "--sparsity", "0.5", "--block", "3x3"), 2,
         ("--block", "3x3", "32-weight groups")),
        (("compress", "--model", "M.keras", "--out", "x.keras", "--block", "auto"), 2, ("--block needs --sparsity",)),
    ],
    ids=["compress-corrupt", "convert-corrupt", "convert-suffix", "evaluate-truncated", "benchmark-truncated",
         "benchmark-garbage", "report-corrupt", "compress-scheme", "compress-block-shape", "compress-block-alone"],
)
def test_bad_input_fails_before_tensorflow_loads(workdir, args, code, needles):
    rc, out, err = tfq_cli(*args, cwd=workdir, pythonpath=[str(workdir / "no_tf")])
    assert rc == code, (rc, out, err)
    _one_line_error(err, *needles)


@pytest.mark.parametrize(
    "args, code, needles",
    [
        (("frobnicate",), 2, ("unknown command",)),
        (("compress", "--model", "M.keras", "--out", "x.keras", "--no_such_flag"), 2, ("no_such_flag",)),
        (("compress", "--model", "missing.keras", "--out", "x.keras"), 2, ("missing.keras", "no such file")),
        (("compress", "--model", "M.keras", "--scheme", "quad", "--out", "x.keras"), 2, ("unknown scheme", "quad")),
        (("compress", "--model", "M.keras", "--sparsity", "1.5", "--out", "x.keras"), 2, ("--sparsity",)),
        (("compress", "--model", "M.keras", "--out", "x.h5"), 2, ("--out",)),
        (("convert", "--model", "M.keras", "--out", "x.onnx"), 2, ("--out", ".tflite")),
        (("report", "--models", "M.keras", "--out", "r.jpg"), 2, ("--out", ".png")),
        (("compress", "--model", "M.keras"), 2, ("required", "--out")),
        (("compress", "--model", "garbage.keras", "--out", "x.keras"), 1, ("garbage.keras", "not a Keras model")),
        (("compress", "--model", "M.keras", "--layers", "pool1", "--out", "x.keras"), 1, ("pool1", "not supported")),
        (("evaluate", "garbage.tflite", "--data", "small.npz"), 1, ("garbage.tflite", "not a TFLite")),
        (("evaluate", "missing.tflite"), 2, ("missing.tflite", "no such file")),
        (("evaluate", "M.keras"), 2, (".tflite",)),
        (("benchmark", "garbage.tflite", "--threads", "0"), 2, ("--threads",)),
        (("report", "--data", "mnist", "--out", "r.png"), 2, ("--models",)),
        (("evaluate", "garbage.tflite", "--data", "nowhere"), 1, ("garbage.tflite",)),
    ],
    ids=[
        "unknown-command", "unknown-flag", "missing-model", "unknown-scheme", "bad-sparsity", "bad-out",
        "convert-bad-out", "report-bad-out", "missing-out",
        "corrupted-model", "unsupported-layer", "corrupted-tflite", "missing-tflite", "wrong-file-type",
        "bad-threads", "report-without-models", "corrupted-before-data",
    ],
)
def test_errors_are_one_line_with_exit_codes(workdir, args, code, needles):
    rc, out, err = tfq_cli(*args, cwd=workdir)
    assert rc == code, (rc, out, err)
    if args[0] == "frobnicate":
        assert "Traceback" not in err and "unknown command" in err
    else:
        _one_line_error(err, *needles)


def test_verbose_shows_the_traceback(workdir):
    rc, out, err = tfq_cli("compress", "--model", "garbage.keras", "--out", "x.keras", "--verbose", cwd=workdir)
    assert rc == 1
    assert "Traceback" in err and "not a Keras model" in err.splitlines()[-1]


def test_cli_imports_go_one_way_and_every_command_module_is_registered():
    """tfq/cli/: command modules import only `common` of tfq.cli, `common` none; each is in COMMANDS."""
    import ast
    import pathlib

    import tfq.cli

    package = pathlib.Path(tfq.cli.__file__).parent
    commands = sorted(p.stem for p in package.glob("*.py") if p.stem not in ("__init__", "__main__", "common"))
    assert commands == sorted(tfq.cli.COMMANDS)
    for name in commands + ["common"]:
        tree = ast.parse((package / f"{name}.py").read_text())
        used = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        used |= {f"tfq.cli.{a.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                 and node.module == "tfq.cli" for a in node.names}
        used |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        from_cli = {m for m in used if m and m.startswith("tfq.cli")}
        allowed = set() if name == "common" else {"tfq.cli", "tfq.cli.common"}
        assert from_cli <= allowed, (name, from_cli)
        if name != "common":
            assert getattr(tfq.cli, name).COMMAND is tfq.cli.COMMANDS[name]
