"""Text recognition end to end: digit strings -> CRNN (BiLSTM) + CTC -> ADMM ternary -> .tflite -> LiteRT + tfq delegate.

    python examples/ocr/run.py [--train 12000] [--epochs 12] [--admm-epochs 6] [--out artifacts/ocr]
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import keras  # noqa: E402

import tfq  # noqa: E402
from tfq import datasets, report, tasks  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=12000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--admm-epochs", type=int, default=6)
    p.add_argument("--scheme", default="ternary")
    p.add_argument("--out", default="artifacts/ocr")
    a = p.parse_args(argv)
    os.makedirs(a.out, exist_ok=True)
    x, y, _ = datasets.digit_strings(a.train, seed=0)
    xt, yt, _ = datasets.digit_strings(a.test, seed=1, split="test")
    model = tasks.crnn()
    print(f"float training: {tasks.train_ocr(model, x, y, a.epochs, verbose=2):.0f} s")
    print("float (Keras):", tasks.ocr_scores(model.predict(xt, verbose=0), yt))
    # Every layer but the first convolution and the output layer, the LSTMs' kernels and recurrent kernels too.
    small, secs = tasks.compress_with_admm(model, x, tasks.ocr_targets(y), keras.losses.CTC(), a.scheme,
                                           a.admm_epochs, verbose=2)
    print(f"ADMM {a.scheme}: {secs:.0f} s")
    blob = tfq.convert(small)
    print(blob.summary())
    for name, data in (("float.tflite", report.keras_to_tflite(model)), (f"{a.scheme}.tflite", blob)):
        with open(os.path.join(a.out, name), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data) / 1024:.1f} KiB")
    # LiteRT with the tfq delegate; two activation passes keep the greedy decoding equal to Keras'
    # (docs/delegate.md, "Activation precision").
    logits = tasks.run_tflite(blob, xt, delegate_options={"activation_passes": 2})
    print(f"{a.scheme} (LiteRT + tfq delegate):", tasks.ocr_scores(logits, yt))
    keras_strings = tasks.ocr_decode(small.predict(xt, verbose=0))
    print(f"decoded strings equal to Keras': {100 * tasks.agreement(tasks.ocr_decode(logits), keras_strings):.1f}% "
          f"(one activation pass: "
          f"{100 * tasks.agreement(tasks.ocr_decode(tasks.run_tflite(blob, xt)), keras_strings):.1f}%)")
    for img, pred, truth in list(zip(xt, tasks.ocr_decode(logits), yt))[:5]:
        print("  read", "".join(map(str, pred)), "| truth", "".join(str(d) for d in truth if d >= 0))


if __name__ == "__main__":
    main()
