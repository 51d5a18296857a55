"""The demo's first step (float training + save) on a slice of MNIST, run as the demo runs it.

The rest of the demo is the `tfq` command line, exercised end to end by
tests/test_cli.py (which also checks that its stderr stays quiet).
"""

import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_trains_and_saves_loadable_float_models_quietly(tmp_path):
    out = tmp_path / "lenet5.keras"
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the demo must be quiet on its own
    proc = subprocess.run(
        [sys.executable, "-m", "tfq.demo", "--out", str(out), "--epochs", "2", "--parent_epochs", "1",
         "--limit", "1000"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "test accuracy" in proc.stdout and "saved to" in proc.stdout
    parent = tmp_path / "lenet5_1ep.keras"  # the compressors' starting point (same total training budget)
    assert "1-epoch checkpoint" in proc.stdout
    final = keras.saving.load_model(out, compile=False)
    start = keras.saving.load_model(parent, compile=False)
    assert [w.shape for w in final.weights] == [w.shape for w in start.weights]
    assert any((a != b).any() for a, b in zip(final.get_weights(), start.get_weights()))
    for line in proc.stderr.splitlines():  # no TensorFlow start-up chatter, no warning
        assert not line.startswith(("E0000", "I0000", "W0000", "WARNING: All log messages")), proc.stderr
        assert "Warning" not in line, proc.stderr
