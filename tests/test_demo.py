"""The demo's first step (float training + save) on a slice of MNIST.

The rest of the demo is the `tfq` command line, exercised end to end by
tests/test_cli.py.
"""

import keras

from tfq import demo


def test_demo_trains_and_saves_a_loadable_float_model(tmp_path, capsys):
    out = tmp_path / "lenet5.keras"
    model = demo.main(["--out", str(out), "--epochs", "1", "--limit", "2000"])
    assert out.exists()
    reloaded = keras.saving.load_model(out, compile=False)
    assert [w.shape for w in reloaded.weights] == [w.shape for w in model.weights]
    printed = capsys.readouterr().out
    assert "test accuracy" in printed and "saved to" in printed
